"""Faults × phases (docs/design.md §5): the fleet through the real ``anthropic`` SDK against
the emulator's injected faults, in each phase of a call's life, on asyncio and trio.

Phases: *direct* (the direct route), *create* (a batch create in flight), *poll* (the batch
is processing), *results* (its results are being fetched), *queued* (a call not yet flushed).

Real clocks, as in ``test_emulator.py``: the server lives on its own thread, and a virtual
clock would fire the HTTP client's timeouts while it waits on a socket.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import random
import time
import warnings
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message

import llmfleet._batch as batch_module
import llmfleet.providers.anthropic as anthropic_adapter
from llmfleet import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultMissingError,
    BatchSubmitError,
    FleetClosedError,
    FleetDispatcher,
    ResultEvent,
    open_fleet,
)
from llmfleet.emulator import (
    EXTRA_LINE_CUSTOM_ID,
    EmulatorConfig,
    Fault,
    run_emulator,
    start_emulator,
)
from llmfleet.errors import UnbatchableRequestError

if TYPE_CHECKING:
    from llmfleet.emulator import Emulator

from e2e import CANCELLED, KEY, MODEL, Outcomes, params, policy, text_of, until

pytestmark = [pytest.mark.timeout(30)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


def creates(emu: Emulator) -> list[dict[str, str]]:
    """Each batch create the emulator received: ``{custom_id: user text}``, in arrival order."""
    return [
        {r["custom_id"]: r["params"]["messages"][-1]["content"] for r in request.body["requests"]}
        for request in emu.requests
        if request.endpoint == "batch_create"
    ]


def cancel_requests(emu: Emulator, batch_id: str) -> int:
    path = f"/v1/messages/batches/{batch_id}/cancel"
    return sum(1 for r in emu.requests if r.endpoint == "batch_cancel" and r.path == path)


async def call(
    fleet: FleetDispatcher,
    text: str,
    out: Outcomes,
    *,
    route: str = "batch",
    leave_after: float | None = None,
    request: dict[str, Any] | None = None,
) -> None:
    """One caller: record its result, its error, or :data:`CANCELLED` under ``text``, once."""
    assert text not in out
    body = params(text) if request is None else request
    with anyio.move_on_after(math.inf if leave_after is None else leave_after) as scope:
        try:
            if route == "batch":
                out[text] = await fleet.submit_batch(**body)
            else:
                out[text] = await fleet.submit_sync(**body)
        except Exception as exc:
            out[text] = exc
    if scope.cancelled_caught:
        assert text not in out
        out[text] = CANCELLED


# -- direct route -----------------------------------------------------------------------------

_RETRIED = [
    pytest.param(429, anthropic.RateLimitError, {"retry_after_ms": 20}, id="429-retry-after-ms"),
    pytest.param(429, anthropic.RateLimitError, {"retry_after": 0.02}, id="429-retry-after"),
    pytest.param(529, anthropic.OverloadedError, {"retry_after_ms": 20}, id="529-retry-after-ms"),
    pytest.param(529, anthropic.OverloadedError, {"retry_after": 0.02}, id="529-retry-after"),
    pytest.param(500, anthropic.InternalServerError, {"retry_after_ms": 20}, id="500"),
]


@pytest.mark.parametrize(("status", "error_type", "headers"), _RETRIED)
async def test_direct_status_fault_is_retried_by_the_sdk(
    status: int, error_type: type[anthropic.APIStatusError], headers: dict[str, Any]
) -> None:
    """Fault: 429/529/500 with retry-after(-ms), phase *direct*. The SDK's own retry (the
    client's default max_retries) succeeds: two calls reach the server, the caller gets the
    message. With max_retries=0 the SDK's error reaches the caller unchanged."""
    async with run_emulator(EmulatorConfig()) as emu:
        async with (
            AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
            open_fleet(client, policy=policy()) as fleet,
        ):
            emu.add_fault(Fault("messages", "status", status=status, **headers))
            message = await fleet.submit(**params("retried"))
        assert text_of(message) == "retried"
        assert emu.counts["messages"] == 2
        assert [r.headers["x-stainless-retry-count"] for r in emu.requests] == ["0", "1"]
        assert (fleet.stats.succeeded, fleet.stats.errored) == (1, 0)

        async with (
            AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0) as client,
            open_fleet(client, policy=policy()) as fleet,
        ):
            emu.add_fault(Fault("messages", "status", status=status, **headers))
            with pytest.raises(error_type) as caught:
                await fleet.submit_sync(**params("not retried"))
        assert type(caught.value) is error_type
        assert caught.value.status_code == status
        assert emu.counts["messages"] == 3
        assert (fleet.stats.succeeded, fleet.stats.errored) == (0, 1)


