"""The real dispatcher over a FakeProvider, in virtual time, on asyncio and trio.

Times are virtual, so instants are asserted exactly: every delay in these tests is a dyadic
fraction of a second, which floats add without rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
from contextlib import aclosing
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import pytest

import llmfleet.providers.anthropic as anthropic_adapter
from llmfleet import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultError,
    BatchResultMissingError,
    BatchSubmitError,
    FleetClosedError,
    FleetDispatcher,
    ResultEvent,
    Route,
    RoutingPolicy,
    StatsSnapshot,
    UnbatchableRequestError,
    open_fleet,
)
from llmfleet.pricing import Cost, TokenUsage
from llmfleet.providers import ErrorKind, ItemResult

from fakes import BreakingProvider, FakeError, FakeMessage, FakeProvider, request, text_of

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        Awaitable,
        Callable,
        Mapping,
        Sequence,
    )

    from anyio.abc import TaskGroup

# Flushes after 1 s or at 3 queued calls; batches of at most 10.
POLICY = RoutingPolicy(
    sync_max_latency_ms=5_000,
    batch_window_ms=1_000,
    batch_min_size=3,
    batch_max_size=10,
    poll_interval_ms=1_000,
    poll_max_interval_ms=4_000,
)
# Every call is its own batch, at once.
EACH_ALONE = RoutingPolicy(batch_window_ms=0, batch_min_size=1, batch_max_size=1)

Outcomes = dict[str, object]


async def call_batch(fleet: FleetDispatcher, text: str, out: Outcomes) -> None:
    """Submit on the batch route; record the result or the error under ``text``."""
    try:
        out[text] = await fleet.submit_batch(**request(text))
    except Exception as exc:
        out[text] = exc


async def call_batch_for(fleet: FleetDispatcher, text: str, out: Outcomes, seconds: float) -> None:
    """Like :func:`call_batch`, but the caller gives up after ``seconds``."""
    with anyio.move_on_after(seconds) as scope:
        await call_batch(fleet, text, out)
    if scope.cancelled_caught:
        out[text] = "cancelled"


def message(out: Outcomes, text: str) -> FakeMessage:
    value = out[text]
    assert isinstance(value, FakeMessage), f"{text}: {value!r}"
    assert value.text == text
    return value


def relative(times: Sequence[tuple[float, Any]], t0: float) -> list[float]:
    return [t - t0 for t, *_ in times]


def creates(fake: FakeProvider, t0: float) -> list[tuple[float, int]]:
    """(instant after t0, size) of each batch the fake received."""
    return [(t - t0, len(ids)) for t, _, ids in fake.creates]


# -- routing (§2) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "route"),
    [
        pytest.param(None, "direct", id="none"),
        pytest.param(0, "direct", id="zero"),
        pytest.param(4_999.5, "direct", id="under"),
        pytest.param(5_000, "direct", id="equal"),
        pytest.param(5_001, "batch", id="over"),
        pytest.param(5_000.5, "batch", id="over-float"),
        pytest.param(3_600_000, "batch", id="an-hour"),
        pytest.param(math.inf, "batch", id="inf"),
    ],
)
async def test_submit_routes_by_budget(budget: float | None, route: str) -> None:
    fake = FakeProvider()
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        result = await fleet.submit(latency_budget_ms=budget, **request("q"))
    assert type(result) is FakeMessage
    assert result.route == route
    assert result.text == "q"
    if route == "direct":
        assert result.custom_id is None
        assert len(fake.direct_calls) == 1
        assert fake.creates == []
        assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (1, 0)
        assert fleet.stats.batches_submitted == 0
    else:
        assert fake.sent_ids == [result.custom_id]
        assert fake.direct_calls == []
        assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (0, 1)
        assert fleet.stats.batches_submitted == 1


async def test_forced_routes_and_counts() -> None:
    fake = FakeProvider()
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        # An hour of budget, but forced direct; no budget, but forced into a batch.
        direct = await fleet.submit_sync(**request("a"))
        batched = await fleet.submit_batch(**request("b"))
        await fleet.submit(**request("c"))
        await fleet.submit(latency_budget_ms=60_000, **request("d"))
    assert (direct.route, batched.route) == ("direct", "batch")
    assert type(direct) is type(batched)
    assert fleet.stats.sync_calls == 2
    assert fleet.stats.batched_calls == 2
    assert fleet.stats.batches_submitted == 2
    assert [text_of(p) for _, p in fake.direct_calls] == ["a", "c"]
    assert [text_of(p) for b in fake.batches.values() for _, p in b.requests] == ["b", "d"]


async def test_params_reach_the_provider_unchanged() -> None:
    fake = FakeProvider()
    params = request("hello", temperature=0.5, system="be brief")
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        await fleet.submit_sync(**params)
        await fleet.submit_batch(**params)
    assert fake.direct_calls[0][1] == params
    (batch,) = fake.batches.values()
    assert batch.requests[0][1] == params


async def test_batch_params_are_copied_at_submit() -> None:
    fake = FakeProvider()
    params = request("original")
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        tg.start_soon(call_batch, fleet, "x", out)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(lambda: fleet.submit_batch(**params))
        await anyio.wait_all_tasks_blocked()
        params["messages"][0]["content"] = "changed after submit"
    texts = [text_of(p) for b in fake.batches.values() for _, p in b.requests]
    assert texts == ["x", "original"]


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "error"),
    [
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(-0.5, ValueError, id="negative-float"),
        pytest.param(math.nan, ValueError, id="nan"),
        pytest.param(-math.inf, ValueError, id="minus-inf"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param("1000", TypeError, id="str"),
    ],
)
async def test_bad_budget_is_refused_before_sending(budget: Any, error: type[Exception]) -> None:
    fake = FakeProvider()
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        with pytest.raises(error, match="latency_budget_ms"):
            await fleet.submit(latency_budget_ms=budget, **request())
    assert fake.direct_calls == []
    assert fake.creates == []
    assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (0, 0)


def submitter(fleet: FleetDispatcher, how: str) -> Callable[..., Awaitable[Any]]:
    """The way of submitting named by ``how``; each takes the SDK's params."""
    if how == "submit":
        return fleet.submit
    if how == "submit-budget":
        return functools.partial(fleet.submit, latency_budget_ms=60_000)
    if how == "submit_sync":
        return fleet.submit_sync
    assert how == "submit_batch"
    return fleet.submit_batch


@pytest.mark.parametrize("how", ["submit", "submit-budget", "submit_sync", "submit_batch"])
async def test_stream_true_is_refused_on_every_route(how: str) -> None:
    fake = FakeProvider()
    params = request(stream=True)
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        submit = submitter(fleet, how)
        with pytest.raises(UnbatchableRequestError, match="stream"):
            await submit(**params)
    assert fake.direct_calls == []
    assert fake.creates == []
    assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (0, 0)


