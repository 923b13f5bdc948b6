"""The Gemini adapter end to end (docs/design.md §9.5): the real ``google-genai`` SDK over
loopback HTTP to the emulator's Gemini routes, on asyncio and trio; and the adapter's own
rules, offline.

google-genai's default async HTTP client keeps a pool per asyncio loop and fails under trio
("no running event loop"); given a transport of its own it runs on both backends, so the
fixture's client has one (and one test shows the default client on asyncio).

Real clocks, as in tests/test_openai.py: the emulator serves from its own thread.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai.types import GenerateContentResponse, JobState
from typing_extensions import assert_type

import llmfleet
from llmfleet import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchSubmitError,
    FleetClosedError,
    FleetDispatcher,
    InvalidRequestError,
    Route,
    RoutingPolicy,
    UnbatchableRequestError,
    open_fleet,
)
from llmfleet.emulator import EmulatorConfig, Fault, run_emulator
from llmfleet.pricing import PriceTable
from llmfleet.providers import ErrorKind, adapter_for
from llmfleet.providers.gemini import GeminiProvider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from llmfleet.emulator import Emulator

pytestmark = pytest.mark.timeout(30)

KEY = "gemini-test-SECRET-123"
MODEL = "gemini-2.5-flash"
CANCELLED = "cancelled"
TAG = re.compile(r"^lf_[0-9a-f]{32}$")

Outcomes = dict[str, object]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


def policy(**overrides: Any) -> RoutingPolicy:
    values: dict[str, Any] = {
        "sync_max_latency_ms": 1_000,
        "batch_window_ms": 50,
        "batch_min_size": 10,
        "batch_max_size": 10,
        "poll_interval_ms": 20,
        "poll_max_interval_ms": 100,
    }
    if "batch_api_rpm" in {f.name for f in fields(RoutingPolicy)}:
        values["batch_api_rpm"] = None
    return RoutingPolicy(**(values | overrides))


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "contents": text, **extra}


def text_of(value: object) -> str:
    assert type(value) is GenerateContentResponse, value
    assert value.text is not None
    return value.text


def make_client(url: str) -> genai.Client:
    # A transport of its own: google-genai then runs on trio too (module docstring).
    return genai.Client(
        api_key=KEY,
        http_options={
            "base_url": url,
            "async_client_args": {"transport": httpx2.AsyncHTTPTransport()},
        },
    )


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[genai.Client]:
    c = make_client(emu.url)
    try:
        yield c
    finally:
        await c.aio.aclose()


async def until(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    with anyio.fail_after(limit_s):
        while not predicate():  # noqa: ASYNC110 (state on another thread: nothing to await)
            await anyio.sleep(0.005)


async def call(
    fleet: FleetDispatcher, key: str, params: dict[str, Any], out: Outcomes, *, route: str = "batch"
) -> None:
    assert key not in out
    with anyio.CancelScope() as scope:
        try:
            if route == "batch":
                out[key] = await fleet.submit_batch(**params)
            else:
                out[key] = await fleet.submit_sync(**params)
        except Exception as exc:
            out[key] = exc
    if scope.cancelled_caught:
        out[key] = CANCELLED


# -- both routes ------------------------------------------------------------------------------


async def test_fifty_calls_pool_into_one_batch_and_both_routes_return_the_sdk_type(
    emu: Emulator, client: genai.Client
) -> None:
    """50 callers on the batch route make one batch of 50 inlined requests, tagged with a
    128-bit display name; each caller gets its own GenerateContentResponse; the direct route
    returns the same type."""
    out: Outcomes = {}
    events: list[Any] = []
    async with open_fleet(
        client, policy=policy(batch_min_size=50, batch_max_size=50), on_result=events.append
    ) as fleet:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(call, fleet, f"k{i}", ask(f"question {i}"), out)
        direct = await fleet.submit_sync(**ask("direct", config={"max_output_tokens": 1}))
    assert {k: text_of(v) for k, v in out.items()} == {f"k{i}": f"question {i}" for i in range(50)}
    assert text_of(direct) == "dire"  # one token of four characters
    assert fleet.stats.batches_submitted == 1
    [batch] = emu.gemini.batches.values()
    assert len(batch.results) == 50
    assert batch.state == "BATCH_STATE_SUCCEEDED"
    assert TAG.match(batch.display_name), batch.display_name
    assert batch.model == f"models/{MODEL}"
    # Each request carried its custom_id in its metadata: distinct, the fleet's own.
    keys = [m["key"] for m in batch.metadata if m is not None]
    assert len(set(keys)) == 50
    assert {e.route for e in events} == {Route.BATCH, Route.DIRECT}
    assert emu.counts["gemini_generate"] == 1


async def test_default_client_works_on_asyncio() -> None:
    """Without a transport of its own, google-genai's client works on asyncio (under trio it
    needs one: the module docstring)."""
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu:
        client = genai.Client(api_key=KEY, http_options={"base_url": emu.url})
        async with open_fleet(client.aio, policy=policy(batch_min_size=1)) as fleet:
            value = await fleet.submit_batch(**ask("plain"))
        await client.aio.aclose()
    assert text_of(value) == "plain"


default_client_asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
test_default_client_works_on_asyncio = default_client_asyncio_only(
    test_default_client_works_on_asyncio
)


# -- per-request outcomes and job states ------------------------------------------------------


async def test_errored_requests_are_typed_and_their_neighbours_succeed(
    emu: Emulator, client: genai.Client
) -> None:
    """An inlined response with an ``error`` gives its caller BatchRequestError (code and
    message); the other callers of that batch get their responses."""
    out: Outcomes = {}
    async with open_fleet(client, policy=policy(batch_min_size=3)) as fleet:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "bad", ask("no [[errored]]"), out)
            tg.start_soon(call, fleet, "a", ask("a"), out)
            tg.start_soon(call, fleet, "b", ask("b"), out)
    error = out["bad"]
    assert isinstance(error, BatchRequestError), error
    assert error.error_type == "INTERNAL"  # google.rpc code 13, by its name
    assert "injected by the llmfleet emulator" in error.message
    assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
    assert fleet.stats.errored == 1


async def test_expired_failed_and_cancelled_jobs_reach_their_callers(
    client: genai.Client,
) -> None:
    """JOB_STATE_EXPIRED → BatchRequestExpiredError, JOB_STATE_FAILED → BatchRequestError,
    JOB_STATE_CANCELLED (by someone else) → BatchRequestCanceledError, for every request the
    job did not answer."""
    async with run_emulator(EmulatorConfig(turnaround_s=None)) as emu:
        c = make_client(emu.url)
        ends: list[Callable[[str], object]] = [
            emu.gemini.expire_batch,
            emu.gemini.fail_batch,
        ]
        kinds: list[type[Exception]] = [BatchRequestExpiredError, BatchRequestError]
        for end, kind in zip(ends, kinds, strict=True):
            out: Outcomes = {}
            async with open_fleet(c, policy=policy(batch_min_size=2)) as fleet:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call, fleet, "x", ask("x"), out)
                    tg.start_soon(call, fleet, "y", ask("y"), out)
                    await until(lambda: fleet.stats.batches_submitted == 1)
                    name = list(emu.gemini.batches)[-1]
                    end(name)
            assert all(type(out[k]) is kind for k in "xy"), out
        out = {}
        async with open_fleet(c, policy=policy(batch_min_size=2)) as fleet:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "p", ask("p"), out)
                tg.start_soon(call, fleet, "q", ask("q"), out)
                await until(lambda: fleet.stats.batches_submitted == 1)
                name = list(emu.gemini.batches)[-1]
                await c.aio.batches.cancel(name=name)
        assert all(isinstance(out[k], BatchRequestCanceledError) for k in "pq"), out
        states = [b.state for b in emu.gemini.batches.values()]
        assert states == ["BATCH_STATE_EXPIRED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED"]
        # The SDK's own view of the same job.
        job = await c.aio.batches.get(name=name)
        assert job.state == JobState.JOB_STATE_CANCELLED
        await c.aio.aclose()


async def test_marked_expired_request_expires_alone() -> None:
    """A batch that ran out of time with some requests answered: those succeed, the rest
    expire."""
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu:
        c = make_client(emu.url)
        out: Outcomes = {}
        async with open_fleet(c, policy=policy(batch_min_size=2)) as fleet:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "late", ask("late [[expired]]"), out)
                tg.start_soon(call, fleet, "fine", ask("fine"), out)
        await c.aio.aclose()
    assert isinstance(out["late"], BatchRequestExpiredError)
    assert text_of(out["fine"]) == "fine"


async def test_all_callers_gone_cancels_the_batch() -> None:
    """docs/design.md §5: when every caller of an in-flight batch has left, the fleet cancels
    it with the provider, and nothing is billed."""
    async with run_emulator(EmulatorConfig(turnaround_s=None)) as emu:
        c = make_client(emu.url)
        out: Outcomes = {}
        async with open_fleet(c, policy=policy(batch_min_size=2)) as fleet:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "p", ask("p"), out)
                tg.start_soon(call, fleet, "q", ask("q"), out)
                await until(lambda: fleet.stats.batches_submitted == 1)
                tg.cancel_scope.cancel()
            await until(lambda: emu.counts["gemini_batch_cancel"] == 1)
        await c.aio.aclose()
        [batch] = emu.gemini.batches.values()
        assert batch.state == "BATCH_STATE_CANCELLED"
        assert batch.results == ("canceled", "canceled")
        assert fleet.stats.withdrawn == 2
        assert all(e.cost is None or e.cost.paid == 0 for e in emu.ledger.entries)


# -- faults -----------------------------------------------------------------------------------


async def test_create_refused_is_batch_submit_error(emu: Emulator, client: genai.Client) -> None:
    """An error status on create fails that batch's callers with BatchSubmitError (cause: the
    SDK's APIError), sent once (the SDK's retries are off)."""
    emu.add_fault(Fault("gemini_batch_create", "status", status=503))
    out: Outcomes = {}
    async with open_fleet(client, policy=policy(batch_min_size=2)) as fleet:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "u", ask("u"), out)
            tg.start_soon(call, fleet, "v", ask("v"), out)
        after = await fleet.submit_batch(**ask("after"))
    for key in "uv":
        error = out[key]
        assert isinstance(error, BatchSubmitError), error
        assert isinstance(error.__cause__, genai_errors.ServerError)
        assert error.__cause__.status == "UNAVAILABLE"
    assert text_of(after) == "after"
    assert emu.counts["gemini_batch_create"] == 2
    assert emu.ledger.batches_created == 1


async def test_ambiguous_create_is_adopted_by_its_tag(emu: Emulator, client: genai.Client) -> None:
    """The create's connection drops after the batch was made. The fleet lists batches and
    adopts its own by its display-name tag, even though a newer batch of the same size
    (someone else's) is listed first; exactly one batch is made for the flush."""
    emu.add_fault(Fault("gemini_batch_create", "accept_then_drop"))
    emu.add_fault(Fault("gemini_batch_list", "slow", delay_s=0.3))
    emu.config.turnaround_s = 0.2
    out: Outcomes = {}
    async with open_fleet(client, policy=policy(batch_min_size=2)) as fleet:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "m", ask("m"), out)
            tg.start_soon(call, fleet, "n", ask("n"), out)
            await until(lambda: emu.counts["gemini_batch_list"] == 1)
            others: Any = [{"contents": "other 1"}, {"contents": "other 2"}]
            decoy = await client.aio.batches.create(
                model=MODEL,
                src=others,
                config={"display_name": "someone-else"},
            )
    assert {k: text_of(out[k]) for k in "mn"} == {"m": "m", "n": "n"}
    ours = [b for b in emu.gemini.batches.values() if b.name != decoy.name]
    assert len(ours) == 1
    assert TAG.match(ours[0].display_name)
    assert emu.counts["gemini_batch_create"] == 2  # ours (once) and the decoy
    assert fleet.stats.batches_submitted == 1


