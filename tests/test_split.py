"""One bad request never sinks its batch, and a wrong base URL says what to fix
(docs/design.md §5): the fleet through the real SDKs over HTTP against the emulator, on
asyncio and trio.

The provider refuses a batch because of one of its requests: Anthropic answers the create 400
naming ``requests.<i>``, OpenAI fails the batch's validation naming its line. Only that caller
fails; the others go again, in a new batch, billed once. The requests are prepared by a
wrapper that skips the adapter's own checks, so that the provider is the one that refuses
them, whatever the fleet learns to catch before it sends.

Real clocks, as in ``test_reliability.py``: the server lives on its own thread.
"""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import botocore.exceptions
import httpx2
import openai
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from llmfleet import BatchRequestError, BatchSubmitError, open_fleet
from llmfleet.emulator import EmulatorConfig, run_emulator
from llmfleet.providers import ErrorInfo, ErrorKind
from llmfleet.providers._bedrock_wire import classify_aws
from llmfleet.providers.anthropic import AnthropicProvider
from llmfleet.providers.openai import CHAT_COMPLETIONS, OpenAIProvider

from adapters import Recorder
from e2e import KEY, params, policy, text_of

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from llmfleet import FleetDispatcher
    from llmfleet.providers import Provider

pytestmark = [pytest.mark.timeout(60)]

OPENAI_MODEL = "gpt-4o-mini"
SIZE = 20


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