@pytest.mark.parametrize("how", ["submit-budget", "submit_batch"])
async def test_oversized_request_is_refused_on_the_batch_route(how: str) -> None:
    fake = FakeProvider(max_batch_bytes=1_000)
    params = request("x" * 2_000)
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        submit = submitter(fleet, how)
        with pytest.raises(UnbatchableRequestError, match="over the batch limit"):
            await submit(**params)
        # The direct route has no batch byte limit.
        direct = await fleet.submit_sync(**params)
    assert direct.route == "direct"
    assert fake.creates == []
    assert fleet.stats.batched_calls == 0
    assert fleet.stats.queued == 0


async def anthropic_fleet_refusal(params: dict[str, Any]) -> UnbatchableRequestError:
    """What the real Anthropic adapter says when ``params`` can't go in a batch.

    Nothing is sent: the refusal comes before any HTTP request (the address is unroutable).
    """
    async with anthropic.AsyncAnthropic(
        api_key="sk-ant-test-NOT-A-KEY", base_url="http://127.0.0.1:9", max_retries=0
    ) as client:
        async with open_fleet(client, policy=EACH_ALONE) as fleet:
            with pytest.raises(UnbatchableRequestError) as excinfo:
                await fleet.submit(latency_budget_ms=60_000, **params)
        assert fleet.stats.batched_calls == 0
        assert fleet.stats.batches_submitted == 0
    return excinfo.value


async def test_oversized_request_message_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anthropic_adapter, "MAX_BYTES", 1_000)
    secret_tail = "END-OF-A-LONG-PROMPT"
    error = await anthropic_fleet_refusal(request("x" * 2_000 + secret_tail))
    text = str(error)
    assert "submit_sync()" in text
    assert "1,000" in text
    # Never the request content beyond a short, clearly truncated excerpt (§5).
    assert "truncated" in text
    assert secret_tail not in text
    assert "NOT-A-KEY" not in text


async def test_non_json_params_are_refused_on_the_batch_route() -> None:
    error = await anthropic_fleet_refusal(request(metadata={"user_id": object()}))
    assert "JSON" in str(error)
    assert "submit_sync()" in str(error)


async def test_submit_before_entering_is_refused() -> None:
    fake = FakeProvider()
    fleet = FleetDispatcher(fake, policy=EACH_ALONE)
    assert fleet.closed
    for submit in (fleet.submit, fleet.submit_sync, fleet.submit_batch):
        with pytest.raises(FleetClosedError, match="not open yet"):
            await submit(latency_budget_ms=60_000, **request())
    assert fake.direct_calls == []
    assert fake.creates == []


async def test_submit_after_exit_is_refused() -> None:
    fake = FakeProvider()
    closed: list[bool] = []
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        closed.append(fleet.closed)
    closed.append(fleet.closed)
    assert closed == [False, True]
    with pytest.raises(FleetClosedError, match="closed"):
        await fleet.submit_batch(**request())
    with pytest.raises(FleetClosedError, match="closed"):
        await fleet.submit_sync(**request())
    with pytest.raises(FleetClosedError, match="closed"):
        await fleet.submit(latency_budget_ms=60_000, **request())
    assert fake.direct_calls == []
    assert fake.creates == []


async def test_class_form_is_the_same_fleet() -> None:
    fake = FakeProvider()
    fleet = FleetDispatcher(fake, policy=EACH_ALONE)
    async with fleet as entered:
        assert entered is fleet
        result = await fleet.submit_batch(**request("k"))
    assert result.route == "batch"
    assert fleet.closed
    assert fleet.stats.batches_submitted == 1


async def test_non_client_is_refused() -> None:
    with pytest.raises(TypeError, match="object"):
        async with open_fleet(object()):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="AsyncAnthropic"):
        FleetDispatcher(object())


def test_fleet_can_be_made_outside_an_event_loop() -> None:
    # Configuration happens in plain code; only `async with` needs the event loop.
    fleet = FleetDispatcher(FakeProvider(), policy=POLICY)
    assert fleet.policy is POLICY
    assert fleet.closed
    assert fleet.stats.sync_calls == 0
    manager = open_fleet(FakeProvider(), policy=POLICY)
    assert hasattr(manager, "__aenter__")


async def test_policy_must_be_a_routing_policy() -> None:
    bad: Any = {"batch_min_size": 3}
    with pytest.raises(TypeError, match="RoutingPolicy"):
        open_fleet(FakeProvider(), policy=bad)
    with pytest.raises(TypeError, match="RoutingPolicy"):
        FleetDispatcher(FakeProvider(), policy=bad)


async def test_negative_drain_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="drain_timeout_ms"):
        open_fleet(FakeProvider(), drain_timeout_ms=-1)


async def test_entering_twice_is_refused() -> None:
    fleet = FleetDispatcher(FakeProvider(), policy=EACH_ALONE)
    async with fleet:
        with pytest.raises(RuntimeError, match="once"):
            async with fleet:
                pass  # pragma: no cover
        # The first entry is unharmed.
        result = await fleet.submit_batch(**request("still open"))
        assert result.text == "still open"
    with pytest.raises(RuntimeError, match="once"):
        async with fleet:
            pass  # pragma: no cover


# -- exact flush instants (§4) --------------------------------------------------------------


async def test_window_flush_at_exactly_the_window() -> None:
    fake = FakeProvider()
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        tg.start_soon(call_batch, fleet, "a", out)
        tg.start_soon(call_batch, fleet, "b", out)
        await anyio.wait_all_tasks_blocked()
        assert fleet.stats.queued == 2
        await anyio.sleep(0.5)
        assert fake.creates == []
        await anyio.sleep(1.0)
        assert fleet.stats.queued == 0
    assert creates(fake, t0) == [(1.0, 2)]
    assert dict(fleet.stats.flushes) == {"size": 0, "window": 1, "drain": 0, "deadline": 0}
    message(out, "a")
    message(out, "b")


async def test_size_flush_at_once() -> None:
    fake = FakeProvider()
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        for text in "abc":
            tg.start_soon(call_batch, fleet, text, out)
    assert creates(fake, t0) == [(0.0, 3)]
    assert fleet.stats.flushes["size"] == 1
    assert fleet.stats.flushes["window"] == 0
    for text in "abc":
        message(out, text)


async def test_burst_is_cut_into_max_size_batches_and_the_rest_waits_the_window() -> None:
    fake = FakeProvider()
    policy = dataclasses.replace(POLICY, batch_min_size=6)
    out: Outcomes = {}
    texts = [f"call-{i}" for i in range(25)]
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        for text in texts:
            tg.start_soon(call_batch, fleet, text, out)
    assert creates(fake, t0) == [(0.0, 10), (0.0, 10), (1.0, 5)]
    assert dict(fleet.stats.flushes) == {"size": 2, "window": 1, "drain": 0, "deadline": 0}
    snap = fleet.stats.snapshot()
    assert (snap.batch_size_min, snap.batch_size_mean, snap.batch_size_max) == (5, 25 / 3, 10)
    # Every caller got its own result (G7), and every request was sent once (G1).
    for text in texts:
        message(out, text)
    assert len(set(fake.sent_ids)) == len(fake.sent_ids) == 25
    assert sorted(message(out, t).custom_id or "" for t in texts) == sorted(fake.sent_ids)


