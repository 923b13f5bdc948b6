"""Faults × phases (docs/design.md §5) for the Gemini adapter: the fleet through the real
``google-genai`` SDK against the emulator's injected faults, on asyncio and trio.

Phases: *direct*, *create* (a batch create in flight), *poll* (the batch is running),
*queued*. A Gemini batch's results come with the batch itself (one get), so its *results*
phase is a get like the polls before it: the poll faults cover it.

Real clocks, as in tests/test_reliability.py.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai.types import GenerateContentResponse, HttpOptions

from llmfleet import FleetClosedError, FleetDispatcher, RoutingPolicy, open_fleet
from llmfleet.emulator import EmulatorConfig, Fault, run_emulator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from llmfleet.emulator import Emulator

pytestmark = pytest.mark.timeout(30)

KEY = "gemini-test-SECRET-456"
MODEL = "gemini-2.5-flash"
Outcomes = dict[str, object]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def policy(**overrides: Any) -> RoutingPolicy:
    values: dict[str, Any] = {
        "sync_max_latency_ms": 1_000,
        "batch_window_ms": 50,
        "batch_min_size": 2,
        "batch_max_size": 10,
        "poll_interval_ms": 20,
        "poll_max_interval_ms": 100,
        "batch_api_rpm": None,
    }
    return RoutingPolicy(**(values | overrides))


def ask(text: str) -> dict[str, Any]:
    return {"model": MODEL, "contents": text}


def text_of(value: object) -> str:
    assert type(value) is GenerateContentResponse, value
    assert value.text is not None
    return value.text


async def until(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    with anyio.fail_after(limit_s):
        while not predicate():  # noqa: ASYNC110 (state on another thread: nothing to await)
            await anyio.sleep(0.005)


async def call(fleet: FleetDispatcher, key: str, out: Outcomes, *, direct: bool = False) -> None:
    with anyio.CancelScope() as scope:
        try:
            if direct:
                out[key] = await fleet.submit_sync(**ask(key))
            else:
                out[key] = await fleet.submit_batch(**ask(key))
        except Exception as exc:
            out[key] = exc
    if scope.cancelled_caught:
        out[key] = "cancelled"


class _Env:
    """A running emulator and a client on it."""

    def __init__(self, emu: Emulator, client: genai.Client) -> None:
        self.emu, self.client = emu, client


@asynccontextmanager
async def env(config: EmulatorConfig, *, timeout_ms: int | None = None) -> AsyncIterator[_Env]:
    """An emulator and a google-genai client on it (its own transport: trio works too)."""
    async with run_emulator(config) as emu:
        options = HttpOptions(
            base_url=emu.url,
            async_client_args={"transport": httpx2.AsyncHTTPTransport()},
            timeout=timeout_ms,
        )
        client = genai.Client(api_key=KEY, http_options=options)
        try:
            yield _Env(emu, client)
        finally:
            await client.aio.aclose()


# -- direct -----------------------------------------------------------------------------------


async def test_direct_faults_reach_the_caller_as_the_sdks_own_errors() -> None:
    """Phase *direct*: a 503 is the SDK's ServerError (google-genai retries nothing by
    default), a dropped connection httpx2's error; the fleet adds nothing to either."""
    async with env(EmulatorConfig()) as e:
        out: Outcomes = {}
        async with open_fleet(e.client, policy=policy()) as fleet:
            e.emu.add_fault(Fault("gemini_generate", "status", status=503))
            await call(fleet, "refused", out, direct=True)
            e.emu.add_fault(Fault("gemini_generate", "drop"))
            await call(fleet, "dropped", out, direct=True)
            await call(fleet, "fine", out, direct=True)
    refused = out["refused"]
    assert isinstance(refused, genai_errors.ServerError)
    assert (refused.code, refused.status) == (503, "UNAVAILABLE")
    assert isinstance(out["dropped"], httpx2.TransportError)
    assert text_of(out["fine"]) == "fine"


# -- create -----------------------------------------------------------------------------------


