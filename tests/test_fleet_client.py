"""The fleet behind an SDK client (docs/design.md §12): ``fleet.client()`` and
``FleetTransport``, the real ``anthropic`` and ``openai`` SDKs over loopback HTTP to the
emulator, on asyncio and trio (real clocks, as in tests/test_anthropic_e2e.py).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import httpx2
import openai
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from typing_extensions import assert_type

import llmfleet
from llmfleet import (
    BatchRequestError,
    FleetDispatcher,
    FleetTransport,
    FleetUsageError,
    InvalidRequestError,
    latency_budget,
    open_fleet,
)
from llmfleet._decode import (
    BUDGET_HEADER,
    NO_BUDGET,
    decode_request,
    encode_status_error,
    parse_budget,
)
from llmfleet.emulator import Emulator, EmulatorConfig, Fault, run_emulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

from e2e import KEY, MODEL, policy, until

pytestmark = [pytest.mark.timeout(30)]

OPENAI_MODEL = "gpt-4o-mini"
LONG = {BUDGET_HEADER: "60000"}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks: the emulator serves from its own thread.
    return str(request.param)


@dataclass
class Kind:
    """One create call of one provider: how to make it, and how the emulator counts it."""

    name: str
    direct_counter: str
    batch_counter: str
    create: Callable[..., Awaitable[Any]]
    result_type: type

    def text(self, value: Any) -> str:
        assert type(value) is self.result_type, value
        if isinstance(value, Message):
            block = value.content[0]
            assert block.type == "text"
            return block.text
        if isinstance(value, ChatCompletion):
            content = value.choices[0].message.content
            assert content is not None
            return content
        assert isinstance(value, Response)
        return value.output_text


def _raw(resource: Any, raw: bool) -> Any:
    return resource.with_raw_response if raw else resource


def _anthropic_create(client: Any, text: str, *, raw: bool = False, **kw: Any) -> Awaitable[Any]:
    return _raw(client.messages, raw).create(  # type: ignore[no-any-return]
        **({"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": text}]} | kw)
    )


def _chat_create(client: Any, text: str, *, raw: bool = False, **kw: Any) -> Awaitable[Any]:
    return _raw(client.chat.completions, raw).create(  # type: ignore[no-any-return]
        **({"model": OPENAI_MODEL, "messages": [{"role": "user", "content": text}]} | kw)
    )


def _responses_create(client: Any, text: str, *, raw: bool = False, **kw: Any) -> Awaitable[Any]:
    return _raw(client.responses, raw).create(  # type: ignore[no-any-return]
        **({"model": OPENAI_MODEL, "input": text} | kw)
    )


KINDS = {
    "anthropic": Kind("anthropic", "messages", "batch_create", _anthropic_create, Message),
    "chat": Kind("chat", "openai_chat", "openai_batch_create", _chat_create, ChatCompletion),
    "responses": Kind(
        "responses", "openai_responses", "openai_batch_create", _responses_create, Response
    ),
}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> Kind:
    return KINDS[request.param]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emulator:
        yield emulator


def sdk_client(emu: Emulator, kind: Kind) -> AsyncAnthropic | AsyncOpenAI:
    if kind.name == "anthropic":
        return AsyncAnthropic(api_key=KEY, base_url=emu.url)
    return AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1")


def fleet_over(
    client: AsyncAnthropic | AsyncOpenAI, **overrides: Any
) -> Any:  # the fleet's type depends on the client's
    return open_fleet(client, policy=policy(**overrides))


# -- budgets ------------------------------------------------------------------------------------


async def test_fleet_client_is_the_sdk_client_and_no_budget_goes_direct(
    emu: Emulator, kind: Kind
) -> None:
    """A fleet client is the SDK's own client class; a call with no budget is a direct call
    of the fleet (counted in its stats), answered with the SDK's own type."""
    async with sdk_client(emu, kind) as client, fleet_over(client) as fleet:
        fc = fleet.client()
        assert type(fc) is type(client)
        value = await kind.create(fc, "plain")
    assert kind.text(value) == "plain"
    assert emu.counts[kind.direct_counter] == 1
    assert emu.counts[kind.batch_counter] == 0
    assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (1, 0)