async def test_a_batch_full_by_its_bytes_goes_before_its_count_or_window() -> None:
    """A queue waiting for 6 calls (or 1 s) holds calls of ~400 bytes under a 1,000-byte
    body limit: it sends each pair as soon as the next call would not fit (their batch
    cannot grow), and only the odd one out waits for the window."""
    fake = FakeProvider(max_batch_bytes=1_000)
    policy = dataclasses.replace(POLICY, batch_min_size=6)
    out: Outcomes = {}
    texts = [f"call-{i}-" + "x" * 300 for i in range(5)]
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        for text in texts:
            tg.start_soon(call_batch, fleet, text, out)
    assert creates(fake, t0) == [(0.0, 2), (0.0, 2), (1.0, 1)]
    assert dict(fleet.stats.flushes) == {"size": 2, "window": 1, "drain": 0, "deadline": 0}
    for text in texts:
        message(out, text)


async def test_window_counts_from_the_oldest_call() -> None:
    fake = FakeProvider()
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        tg.start_soon(call_batch, fleet, "first", out)
        await anyio.sleep(0.75)
        tg.start_soon(call_batch, fleet, "second", out)
        await anyio.sleep(1.0)
        tg.start_soon(call_batch, fleet, "third", out)
    # first and second leave at first's deadline; third waits its own full window.
    assert creates(fake, t0) == [(1.0, 2), (2.75, 1)]
    assert fleet.stats.flushes["window"] == 2


async def test_drain_flushes_queued_calls_at_exit() -> None:
    fake = FakeProvider()
    out: Outcomes = {}
    async with anyio.create_task_group() as tg:
        async with open_fleet(fake, policy=POLICY) as fleet:
            t0 = anyio.current_time()
            tg.start_soon(call_batch, fleet, "a", out)
            tg.start_soon(call_batch, fleet, "b", out)
            await anyio.sleep(0.25)
            assert fake.creates == []
        exited = anyio.current_time()
        # The block returned only once both callers had their outcomes.
        message(out, "a")
        message(out, "b")
    assert creates(fake, t0) == [(0.25, 2)]
    assert dict(fleet.stats.flushes) == {"size": 0, "window": 0, "drain": 1, "deadline": 0}
    # Created at 0.25, ended at 1.25, first poll at 1.25: the block returns then.
    assert exited - t0 == 1.25
    assert fleet.stats.in_flight_batches == 0
    assert fleet.stats.queued == 0


async def test_normal_exit_waits_for_every_caller() -> None:
    fake = FakeProvider(turnaround=30.0)
    out: Outcomes = {}
    async with anyio.create_task_group() as tg:
        async with open_fleet(fake, policy=EACH_ALONE) as fleet:
            t0 = anyio.current_time()
            for text in ("a", "b", "c"):
                tg.start_soon(call_batch, fleet, text, out)
                await anyio.sleep(1.0)
            assert out == {}
        exited = anyio.current_time()
        assert sorted(out) == ["a", "b", "c"]
        for text in "abc":
            message(out, text)
    # The last batch, created at 2.0, ends at 32.0; the poll that sees it ended comes at
    # 2.0 + 1 + 1.5 + 2.25 + 3.375 + 5.0625 + 7.59375 + 11.390625 (default poll policy).
    assert exited - t0 == 34.171875
    assert max(t for t, _ in fake.result_fetches) == exited


# -- many batches in flight -----------------------------------------------------------------


async def test_many_batches_in_flight_at_once() -> None:
    fake = FakeProvider(turnaround=100.0)
    out: Outcomes = {}
    texts = [f"c{i}" for i in range(5)]
    async with open_fleet(fake, policy=EACH_ALONE) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        for text in texts:
            tg.start_soon(call_batch, fleet, text, out)
            await anyio.sleep(1.0)
        await anyio.sleep(0.5)
        await anyio.wait_all_tasks_blocked()
        assert fleet.stats.in_flight_batches == 5
        assert fleet.stats.batches_submitted == 5
        assert fleet.stats.queued == 0
        assert out == {}
    assert creates(fake, t0) == [(float(i), 1) for i in range(5)]
    for text in texts:
        message(out, text)
    assert fleet.stats.in_flight_batches == 0
    assert fleet.stats.succeeded == 5


async def test_slow_create_does_not_delay_the_next_flush() -> None:
    slow_once = [True]

    async def on_create(reqs: list[tuple[str, dict[str, Any]]]) -> None:
        if slow_once[0]:
            slow_once[0] = False
            await anyio.sleep(10.0)

    fake = FakeProvider(on_create=on_create)
    out: Outcomes = {}
    async with open_fleet(fake, policy=EACH_ALONE) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        tg.start_soon(call_batch, fleet, "slow", out)
        await anyio.sleep(1.0)
        tg.start_soon(call_batch, fleet, "fast", out)
    # The fake records a create when it returns: the second returned first.
    assert [(t - t0, text_of(b.requests[0][1])) for t, b in _created(fake)] == [
        (1.0, "fast"),
        (10.0, "slow"),
    ]
    message(out, "slow")
    message(out, "fast")


def _created(fake: FakeProvider) -> list[tuple[float, Any]]:
    return [(t, fake.batches[bid]) for t, bid, _ in fake.creates]


# -- polling (§5) ---------------------------------------------------------------------------


async def test_poll_backoff() -> None:
    fake = FakeProvider(turnaround=20.0)
    policy = dataclasses.replace(EACH_ALONE, poll_max_interval_ms=4_000)
    async with open_fleet(fake, policy=policy) as fleet:
        await fleet.submit_batch(**request())
    ((created, _, _),) = fake.creates
    # 1, then ×1.5 per poll (1.5, 2.25, 3.375), capped at poll_max_interval_ms (4).
    assert relative(fake.polls, created) == [1.0, 2.5, 4.75, 8.125, 12.125, 16.125, 20.125]
    assert [bid for _, bid in fake.polls] == ["fakebatch_1"] * 7
    assert relative(fake.result_fetches, created) == [20.125]


@pytest.mark.parametrize("turnaround", [600.0, 3_600.0, 86_400.0])
async def test_polls_of_a_long_batch_grow_with_the_log_of_its_turnaround(
    turnaround: float,
) -> None:
    # Past poll_max_interval_ms the interval follows a tenth of the batch's age: each poll
    # then looks at most 10 % later than the one before (in age), so polls grow with
    # log(turnaround) and the end is seen at most ~10 % of the turnaround late.
    fake = FakeProvider(turnaround=turnaround)
    policy = dataclasses.replace(EACH_ALONE, poll_max_interval_ms=60_000)
    async with open_fleet(fake, policy=policy) as fleet:
        await fleet.submit_batch(**request())
    ((created, _, _),) = fake.creates
    ages = relative(fake.polls, created)
    gaps = [b - a for a, b in itertools.pairwise([0.0, *ages])]
    for age, gap in zip(ages, gaps, strict=True):
        assert gap <= max(60.0, (age - gap) * 0.1) + 1e-3, (age, gap)
    assert ages[-1] >= turnaround
    assert ages[-1] - turnaround <= 0.1 * turnaround + 1e-3
    # The 60 s cap alone would need turnaround / 60 polls (1,440 for a day).
    bound = 10 + 9 + math.log(max(turnaround, 600) / 600) / math.log(1.1) + 2
    assert len(ages) <= bound, (len(ages), bound)