class Unchecked(Recorder):
    """The adapter, with requests prepared as they are (none of its checks) and one batch
    for all, so the provider is the one that refuses a bad request. It counts the fleet's
    searches for a batch after a create (``find_batch``)."""

    def __init__(self, inner: Provider) -> None:
        super().__init__(inner)
        self.searches = 0

    def check(self, params: Mapping[str, Any]) -> None:
        pass

    def batch_key(self, params: Mapping[str, Any]) -> str:
        return "all"

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, Any]:
        body = json.dumps(params, separators=(",", ":"))
        size = len(body) + 200
        if isinstance(self._inner, OpenAIProvider):
            return size, ((CHAT_COMPLETIONS, OPENAI_MODEL), body)
        return size, body

    async def find_batch(
        self, *, count: int, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        self.searches += 1
        return await super().find_batch(count=count, created_after=created_after, exclude=exclude)


def chat(text: str) -> dict[str, Any]:
    return {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": text}]}


async def submit_all(fleet: FleetDispatcher, requests: list[dict[str, Any]]) -> list[Any]:
    """Submit every request at once; each one's result or error, in order."""
    out: list[Any] = [None] * len(requests)

    async def one(i: int) -> None:
        try:
            out[i] = await fleet.submit_batch(**requests[i])
        except Exception as exc:
            out[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(len(requests)):
            tg.start_soon(one, i)
    return out


def custom_id_in(message: str) -> str:
    """The custom_id an error message names (``custom_id lf_...``)."""
    return message.split("custom_id ", 1)[1].split(",")[0].split(":")[0].split(")")[0]


def batch_policy() -> Any:
    return policy(batch_min_size=SIZE, batch_max_size=SIZE, batch_window_ms=2_000)


# -- Anthropic: a create refused 400 because of one request -----------------------------------


@pytest.mark.parametrize("bad", [[7], [0, 19]], ids=["one-bad", "two-bad"])
@pytest.mark.parametrize("journaled", [False, True], ids=["plain", "journal"])
async def test_anthropic_create_refused_for_one_request_fails_it_alone(
    bad: list[int], journaled: bool, tmp_path: Path
) -> None:
    """A create answered 400 ``requests.<i>.params.max_tokens: Field required`` made no
    batch: that caller alone gets BatchSubmitError naming its custom_id and the field; the
    others go again without it (once more per bad request) and are answered from one batch,
    billed once."""
    requests = [params(f"call {i}") for i in range(SIZE)]
    for i in bad:
        del requests[i]["max_tokens"]
    journal = tmp_path / "j.db" if journaled else None
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        provider = Unchecked(AnthropicProvider(client))
        async with open_fleet(provider, policy=batch_policy(), journal=journal) as fleet:
            out = await submit_all(fleet, requests)
        stats = fleet.stats.snapshot()
    good = [i for i in range(SIZE) if i not in bad]
    assert [text_of(out[i]) for i in good] == [f"call {i}" for i in good]
    # Three creates for two bad requests (each refusal names the first it finds), one made.
    assert emu.counts["batch_create"] == len(bad) + 1
    assert emu.ledger.batches_created == 1 == len(emu.batches)
    [create] = provider.creates
    assert len(create.ids) == len(good)
    billed = [str(e.custom_id) for e in emu.ledger.entries]
    assert sorted(billed) == sorted(create.ids)
    assert {e.batch_id for e in emu.ledger.entries} == {create.batch_id}
    for i in bad:
        error = out[i]
        assert type(error) is BatchSubmitError, error
        assert type(error.__cause__) is anthropic.BadRequestError
        message = str(error)
        assert "params.max_tokens: Field required" in message
        assert "the provider refused this request" in message
        assert "Fix the request" in message
        assert "submit_sync" not in message
        assert custom_id_in(message) not in create.ids
    assert len({custom_id_in(str(out[i])) for i in bad}) == len(bad)
    assert (stats.succeeded, stats.failed, stats.batches_submitted) == (len(good), len(bad), 1)
    assert provider.searches == 0


async def test_anthropic_every_request_refused_makes_no_batch() -> None:
    """Every request bad: one create per request, each naming one, and no batch at all."""
    requests = [params(f"call {i}") for i in range(3)]
    for request in requests:
        del request["max_tokens"]
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        provider = Unchecked(AnthropicProvider(client))
        async with open_fleet(provider, policy=policy(batch_min_size=3, batch_max_size=3)) as fleet:
            out = await submit_all(fleet, requests)
    assert all(type(error) is BatchSubmitError for error in out)
    assert len({custom_id_in(str(error)) for error in out}) == 3
    assert emu.counts["batch_create"] == 3
    assert emu.ledger.batches_created == 0
    assert fleet.stats.batches_submitted == 0


def test_anthropic_refused_reads_the_index_and_the_reason() -> None:
    """The adapter's reading of a create's 400: the index it names and the API's words, and
    nothing for a 400 that names no request or for another status."""
    provider = AnthropicProvider(AsyncAnthropic(api_key=KEY, base_url="http://127.0.0.1:9"))

    def error(status: int, message: str) -> anthropic.APIStatusError:
        body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
        request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages/batches")
        response = httpx2.Response(status, json=body, request=request)
        kind = anthropic.BadRequestError if status == 400 else anthropic.APIStatusError
        return kind(message, response=response, body=body)

    assert provider.refused(error(400, "requests.3.params.max_tokens: Field required")) == (
        3,
        "params.max_tokens: Field required",
    )
    assert provider.refused(error(400, "requests.12: Input should be a valid dictionary")) == (
        12,
        "Input should be a valid dictionary",
    )
    assert provider.refused(error(400, "requests: Field required")) is None
    assert provider.refused(error(413, "requests.3.params: too large")) is None
    assert provider.refused(ValueError("requests.3.params.x: y")) is None


# -- OpenAI: a batch that failed validation because of one line -------------------------------


@pytest.mark.parametrize("journaled", [False, True], ids=["plain", "journal"])
async def test_openai_failed_validation_fails_the_bad_line_alone(
    journaled: bool, tmp_path: Path
) -> None:
    """A batch failed for one line (a body with no model) ran nothing and is not billed: that
    caller alone gets BatchRequestError naming its custom_id and the param; the 19 others
    are sent again in a new batch (new upload, new tag) and answered from it, billed once."""
    requests = [chat(f"call {i}") for i in range(SIZE)]
    del requests[7]["model"]
    journal = tmp_path / "j.db" if journaled else None
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as client,
    ):
        provider = Unchecked(OpenAIProvider(client))
        async with open_fleet(provider, policy=batch_policy(), journal=journal) as fleet:
            out = await submit_all(fleet, requests)
        stats = fleet.stats.snapshot()
        batches = {b.id: b for b in emu.openai.batches.values()}
        files = list(emu.openai.files.values())
    good = [i for i in range(SIZE) if i != 7]
    for i in good:
        assert type(out[i]) is ChatCompletion
        assert out[i].choices[0].message.content == f"call {i}"
    failed, done = provider.creates
    assert len(failed.ids) == SIZE
    assert len(done.ids) == SIZE - 1
    assert batches[failed.batch_id].status == "failed"
    assert batches[done.batch_id].status == "completed"
    assert batches[failed.batch_id].input_file_id != batches[done.batch_id].input_file_id
    error = out[7]
    assert type(error) is BatchRequestError, error
    message = str(error)
    assert custom_id_in(message) == error.custom_id
    assert error.custom_id in failed.ids
    assert error.custom_id not in done.ids
    assert "body.model" in message
    assert "Fix the request" in message
    billed = [str(e.custom_id) for e in emu.ledger.entries]
    assert sorted(billed) == sorted(done.ids)
    assert {e.batch_id for e in emu.ledger.entries} == {done.batch_id}
    assert [e.result for e in emu.ledger.entries] == ["succeeded"] * (SIZE - 1)
    # Both creates were accepted (the first batch then failed): two batches submitted.
    assert (stats.succeeded, stats.errored, stats.batches_submitted) == (SIZE - 1, 1, 2)
    assert stats.in_flight_batches == 0
    assert all(f.deleted for f in files)


# -- a wrong or unreachable base URL ----------------------------------------------------------


async def test_anthropic_base_url_with_v1_says_what_to_fix() -> None:
    """An Anthropic base URL ending in /v1: the batch create is a 404. The callers are told
    the URL tried, that it is the base URL to fix, and how it looks."""
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url + "/v1") as client,
        open_fleet(client, policy=policy(batch_min_size=1)) as fleet,
    ):
        with pytest.raises(BatchSubmitError) as caught:
            await fleet.submit_batch(**params("hello"))
    message = str(caught.value)
    assert "status 404" in message
    assert f"{emu.url}/v1/v1/messages/batches" in message
    assert "base_url" in message
    assert "has no /v1" in message
    assert "submit_sync" not in message
    assert type(caught.value.__cause__) is anthropic.NotFoundError