async def test_header_budget_batches_and_a_tight_one_goes_direct(emu: Emulator, kind: Kind) -> None:
    """The ``llmfleet-latency-budget-ms`` header routes the call like submit's budget; it is
    never sent to the provider."""
    async with sdk_client(emu, kind) as client, fleet_over(client, batch_min_size=2) as fleet:
        fc = fleet.client()
        out: dict[str, Any] = {}

        async def one(text: str, budget: str) -> None:
            out[text] = await kind.create(fc, text, extra_headers={BUDGET_HEADER: budget})

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "loose a", "60000")
            tg.start_soon(one, "loose b", "60000")
            tg.start_soon(one, "tight", "500")
    assert {k: kind.text(v) for k, v in out.items()} == {k: k for k in out}
    assert emu.counts[kind.batch_counter] == 1
    assert emu.counts[kind.direct_counter] == 1
    assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (1, 2)


async def test_context_budget_follows_into_child_tasks_and_none_forces_direct(
    emu: Emulator, kind: Kind
) -> None:
    """``latency_budget(ms)`` reaches calls in tasks started inside it; ``latency_budget(None)``
    and a header ``none`` force the direct route; the header wins over the context."""
    async with sdk_client(emu, kind) as client, fleet_over(client, batch_min_size=3) as fleet:
        fc = fleet.client()
        out: dict[str, Any] = {}

        async def one(text: str, **kw: Any) -> None:
            out[text] = await kind.create(fc, text, **kw)

        with latency_budget(60_000):
            async with anyio.create_task_group() as tg:
                for text in ("child a", "child b", "child c"):
                    tg.start_soon(one, text)
            with latency_budget(None):
                await one("forced direct")
            await one("header direct", extra_headers={BUDGET_HEADER: "none"})
        await one("outside")
    assert {k: kind.text(v) for k, v in out.items()} == {k: k for k in out}
    assert emu.counts[kind.batch_counter] == 1
    assert emu.counts[kind.direct_counter] == 3
    assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (3, 3)


async def test_default_budget_of_the_client_and_none_overrides_it(
    emu: Emulator, kind: Kind
) -> None:
    async with sdk_client(emu, kind) as client, fleet_over(client, batch_min_size=1) as fleet:
        fc = fleet.client(latency_budget_ms=60_000)
        batched = await kind.create(fc, "default")
        with latency_budget(None):
            direct = await kind.create(fc, "forced")
        header = await kind.create(fc, "header", extra_headers={BUDGET_HEADER: "0"})
    assert (kind.text(batched), kind.text(direct), kind.text(header)) == (
        "default",
        "forced",
        "header",
    )
    assert emu.counts[kind.batch_counter] == 1
    assert emu.counts[kind.direct_counter] == 2


def test_latency_budget_refuses_a_negative_budget() -> None:
    with pytest.raises(ValueError, match=">= 0"), latency_budget(-1):
        pass
    with pytest.raises(TypeError, match="number"), latency_budget("5"):  # type: ignore[arg-type]
        pass


async def test_a_malformed_budget_header_is_refused_before_anything_is_sent(
    emu: Emulator, kind: Kind
) -> None:
    async with sdk_client(emu, kind) as client, fleet_over(client) as fleet:
        with pytest.raises(ValueError, match=BUDGET_HEADER):
            await kind.create(fleet.client(), "x", extra_headers={BUDGET_HEADER: "soon"})
    assert emu.counts[kind.direct_counter] == 0


# -- what is not routed, raw responses, errors ----------------------------------------------------


async def test_other_requests_pass_through_unchanged(emu: Emulator, kind: Kind) -> None:
    """Listing batches is no create call: it reaches the provider as the SDK sent it, less
    the budget header."""
    async with sdk_client(emu, kind) as client, fleet_over(client, batch_min_size=1) as fleet:
        fc: Any = fleet.client()
        await kind.create(fc, "into a batch", extra_headers=LONG)
        lister = fc.messages.batches if kind.name == "anthropic" else fc.batches
        page = await lister.list(extra_headers=LONG)
    assert len(page.data) == 1
    counter = "batch_list" if kind.name == "anthropic" else "openai_batch_list"
    assert emu.counts[counter] == 1
    [listed] = [r for r in emu.requests if r.endpoint == counter]
    assert BUDGET_HEADER not in listed.headers
    assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (0, 1)