async def test_direct_slow_response_past_the_client_timeout() -> None:
    """Fault: slow answer (0.5 s) against ``timeout=0.2``, phase *direct*: APITimeoutError."""
    async with (
        run_emulator(EmulatorConfig()) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url, timeout=0.2, max_retries=0) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        emu.add_fault(Fault("messages", "slow", delay_s=0.5))
        start = time.monotonic()
        with pytest.raises(anthropic.APITimeoutError):
            await fleet.submit_sync(**params("too slow"))
        assert 0.2 <= time.monotonic() - start < 0.45
        assert fleet.stats.failed == 1


async def test_direct_connection_dropped() -> None:
    """Fault: connection closed without an answer, phase *direct*: APIConnectionError."""
    async with (
        run_emulator(EmulatorConfig()) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        emu.add_fault(Fault("messages", "drop"))
        with pytest.raises(anthropic.APIConnectionError) as caught:
            await fleet.submit(**params("dropped"))
        assert not isinstance(caught.value, anthropic.APITimeoutError)
        assert text_of(await fleet.submit(**params("again"))) == "again"
        assert (fleet.stats.failed, fleet.stats.succeeded) == (1, 1)


async def test_direct_caller_cancelled_mid_call() -> None:
    """Caller cancelled, phase *direct*: the HTTP call is cancelled at once, counted
    withdrawn."""
    async with (
        run_emulator(EmulatorConfig()) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        emu.add_fault(Fault("messages", "slow", delay_s=0.4))
        start = time.monotonic()
        out: Outcomes = {}
        await call(fleet, "impatient", out, route="sync", leave_after=0.1)
        assert out == {"impatient": CANCELLED}
        assert time.monotonic() - start < 0.3
        assert fleet.stats.withdrawn == 1


# -- batch create -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, anthropic.InternalServerError), (529, anthropic.OverloadedError)],
)
async def test_create_refused_fails_that_batch_only_and_is_sent_once(
    status: int, error_type: type[anthropic.APIStatusError]
) -> None:
    """Fault: 500/529 on create, phase *create*. Every caller of that batch, and only those,
    gets BatchSubmitError (``__cause__`` the SDK's error); one create request was sent for
    it (no SDK retry, although the client's default would retry); the other batch runs."""
    texts = [f"call {i}" for i in range(6)]
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=3, batch_max_size=3)) as fleet,
    ):
        emu.add_fault(Fault("batch_create", "status", status=status, retry_after_ms=10))
        async with anyio.create_task_group() as tg:
            for text in texts:
                tg.start_soon(call, fleet, text, out)
    refused, accepted = creates(emu)
    assert emu.counts["batch_create"] == 2
    assert len(emu.batches) == 1
    [batch] = emu.batches.values()
    assert set(batch.custom_ids) == set(accepted)
    for text in refused.values():
        error = out[text]
        assert type(error) is BatchSubmitError
        assert error.batch_size == 3
        assert type(error.__cause__) is error_type
        assert f"status {status}" in str(error)
    assert len({id(out[text]) for text in refused.values()}) == 3  # one error per caller
    for text in accepted.values():
        assert text_of(out[text]) == text
    assert (fleet.stats.failed, fleet.stats.succeeded, fleet.stats.batches_submitted) == (3, 3, 1)