async def test_transient_404_on_poll_is_retried(emu: Emulator, client: genai.Client) -> None:
    """A 404 on a get right after the create is transient (docs/design.md §5): polled again."""
    emu.add_fault(Fault("gemini_batch_get", "transient_404", times=2))
    async with open_fleet(client, policy=policy(batch_min_size=1)) as fleet:
        value = await fleet.submit_batch(**ask("again"))
    assert text_of(value) == "again"
    assert emu.counts["gemini_batch_get"] >= 3


async def test_stats_cost_equals_the_emulator_ledger(emu: Emulator, client: genai.Client) -> None:
    """The fleet's figures (from usageMetadata, priced by llmfleet.pricing) equal the
    emulator's bill: list price direct, half on the batch route."""
    out: Outcomes = {}
    async with open_fleet(client, policy=policy(batch_min_size=3)) as fleet:
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(call, fleet, f"b{i}", ask(f"batch {i} " * 20), out)
        await fleet.submit_sync(**ask("direct " * 30))
    assert all(type(v) is GenerateContentResponse for v in out.values()), out
    assert emu.ledger.total().list_price > 0
    assert fleet.stats.cost[Route.DIRECT] == emu.ledger.total(route="direct")
    assert fleet.stats.cost[Route.BATCH] == emu.ledger.total(route="batch")
    batch = emu.ledger.total(route="batch")
    assert batch.paid * 2 == batch.list_price