async def test_with_raw_response_on_both_routes(emu: Emulator, kind: Kind) -> None:
    async with sdk_client(emu, kind) as client, fleet_over(client, batch_min_size=1) as fleet:
        fc = fleet.client()
        for budget in ("none", "60000"):
            response = await kind.create(
                fc, f"raw {budget}", raw=True, extra_headers={BUDGET_HEADER: budget}
            )
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/json")
            parsed = response.parse()  # a coroutine in anthropic, a value in openai
            if inspect.isawaitable(parsed):
                parsed = await parsed
            assert kind.text(parsed) == f"raw {budget}"
    assert emu.counts[kind.direct_counter] == emu.counts[kind.batch_counter] == 1


async def test_a_direct_error_is_the_sdks_own_class_with_the_providers_body(
    emu: Emulator, kind: Kind
) -> None:
    """An unknown model: the same error class, status and body as the bare SDK raises, and
    the fleet client does not retry it (the fleet's own client does)."""
    async with sdk_client(emu, kind) as client, fleet_over(client) as fleet:
        errors = []
        for c in (client.with_options(max_retries=0), fleet.client()):
            with pytest.raises(Exception) as info:  # noqa: PT011 (compared below)
                await kind.create(c, "x", model="no-such-model")
            errors.append(info.value)
    bare, fleeted = errors
    base = anthropic.APIStatusError if kind.name == "anthropic" else openai.APIStatusError
    assert isinstance(bare, base)
    assert type(fleeted) is type(bare)
    assert isinstance(fleeted, base)
    assert (fleeted.status_code, fleeted.body) == (bare.status_code, bare.body)
    assert emu.counts[kind.direct_counter] == 2


async def test_a_direct_rate_limit_is_retried_by_the_fleets_client_only(emu: Emulator) -> None:
    """A 429 on the direct route: the fleet's own client retries it (its max_retries), the
    fleet client does not add retries of its own; once the retries run out the caller gets
    the SDK's RateLimitError."""
    emu.add_fault(Fault("messages", "status", status=429, retry_after=0, times=2))
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=1) as client,
        fleet_over(client) as fleet,
    ):
        with pytest.raises(anthropic.RateLimitError):
            await _anthropic_create(fleet.client().with_options(max_retries=3), "limited")
    assert emu.counts["messages"] == 2  # the first try and the fleet's own client's one retry


async def test_a_direct_connection_error_is_the_sdks_own(emu: Emulator) -> None:
    emu.add_fault(Fault("messages", "drop"))
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0) as client,
        fleet_over(client) as fleet,
    ):
        with pytest.raises(anthropic.APIConnectionError):
            await _anthropic_create(fleet.client(), "dropped")
    assert fleet.stats.failed == 1


async def test_a_parameter_the_sdk_does_not_know_is_the_callers_error_on_both_routes(
    emu: Emulator,
) -> None:
    """``extra_body`` with a name the SDK lacks: refused before anything is sent, as
    llmfleet's InvalidRequestError when batched, as the SDK's TypeError when direct (never a
    connection error)."""
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        fleet_over(client) as fleet,
    ):
        fc = fleet.client()
        with pytest.raises(TypeError, match="bogus"):
            await _anthropic_create(fc, "direct", extra_body={"bogus": 1})
        with pytest.raises(InvalidRequestError, match="bogus"):
            await _anthropic_create(fc, "batched", extra_body={"bogus": 1}, extra_headers=LONG)
    assert emu.counts["messages"] == emu.counts["batch_create"] == 0