async def test_create_accepted_then_dropped_is_found_and_adopted() -> None:
    """Fault: accept_then_drop (the ambiguous case), phase *create*. The fleet finds the batch
    with list() and carries on: one batch created, billed once per item, every caller answered.
    A second batch created meanwhile is not mistaken for it."""
    texts = [f"ambiguous {i}" for i in range(6)]
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.1)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=3, batch_max_size=3)) as fleet,
    ):
        emu.add_fault(Fault("batch_create", "accept_then_drop"))
        async with anyio.create_task_group() as tg:
            for text in texts:
                tg.start_soon(call, fleet, text, out)
    assert {t: text_of(out[t]) for t in texts} == {t: t for t in texts}
    assert emu.counts["batch_create"] == 2
    assert emu.counts["batch_list"] >= 1
    assert emu.ledger.batches_created == len(emu.batches) == 2
    billed = [str(e.custom_id) for e in emu.ledger.entries]
    assert sorted(billed) == sorted(cid for body in creates(emu) for cid in body)
    assert fleet.stats.batches_submitted == 2
    gc.collect()  # the listing was closed, not left to the collector: nothing may warn here


async def test_create_dropped_unanswered_is_sent_again_once() -> None:
    """Fault: drop (the provider took nothing), phase *create*. Nothing is found by list(), so
    the create is sent again: exactly one batch exists, every caller is answered."""
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=2)) as fleet,
    ):
        emu.add_fault(Fault("batch_create", "drop"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
    assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
    assert emu.counts["batch_create"] == 2
    assert emu.ledger.batches_created == 1
    first, second = creates(emu)
    assert first == second  # the same custom_ids, sent again
    gc.collect()  # the listing was closed, not left to the collector: nothing may warn here


async def test_create_timing_out_then_carried_out_late_is_billed_once() -> None:
    """Fault: slow create (0.6 s) past the client's timeout (0.3 s), phase *create*. The
    provider carries the create out after the client gave up, as a real server may.
    docs/design.md §5: exactly one batch is ever billed for one flush."""
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url, timeout=0.3) as client,
    ):
        async with open_fleet(client, policy=policy(batch_min_size=2)) as fleet:
            emu.add_fault(Fault("batch_create", "slow", delay_s=0.6))
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        await until(lambda: time.time() > emu.requests[0].time + 0.8)
        gc.collect()  # the listing was closed, not left to the collector: nothing may warn here
        billed = [str(e.custom_id) for e in emu.ledger.select(result="succeeded")]
        assert sorted(billed) == sorted(creates(emu)[0])


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_reconciliation_closes_the_batch_listing() -> None:
    """Fault: accept_then_drop, phase *create*: the listing that finds the batch is closed when
    the search stops, not left half-read to the garbage collector."""
    out: Outcomes = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with (
            run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
            AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
            open_fleet(client, policy=policy(batch_min_size=2)) as fleet,
            anyio.create_task_group() as tg,
        ):
            emu.add_fault(Fault("batch_create", "accept_then_drop"))
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
        gc.collect()
    assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
    assert emu.counts["batch_list"] >= 1
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_create_invalid_request_message_reaches_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fault: 400 from validation (max_tokens missing in one request), phase *create*: every
    caller of the batch gets BatchSubmitError carrying the provider's message. (The fleet
    refuses such a request at submit, tests/test_validation.py: its check is turned off here,
    as the provider checks more than the fleet can.)"""
    monkeypatch.setattr(anthropic_adapter, "check_messages", lambda body, schema: None)
    out: Outcomes = {}
    bad = {"model": MODEL, "messages": [{"role": "user", "content": "no max_tokens"}]}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=2)) as fleet,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(call, fleet, "good", out)
        tg.start_soon(partial(call, fleet, "bad", out, request=bad))
    for text in ("good", "bad"):
        error = out[text]
        assert type(error) is BatchSubmitError
        assert "max_tokens: Field required" in str(error)
        assert type(error.__cause__) is anthropic.BadRequestError
    assert emu.counts["batch_create"] == 1
    assert emu.batches == {}


# -- poll -------------------------------------------------------------------------------------

_POLL_FAULTS = [
    pytest.param(Fault("batch_retrieve", "status", status=429, retry_after_ms=30, times=3), 4),
    pytest.param(Fault("batch_retrieve", "status", status=500, times=3), 4, id="500"),
    pytest.param(Fault("batch_retrieve", "status", status=529, times=3), 4, id="529"),
    pytest.param(Fault("batch_retrieve", "transient_404", times=3), 4, id="404"),
    pytest.param(Fault("batch_retrieve", "drop", times=3), 4, id="drop"),
    pytest.param(Fault("batch_retrieve", "slow", delay_s=0.5), 1, id="slow"),
    pytest.param(Fault("batch_results", "transient_404", times=2), 1, id="results-404"),
    pytest.param(Fault("batch_results", "status", status=503, times=2), 1, id="results-503"),
]


@pytest.mark.parametrize(("fault", "retrieves"), _POLL_FAULTS)
async def test_poll_faults_never_abandon_the_batch(fault: Fault, retrieves: int) -> None:
    """Fault: bursts of 429/5xx, transient 404s right after create, dropped connections, a
    very slow retrieve, phase *poll* (and the first requests of phase *results*): the batch
    is never abandoned, its results arrive."""
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.1)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=2)) as fleet,
    ):
        emu.add_fault(fault)
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
    assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
    assert emu.faults == ()  # every fault fired
    assert emu.counts["batch_retrieve"] >= retrieves
    assert emu.counts["batch_cancel"] == 0
    assert emu.counts["batch_create"] == 1
    assert (fleet.stats.succeeded, fleet.stats.failed) == (2, 0)


# -- results ----------------------------------------------------------------------------------


async def test_results_stream_cut_midway_is_fetched_again() -> None:
    """Fault: results stream cut half-way, phase *results*: fetched again, every caller
    resolved exactly once with its own message."""
    texts = [f"cut {i}" for i in range(10)]
    out: Outcomes = {}
    config = EmulatorConfig(turnaround_s=0.05, results_chunk_bytes=64)
    async with (
        run_emulator(config) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        emu.add_fault(Fault("batch_results", "cut_stream"))
        async with anyio.create_task_group() as tg:
            for text in texts:
                tg.start_soon(call, fleet, text, out)
    assert {t: text_of(out[t]) for t in texts} == {t: t for t in texts}
    assert emu.counts["batch_results"] == 2
    stats = fleet.stats
    assert (stats.succeeded, stats.results_dropped, stats.failed) == (10, 0, 0)


async def test_results_line_for_an_unknown_custom_id_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fault: an extra line for a custom_id the batch does not hold, phase *results*: logged,
    ignored; every caller still gets its own message."""
    caplog.set_level(logging.DEBUG, logger="llmfleet")
    texts = ["x", "y", "z"]
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=3)) as fleet,
    ):
        emu.add_fault(Fault("batch_results", "extra_line"))
        async with anyio.create_task_group() as tg:
            for text in texts:
                tg.start_soon(call, fleet, text, out)
    assert {t: text_of(out[t]) for t in texts} == {t: t for t in texts}
    assert emu.faults == ()
    assert any(EXTRA_LINE_CUSTOM_ID in r.getMessage() for r in caplog.records)
    assert (fleet.stats.succeeded, fleet.stats.failed, fleet.stats.errored) == (3, 0, 0)