# -- the adapter offline ----------------------------------------------------------------------


def test_adapter_for_takes_the_client_or_its_async_side() -> None:
    client = genai.Client(api_key=KEY)
    assert isinstance(adapter_for(client), GeminiProvider)
    assert isinstance(adapter_for(client.aio), GeminiProvider)
    with pytest.raises(TypeError, match=r"google\.genai\.Client\(\)"):
        adapter_for(object())


def test_prepare_refuses_what_a_batch_cannot_carry() -> None:
    provider = GeminiProvider(genai.Client(api_key=KEY))
    with pytest.raises(InvalidRequestError) as unknown:
        provider.prepare("c1", ask("x", temperature=0.5))
    assert unknown.value.field == "temperature"
    with pytest.raises(InvalidRequestError, match="generate_content_stream"):
        provider.prepare("c1", ask("x", stream=True))
    with pytest.raises(InvalidRequestError) as typed:
        provider.prepare("c1", ask("x", config={"temperatur": 0.5}))
    assert "temperatur" in typed.value.field
    with pytest.raises(UnbatchableRequestError, match="http_options"):
        provider.prepare("c1", ask("x", config={"http_options": {"timeout": 1}}))
    with pytest.raises(InvalidRequestError) as missing:
        provider.prepare("c1", {"model": MODEL})
    assert missing.value.field == "contents"
    small = GeminiProvider(genai.Client(api_key=KEY), max_batch_bytes=1_000)
    with pytest.raises(UnbatchableRequestError, match="1,000-byte limit"):
        small.prepare("c1", ask("x" * 1_000))
    size, (model, _) = provider.prepare("c1", ask("fine", config={"temperature": 0.5}))
    assert model == MODEL
    assert 0 < size < 1_000
    assert provider.batch_key(ask("x")) == provider.batch_key({"model": f"models/{MODEL}"})
    assert provider.batch_key(ask("x")) != provider.batch_key({"model": "gemini-2.5-pro"})