async def test_a_batched_items_error_is_llmfleets_typed_error(emu: Emulator, kind: Kind) -> None:
    """A batch-only failure raises llmfleet's own error (also the SDK's base error, so the
    SDK hands it on unwrapped), once: it is not retried."""
    async with (
        sdk_client(emu, kind) as client,
        fleet_over(client, batch_min_size=1) as fleet,
    ):
        fc: Any = fleet.client(latency_budget_ms=60_000)
        with pytest.raises(BatchRequestError) as info:
            await kind.create(fc.with_options(max_retries=2), "boom [[errored]]")
    sdk_base = anthropic.AnthropicError if kind.name == "anthropic" else openai.OpenAIError
    error: Exception = info.value  # (mypy cannot intersect the two classes)
    assert isinstance(error, sdk_base)
    assert info.value.error_type == ("api_error" if kind.name == "anthropic" else "server_error")
    assert "batch" in str(info.value)
    assert emu.counts[kind.batch_counter] == 1
    assert fleet.stats.errored == 1


async def test_cancelling_the_caller_withdraws_its_queued_call(emu: Emulator, kind: Kind) -> None:
    async with (
        sdk_client(emu, kind) as client,
        fleet_over(client, batch_window_ms=10_000) as fleet,
    ):
        fc = fleet.client(latency_budget_ms=60_000)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def leaves() -> None:
                    await kind.create(fc, "leaves")

                tg.start_soon(leaves)
                # Cancel once the call is queued, not after a fixed time: on a loaded machine
                # the SDK's first request can take longer than any short delay.
                await until(lambda: fleet.stats.queued == 1, limit_s=30)
                scope.cancel()
        assert scope.cancelled_caught
    assert fleet.stats.withdrawn == 1
    assert emu.counts[kind.batch_counter] == 0


async def test_fifty_concurrent_client_calls_are_pooled_into_one_batch(
    emu: Emulator, kind: Kind
) -> None:
    n = 50
    async with (
        sdk_client(emu, kind) as client,
        fleet_over(client, batch_min_size=n, batch_max_size=n, batch_window_ms=5_000) as fleet,
    ):
        fc = fleet.client(latency_budget_ms=60_000)
        out: dict[int, Any] = {}

        async def one(i: int) -> None:
            out[i] = await kind.create(fc, f"call {i}")

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
    assert {i: kind.text(v) for i, v in out.items()} == {i: f"call {i}" for i in range(n)}
    assert emu.counts[kind.batch_counter] == 1
    assert emu.counts[kind.direct_counter] == 0
    assert dict(fleet.stats.flushes)["size"] == 1


# -- the transport on its own ---------------------------------------------------------------------


async def test_a_transport_in_an_httpx_client_of_ones_own(emu: Emulator) -> None:
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        fleet_over(client, batch_min_size=1) as fleet,
    ):
        transport = FleetTransport(fleet, latency_budget_ms=60_000)
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            AsyncAnthropic(api_key=KEY, base_url=emu.url, http_client=http, max_retries=0) as own,
        ):
            message = await _anthropic_create(own, "own client")
    assert KINDS["anthropic"].text(message) == "own client"
    assert emu.counts["batch_create"] == 1


async def test_a_fleet_over_another_provider_has_no_client() -> None:
    class Custom:
        name = "custom"

    fleet: FleetDispatcher[Any] = FleetDispatcher.__new__(FleetDispatcher)
    fleet.provider = Custom()  # type: ignore[assignment]
    with pytest.raises(FleetUsageError, match="AsyncAnthropic or AsyncOpenAI"):
        fleet.client()


# -- decoding, pure ------------------------------------------------------------------------------


def test_parse_budget() -> None:
    assert parse_budget(None) is NO_BUDGET
    assert parse_budget("none") is None
    assert parse_budget(" Direct ") is None
    assert parse_budget("2500") == 2500.0
    assert parse_budget("0.5") == 0.5
    for bad in ("-1", "soon", "nan", "inf", ""):
        with pytest.raises(ValueError, match=BUDGET_HEADER):
            parse_budget(bad)