async def test_results_missing_line_fails_that_caller_only() -> None:
    """Fault: the results lack the line of one request, phase *results*: that caller gets
    BatchResultMissingError; the others their messages."""
    texts = ["p", "q", "r"]
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=3)) as fleet,
    ):
        emu.add_fault(Fault("batch_results", "drop_line"))
        async with anyio.create_task_group() as tg:
            for text in texts:
                tg.start_soon(call, fleet, text, out)
    [(batch_id, batch)] = emu.batches.items()
    [body] = creates(emu)
    lost = batch.custom_ids[0]
    error = out[body[lost]]
    assert type(error) is BatchResultMissingError
    assert (error.batch_id, error.custom_id) == (batch_id, lost)
    for custom_id, text in body.items():
        if custom_id != lost:
            assert text_of(out[text]) == text
    assert (fleet.stats.succeeded, fleet.stats.failed) == (2, 1)


async def test_emulator_results_line_faults() -> None:
    """The emulator's ``extra_line`` and ``drop_line`` faults, seen through the SDK alone."""
    requests: Any = [{"custom_id": f"r{i}", "params": params(f"t{i}")} for i in range(4)]
    async with (
        run_emulator(EmulatorConfig(turnaround_s=None)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0) as client,
    ):
        batch = await client.messages.batches.create(requests=requests)
        emu.end_batch(batch.id)
        emu.add_fault(Fault("batch_results", "extra_line"))
        extra = [r.custom_id async for r in await client.messages.batches.results(batch.id)]
        emu.add_fault(Fault("batch_results", "drop_line"))
        dropped = [r.custom_id async for r in await client.messages.batches.results(batch.id)]
        plain = [r.custom_id async for r in await client.messages.batches.results(batch.id)]
    assert sorted(plain) == ["r0", "r1", "r2", "r3"]
    assert extra == [*plain[:2], EXTRA_LINE_CUSTOM_ID, *plain[2:]]
    assert dropped == [cid for cid in plain if cid != "r0"]


