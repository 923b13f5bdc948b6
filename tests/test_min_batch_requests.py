"""The dispatcher's hook for providers with a smallest batch (``min_batch_requests``, Bedrock's
100 records a job): the queue waits for that many calls, and a smaller flush goes direct.

On the in-memory fake, in virtual time, on both backends.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import anyio
import hypothesis.internal.conjecture.optimiser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfleet import Route, RoutingPolicy, open_fleet

from fakes import FakeMessage, FakeProvider, request, text_of
from model import Item, simulate

# Imported now, not by hypothesis deep inside the first property's run: CPython 3.11.7 can
# then fail to compile it ("SystemError: AST constructor recursion depth mismatch", fixed in
# 3.11.8), which fails the property at random.
assert hypothesis.internal.conjecture.optimiser.Optimiser is not None


def policy(**kw: Any) -> RoutingPolicy:
    base: dict[str, Any] = {
        "sync_max_latency_ms": 0,
        "batch_min_size": 2,
        "batch_max_size": 10,
        "batch_window_ms": 1_000,
        "poll_interval_ms": 100,
        "poll_max_interval_ms": 400,
        "batch_api_rpm": None,
    }
    base.update(kw)
    return RoutingPolicy(**base)


async def _submit_all(fleet: Any, texts: list[str], out: dict[str, Any]) -> None:
    async def one(text: str) -> None:
        out[text] = await fleet.submit_batch(**request(text))

    async with anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(one, text)


async def test_the_queue_waits_for_the_minimum_not_the_policys_smaller_size() -> None:
    fake = FakeProvider(turnaround=1.0, min_batch_requests=5)
    out: dict[str, Any] = {}
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy(batch_min_size=2)) as fleet:
        # Two calls reach the policy's batch_min_size, not the provider's minimum: no flush.
        async with anyio.create_task_group() as tg:
            tg.start_soon(_submit_all, fleet, ["a", "b"], out)
            await anyio.sleep(0.5)
            assert fake.creates == []
            assert fleet.stats.queued == 2
            # Three more make five: one batch, at once.
            tg.start_soon(_submit_all, fleet, ["c", "d", "e"], out)
    assert [at - start for at, _, _ in fake.creates] == [pytest.approx(0.5)]
    assert [len(ids) for _, _, ids in fake.creates] == [5]
    assert all(isinstance(v, FakeMessage) and v.route == "batch" for v in out.values())
    assert fleet.stats.below_min_batch == 0


async def test_a_window_flush_below_the_minimum_goes_direct() -> None:
    fake = FakeProvider(turnaround=100.0, min_batch_requests=5, direct_latency=0.25)
    out: dict[str, Any] = {}
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy(batch_window_ms=1_000)) as fleet:
        await _submit_all(fleet, ["a", "b", "c"], out)
    took = anyio.current_time() - start
    assert fake.creates == []
    # Sent direct when the window ran out, each answered by the direct route.
    assert [at - start for at, _ in fake.direct_calls] == [pytest.approx(1.0)] * 3
    assert {text: (v.route, v.text) for text, v in out.items()} == {t: ("direct", t) for t in "abc"}
    assert took == pytest.approx(1.25)
    stats = fleet.stats
    assert stats.below_min_batch == 3
    assert stats.escalations == 0
    # Not escalations, but batched calls answered at the direct price: in escalation_cost.
    assert stats.escalation_cost.list_price > 0
    assert stats.escalation_cost == stats.snapshot().cost[Route.DIRECT]
    assert stats.batches_submitted == 0
    assert stats.queued == 0
    # They count as direct-route answers (tokens, waits), and as batched calls submitted.
    snap = stats.snapshot()
    assert snap.wait_ms[Route.DIRECT].count == 3
    assert stats.batched_calls == 3


async def test_a_drain_below_the_minimum_goes_direct_and_a_full_batch_does_not() -> None:
    fake = FakeProvider(turnaround=1.0, min_batch_requests=3)
    out: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        async with open_fleet(fake, policy=policy(batch_min_size=3, batch_max_size=3)) as fleet:
            tg.start_soon(_submit_all, fleet, ["a", "b", "c", "d"], out)
            await anyio.wait_all_tasks_blocked()
            # Three made a batch; the fourth waits for more, until the block ends and the
            # queue drains: alone, it goes direct.
            assert fleet.stats.queued == 1
    assert [len(ids) for _, _, ids in fake.creates] == [3]
    routes = sorted(v.route for v in out.values())
    assert routes == ["batch", "batch", "batch", "direct"]
    assert {text: v.text for text, v in out.items()} == {t: t for t in "abcd"}
    assert fleet.stats.below_min_batch == 1
    assert fleet.stats.flushes["drain"] == 0  # a flush sent direct is no batch


async def test_a_deadline_flush_below_the_minimum_goes_direct_before_the_window() -> None:
    fake = FakeProvider(turnaround=10.0, min_batch_requests=50)
    pol = policy(batch_window_ms=60_000, expected_turnaround_ms=10_000, sync_max_latency_ms=100)
    start = anyio.current_time()
    async with open_fleet(fake, policy=pol) as fleet:
        reply = await fleet.submit(latency_budget_ms=15_000, **request("soon"))
    assert isinstance(reply, FakeMessage)
    assert reply.route == "direct"
    # Flushed at deadline - turnaround = 5 s (not the 60 s window), and sent direct.
    assert [at - start for at, _ in fake.direct_calls] == [pytest.approx(5.0)]
    assert fake.creates == []


async def test_a_caller_leaving_its_below_minimum_direct_call_withdraws_it() -> None:
    fake = FakeProvider(min_batch_requests=5, direct_latency=10.0)
    async with open_fleet(fake, policy=policy(batch_window_ms=100)) as fleet:
        with anyio.move_on_after(1.0) as scope:
            await fleet.submit_batch(**request("gone"))
    assert scope.cancelled_caught
    assert len(fake.direct_calls) == 1  # it had started, at the window's end
    stats = fleet.stats
    assert stats.withdrawn == 1
    assert stats.succeeded == 0
    assert stats.below_min_batch == 1


async def test_a_minimum_over_batch_max_size_warns(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeProvider(min_batch_requests=100)
    with caplog.at_level(logging.WARNING, logger="llmfleet"):
        async with open_fleet(fake, policy=policy(batch_max_size=10)) as fleet:
            reply = await fleet.submit_batch(**request("x"))
    assert "every batched call will go by the direct route" in caplog.text
    assert isinstance(reply, FakeMessage)
    assert reply.route == "direct"
    assert fleet.stats.below_min_batch == 1


async def test_without_a_minimum_nothing_changes() -> None:
    fake = FakeProvider(turnaround=1.0)
    async with open_fleet(fake, policy=policy(batch_min_size=1)) as fleet:
        reply = await fleet.submit_batch(**request("one"))
    assert isinstance(reply, FakeMessage)
    assert reply.route == "batch"
    assert len(fake.creates) == 1
    assert fleet.stats.below_min_batch == 0


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_every_flush_below_the_minimum_goes_direct_and_every_caller_is_answered(
    data: st.DataObject,
) -> None:
    """Against the pure model of docs/design.md §4 with the queue's size raised to the
    provider's minimum: the fleet creates exactly the model's flushes that reach the minimum,
    at the model's instants, and sends the calls of every other flush direct at its instant."""
    max_size = data.draw(st.integers(1, 8), label="max_size")
    minimum = data.draw(st.integers(1, max_size + 1), label="min_batch_requests")
    policy_min = data.draw(st.integers(1, max_size), label="batch_min_size")
    window_ms = data.draw(st.integers(0, 20).map(lambda k: 2 * k + 1), label="window_ms")
    gaps = data.draw(st.lists(st.integers(0, 6), min_size=1, max_size=30), label="gaps")
    arrivals = list(itertools.accumulate(2 * g for g in gaps))
    fake = FakeProvider(turnaround=0.005, min_batch_requests=minimum)
    rules = policy(
        batch_min_size=policy_min,
        batch_max_size=max_size,
        batch_window_ms=window_ms,
        poll_interval_ms=3,
        poll_max_interval_ms=10,
    )
    out: dict[int, Any] = {}
    order: list[int] = []
    async with open_fleet(fake, policy=rules) as fleet:
        start = anyio.current_time()

        async def caller(i: int) -> None:
            order.append(i)
            out[i] = await fleet.submit_batch(**request(f"call-{i}"))

        async with anyio.create_task_group() as tg:
            for i, at in enumerate(arrivals):
                if i == 0 or at != arrivals[i - 1]:
                    await anyio.sleep_until(start + at / 1000)
                tg.start_soon(caller, i)
    run = simulate(
        [Item(i, float(arrivals[i])) for i in order],
        min_size=min(max(policy_min, minimum), max_size),
        max_size=max_size,
        window=float(window_ms),
    )
    batched = [f for f in run.flushes if len(f.items) >= minimum]
    direct = [f for f in run.flushes if len(f.items) < minimum]

    # Milliseconds since the start; looptime keeps asyncio's clock in whole microseconds, so
    # an instant may come a microsecond late there (flushes fall on whole milliseconds).
    def ms(at: float) -> float:
        return round((at - start) * 1000, 2)

    creates = [
        (ms(at), sorted(text_of(p) for _, p in fake.batches[bid].requests))
        for at, bid, _ in fake.creates
    ]
    assert sorted(creates) == sorted(
        (f.at, sorted(f"call-{i.index}" for i in f.items)) for f in batched
    )
    sent_direct = [(ms(at), text_of(p)) for at, p in fake.direct_calls]
    assert sorted(sent_direct) == sorted((f.at, f"call-{i.index}") for f in direct for i in f.items)
    assert all(len(ids) >= minimum for _, _, ids in fake.creates)
    assert {i: out[i].text for i in out} == {i: f"call-{i}" for i in range(len(arrivals))}
    routes = {i: out[i].route for i in out}
    assert sum(r == "direct" for r in routes.values()) == fleet.stats.below_min_batch