def test_decode_routes_only_the_create_calls() -> None:
    body = b'{"model":"m","max_tokens":5,"messages":[],"stream":true}'
    routed = decode_request("anthropic", "POST", "/v1/messages", b"", {}, body)
    assert routed is not None
    assert (routed.endpoint, routed.stream, routed.budget) == ("/v1/messages", True, NO_BUDGET)
    assert routed.params == {"model": "m", "max_tokens": 5, "messages": []}
    for method, path, query, data in [
        ("GET", "/v1/messages", b"", body),  # not a create
        ("POST", "/v1/messages/count_tokens", b"", body),
        ("POST", "/v1/messages", b"beta=true&x=1", body),
        ("POST", "/v1/messages", b"", b"not json"),  # the provider says what is wrong
        ("POST", "/v1/messages", b"", b"[1]"),
        ("POST", "/v1/chat/completions", b"", body),  # another provider's path
    ]:
        assert decode_request("anthropic", method, path, query, {}, data) is None
    # A beta call naming no betas is an ordinary call; one that names betas goes direct.
    assert decode_request("anthropic", "POST", "/v1/messages", b"beta=true", {}, body) is not None
    betas = {"anthropic-beta": "some-beta-2025-01-01"}
    assert decode_request("anthropic", "POST", "/v1/messages", b"", betas, body) is None
    chat = decode_request(
        "openai",
        "POST",
        "/proxy/v1/chat/completions",
        b"",
        {BUDGET_HEADER: "9000"},
        b'{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}',
    )
    assert chat is not None
    assert (chat.endpoint, chat.include_usage, chat.budget) == ("/v1/chat/completions", True, 9000)
    assert chat.params == {"model": "m", "messages": []}
    responses = decode_request(
        "openai",
        "POST",
        "/v1/responses",
        b"",
        {},
        b'{"input":"x","stream":true,"stream_options":{"include_obfuscation":false}}',
    )
    assert responses is not None
    assert (responses.endpoint, responses.stream) == ("/v1/responses", True)
    assert responses.params == {"input": "x"}
    assert decode_request("openai", "GET", "/v1/responses/resp_1", b"", {}, b"") is None


def test_encode_status_error_hands_back_the_providers_answer() -> None:
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    response = httpx2.Response(
        429,
        headers={"retry-after": "3", "content-length": "2"},
        content=b'{"type":"error"}',
        request=request,
    )
    error = anthropic.RateLimitError("slow down", response=response, body=None)
    answer = encode_status_error(error)
    assert answer is not None
    status, headers, body = answer
    assert (status, body) == (429, b'{"type":"error"}')
    assert ("retry-after", "3") in headers
    assert ("x-should-retry", "false") in headers
    assert all(name != "content-length" for name, _ in headers)
    assert encode_status_error(ValueError("no")) is None


def test_public_names() -> None:
    assert llmfleet.FleetTransport is FleetTransport
    assert llmfleet.latency_budget is latency_budget


# -- streams -------------------------------------------------------------------------------------


async def test_a_batched_anthropic_stream_is_synthesised_from_the_result(emu: Emulator) -> None:
    """``stream=True`` and ``messages.stream()`` with a loose budget: one batch, and the SDK's
    own stream parser rebuilds the batched message."""
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        fleet_over(client, batch_min_size=2) as fleet,
    ):
        fc = fleet.client(latency_budget_ms=60_000)
        out: dict[str, Any] = {}

        async def raw_events() -> None:
            stream = await _anthropic_create(fc, "streamed with create", stream=True)
            out["events"] = [event async for event in stream]

        async def helper() -> None:
            async with fc.messages.stream(
                model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "by helper"}]
            ) as stream:
                out["text"] = "".join([piece async for piece in stream.text_stream])
                out["final"] = await stream.get_final_message()

        async with anyio.create_task_group() as tg:
            tg.start_soon(raw_events)
            tg.start_soon(helper)
    types = [event.type for event in out["events"]]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    text = "".join(
        e.delta.text
        for e in out["events"]
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "streamed with create"
    assert out["text"] == "by helper"
    final = out["final"]
    assert isinstance(final, Message)
    assert final.content[0].type == "text"
    assert final.content[0].text == "by helper"
    assert final.usage.service_tier == "batch"
    assert emu.counts["batch_create"] == 1
    assert emu.counts["messages"] == 0
    assert fleet.stats.batched_calls == 2


async def test_a_tight_budget_streams_from_the_provider(emu: Emulator) -> None:
    """No budget: the stream request goes to the provider as the SDK sent it (the emulator
    does not stream, and says so with the error the SDK raises)."""
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        fleet_over(client) as fleet,
    ):
        with pytest.raises(anthropic.BadRequestError, match="does not stream"):
            await _anthropic_create(fleet.client(), "tight", stream=True)
    [sent] = [r for r in emu.requests if r.endpoint == "messages"]
    assert sent.body["stream"] is True
    assert emu.counts["batch_create"] == 0