async def test_results_errored_expired_lines() -> None:
    """Results with errored (typed) and expired lines, phase *results*: each such caller gets
    its own error, carrying the provider's error type and message."""
    texts = [
        "ok",
        "[[errored:overloaded_error]]",
        "[[errored:invalid_request_error]]",
        "[[expired]]",
    ]
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=4)) as fleet,
        anyio.create_task_group() as tg,
    ):
        for text in texts:
            tg.start_soon(call, fleet, text, out)
    assert text_of(out["ok"]) == "ok"
    overloaded, invalid, expired = (out[t] for t in texts[1:])
    assert type(overloaded) is BatchRequestError
    assert overloaded.error_type == "overloaded_error"
    assert overloaded.message == "Overloaded (injected by the llmfleet emulator)."
    assert type(invalid) is BatchRequestError
    assert invalid.error_type == "invalid_request_error"
    assert type(expired) is BatchRequestExpiredError
    [batch_id] = emu.batches
    assert {overloaded.batch_id, invalid.batch_id, expired.batch_id} == {batch_id}
    stats = fleet.stats
    assert (stats.succeeded, stats.errored, stats.expired) == (1, 2, 1)


@pytest.mark.parametrize("how", ["expire", "cancel"])
async def test_batch_expired_or_cancelled_from_outside(how: str) -> None:
    """The batch expires, or someone else cancels it, phase *poll*: its callers get
    BatchRequestExpiredError / BatchRequestCanceledError."""
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=None, cancel_delay_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=2)) as fleet,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(call, fleet, "a", out)
        tg.start_soon(call, fleet, "b", out)
        await until(lambda: emu.counts["batch_retrieve"] >= 1)
        [batch_id] = emu.batches
        if how == "expire":
            emu.expire_batch(batch_id)
        else:
            emu.cancel_batch_externally(batch_id)
    expected = BatchRequestExpiredError if how == "expire" else BatchRequestCanceledError
    for text in ("a", "b"):
        error = out[text]
        assert type(error) is expected
        assert error.batch_id == batch_id
    assert emu.counts["batch_cancel"] == 0
    assert getattr(fleet.stats, "expired" if how == "expire" else "canceled") == 2


# -- shutdown ---------------------------------------------------------------------------------


async def reach(phase: str, emu: Emulator) -> None:
    """Wait until the (single) batch is in ``phase`` at the emulator."""
    if phase == "create":
        await until(lambda: emu.counts["batch_create"] >= 1)
    elif phase == "poll":
        await until(lambda: emu.counts["batch_retrieve"] >= 1)
    elif phase == "results":
        await until(lambda: emu.counts["batch_results"] >= 1)
    else:
        assert phase == "queued"
        await anyio.sleep(0.05)


def arm(phase: str, emu: Emulator, *, slow: float) -> None:
    """Make ``phase`` last ``slow`` seconds at least."""
    if phase == "create":
        emu.add_fault(Fault("batch_create", "slow", delay_s=slow))
    elif phase == "results":
        emu.add_fault(Fault("batch_results", "slow", delay_s=slow))


PHASES = ["create", "poll", "results"]