async def test_create_dropped_unanswered_is_sent_again_once() -> None:
    """Fault: drop (the provider took nothing), phase *create*: nothing carries the tag, so
    the create is sent again, with the same tag: exactly one batch, every caller answered."""
    async with env(EmulatorConfig(turnaround_s=0.05)) as e:
        out: Outcomes = {}
        async with open_fleet(e.client, policy=policy()) as fleet:
            e.emu.add_fault(Fault("gemini_batch_create", "drop"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        assert e.emu.counts["gemini_batch_create"] == 2
        assert e.emu.ledger.batches_created == 1
        first, second = (
            r.body["batch"]["displayName"]
            for r in e.emu.requests
            if r.endpoint == "gemini_batch_create"
        )
        assert first == second


async def test_create_timing_out_then_carried_out_late_is_billed_once() -> None:
    """Fault: a create slower (0.6 s) than the client's timeout (0.3 s), carried out after
    the client gave up: the fleet finds it by its tag; exactly one batch is billed."""
    async with env(EmulatorConfig(turnaround_s=0.05), timeout_ms=300) as e:
        out: Outcomes = {}
        async with open_fleet(e.client, policy=policy()) as fleet:
            e.emu.add_fault(Fault("gemini_batch_create", "slow", delay_s=0.6))
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        await until(lambda: time.time() > e.emu.requests[0].time + 0.8)
        assert e.emu.counts["gemini_batch_list"] >= 1  # the client gave up: looked for its tag
        assert e.emu.ledger.batches_created == 1
        assert len(e.emu.ledger.select(result="succeeded")) == 2


# -- poll -------------------------------------------------------------------------------------

_POLL_FAULTS = [
    pytest.param(
        Fault("gemini_batch_get", "status", status=429, retry_after_ms=30, times=3), id="429"
    ),
    pytest.param(Fault("gemini_batch_get", "status", status=500, times=3), id="500"),
    pytest.param(Fault("gemini_batch_get", "status", status=503, times=3), id="503"),
    pytest.param(Fault("gemini_batch_get", "transient_404", times=3), id="404"),
    pytest.param(Fault("gemini_batch_get", "drop", times=3), id="drop"),
    pytest.param(Fault("gemini_batch_get", "slow", delay_s=0.5), id="slow"),
]


@pytest.mark.parametrize("fault", _POLL_FAULTS)
async def test_poll_faults_never_abandon_the_batch(fault: Fault) -> None:
    """Bursts of 429/5xx, transient 404s right after the create, dropped connections, a very
    slow get, phases *poll* and *results*: the batch is never abandoned, its results arrive."""
    async with env(EmulatorConfig(turnaround_s=0.1)) as e:
        out: Outcomes = {}
        async with open_fleet(e.client, policy=policy()) as fleet:
            e.emu.add_fault(fault)
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        assert e.emu.faults == ()
        assert e.emu.counts["gemini_batch_cancel"] == 0
        assert e.emu.counts["gemini_batch_create"] == 1
        assert (fleet.stats.succeeded, fleet.stats.failed) == (2, 0)


# -- shutdown ---------------------------------------------------------------------------------


async def reach(phase: str, emu: Emulator) -> None:
    if phase == "create":
        await until(lambda: emu.counts["gemini_batch_create"] >= 1)
    elif phase == "poll":
        await until(lambda: emu.counts["gemini_batch_get"] >= 1)
    else:
        assert phase == "queued"
        await anyio.sleep(0.05)


@pytest.mark.parametrize("phase", ["create", "poll"])
async def test_normal_exit_drains(phase: str) -> None:
    """Normal exit while the batch is being created or is running: the block returns once
    every caller has its response."""
    async with anyio.create_task_group() as tg, env(EmulatorConfig(turnaround_s=0.2)) as e:
        if phase == "create":
            e.emu.add_fault(Fault("gemini_batch_create", "slow", delay_s=0.3))
        out: Outcomes = {}
        async with open_fleet(e.client, policy=policy()) as fleet:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
            await reach(phase, e.emu)
            assert out == {}
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        assert e.emu.counts["gemini_batch_cancel"] == 0


@pytest.mark.parametrize("phase", ["create", "poll"])
async def test_drain_timeout_cancels_the_batch(phase: str) -> None:
    """Normal exit with ``drain_timeout_ms`` exceeded: the callers get FleetClosedError and
    the running batch is cancelled at the provider (nothing billed)."""
    async with anyio.create_task_group() as tg, env(EmulatorConfig(turnaround_s=None)) as e:
        if phase == "create":
            e.emu.add_fault(Fault("gemini_batch_create", "slow", delay_s=0.5))
        out: Outcomes = {}
        start = time.monotonic()
        async with open_fleet(e.client, policy=policy(), drain_timeout_ms=100) as fleet:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
            await reach(phase, e.emu)
        assert time.monotonic() - start < 2.0
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        await until(lambda: e.emu.counts["gemini_batch_cancel"] == 1)
        [batch] = e.emu.gemini.batches.values()
        assert batch.state == "BATCH_STATE_CANCELLED"
        assert all(e.cost is None or e.cost.paid == 0 for e in e.emu.ledger.entries)


@pytest.mark.parametrize("phase", ["queued", "create", "poll"])
async def test_exit_by_exception(phase: str) -> None:
    """Exit by exception: the body's exception propagates as itself, callers get
    FleetClosedError, queued calls are never sent, a running batch is cancelled."""
    async with anyio.create_task_group() as tg, env(EmulatorConfig(turnaround_s=None)) as e:
        if phase == "create":
            e.emu.add_fault(Fault("gemini_batch_create", "slow", delay_s=0.3))
        rules = policy(batch_min_size=3, batch_window_ms=30_000) if phase == "queued" else policy()
        fleet = FleetDispatcher(e.client, policy=rules)
        out: Outcomes = {}
        boom = ValueError("the body failed")

        async def body() -> None:
            async with fleet:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
                await reach(phase, e.emu)
                raise boom

        with pytest.raises(ValueError, match="the body failed") as caught:
            await body()
        assert caught.value is boom
        await until(lambda: len(out) == 2)
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        if phase == "queued":
            assert e.emu.counts["gemini_batch_create"] == 0
        else:
            await until(lambda: e.emu.counts["gemini_batch_cancel"] == 1)
            [batch] = e.emu.gemini.batches.values()
            assert batch.state == "BATCH_STATE_CANCELLED"


async def test_outer_cancellation_cancels_the_batch() -> None:
    """Outer cancellation while the batch runs: it is cancelled at the provider (shielded),
    the callers get FleetClosedError."""
    async with anyio.create_task_group() as tg, env(EmulatorConfig(turnaround_s=None)) as e:
        out: Outcomes = {}
        with anyio.CancelScope() as scope:
            async with open_fleet(e.client, policy=policy()) as fleet:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
                await reach("poll", e.emu)
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        await until(lambda: len(out) == 2)
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        assert e.emu.counts["gemini_batch_cancel"] == 1