async def test_a_batched_stream_call_that_fails_raises_at_create(emu: Emulator) -> None:
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        fleet_over(client, batch_min_size=1) as fleet,
    ):
        with pytest.raises(BatchRequestError):
            await _anthropic_create(
                fleet.client(latency_budget_ms=60_000), "boom [[errored]]", stream=True
            )
    assert emu.counts["batch_create"] == 1


async def drain(stream: Any) -> list[Any]:
    async with stream:
        return [item async for item in stream]


# The openai SDK stops reading a chat stream at ``data: [DONE]`` (which the API sends, and so
# does the synthesised stream) without closing its chain of async generators; trio's finalizer
# warns about each when it is collected. The same happens with the real API.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object :pytest.PytestUnraisableExceptionWarning"
)
async def test_batched_openai_streams_are_synthesised_from_the_result(emu: Emulator) -> None:
    """Chat (with and without ``include_usage``) and Responses streams of batched calls: the
    SDK's stream helpers rebuild the batched results."""
    async with (
        AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as client,
        fleet_over(client, batch_min_size=1) as fleet,
    ):
        fc = fleet.client(latency_budget_ms=60_000)
        chunks = await drain(await _chat_create(fc, "chat stream", stream=True))
        with_usage = await drain(
            await _chat_create(fc, "usage", stream=True, stream_options={"include_usage": True})
        )
        async with fc.chat.completions.stream(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": "chat helper"}]
        ) as chat_stream:
            completion = await chat_stream.get_final_completion()
        async with fc.responses.stream(model=OPENAI_MODEL, input="responses helper") as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            response = await stream.get_final_response()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "chat stream"
    assert all(c.usage is None for c in chunks)
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert completion.choices[0].message.content == "chat helper"
    assert "".join(deltas) == response.output_text == "responses helper"
    assert emu.counts["openai_batch_create"] == 4
    assert emu.counts["openai_chat"] == emu.counts["openai_responses"] == 0


async def test_a_tight_openai_stream_goes_to_the_provider(emu: Emulator) -> None:
    async with (
        AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as client,
        fleet_over(client) as fleet,
    ):
        with pytest.raises(openai.BadRequestError, match="stream"):
            await _chat_create(fleet.client(latency_budget_ms=10), "tight", stream=True)
    [sent] = [r for r in emu.requests if r.endpoint == "openai_chat"]
    assert sent.body["stream"] is True
    assert emu.counts["openai_batch_create"] == 0


# -- one fleet across processes ----------------------------------------------------------------


async def test_a_brokered_fleet_has_a_client_too(emu: Emulator, tmp_path: Path) -> None:
    """``open_fleet(client, broker=...)``: the fleet client's loose calls go through the
    broker into one batch, its calls without a budget go direct from this process."""
    from broker_support import redis_server

    with redis_server(tmp_path) as redis:
        async with (
            AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
            open_fleet(client, policy=policy(batch_min_size=2), broker=redis.url) as fleet,
        ):
            fc = fleet.client(latency_budget_ms=60_000)
            out: dict[str, Any] = {}

            async def one(text: str) -> None:
                out[text] = await _anthropic_create(fc, text)

            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "brokered a")
                tg.start_soon(one, "brokered b")
            with latency_budget(None):
                await one("direct")
    assert {k: KINDS["anthropic"].text(v) for k, v in out.items()} == {k: k for k in out}
    assert emu.counts["batch_create"] == 1
    assert emu.counts["messages"] == 1