async def test_poll_uses_the_policy_interval() -> None:
    fake = FakeProvider(turnaround=3.0)
    policy = RoutingPolicy(
        batch_window_ms=0,
        batch_min_size=1,
        batch_max_size=1,
        poll_interval_ms=250,
        poll_max_interval_ms=500,
    )
    async with open_fleet(fake, policy=policy) as fleet:
        await fleet.submit_batch(**request())
    ((created, _, _),) = fake.creates
    assert relative(fake.polls, created) == [0.25, 0.625, 1.125, 1.625, 2.125, 2.625, 3.125]


async def test_transient_poll_errors_do_not_lose_the_batch() -> None:
    failures = [0]

    def on_poll(batch: Any) -> None:
        if failures[0] < 3:
            failures[0] += 1
            raise FakeError(ErrorKind.SERVER, "overloaded")

    fake = FakeProvider(turnaround=3.0, on_poll=on_poll)
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in "abc":
            tg.start_soon(call_batch, fleet, text, out)
    ((created, _, _),) = fake.creates
    # Three failed polls, still on the backoff schedule, then the one that sees the end.
    assert relative(fake.polls, created) == [1.0, 2.5, 4.75, 8.125]
    assert len(fake.result_fetches) == 1
    for text in "abc":
        message(out, text)
    assert fleet.stats.succeeded == 3
    assert fleet.stats.failed == 0


@pytest.mark.parametrize(
    "kind", [ErrorKind.CONNECTION, ErrorKind.RATE_LIMITED, ErrorKind.NOT_FOUND]
)
async def test_other_transient_poll_errors_are_retried(kind: ErrorKind) -> None:
    failures = [0]

    def on_poll(batch: Any) -> None:
        if failures[0] < 2:
            failures[0] += 1
            raise FakeError(kind)

    fake = FakeProvider(turnaround=0.5, on_poll=on_poll)
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        result = await fleet.submit_batch(**request("r"))
    assert result.text == "r"
    assert len(fake.polls) == 3


# -- results (§5) ---------------------------------------------------------------------------


def by_text(custom_id: str, params: dict[str, Any]) -> ItemResult:
    text = text_of(params)
    if text == "errored":
        return ItemResult("errored", error_type="invalid_request_error", message="bad")
    if text == "expired":
        return ItemResult("expired")
    if text == "canceled":
        return ItemResult("canceled")
    return ItemResult("succeeded", value=FakeMessage(custom_id, text, "batch"))


async def test_each_result_kind_reaches_its_caller() -> None:
    fake = FakeProvider(outcome=by_text)
    out: Outcomes = {}
    texts = ["errored", "expired", "canceled", "fine"]
    policy = dataclasses.replace(POLICY, batch_min_size=4)
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(call_batch, fleet, text, out)
    ((_, batch_id, ids),) = fake.creates
    texts_by_id = {cid: text_of(p) for cid, p in fake.batches[batch_id].requests}

    errored = out["errored"]
    assert type(errored) is BatchRequestError
    assert errored.error_type == "invalid_request_error"
    assert errored.message == "bad"
    assert errored.batch_id == batch_id
    assert texts_by_id[errored.custom_id] == "errored"
    assert "invalid_request_error" in str(errored)

    expired = out["expired"]
    assert type(expired) is BatchRequestExpiredError
    assert expired.batch_id == batch_id
    assert texts_by_id[expired.custom_id] == "expired"

    canceled = out["canceled"]
    assert type(canceled) is BatchRequestCanceledError
    assert canceled.batch_id == batch_id
    assert texts_by_id[canceled.custom_id] == "canceled"

    assert message(out, "fine").custom_id in ids
    stats = fleet.stats
    assert (stats.succeeded, stats.errored, stats.expired, stats.canceled) == (1, 1, 1, 1)
    assert (stats.failed, stats.withdrawn) == (0, 0)


Line = tuple[str, ItemResult]


class DroppingProvider(FakeProvider):
    """A fake whose results stream has no line for requests whose text is ``drop``."""

    async def results(self, batch_id: str) -> AsyncGenerator[tuple[str, ItemResult]]:
        texts = {cid: text_of(p) for cid, p in self.batches[batch_id].requests}
        async with aclosing(super().results(batch_id)) as lines:
            async for custom_id, result in lines:
                if texts[custom_id] != "drop":
                    yield custom_id, result


async def test_missing_result_line() -> None:
    fake = DroppingProvider()
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in ("keep", "drop", "also"):
            tg.start_soon(call_batch, fleet, text, out)
    ((_, batch_id, ids),) = fake.creates
    missing = out["drop"]
    assert type(missing) is BatchResultMissingError
    assert missing.batch_id == batch_id
    assert missing.custom_id in ids
    assert missing.custom_id not in {message(out, t).custom_id for t in ("keep", "also")}
    assert (fleet.stats.succeeded, fleet.stats.failed) == (2, 1)


async def test_broken_results_stream_is_fetched_again() -> None:
    events: list[ResultEvent] = []
    fake = BreakingProvider()
    out: Outcomes = {}
    texts = ["a", "b", "c", "d"]
    policy = dataclasses.replace(POLICY, batch_min_size=4)
    async with (
        open_fleet(fake, policy=policy, on_result=events.append) as fleet,
        anyio.create_task_group() as tg,
    ):
        for text in texts:
            tg.start_soon(call_batch, fleet, text, out)
    assert fake.broke
    first, second = relative(fake.result_fetches, fake.creates[0][0])
    assert second - first == 1.0  # one poll_interval later
    for text in texts:
        message(out, text)
    # Each caller resolved exactly once, though the first two lines came twice.
    assert sorted(e.custom_id or "" for e in events) == sorted(fake.sent_ids)
    assert fleet.stats.succeeded == 4
    assert fleet.stats.failed == 0


# -- create failures (§5) -------------------------------------------------------------------


async def test_refused_create_fails_only_that_batch() -> None:
    raised: list[FakeError] = []
    refused_texts: list[str] = []

    def on_create(reqs: list[tuple[str, dict[str, Any]]]) -> None:
        if not raised:
            refused_texts.extend(text_of(p) for _, p in reqs)
            raised.append(FakeError(ErrorKind.SERVER, "internal server error"))
            raise raised[0]

    fake = FakeProvider(on_create=on_create)
    out: Outcomes = {}
    texts = ["a", "b", "c", "d"]
    policy = dataclasses.replace(POLICY, batch_min_size=2, batch_max_size=2)
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(call_batch, fleet, text, out)
    assert len(refused_texts) == 2
    (accepted,) = fake.batches.values()
    accepted_texts = [text_of(p) for _, p in accepted.requests]
    assert sorted(refused_texts + accepted_texts) == texts
    errors = [out[t] for t in refused_texts]
    for error in errors:
        assert type(error) is BatchSubmitError
        assert error.__cause__ is raised[0]
        assert "batch of 2 calls" in str(error)
        assert "submit_sync()" in str(error)
    assert errors[0] is not errors[1]  # one error object per caller
    for text in accepted_texts:
        message(out, text)
    stats = fleet.stats
    assert (stats.batches_submitted, stats.succeeded, stats.failed) == (1, 2, 2)
    assert stats.in_flight_batches == 0