def test_limits_are_a_provider_setting() -> None:
    client = genai.Client(api_key=KEY)
    provider = GeminiProvider(client, max_batch_requests=500, max_batch_bytes=1_000_000)
    assert (provider.max_batch_requests, provider.max_batch_bytes) == (500, 1_000_000)
    with pytest.raises(ValueError, match="20,971,520"):
        GeminiProvider(client, max_batch_bytes=10**9)
    with pytest.raises(ValueError, match="max_batch_requests"):
        GeminiProvider(client, max_batch_requests=0)


def test_classify() -> None:
    provider = GeminiProvider(genai.Client(api_key=KEY))
    request = httpx2.Request("GET", "http://x")

    def api_error(code: int, headers: dict[str, str] | None = None) -> genai_errors.APIError:
        response = httpx2.Response(code, headers=headers or {}, request=request)
        body = {"error": {"code": code, "message": "m", "status": "S"}}
        cls = genai_errors.ClientError if code < 500 else genai_errors.ServerError
        return cls(code, body, response)

    limited = provider.classify(api_error(429, {"retry-after": "7"}))
    assert limited is not None
    assert (limited.kind, limited.retry_after) == (ErrorKind.RATE_LIMITED, 7.0)
    assert provider.classify(api_error(404)) == provider.classify(api_error(404))
    assert provider.classify(api_error(404)).kind is ErrorKind.NOT_FOUND  # type: ignore[union-attr]
    assert provider.classify(api_error(503)).kind is ErrorKind.SERVER  # type: ignore[union-attr]
    assert provider.classify(api_error(400)).kind is ErrorKind.FATAL  # type: ignore[union-attr]
    refused = provider.classify(httpx2.ConnectError("refused"))
    assert refused is not None
    assert (refused.kind, refused.unreachable) == (ErrorKind.CONNECTION, True)
    timeout = provider.classify(httpx2.ReadTimeout("slow"))
    assert timeout is not None
    assert (timeout.kind, timeout.unreachable) == (ErrorKind.CONNECTION, False)
    assert provider.classify(RuntimeError("a bug")) is None