async def test_beta_calls_are_routed_unless_they_name_betas(emu: Emulator) -> None:
    """``client.beta.messages.create`` without betas is pooled like any call (its result read
    as the SDK's BetaMessage); with ``betas=[...]`` it goes to the provider as sent."""
    from anthropic.types.beta import BetaMessage

    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        fleet_over(client, batch_min_size=1) as fleet,
    ):
        fc = fleet.client(latency_budget_ms=60_000)
        ask: Any = {"model": MODEL, "max_tokens": 16}
        pooled = await fc.beta.messages.create(
            messages=[{"role": "user", "content": "beta pooled"}], **ask
        )
        named = await fc.beta.messages.create(
            messages=[{"role": "user", "content": "beta named"}],
            betas=["token-efficient-tools-2025-02-19"],
            **ask,
        )
    assert type(pooled) is BetaMessage
    assert pooled.content[0].type == "text"
    assert pooled.content[0].text == "beta pooled"
    assert pooled.usage.service_tier == "batch"
    assert named.usage.service_tier == "standard"
    [direct] = [r for r in emu.requests if r.endpoint == "messages"]
    assert direct.headers["anthropic-beta"] == "token-efficient-tools-2025-02-19"
    assert emu.counts["batch_create"] == 1


# -- streams of rich results, over a fake provider ----------------------------------------------

RICH_MESSAGE: dict[str, Any] = {
    "id": "msg_rich",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [
        {"type": "thinking", "thinking": "The user wants the weather.", "signature": "c2ln"},
        {"type": "text", "text": "Let me look that up."},
        {
            "type": "tool_use",
            "id": "toolu_01",
            "name": "get_weather",
            "input": {"city": "Zürich", "days": [1, 2]},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 30, "service_tier": "batch"},
}


async def test_a_batched_stream_carries_thinking_and_tool_use_blocks() -> None:
    """The SDK's ``messages.stream()`` over a batched result with thinking, text and tool_use
    blocks rebuilds the same message (the fake provider answers with it; no socket)."""
    from llmfleet.providers import ItemResult

    from fakes import FakeProvider

    whole = Message.model_validate(RICH_MESSAGE)
    provider = FakeProvider(
        name="anthropic",
        turnaround=0.01,
        outcome=lambda custom_id, params: ItemResult("succeeded", value=whole),
    )
    async with open_fleet(provider, policy=policy(batch_min_size=1, poll_interval_ms=5)) as fleet:
        transport = FleetTransport(
            fleet, latency_budget_ms=60_000, passthrough=httpx2.AsyncClient()
        )
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            AsyncAnthropic(api_key=KEY, base_url="http://fleet.invalid", http_client=http) as sdk,
            sdk.messages.stream(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "weather?"}]
            ) as stream,
        ):
            final = await stream.get_final_message()
    assert (final.id, final.stop_reason, final.usage.output_tokens) == ("msg_rich", "tool_use", 30)
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    thinking, text, tool = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "The user wants the weather."
    assert thinking.signature == "c2ln"
    assert text.type == "text"
    assert text.text == "Let me look that up."
    assert tool.type == "tool_use"
    assert (tool.name, tool.input) == ("get_weather", {"city": "Zürich", "days": [1, 2]})
    assert len(provider.creates) == 1


async def test_the_client_is_typed_as_the_fleets_sdk_client(emu: Emulator) -> None:
    """For type checkers (mypy runs over tests/): ``fleet.client()`` is an ``AsyncAnthropic``
    for a fleet over one, an ``AsyncOpenAI`` for a fleet over one; so it is at run time."""
    async with (
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as a_sdk,
        AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as o_sdk,
        open_fleet(a_sdk, policy=policy()) as a_fleet,
        open_fleet(o_sdk, policy=policy()) as o_fleet,
    ):
        a_client = a_fleet.client()
        o_client = o_fleet.client(latency_budget_ms=0)
        assert_type(a_client, AsyncAnthropic)
        assert_type(o_client, AsyncOpenAI)
        assert type(a_client) is AsyncAnthropic
        assert type(o_client) is AsyncOpenAI
        assert a_client.base_url == a_sdk.base_url
        assert o_client.base_url == o_sdk.base_url
        assert (a_client.max_retries, o_client.max_retries) == (0, 0)
