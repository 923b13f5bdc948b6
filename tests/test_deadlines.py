"""docs/design.md §8: the latency budget is a promise. Virtual time, both backends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfleet import DeadlineExceededError, FleetClosedError, Route, RoutingPolicy, open_fleet
from llmfleet._estimate import Estimator

from fakes import FakeBatch, FakeMessage, FakeProvider, request

MODEL = "claude-haiku-4-5"


def test_estimator_follows_a_changed_turnaround() -> None:
    est = Estimator(0.9)
    assert est.estimate(MODEL) is None  # no data, no prior: no estimate
    for _ in range(30):
        est.observe(MODEL, 10.0)
    assert est.estimate(MODEL) == 10.0
    seen = 0
    while est.estimate(MODEL) != 100.0 and seen < 10:
        est.observe(MODEL, 100.0)
        seen += 1
    assert est.estimate(MODEL) == 100.0
    assert seen <= 2  # the newest observations weigh most: it follows within two batches
    assert Estimator(0.9, prior=42.0).estimate("other") == 42.0


def policy(**kw: Any) -> RoutingPolicy:
    base: dict[str, Any] = {
        "sync_max_latency_ms": 1_000,
        "batch_min_size": 100,
        "batch_max_size": 100,
        "batch_window_ms": 5_000,
        "poll_interval_ms": 1_000,
        "poll_max_interval_ms": 4_000,
        "escalation_margin_ms": 2_000,
        "batch_api_rpm": None,
    }
    base.update(kw)
    return RoutingPolicy(**base)


async def test_with_no_data_a_loose_budget_is_batched_and_escalated_in_time() -> None:
    fake = FakeProvider(turnaround=600.0, direct_latency=0.5)
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy()) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request("late"))
    took = anyio.current_time() - start
    assert isinstance(reply, FakeMessage)
    assert reply.route == "direct"  # answered by the escalation
    assert took <= 60.0
    stats = fleet.stats
    assert stats.batched_calls == 1  # routed to the batch with no estimate ...
    assert stats.escalations == 1  # ... and escalated before its deadline
    assert stats.routed_by_deadline == 0
    # Its batch had no live caller left: cancelled at the provider, not billed.
    assert [bid for _, bid in fake.cancels] == ["fakebatch_1"]
    # Escalated at deadline - (direct p95 unknown: 0) - margin 2 s = 58 s after submit.
    assert fake.direct_calls[0][0] - start == pytest.approx(58.0)
    assert stats.deadline_hits[Route.DIRECT] == 1
    assert stats.escalation_cost.list_price > 0


async def test_a_budget_below_the_learnt_turnaround_goes_direct() -> None:
    fake = FakeProvider(turnaround=30.0)
    async with open_fleet(fake, policy=policy(batch_min_size=1)) as fleet:
        await fleet.submit_batch(**request("learn"))  # the fleet sees a ~30 s turnaround
        reply = await fleet.submit(latency_budget_ms=10_000, **request("tight"))
    assert isinstance(reply, FakeMessage)
    assert reply.route == "direct"
    assert fleet.stats.routed_by_deadline == 1
    assert len(fake.batches) == 1


async def test_deadline_flush_comes_before_the_window() -> None:
    fake = FakeProvider(turnaround=5.0)
    pol = policy(batch_window_ms=100_000, expected_turnaround_ms=10_000, escalation_margin_ms=500)
    start = anyio.current_time()
    async with open_fleet(fake, policy=pol) as fleet:
        reply = await fleet.submit(latency_budget_ms=30_000, **request("soon"))
    assert isinstance(reply, FakeMessage)
    assert reply.route == "batch"
    # Flushed at deadline - expected turnaround = 20 s, not at the 100 s window.
    assert fake.creates[0][0] - start == pytest.approx(20.0)
    assert fleet.stats.flushes["deadline"] == 1
    assert fleet.stats.escalations == 0


async def test_fail_raises_at_the_deadline() -> None:
    fake = FakeProvider(turnaround=600.0)
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy(deadline_action="fail")) as fleet:
        with pytest.raises(DeadlineExceededError, match="latency budget"):
            await fleet.submit(latency_budget_ms=60_000, **request("late"))
        assert anyio.current_time() - start == pytest.approx(60.0)
    assert fake.direct_calls == []
    assert fleet.stats.failed == 1
    assert [bid for _, bid in fake.cancels] == ["fakebatch_1"]


async def test_wait_never_escalates() -> None:
    fake = FakeProvider(turnaround=600.0)
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy(deadline_action="wait")) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request("patient"))
    assert isinstance(reply, FakeMessage)
    assert reply.route == "batch"
    assert anyio.current_time() - start > 600
    assert fleet.stats.escalations == 0
    assert fleet.stats.deadline_misses[Route.BATCH] == 1


async def test_a_result_that_comes_after_escalation_is_dropped_and_its_cost_counted() -> None:
    # The batch ends in time, but its results download is slow: the escalation wins, and the
    # batch result (already paid at batch price) is dropped, never delivered twice.
    async def slow_results(batch: FakeBatch) -> None:
        await anyio.sleep(100)

    fake = FakeProvider(turnaround=5.0, on_results=slow_results)
    got: list[Any] = []
    async with open_fleet(fake, policy=policy(batch_min_size=1)) as fleet:
        got.append(await fleet.submit(latency_budget_ms=30_000, **request("race")))
    assert [m.route for m in got] == ["direct"]
    stats = fleet.stats
    assert stats.escalations == 1
    assert stats.results_dropped == 1
    assert stats.succeeded == 1
    # Escalation cost = the direct call + the batch price of the dropped result.
    direct = stats.cost[Route.DIRECT]
    assert stats.escalation_cost.paid == direct.paid + direct.paid / 2


DEADLINE_PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@DEADLINE_PROPERTY
@given(
    arrivals=st.lists(st.integers(0, 60), min_size=1, max_size=25),
    budgets=st.lists(st.integers(5, 400), min_size=25, max_size=25),
    turnaround=st.integers(1, 300),
    direct_latency=st.integers(0, 3),
    action=st.sampled_from(["escalate", "wait", "fail"]),
)
async def test_the_budget_is_kept_in_every_mode(
    arrivals: list[int],
    budgets: list[int],
    turnaround: int,
    direct_latency: int,
    action: str,
) -> None:
    fake = FakeProvider(turnaround=float(turnaround), direct_latency=float(direct_latency))
    pol = policy(
        deadline_action=action,
        batch_min_size=4,
        batch_max_size=8,
        batch_window_ms=10_000,
        escalation_margin_ms=1_000,
    )
    outcomes: dict[int, list[tuple[float, Any]]] = {i: [] for i in range(len(arrivals))}
    start = anyio.current_time()
    async with open_fleet(fake, policy=pol) as fleet, anyio.create_task_group() as tg:

        async def caller(i: int) -> None:
            await anyio.sleep(arrivals[i])
            try:
                value: Any = await fleet.submit(
                    latency_budget_ms=budgets[i] * 1000, **request(f"c{i}")
                )
            except DeadlineExceededError as exc:
                value = exc
            outcomes[i].append((anyio.current_time() - start, value))

        for i in range(len(arrivals)):
            tg.start_soon(caller, i)
    stats = fleet.stats
    for i, ended in outcomes.items():
        assert len(ended) == 1  # every caller resolved exactly once
        at, value = ended[0]
        deadline = arrivals[i] + budgets[i]
        if action == "escalate":
            # By the deadline plus the direct route's latency (escalated before the
            # direct p95 was known, the margin may not cover it).
            assert at <= deadline + direct_latency + 1e-6, (i, at, deadline)
            assert isinstance(value, FakeMessage)
            assert value.text == f"c{i}"
        elif action == "fail":
            if isinstance(value, DeadlineExceededError):
                assert at == pytest.approx(deadline)
            else:
                assert at <= deadline + 1e-6
        else:
            assert isinstance(value, FakeMessage)
    if action != "escalate":
        assert stats.escalations == 0
        # Direct calls only for budgets no batch could meet (never in "wait" mode).
        assert len(fake.direct_calls) == stats.routed_by_deadline
    if action == "wait":
        assert fake.direct_calls == []
    # No outcome counted twice.
    assert stats.succeeded + stats.failed == len(arrivals)
    # A batch none of whose callers still waited was cancelled, so it is not billed.
    cancelled = {bid for _, bid in fake.cancels}
    for batch in fake.batches.values():
        ids = {cid for cid, _ in batch.requests}
        if ids and batch.created_at + batch.turnaround > anyio.current_time():
            assert batch.id in cancelled


async def test_an_escalated_call_hears_why_when_the_fleet_aborts() -> None:
    # The caller lives outside the fleet (its own task group); the body raises while the
    # call's escalated direct call runs. The caller must get FleetClosedError, not hang.
    fake = FakeProvider(turnaround=600.0, direct_latency=30.0)
    heard: list[BaseException] = []

    async def caller(fleet: Any) -> None:
        try:
            await fleet.submit(latency_budget_ms=60_000, **request("late"))
        except FleetClosedError as exc:
            heard.append(exc)

    with anyio.fail_after(600), pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="crash")):
        async with anyio.create_task_group() as outer, open_fleet(fake, policy=policy()) as fleet:
            outer.start_soon(caller, fleet)
            await anyio.sleep(70)  # escalated at 58 s; its direct call takes 30 s
            assert fleet.stats.escalations == 1
            assert not heard
            raise RuntimeError("crash")
    assert len(heard) == 1
    assert "escalated direct call" in str(heard[0])
    assert fleet.stats.failed == 1