def test_tokens_exclude_cached_and_count_thoughts_as_output() -> None:
    provider = GeminiProvider(genai.Client(api_key=KEY))
    value = GenerateContentResponse.model_validate(
        {
            "usage_metadata": {
                "prompt_token_count": 100,
                "cached_content_token_count": 30,
                "candidates_token_count": 20,
                "thoughts_token_count": 5,
            }
        }
    )
    assert provider.tokens_of(value) == (70, 25, 0, 30)
    assert provider.tokens_of(object()) is None
    assert provider.load_value(provider.dump_value(value)) == value


def test_gemini_list_prices() -> None:
    table = PriceTable()
    flash, lite = table.price("gemini-2.5-flash"), table.price("gemini-2.5-flash-lite")
    assert flash is not None
    assert lite is not None
    assert flash != lite
    assert table.price("gemini-2.5-flash-001") == flash


def test_the_adapter_without_google_genai_says_what_to_install() -> None:
    code = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name == "google.genai" or name.startswith("google.genai."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
from llmfleet import open_fleet  # the rest of llmfleet needs no google-genai
try:
    import llmfleet.providers.gemini
except ModuleNotFoundError as exc:
    print(exc)
"""
    src = str(Path(llmfleet.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "the Gemini adapter (llmfleet.providers.gemini) needs google-genai: "
        "pip install 'llmfleet[gemini]'"
    )


async def test_prepare_measures_a_request_as_the_create_sends_it(
    emu: Emulator, client: genai.Client
) -> None:
    """The size prepare() gives a request is its bytes in the create's body (the SDK's wire
    form: camelCase, a string content made a part), so the byte limit cuts batches right."""
    provider = GeminiProvider(client)
    params = ask("é and more " * 20, config={"system_instruction": "be brief", "temperature": 0})
    size, prepared = provider.prepare("lf_x_1", params)
    await provider.create_batch([("lf_x_1", prepared)])
    [create] = [r for r in emu.requests if r.endpoint == "gemini_batch_create"]
    [sent] = create.body["batch"]["inputConfig"]["requests"]["requests"]
    assert sent["request"]["systemInstruction"] == {"parts": [{"text": "be brief"}], "role": "user"}
    assert size == len(json.dumps(sent)) + 2  # and the ", " before the next one


async def test_routes_answer_in_googles_shape_and_leave_openais_paths_to_openai(
    emu: Emulator,
) -> None:
    """The Gemini routes answer errors as Google does (``{"error": {"code", "message",
    "status"}}``); ``/v1/batches`` is Gemini's only with Google's key header, OpenAI's
    otherwise."""
    async with httpx2.AsyncClient(base_url=emu.url) as http:
        anonymous = await http.get("/v1beta/batches")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
        bad = await http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            content=b"{not json",
            headers={"x-goog-api-key": KEY},
        )
        assert bad.status_code == 400
        assert bad.json() == {
            "error": {
                "code": 400,
                "message": "Invalid JSON payload received.",
                "status": "INVALID_ARGUMENT",
            }
        }
        google = await http.get("/v1/batches", headers={"x-goog-api-key": KEY})
        assert google.json() == {"operations": []}
        openai = await http.get("/v1/batches", headers={"authorization": f"Bearer {KEY}"})
        assert openai.json()["object"] == "list"
    assert emu.counts["gemini_batch_list"] == 2
    assert emu.counts["openai_batch_list"] == 1


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_default_client_under_trio_is_told_what_to_do() -> None:
    """Under trio, google-genai's default client cannot send (it pools per asyncio loop):
    each submit says so and how to fix it, before anything is sent."""
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu:
        client = genai.Client(api_key=KEY, http_options={"base_url": emu.url})
        async with open_fleet(client, policy=policy(batch_min_size=1)) as fleet:
            for submit in (fleet.submit_sync, fleet.submit_batch):
                with pytest.raises(RuntimeError, match="AsyncHTTPTransport"):
                    await submit(**ask("trio"))
    assert emu.requests == []


def test_the_emulator_says_google_genais_base_url() -> None:
    src = str(Path(llmfleet.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmfleet.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        url = proc.stdout.readline().strip()
        said = "".join(proc.stderr.readline() for _ in range(4))
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert f'google-genai:  http_options={{"base_url": "{url}"}}' in said


class _Crash(Exception):
    pass


async def test_a_journaled_fleet_re_attaches_and_answers_from_the_journal(
    tmp_path: Path,
) -> None:
    """docs/design.md §9.2 with Gemini: a fleet that dies while its batch runs leaves it
    running; the next fleet (a new client, a new adapter) re-attaches to it and answers its
    callers from it; a third answers from the journal alone, with the SDK's own type."""
    path = tmp_path / "gemini.journal"
    async with run_emulator(EmulatorConfig(turnaround_s=None)) as emu:
        first: Outcomes = {}
        client = make_client(emu.url)

        async def crash() -> None:
            async with open_fleet(client, policy=policy(batch_min_size=2), journal=path) as fleet:
                callers.start_soon(call, fleet, "a", ask("a"), first)
                callers.start_soon(call, fleet, "b", ask("b"), first)
                await until(lambda: fleet.stats.batches_submitted == 1)
                raise _Crash

        async with anyio.create_task_group() as callers:
            with pytest.raises(_Crash):
                await crash()
        await client.aio.aclose()
        assert all(isinstance(v, FleetClosedError) for v in first.values()), first
        [name] = emu.gemini.batches
        assert emu.counts["gemini_batch_cancel"] == 0  # the journal keeps it for the next
        emu.gemini.end_batch(name)

        second: Outcomes = {}
        client = make_client(emu.url)
        async with open_fleet(client, policy=policy(batch_min_size=2), journal=path) as fleet:
            assert fleet.stats.reattached_batches == 1
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "a", ask("a"), second)
                tg.start_soon(call, fleet, "b", ask("b"), second)
        assert {k: text_of(v) for k, v in second.items()} == {"a": "a", "b": "b"}
        assert emu.counts["gemini_batch_create"] == 1

        third: Outcomes = {}
        seen = len(emu.requests)
        async with open_fleet(client, policy=policy(batch_min_size=2), journal=path) as fleet:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "a", ask("a"), third)
                tg.start_soon(call, fleet, "b", ask("b"), third)
            assert fleet.stats.from_journal == 2
        await client.aio.aclose()
        assert {k: text_of(v) for k, v in third.items()} == {"a": "a", "b": "b"}
        assert len(emu.requests) == seen  # nothing sent