@pytest.mark.parametrize("phase", PHASES)
async def test_normal_exit_drains_in_every_phase(phase: str) -> None:
    """Normal exit while the batch is in phase *create*, *poll* or *results*: the block
    returns once every caller has its message."""
    out: Outcomes = {}
    config = EmulatorConfig(turnaround_s=0.2 if phase == "poll" else 0.05)
    async with (
        anyio.create_task_group() as tg,
        run_emulator(config) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        arm(phase, emu, slow=0.3)
        async with open_fleet(client, policy=policy(batch_min_size=2)) as fleet:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
            await reach(phase, emu)
            assert out == {}
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        assert emu.counts["batch_cancel"] == 0


@pytest.mark.parametrize("phase", PHASES)
async def test_drain_timeout_cancels_the_batch_in_every_phase(phase: str) -> None:
    """Normal exit with ``drain_timeout_ms`` exceeded while the batch is in phase *create*,
    *poll* or *results*: its callers get FleetClosedError, and a batch still processing is
    cancelled at the provider."""
    out: Outcomes = {}
    config = EmulatorConfig(turnaround_s=0.05 if phase == "results" else None)
    async with (
        anyio.create_task_group() as tg,
        run_emulator(config) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        arm(phase, emu, slow=0.5)
        start = time.monotonic()
        async with open_fleet(
            client, policy=policy(batch_min_size=2), drain_timeout_ms=100
        ) as fleet:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
            await reach(phase, emu)
        assert time.monotonic() - start < 2.0
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        [(batch_id, batch)] = emu.batches.items()
        if phase == "results":
            assert batch.results == dict.fromkeys(batch.custom_ids, "succeeded")
        else:
            assert cancel_requests(emu, batch_id) == 1
            assert batch.results == dict.fromkeys(batch.custom_ids, "canceled")
        assert fleet.stats.failed == 2


@pytest.mark.parametrize("phase", ["queued", *PHASES])
async def test_exit_by_exception_in_every_phase(phase: str) -> None:
    """Exit by exception while the calls are queued, or their batch in phase *create*, *poll*
    or *results*: the body's exception propagates as itself (no ExceptionGroup), callers get
    FleetClosedError, queued calls are never sent, a batch still processing is cancelled at
    the provider, and the block exits promptly."""
    out: Outcomes = {}
    config = EmulatorConfig(turnaround_s=0.05 if phase == "results" else None)
    boom = ValueError("the body failed")
    async with (
        anyio.create_task_group() as tg,
        run_emulator(config) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        arm(phase, emu, slow=0.3)
        if phase == "queued":
            rules = policy(batch_min_size=3, batch_window_ms=30_000)
        else:
            rules = policy(batch_min_size=2)
        fleet = FleetDispatcher(client, policy=rules)

        async def body() -> None:
            async with fleet:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
                await reach(phase, emu)
                raise boom

        start = time.monotonic()
        with pytest.raises(ValueError, match="the body failed") as caught:
            await body()
        assert caught.value is boom
        assert time.monotonic() - start < 2.0
        await until(lambda: len(out) == 2)
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        if phase == "queued":
            assert emu.counts["batch_create"] == 0
        else:
            [(batch_id, batch)] = emu.batches.items()
            if phase == "results":
                assert batch.results == dict.fromkeys(batch.custom_ids, "succeeded")
            else:
                assert cancel_requests(emu, batch_id) == 1
                assert batch.results == dict.fromkeys(batch.custom_ids, "canceled")
        assert fleet.stats.failed == 2


async def test_exit_by_exception_is_bounded_with_a_very_slow_create(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exit by exception, phase *create* with a create slower than the abort grace: the
    awaited create is abandoned after the grace (shortened here to 0.3 s), so the block
    still exits promptly and the callers get FleetClosedError."""
    monkeypatch.setattr(batch_module, "ABORT_GRACE_S", 0.3)
    out: Outcomes = {}
    async with (
        anyio.create_task_group() as tg,
        run_emulator(EmulatorConfig(turnaround_s=None)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        arm("create", emu, slow=1.2)
        start = math.inf

        async def body() -> None:
            nonlocal start
            async with open_fleet(client, policy=policy(batch_min_size=2)) as fleet:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
                await reach("create", emu)
                start = time.monotonic()
                raise ValueError("slow create")

        with pytest.raises(ValueError, match="slow create"):
            await body()
        assert time.monotonic() - start < 0.9
        await until(lambda: len(out) == 2)
        assert type(out["a"]) is type(out["b"]) is FleetClosedError


async def test_outer_cancellation_cancels_the_batch() -> None:
    """Outer cancellation, phase *poll*: the batch is cancelled at the provider (shielded),
    the callers get FleetClosedError, and the cancellation is not turned into an error."""
    out: Outcomes = {}
    async with (
        anyio.create_task_group() as tg,
        run_emulator(EmulatorConfig(turnaround_s=None)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        start = time.monotonic()
        with anyio.CancelScope() as scope:
            async with open_fleet(client, policy=policy(batch_min_size=2)) as fleet:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
                await reach("poll", emu)
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert time.monotonic() - start < 2.0
        await until(lambda: len(out) == 2)
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        [batch_id] = emu.batches
        assert cancel_requests(emu, batch_id) == 1


# -- security ---------------------------------------------------------------------------------


async def test_request_params_are_copied_at_submit() -> None:
    """Security, phase *queued*: changing the params dict and its nested messages after
    submit_batch() has queued the call changes nothing in what the provider receives."""
    request = params("the original")
    original = copy.deepcopy(request)
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_window_ms=150)) as fleet,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(partial(call, fleet, "original", out, request=request))
        await until(lambda: fleet.stats.queued == 1)
        request["max_tokens"] = 1
        request["messages"][0]["content"] = "MUTATED"
        request["messages"].append({"role": "user", "content": "MUTATED TOO"})
        request["system"] = "MUTATED"
    [create] = [r for r in emu.requests if r.endpoint == "batch_create"]
    [item] = create.body["requests"]
    assert item["params"] == original
    assert text_of(out["original"]) == "the original"


async def test_errors_quote_only_a_short_truncated_excerpt_of_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Security: an oversized request's error quotes at most a short excerpt of it, marked as
    truncated (the byte limit is lowered to 4 KB here, instead of sending 256 MB)."""
    monkeypatch.setattr(anthropic_adapter, "MAX_BYTES", 4_096)
    secret = "PRIVATE-PROMPT-" * 1_000
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        with pytest.raises(UnbatchableRequestError) as caught:
            await fleet.submit_batch(**params(secret))
        seen = f"{caught.value!s} {caught.value!r} {fleet!r} {fleet.stats!r}"
    assert "truncated" in str(caught.value)
    assert "PRIVATE-PROMPT-" * 4 not in seen
    assert len(str(caught.value)) < 400
    assert emu.counts["batch_create"] == 0


async def test_refused_create_quoting_the_request_is_excerpted() -> None:
    """Security, phase *create*: when the provider's refusal quotes the request, the
    BatchSubmitError message still holds at most a short excerpt of it (the full refusal
    stays available as ``__cause__``)."""
    secret = "PRIVATE-PROMPT-" * 1_000
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=1)) as fleet,
    ):
        emu.add_fault(
            Fault("batch_create", "status", status=400, message=f"cannot parse: {secret}")
        )
        await call(fleet, secret, out)
    error = out[secret]
    assert type(error) is BatchSubmitError
    assert "PRIVATE-PROMPT-" * 4 not in f"{error!s} {error!r}"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_emulator_refuses_a_non_loopback_host(host: str) -> None:
    """Security: the emulator binds to loopback only."""
    with pytest.raises(ValueError, match="loopback"):
        start_emulator(host=host)


# -- cancellation storm -----------------------------------------------------------------------

_CALLER: ContextVar[str] = ContextVar("caller")


@pytest.mark.slow
async def test_cancellation_storm(monkeypatch: pytest.MonkeyPatch) -> None:
    """~2,000 callers arriving over a second, most with a random timeout that lands in any
    phase (queued, create, poll, results): each ends exactly once, calls withdrawn while
    queued never reach the server, every batch whose callers all left while it ran is
    cancelled at the provider, no batch is created empty, and the stats add up."""
    rng = random.Random(5)
    n = 2_000
    out: Outcomes = {}
    # What was flushed when, seen through the flusher's one entry point for a new batch: the
    # only way to tell, at the instant a caller leaves, if its call was still queued.
    flushed: set[str] = set()
    # Withdrawals, from the on_result hook, which runs in the leaving caller's own task:
    # text -> (phase, custom_id, wall time).
    left: dict[str, tuple[str, str, float]] = {}

    def on_result(event: ResultEvent) -> None:
        if event.outcome == "withdrawn":
            assert event.custom_id is not None
            if event.custom_id not in flushed:
                phase = "queued"
            elif event.batch_id is None:
                phase = "create"
            else:
                phase = "batch"
            left[_CALLER.get()] = (phase, event.custom_id, time.time())

    async def caller(text: str, leave_after: float | None) -> None:
        _CALLER.set(text)
        await call(fleet, text, out, leave_after=leave_after)

    texts = [f"storm {i}" + (" [[errored]]" if i % 97 == 0 else "") for i in range(n)]
    start = time.monotonic()
    async with (
        # Long enough that a batch abandoned ~0.1 s in is cancelled well before it would end,
        # even on a loaded machine (the check below allows its cancel 0.3 s).
        run_emulator(EmulatorConfig(turnaround_s=0.5)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        # Some slow creates and result downloads, so that callers leave in those phases too.
        emu.add_fault(Fault("batch_create", "slow", delay_s=0.15, nth=3, times=6))
        emu.add_fault(Fault("batch_results", "slow", delay_s=0.15, nth=3, times=6))
        storm = policy(batch_min_size=60, batch_max_size=60, batch_window_ms=40)
        fleet = FleetDispatcher(client, policy=storm, on_result=on_result)
        start_batch = fleet._start_batch

        def spy(calls: list[Any], reason: Any) -> None:
            flushed.update(c.custom_id for c in calls)
            start_batch(calls, reason)

        monkeypatch.setattr(fleet, "_start_batch", spy)
        async with fleet, anyio.create_task_group() as tg:
            for i, text in enumerate(texts):
                if 600 <= i < 720 or 1_400 <= i < 1_520:
                    # Whole batches whose callers all leave while they are processed.
                    leave_after: float | None = rng.uniform(0.08, 0.12)
                else:
                    leave_after = None if rng.random() < 0.3 else rng.uniform(0.0, 0.6)
                tg.start_soon(caller, text, leave_after)
                if i % 40 == 39:
                    await anyio.sleep(0.02)
        elapsed = time.monotonic() - start

    # Each caller ended exactly once (call() asserts it never records twice).
    assert len(out) == n
    stats = fleet.stats
    assert stats.batched_calls == n
    ended = stats.succeeded + stats.errored + stats.expired + stats.canceled
    assert ended + stats.withdrawn + stats.failed == n
    assert (stats.queued, stats.in_flight_batches, stats.failed) == (0, 0, 0)
    assert stats.withdrawn == len(left)
    assert {t for t, v in out.items() if v == CANCELLED} >= set(left)
    for text, value in out.items():
        if isinstance(value, Message):
            assert text_of(value) == text
        elif value != CANCELLED:
            assert type(value) is BatchRequestError, value
            assert "[[errored]]" in text
    # Callers left in every phase.
    phases = {phase for phase, _, _ in left.values()}
    assert phases == {"queued", "create", "batch"}
    assert stats.results_dropped > 0

    bodies = creates(emu)
    sent = [cid for body in bodies for cid in body]
    assert len(sent) == len(set(sent))  # no call sent twice
    assert set(sent) == flushed
    for phase, custom_id, _ in left.values():
        # Withdrawn while queued: never sent. Left later: sent once, its result dropped.
        assert (custom_id in sent) is (phase != "queued"), (phase, custom_id)
    assert all(bodies)  # no batch created empty
    assert len(bodies) == len(emu.batches) == stats.batches_submitted

    # A batch all of whose callers left well before it would have ended is cancelled.
    left_at = {custom_id: at for _, custom_id, at in left.values()}
    cancelled = 0
    for batch_id, batch in emu.batches.items():
        natural_end = batch.created_at + 0.5
        if all(left_at.get(cid, math.inf) < natural_end - 0.3 for cid in batch.custom_ids):
            cancelled += 1
            assert cancel_requests(emu, batch_id) == 1, batch_id
            # Its unprocessed requests are not billed: every one, when the cancel reached the
            # emulator before the batch's end (a starved machine can deliver it late).
            path = f"/v1/messages/batches/{batch_id}/cancel"
            [sent_at] = [r.time for r in emu.requests if r.path == path]
            if sent_at < natural_end:
                assert set(batch.results.values()) == {"canceled"}
    assert cancelled > 0
    assert elapsed < 20