async def test_refused_create_error_carries_the_batch_size() -> None:
    def on_create(reqs: list[tuple[str, dict[str, Any]]]) -> None:
        raise FakeError(ErrorKind.FATAL, "request_too_large")

    fake = FakeProvider(on_create=on_create)
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in "abc":
            tg.start_soon(call_batch, fleet, text, out)
    for text in "abc":
        error = out[text]
        assert type(error) is BatchSubmitError
        assert error.batch_size == 3


class AmbiguousCreateProvider(FakeProvider):
    """The first create reaches the provider, but its answer is lost (connection dropped)."""

    dropped = 0

    async def create_batch(self, requests: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
        batch_id = await super().create_batch(requests)
        if not self.dropped:
            self.dropped += 1
            raise FakeError(ErrorKind.CONNECTION, "connection reset after send")
        return batch_id


async def test_ambiguous_create_that_happened_is_adopted() -> None:
    fake = AmbiguousCreateProvider()
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in "abc":
            tg.start_soon(call_batch, fleet, text, out)
    assert fake.dropped == 1
    assert list(fake.batches) == ["fakebatch_1"]  # exactly one batch billed
    for text in "abc":
        assert message(out, text).custom_id in fake.sent_ids
    assert fleet.stats.batches_submitted == 1
    assert fleet.stats.succeeded == 3


async def test_ambiguous_create_that_did_not_happen_is_sent_again() -> None:
    lost = [0]

    def on_create(reqs: list[tuple[str, dict[str, Any]]]) -> None:
        if not lost[0]:
            lost[0] += 1
            raise FakeError(ErrorKind.CONNECTION, "connect timeout")

    fake = FakeProvider(on_create=on_create)
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in "abc":
            tg.start_soon(call_batch, fleet, text, out)
    assert lost[0] == 1
    assert list(fake.batches) == ["fakebatch_1"]
    for text in "abc":
        message(out, text)
    assert fleet.stats.batches_submitted == 1


class RacingCreatesProvider(FakeProvider):
    """Two creates at once. The first makes its batch at 0 and its answer is lost at 0.5 s; the
    second makes its batch at 0.25 s (a slow upload) and its answer comes back at 1.25 s."""

    calls = 0

    async def create_batch(self, requests: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
        self.calls += 1
        nth = self.calls
        if nth == 2:
            await anyio.sleep(0.25)
        batch_id = await super().create_batch(requests)
        if nth == 1:
            await anyio.sleep(0.5)
            raise FakeError(ErrorKind.CONNECTION, "connection reset after send")
        if nth == 2:
            await anyio.sleep(1.0)
        return batch_id


async def test_ambiguous_create_does_not_adopt_a_concurrent_flushs_batch() -> None:
    fake = RacingCreatesProvider()
    out: Outcomes = {}
    texts = ["a", "b", "c", "d"]
    policy = dataclasses.replace(POLICY, batch_min_size=2, batch_max_size=2)
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(call_batch, fleet, text, out)
    assert len(fake.batches) == 2
    for text in texts:
        message(out, text)
    assert fleet.stats.batches_submitted == 2


# -- callers cancelled (§5) -----------------------------------------------------------------


async def test_queued_caller_cancelled_is_withdrawn_never_sent() -> None:
    fake = FakeProvider()
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        tg.start_soon(call_batch_for, fleet, "leaves", out, 0.5)
        await anyio.sleep(0.25)
        tg.start_soon(call_batch, fleet, "stays", out)
        await anyio.sleep(0.5)
        await anyio.wait_all_tasks_blocked()
        assert out == {"leaves": "cancelled"}
        assert fleet.stats.queued == 1
    # Flushed at the remaining call's own deadline, without the withdrawn one.
    assert creates(fake, t0) == [(1.25, 1)]
    stays = message(out, "stays")
    assert fake.sent_ids == [stays.custom_id]
    assert [text_of(p) for b in fake.batches.values() for _, p in b.requests] == ["stays"]
    stats = fleet.stats
    assert (stats.batched_calls, stats.withdrawn, stats.succeeded) == (2, 1, 1)
    assert stats.results_dropped == 0


async def test_caller_cancelled_after_flush_has_its_result_dropped() -> None:
    fake = FakeProvider(turnaround=5.0)
    out: Outcomes = {}
    policy = dataclasses.replace(POLICY, batch_min_size=2)
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        tg.start_soon(call_batch_for, fleet, "leaves", out, 2.0)
        tg.start_soon(call_batch, fleet, "stays", out)
    assert out["leaves"] == "cancelled"
    message(out, "stays")
    ((_, batch_id, ids),) = fake.creates
    assert len(ids) == 2  # it was sent, then its caller left
    assert fake.batches[batch_id].cancelled_at is None
    stats = fleet.stats
    assert (stats.withdrawn, stats.succeeded, stats.results_dropped) == (1, 1, 1)


@pytest.mark.parametrize("leaving", [0, 1])
async def test_batch_that_ended_is_not_cancelled_at_the_provider(leaving: int) -> None:
    fake = FakeProvider(turnaround=5.0)
    out: Outcomes = {}
    policy = dataclasses.replace(POLICY, batch_min_size=2)
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        tg.start_soon(call_batch, fleet, "stays", out)
        if leaving:
            tg.start_soon(call_batch_for, fleet, "leaves", out, 2.0)
        else:
            tg.start_soon(call_batch, fleet, "stays too", out)
    message(out, "stays")
    assert fleet.stats.succeeded == 2 - leaving
    assert fake.cancels == []


async def test_batch_whose_callers_all_left_is_cancelled_and_no_longer_polled() -> None:
    fake = FakeProvider(turnaround=100.0)
    out: Outcomes = {}
    policy = dataclasses.replace(POLICY, batch_min_size=2)
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        tg.start_soon(call_batch_for, fleet, "a", out, 5.0)
        tg.start_soon(call_batch_for, fleet, "b", out, 5.0)
    exited = anyio.current_time()
    assert out == {"a": "cancelled", "b": "cancelled"}
    assert relative(fake.cancels, t0) == [5.0]
    assert [bid for _, bid in fake.cancels] == ["fakebatch_1"]
    assert fake.batches["fakebatch_1"].cancelled_at == t0 + 5.0
    # Polls at 1, 2.5, 4.75, then none: the poll loop stopped when the last caller left.
    assert relative(fake.polls, t0) == [1.0, 2.5, 4.75]
    assert fake.result_fetches == []
    assert exited - t0 == 5.0
    stats = fleet.stats
    assert (stats.withdrawn, stats.succeeded, stats.in_flight_batches) == (2, 0, 0)


async def test_cancelled_direct_call_is_cancelled_and_withdrawn() -> None:
    fake = FakeProvider(direct_latency=10.0)
    async with open_fleet(fake, policy=POLICY) as fleet:
        t0 = anyio.current_time()
        with anyio.move_on_after(1.0) as scope:
            await fleet.submit(latency_budget_ms=1_000, **request())
        assert scope.cancelled_caught
        assert anyio.current_time() - t0 == 1.0
    assert len(fake.direct_calls) == 1
    stats = fleet.stats
    assert (stats.sync_calls, stats.withdrawn, stats.succeeded) == (1, 1, 0)
    assert stats.wait_ms(Route.DIRECT).max == 1_000.0


# -- shutdown (§5) --------------------------------------------------------------------------


async def test_drain_timeout_cancels_in_flight_batches() -> None:
    fake = FakeProvider(turnaround=1_000.0)
    out: Outcomes = {}
    async with anyio.create_task_group() as tg:
        async with open_fleet(fake, policy=POLICY, drain_timeout_ms=5_000) as fleet:
            tg.start_soon(call_batch, fleet, "a", out)
            tg.start_soon(call_batch, fleet, "b", out)
            await anyio.wait_all_tasks_blocked()
            body_done = anyio.current_time()
        exited = anyio.current_time()
    assert exited - body_done == 5.0
    assert creates(fake, body_done) == [(0.0, 2)]
    assert fleet.stats.flushes["drain"] == 1
    for text in "ab":
        error = out[text]
        assert type(error) is FleetClosedError
        assert "drain_timeout_ms" in str(error)
    assert [(t - body_done, bid) for t, bid in fake.cancels] == [(5.0, "fakebatch_1")]
    assert fleet.stats.failed == 2
    assert fleet.stats.in_flight_batches == 0


async def test_drain_timeout_not_reached_changes_nothing() -> None:
    fake = FakeProvider(turnaround=1.0)
    out: Outcomes = {}
    async with anyio.create_task_group() as tg:
        async with open_fleet(fake, policy=POLICY, drain_timeout_ms=60_000) as fleet:
            tg.start_soon(call_batch, fleet, "a", out)
            await anyio.wait_all_tasks_blocked()
            body_done = anyio.current_time()
        exited = anyio.current_time()
    message(out, "a")
    assert exited - body_done == 1.0
    assert fake.cancels == [] or fake.batches["fakebatch_1"].cancelled_at is None


async def test_exception_in_body_propagates_unwrapped_and_aborts() -> None:
    fake = FakeProvider(turnaround=100.0)
    fleet = FleetDispatcher(fake, policy=POLICY)
    out: Outcomes = {}

    async def run(tg: TaskGroup) -> None:
        async with fleet:
            for text in "abc":  # a size flush: in flight
                tg.start_soon(call_batch, fleet, text, out)
            await anyio.sleep(2.0)
            for text in ("q1", "q2"):  # queued
                tg.start_soon(call_batch, fleet, text, out)
            await anyio.sleep(0.25)
            assert fleet.stats.queued == 2
            assert fleet.stats.in_flight_batches == 1
            raise ValueError("boom")

    async with anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        with pytest.raises(ValueError, match="boom") as excinfo:
            await run(tg)
        exited = anyio.current_time()
    assert type(excinfo.value) is ValueError
    assert exited - t0 == 2.25
    # Queued callers were told, and never sent.
    for text in ("q1", "q2"):
        assert type(out[text]) is FleetClosedError
    assert len(fake.creates) == 1
    assert sorted(text_of(p) for _, p in fake.batches["fakebatch_1"].requests) == list("abc")
    # In-flight callers were told, and their batch was cancelled at the provider.
    for text in "abc":
        assert type(out[text]) is FleetClosedError
    assert [(t - t0, bid) for t, bid in fake.cancels] == [(2.25, "fakebatch_1")]
    stats = fleet.stats
    assert (stats.failed, stats.queued, stats.in_flight_batches) == (5, 0, 0)
    assert fleet.closed


async def test_outer_cancellation_aborts_queued_callers() -> None:
    fake = FakeProvider()
    out: Outcomes = {}
    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(0.5) as scope:
            async with open_fleet(fake, policy=POLICY) as fleet:
                t0 = anyio.current_time()
                for text in ("q1", "q2"):
                    tg.start_soon(call_batch, fleet, text, out)
                await anyio.sleep_forever()
        exited = anyio.current_time()
    assert scope.cancelled_caught
    assert exited - t0 == 0.5
    assert fake.creates == []
    for text in ("q1", "q2"):
        error = out[text]
        assert type(error) is FleetClosedError
        assert "Submit it again" in str(error)
    assert (fleet.stats.failed, fleet.stats.queued) == (2, 0)
    assert fleet.closed


async def _outer_cancellation_with_a_batch_in_flight(*, shield_body: bool) -> None:
    fake = FakeProvider(turnaround=100.0)
    out: Outcomes = {}
    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(10.0) as scope:
            async with open_fleet(fake, policy=POLICY) as fleet:
                t0 = anyio.current_time()
                for text in "abc":
                    tg.start_soon(call_batch, fleet, text, out)
                await anyio.sleep(9.0)
                tg.start_soon(call_batch, fleet, "queued", out)
                if shield_body:
                    # The body is busy (shielded) when the outer deadline passes; it sees
                    # the cancellation 1 s later, as the fleet's own tasks already have.
                    with anyio.CancelScope(shield=True):
                        await anyio.sleep(2.0)
                await anyio.sleep_forever()
        exited = anyio.current_time()
    assert scope.cancelled_caught
    assert exited - t0 == (11.0 if shield_body else 10.0)
    assert len(fake.creates) == 1
    # The batch nobody waits for any more was cancelled at the provider, not left running.
    assert [bid for _, bid in fake.cancels] == ["fakebatch_1"]
    assert fake.batches["fakebatch_1"].cancelled_at is not None
    for text in ("a", "b", "c", "queued"):
        assert type(out[text]) is FleetClosedError, out[text]
    assert fleet.stats.failed == 4


async def test_outer_cancellation_cancels_in_flight_batches_at_the_provider() -> None:
    await _outer_cancellation_with_a_batch_in_flight(shield_body=True)


@pytest.mark.parametrize("attempt", range(8))
async def test_outer_cancellation_cancels_in_flight_batches_in_any_task_order(
    attempt: int,
) -> None:
    # Whether the body or the fleet's batch task sees the cancellation first (random on
    # trio), the batch is cancelled at the provider and its callers told why. Repeated so
    # both orders occur.
    await _outer_cancellation_with_a_batch_in_flight(shield_body=False)


async def test_abort_while_a_create_is_in_flight_cancels_the_batch_it_made() -> None:
    async def on_create(reqs: list[tuple[str, dict[str, Any]]]) -> None:
        await anyio.sleep(2.0)

    fake = FakeProvider(turnaround=100.0, on_create=on_create)
    out: Outcomes = {}

    async def run(tg: TaskGroup) -> None:
        async with open_fleet(fake, policy=EACH_ALONE) as fleet:
            tg.start_soon(call_batch, fleet, "a", out)
            await anyio.sleep(1.0)
            raise RuntimeError("abort")

    async with anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        with pytest.raises(RuntimeError, match="abort"):
            await run(tg)
    # The create (sent at 0, answered at 2) was awaited, then its batch cancelled.
    assert [(t - t0, bid) for t, bid, _ in fake.creates] == [(2.0, "fakebatch_1")]
    assert [(t - t0, bid) for t, bid in fake.cancels] == [(2.0, "fakebatch_1")]
    assert type(out["a"]) is FleetClosedError


# -- stats and observability (§6) -----------------------------------------------------------


# Snapshot fields the live view has under the same name (wait_ms is a method there).
LIVE_FIELDS = (
    "sync_calls",
    "batched_calls",
    "batches_submitted",
    "queued",
    "in_flight_batches",
    "succeeded",
    "errored",
    "expired",
    "canceled",
    "withdrawn",
    "failed",
    "results_dropped",
    "flushes",
    "tokens",
    "cost",
    "unpriced_calls",
)


def test_live_view_has_every_snapshot_field() -> None:
    from llmfleet import FleetStats

    stats = FleetStats()
    snap = stats.snapshot()
    for f in dataclasses.fields(StatsSnapshot):
        if f.name != "wait_ms":
            assert getattr(stats, f.name) == getattr(snap, f.name), f.name


async def test_stats_snapshot_is_frozen_and_equal_to_the_live_view() -> None:
    fake = FakeProvider(direct_latency=0.5)
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        await fleet.submit_sync(**request("d"))
        for text in ("a", "b"):
            tg.start_soon(call_batch, fleet, text, out)
        await anyio.wait_all_tasks_blocked()
        snap = fleet.stats.snapshot()
        live = fleet.stats
        assert snap.wait_ms == {r: live.wait_ms(r) for r in Route}
        for name in LIVE_FIELDS:
            assert getattr(snap, name) == getattr(live, name), name
        assert (snap.sync_calls, snap.batched_calls, snap.queued) == (1, 2, 2)
        with pytest.raises(dataclasses.FrozenInstanceError):
            snap.queued = 0  # type: ignore[misc]
        with pytest.raises(TypeError):
            snap.flushes["window"] = 5  # type: ignore[index]
        with pytest.raises(AttributeError):
            live.sync_calls = 0  # type: ignore[misc]
    # Taken before the flush: it did not follow the live figures.
    assert snap.queued == 2
    assert snap.flushes["window"] == 0
    assert fleet.stats.queued == 0
    assert fleet.stats.flushes["window"] == 1
    assert fleet.stats.snapshot() != snap


async def test_waits_tokens_and_cost_per_route() -> None:
    fake = FakeProvider(direct_latency=0.5, turnaround=1.0)
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        await fleet.submit_sync(**request("d1"))
        await fleet.submit(latency_budget_ms=10, **request("d2"))
        for text in ("a", "b"):
            tg.start_soon(call_batch, fleet, text, out)
    stats = fleet.stats
    # Direct: 0.5 s each. Batch: window 1 s, ends 1 s later, seen by the first poll.
    assert stats.wait_ms(Route.DIRECT).count == 2
    assert stats.wait_ms(Route.DIRECT).max == 500.0
    assert stats.wait_ms(Route.DIRECT).p50 == 500.0
    batch_wait = stats.wait_ms(Route.BATCH)
    assert (batch_wait.count, batch_wait.p50, batch_wait.p95, batch_wait.max) == (
        2,
        2_000.0,
        2_000.0,
        2_000.0,
    )
    # FakeMessage usage: 10 input, 5 output tokens.
    assert stats.tokens[Route.DIRECT] == TokenUsage(20, 10)
    assert stats.tokens[Route.BATCH] == TokenUsage(20, 10)
    # claude-haiku-4-5: $1 / $5 per MTok; two calls = 70 µ$ at list, batch paid half.
    list_price = Decimal("0.000070")
    assert stats.cost[Route.DIRECT] == Cost(list_price, list_price)
    assert stats.cost[Route.BATCH] == Cost(list_price, list_price / 2)
    assert stats.snapshot().saving == Decimal("0.000035")
    assert stats.unpriced_calls == 0


async def test_unknown_model_counts_tokens_but_no_cost() -> None:
    fake = FakeProvider()
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        await fleet.submit_sync(**request("d", model="mystery-model-1"))
        await fleet.submit_batch(**request("b", model="mystery-model-1"))
        await fleet.submit_batch(**request("priced"))
    stats = fleet.stats
    assert stats.unpriced_calls == 2
    assert stats.tokens[Route.DIRECT] == TokenUsage(10, 5)
    assert stats.tokens[Route.BATCH] == TokenUsage(20, 10)
    assert stats.cost[Route.DIRECT] == Cost()
    assert stats.cost[Route.BATCH] == Cost(Decimal("0.000035"), Decimal("0.0000175"))


async def test_on_result_hook_gets_one_event_per_call() -> None:
    events: list[ResultEvent] = []
    fake = FakeProvider(direct_latency=0.25)
    out: Outcomes = {}
    async with (
        open_fleet(fake, policy=POLICY, on_result=events.append) as fleet,
        anyio.create_task_group() as tg,
    ):
        await fleet.submit_sync(**request("d"))
        for text in "abc":
            tg.start_soon(call_batch, fleet, text, out)
    assert len(events) == 4
    direct, *batched = events
    assert (direct.route, direct.outcome, direct.batch_id, direct.custom_id) == (
        Route.DIRECT,
        "succeeded",
        None,
        None,
    )
    assert direct.wait_s == 0.25
    assert direct.model == "claude-haiku-4-5"
    assert direct.usage == TokenUsage(10, 5)
    assert direct.cost == Cost(Decimal("0.000035"), Decimal("0.000035"))
    for event in batched:
        assert (event.route, event.outcome, event.batch_id) == (
            Route.BATCH,
            "succeeded",
            "fakebatch_1",
        )
        assert event.cost == Cost(Decimal("0.000035"), Decimal("0.0000175"))
    assert sorted(e.custom_id or "" for e in batched) == sorted(fake.sent_ids)
    assert sorted(e.custom_id or "" for e in batched) == sorted(
        message(out, t).custom_id or "" for t in "abc"
    )


async def test_failing_on_result_hook_does_not_break_the_fleet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hook(event: ResultEvent) -> None:
        raise RuntimeError("metrics backend down")

    fake = FakeProvider()
    with caplog.at_level(logging.ERROR, logger="llmfleet"):
        async with open_fleet(fake, policy=EACH_ALONE, on_result=hook) as fleet:
            result = await fleet.submit_batch(**request("x"))
    assert result.text == "x"
    assert fleet.stats.succeeded == 1
    assert any("on_result" in r.getMessage() for r in caplog.records)


async def test_logs_flush_reason_and_batch_end(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeProvider()
    out: Outcomes = {}
    with caplog.at_level(logging.DEBUG, logger="llmfleet"):
        async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
            for text in "ab":
                tg.start_soon(call_batch, fleet, text, out)
    messages = [r.getMessage() for r in caplog.records if r.name == "llmfleet"]
    flushes = [m for m in messages if "flush" in m]
    assert len(flushes) == 1
    assert "window" in flushes[0]
    assert "2" in flushes[0]
    assert any("fakebatch_1" in m and "ended" in m for m in messages)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "llmfleet")
    assert fleet.stats.succeeded == 2


# -- backpressure (§3 max_queued) -----------------------------------------------------------


async def test_submit_waits_for_room_beyond_max_queued() -> None:
    fake = FakeProvider()
    policy = dataclasses.replace(POLICY, batch_min_size=5, max_queued=2)
    out: Outcomes = {}
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        t0 = anyio.current_time()
        for text in ("a", "b", "c"):
            tg.start_soon(call_batch, fleet, text, out)
        await anyio.wait_all_tasks_blocked()
        assert fleet.stats.queued == 2
        assert fleet.stats.batched_calls == 2
    # a and b flushed by the window at 1.0; c got room then and waited its own window.
    assert creates(fake, t0) == [(1.0, 2), (2.0, 1)]
    for text in "abc":
        message(out, text)


async def test_submit_waiting_for_room_is_refused_when_the_fleet_closes() -> None:
    fake = FakeProvider()
    policy = dataclasses.replace(POLICY, batch_min_size=5, max_queued=1)
    out: Outcomes = {}
    async with anyio.create_task_group() as tg:
        async with open_fleet(fake, policy=policy) as fleet:
            tg.start_soon(call_batch, fleet, "a", out)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(call_batch, fleet, "b", out)
            await anyio.wait_all_tasks_blocked()
    message(out, "a")
    assert type(out["b"]) is FleetClosedError
    assert fake.sent_ids == [message(out, "a").custom_id]


# -- outputs are the provider's own objects -------------------------------------------------


async def test_direct_errors_propagate_as_the_providers_own() -> None:
    error = FakeError(ErrorKind.FATAL, "invalid x-api-key")

    def on_call(params: Mapping[str, Any]) -> None:
        raise error

    fake = FakeProvider(on_call=on_call)
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        with pytest.raises(FakeError) as excinfo:
            await fleet.submit_sync(**request())
    assert excinfo.value is error
    assert (fleet.stats.errored, fleet.stats.failed) == (1, 0)


async def test_batch_result_errors_are_batch_result_errors() -> None:
    fake = FakeProvider(outcome=by_text)
    async with open_fleet(fake, policy=EACH_ALONE) as fleet:
        with pytest.raises(BatchResultError) as excinfo:
            await fleet.submit(latency_budget_ms=60_000, **request("expired"))
    assert excinfo.value.batch_id == "fakebatch_1"
    assert excinfo.value.custom_id == fake.sent_ids[0]


class _UnderMeasures(FakeProvider):
    """An adapter whose prepare() lets through a request over its own byte limit."""

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        _, copy = super().prepare(custom_id, params)
        text = str(params["messages"][0]["content"])
        return (self.max_batch_bytes if text.startswith("huge") else 100), copy


async def test_a_request_over_the_byte_limit_fails_alone_even_if_prepare_let_it_through() -> None:
    """The fleet checks each prepared size against the provider's limit at submit: a request
    no batch can carry fails with UnbatchableRequestError, and the fleet and its other
    callers go on (the flusher never sees it)."""
    fake = _UnderMeasures(turnaround=1.0)
    out: dict[str, object] = {}

    async def call(text: str) -> None:
        try:
            out[text] = await fleet.submit_batch(**request(text))
        except Exception as exc:
            out[text] = exc

    policy = RoutingPolicy(batch_window_ms=1_000, batch_min_size=2, poll_interval_ms=500)
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        for text in ("a", "huge b", "c"):
            tg.start_soon(call, text)
    assert isinstance(out["huge b"], UnbatchableRequestError)
    assert "submit_sync()" in str(out["huge b"])
    assert [m.text for t in "ac" if isinstance(m := out[t], FakeMessage)] == ["a", "c"]
    assert len(fake.creates) == 1


async def test_batched_submit_reads_the_model_once() -> None:
    # The batch route's hot path (benchmarks/bench_sdk_floor.py): submit reads the model for
    # the turnaround estimate and hands it on, rather than reading the params again.
    reads: list[str] = []

    class Counting(FakeProvider):
        def model_of(self, params: Mapping[str, Any]) -> str:
            reads.append(str(params.get("model", "")))
            return super().model_of(params)

    async with open_fleet(Counting(), policy=EACH_ALONE) as fleet:
        result = await fleet.submit(latency_budget_ms=60_000, **request("q"))
    assert result.route == "batch"
    assert len(reads) == 1


def test_batched_tokens_are_summed_exactly_across_folds() -> None:
    # A batched call's tokens are held and summed per 1,024 (Tally.fold_tokens): the sums,
    # per model, and the calls counted must be exact whether or not a fold has run.
    from llmfleet import FleetStats

    stats = FleetStats()
    models = ("m-a", "m-b")
    for i in range(2_500):
        stats._outcome(Route.BATCH, "succeeded", models[i % 2], 0.5, (i, 2 * i, i % 3, 1), None)
    expected = TokenUsage(
        sum(range(2_500)), 2 * sum(range(2_500)), sum(i % 3 for i in range(2_500)), 2_500
    )
    assert stats.tokens[Route.BATCH] == expected
    assert stats.succeeded == 2_500
    # Read again (the held tuples were folded by the first read), and after more calls.
    stats._outcome(Route.BATCH, "succeeded", "m-a", 0.5, (1, 1, 1, 1), None)
    assert stats.tokens[Route.BATCH] == expected + TokenUsage(1, 1, 1, 1)
    # Neither model has a price: every call is unpriced, each counted once.
    assert stats.unpriced_calls == 2_501


@pytest.mark.parametrize(
    "spread",
    ["one batch", "wide", "one bucket", "on the edges", "zeros"],
)
def test_histogram_fold_buckets_every_wait_exactly(spread: str) -> None:
    # Histogram.fold counts waits that span few buckets by sorting and bisecting, others
    # one by one: both must put every wait in the bucket int(log1p(ms) / log(1.01)) says,
    # a wait on a bucket's edge included (however its float rounds).
    import random
    from collections import Counter

    from llmfleet._tally import _BASE, Histogram

    rng = random.Random(spread)
    edges = [math.expm1(k * _BASE) for k in range(600, 604)]
    nudges = (1 - 2e-16, 1 - 1e-16, 1.0, 1 + 1e-16, 1 + 2e-16)
    makers: dict[str, Callable[[], list[float]]] = {
        "one batch": lambda: [rng.uniform(2000, 3000) for _ in range(1024)],
        "wide": lambda: [rng.lognormvariate(5, 3) for _ in range(1024)],
        "one bucket": lambda: [1500.0 + rng.random() for _ in range(1024)],
        "on the edges": lambda: [rng.choice(edges) * rng.choice(nudges) for _ in range(1024)],
        "zeros": lambda: [0.0] * 1000 + [1e-9] * 24,
    }
    make = makers[spread]
    for _ in range(20):
        waits = make()
        histogram = Histogram()
        histogram.pending = list(waits)
        histogram.fold()
        assert histogram._buckets == Counter(int(math.log1p(ms) / _BASE) for ms in waits)
        assert (histogram.count, histogram.max) == (len(waits), max(waits))