async def test_a_fleet_over_google_genai_is_typed_as_its_responses(
    emu: Emulator, client: genai.Client
) -> None:
    """docs/design.md §1: ``open_fleet(genai.Client())`` (or its ``.aio``) is a
    ``FleetDispatcher[GenerateContentResponse]`` (checked by mypy over tests/)."""
    async with open_fleet(client.aio, policy=policy(batch_min_size=1)) as fleet:
        assert_type(fleet, FleetDispatcher[GenerateContentResponse])
        value = await fleet.submit_batch(**ask("typed"))
    assert_type(value, GenerateContentResponse)
    async with open_fleet(client, policy=policy(batch_min_size=1)) as fleet:
        direct = await fleet.submit_sync(**ask("typed too"))
    assert_type(direct, GenerateContentResponse)
    assert (text_of(value), text_of(direct)) == ("typed", "typed too")


async def test_a_create_refused_for_one_request_fails_it_alone(
    emu: Emulator, client: genai.Client
) -> None:
    """A create answered 400 naming ``requests[i]`` made no batch: that caller alone gets
    BatchSubmitError with the API's reason; the others go again without it, in one batch."""
    out: Outcomes = {}
    bad = {"model": MODEL, "contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}
    async with open_fleet(client, policy=policy(batch_min_size=3)) as fleet:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "a", ask("a"), out)
            tg.start_soon(call, fleet, "bad", bad, out)
            tg.start_soon(call, fleet, "b", ask("b"), out)
    error = out["bad"]
    assert type(error) is BatchSubmitError, error
    assert isinstance(error.__cause__, genai_errors.ClientError)
    assert "request.contents[0].role: Please use a valid role" in str(error)
    assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
    assert emu.counts["gemini_batch_create"] == 2
    assert emu.ledger.batches_created == 1
    [batch] = emu.gemini.batches.values()
    assert len(batch.results) == 2


async def test_the_adapter_forgets_a_batch_once_its_results_are_read(
    emu: Emulator, client: genai.Client
) -> None:
    """The create's order, kept for responses without metadata, is dropped once a batch's
    results are read (a long-lived fleet's memory stays flat)."""
    provider = GeminiProvider(client)
    out: Outcomes = {}
    async with open_fleet(provider, policy=policy(batch_min_size=2)) as fleet:
        async with anyio.create_task_group() as tg:
            for key in ("a", "b"):
                tg.start_soon(call, fleet, key, ask(key), out)
    assert {k: text_of(v) for k, v in out.items()} == {"a": "a", "b": "b"}
    assert provider._ids == {}