async def test_openai_base_url_without_v1_says_what_to_fix() -> None:
    """An OpenAI base URL without /v1: the upload is a 404; the callers are told the URL
    tried and that OpenAI's base URL ends in /v1."""
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncOpenAI(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=1)) as fleet,
    ):
        with pytest.raises(BatchSubmitError) as caught:
            await fleet.submit_batch(**chat("hello"))
    message = str(caught.value)
    assert "status 404" in message
    assert f"{emu.url}/files" in message
    assert "ends in /v1" in message
    assert "submit_sync" not in message
    assert type(caught.value.__cause__) is openai.NotFoundError


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
async def test_nothing_listening_fails_at_once_without_looking_for_the_batch(
    vendor: str,
) -> None:
    """A refused connection sent nothing: not an ambiguous create. No search for a batch,
    one create attempt, and the callers are told nothing listens at the base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client: AsyncAnthropic | AsyncOpenAI
    if vendor == "anthropic":
        client = AsyncAnthropic(api_key=KEY, base_url=base)
        provider = Unchecked(AnthropicProvider(client))
        request = params("hello")
    else:
        client = AsyncOpenAI(api_key=KEY, base_url=base + "/v1")
        provider = Unchecked(OpenAIProvider(client))
        request = chat("hello")
    async with client, open_fleet(provider, policy=policy(batch_min_size=1)) as fleet:
        with pytest.raises(BatchSubmitError) as caught:
            await fleet.submit_batch(**request)
    message = str(caught.value)
    assert f"could not connect to the provider at {base}" in message
    assert "nothing listens" in message
    assert "base_url" in message
    assert "submit_sync" not in message
    assert provider.searches == 0
    assert fleet.stats.api_requests.get("list", 0) == 0
    assert fleet.stats.api_requests["create"] == 1
    info = provider.classify(caught.value.__cause__)  # type: ignore[arg-type]
    assert info is not None
    assert (info.kind, info.unreachable) == (ErrorKind.CONNECTION, True)


def test_bedrock_endpoint_never_reached_is_unreachable() -> None:
    """botocore's "could not connect to the endpoint URL" is a connection never made; a
    connection closed mid-request is not."""
    never = classify_aws(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"))
    closed = classify_aws(botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"))
    assert never == ErrorInfo(ErrorKind.CONNECTION, unreachable=True)
    assert closed == ErrorInfo(ErrorKind.CONNECTION, unreachable=False)


def test_a_dropped_connection_is_still_ambiguous() -> None:
    """Only a connection never made is ``unreachable``: one that broke after it was made
    (the request may have been acted on) is not."""
    provider = AnthropicProvider(AsyncAnthropic(api_key=KEY, base_url="http://127.0.0.1:9"))
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/messages/batches")

    def wrapped(cause: Exception) -> anthropic.APIConnectionError:
        try:
            raise anthropic.APIConnectionError(request=request) from cause
        except anthropic.APIConnectionError as exc:
            return exc

    never = provider.classify(wrapped(httpx2.ConnectError("refused")))
    broken = provider.classify(wrapped(httpx2.ReadError("reset")))
    timeout = provider.classify(anthropic.APITimeoutError(request=request))
    assert never is not None
    assert broken is not None
    assert timeout is not None
    assert (never.kind, never.unreachable) == (ErrorKind.CONNECTION, True)
    assert (broken.kind, broken.unreachable) == (ErrorKind.CONNECTION, False)
    assert (timeout.kind, timeout.unreachable) == (ErrorKind.CONNECTION, False)
