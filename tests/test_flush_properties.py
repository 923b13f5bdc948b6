"""G1–G6 (docs/design.md §4) on the pure flush rule, over generated arrivals and cancels."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet._flush import ENVELOPE_BYTES, FlushQueue

from model import Item, Run, simulate


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[Item], dict[str, int]]:
    max_size = draw(st.integers(1, 12))
    min_size = draw(st.integers(1, max_size))
    window = draw(st.integers(0, 50))
    max_bytes = draw(st.one_of(st.just(10**9), st.integers(300, 2000)))
    n = draw(st.integers(0, 60))
    # Integer arrival times with many ties (bursts in one tick); cancels at .5 so a cancel
    # never coincides with a flush instant.
    gaps = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    items: list[Item] = []
    t = 0
    for index, gap in enumerate(gaps):
        t += gap if draw(st.booleans()) else 0
        size = draw(st.integers(50, min(250, max_bytes - ENVELOPE_BYTES)))
        cancel = draw(st.one_of(st.none(), st.integers(0, 60)))
        # docs/design.md §8: some calls must leave by their deadline minus the expected turnaround.
        urgent = draw(st.one_of(st.none(), st.integers(0, 60)))
        items.append(
            Item(
                index,
                float(t),
                size,
                None if cancel is None else t + cancel + 0.5,
                flush_by=math.inf if urgent is None else t + urgent + 0.25,
            )
        )
    policy = {"min_size": min_size, "max_size": max_size, "window": window, "max_bytes": max_bytes}
    return items, policy


def check_guarantees(items: list[Item], run: Run, policy: dict[str, int]) -> None:
    min_size, max_size = policy["min_size"], policy["max_size"]
    window, max_bytes = policy["window"], policy["max_bytes"]
    flushed = [item for flush in run.flushes for item in flush.items]
    # G1 exactly once: sent once, or withdrawn before its flush; never both, never twice.
    assert len({id(i) for i in flushed}) == len(flushed)
    for item in items:
        sent = item.flushed_at is not None
        assert sent != (item.withdrawn_at is not None), item
        if item.withdrawn_at is not None:
            assert item.withdrawn_at == item.cancel_at
    for flush in run.flushes:
        # G2 bounded, by count and by bytes.
        assert 1 <= len(flush.items) <= max_size
        assert ENVELOPE_BYTES + sum(i.size for i in flush.items) <= max_bytes
        for item in flush.items:
            # G3 window: never later than arrival + window, exactly.
            assert flush.at <= item.arrival + window
            assert flush.at >= item.arrival
            # docs/design.md §8: never later than deadline - estimate, when there is one.
            assert flush.at <= item.flush_by
    # G4 eager: after each instant, fewer than min_size calls remain queued, and no more
    # bytes than one batch body carries (a batch full by its bytes goes at once).
    for at, length in run.queue_lengths:
        assert length < min_size, (at, length)
    for at, size in run.queue_bytes:
        assert ENVELOPE_BYTES + size <= max_bytes, (at, size)
    # G5 FIFO within and across batches.
    position = {id(item): n for n, item in enumerate(items)}
    assert [position[id(i)] for i in flushed] == sorted(position[id(i)] for i in flushed)


@settings(max_examples=400, deadline=None)
@given(schedules())
def test_flush_rule_keeps_g1_to_g5(case: tuple[list[Item], dict[str, int]]) -> None:
    items, policy = case
    run = simulate(items, **policy)
    check_guarantees(items, run, policy)


@st.composite
def late_schedules(draw: st.DrawFn) -> tuple[list[Item], dict[str, int]]:
    """Calls that reach the queue some time after they arrived, in an order that need not
    be their arrival order: a broker's new leader queues the calls other processes submitted
    with their own arrival (docs/design.md §9.3)."""
    max_size = draw(st.integers(1, 12))
    policy = {
        "min_size": draw(st.integers(1, max_size)),
        "max_size": max_size,
        "window": draw(st.integers(0, 50)),
        "max_bytes": 10**9,
    }
    n = draw(st.integers(1, 40))
    items: list[Item] = []
    for index in range(n):
        arrival = draw(st.integers(0, 100))
        late = draw(st.one_of(st.just(0), st.integers(0, 80)))
        items.append(Item(index, float(arrival), queued_at=float(arrival + late)))
    items.sort(key=lambda item: item.queued_at or 0.0)
    return items, policy


@settings(max_examples=400, deadline=None)
@given(late_schedules())
def test_a_call_queued_after_it_arrived_keeps_its_window(
    case: tuple[list[Item], dict[str, int]],
) -> None:
    """G3 counts from a call's arrival, not from when it reached the queue: a call leaves by
    ``arrival + window``, or at once if it reaches the queue later than that. G1, G2, G4, and
    G5 in queue order, hold as for any schedule."""
    items, policy = case
    run = simulate(items, **policy)
    window = policy["window"]
    flushed = [item for flush in run.flushes for item in flush.items]
    assert sorted(id(i) for i in flushed) == sorted(id(i) for i in items)
    for flush in run.flushes:
        assert 1 <= len(flush.items) <= policy["max_size"]
        for item in flush.items:
            assert item.queued_at is not None
            assert item.queued_at <= flush.at <= max(item.queued_at, item.arrival + window)
    for at, length in run.queue_lengths:
        assert length < policy["min_size"], (at, length)
    assert [i.index for i in flushed] == [i.index for i in items]


@settings(max_examples=200, deadline=None)
@given(schedules(), st.integers(0, 200))
def test_drain_flushes_everything_left(
    case: tuple[list[Item], dict[str, int]], drain_at: int
) -> None:
    items, policy = case
    run = simulate(items, **policy, drain_at=drain_at + 0.25)
    assert all(
        i.flushed_at is not None or i.withdrawn_at is not None
        for i in items
        if i.arrival <= drain_at
    )
    drains = [f for f in run.flushes if f.reason == "drain"]
    assert all(f.at == drain_at + 0.25 for f in drains)
    assert all(len(f.items) <= policy["max_size"] for f in drains)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 500), max_size=st.integers(1, 120), data=st.data())
def test_burst_coalesces_g6(n: int, max_size: int, data: st.DataObject) -> None:
    """G6: a burst of N calls in one tick gives ⌈N / batch_max_size⌉ batches."""
    min_size = data.draw(st.integers(1, max_size))
    items = [Item(i, 0.0) for i in range(n)]
    run = simulate(items, min_size=min_size, max_size=max_size, window=10)
    assert len(run.flushes) == math.ceil(n / max_size)


def test_byte_limit_splits_before_count_limit() -> None:
    items = [Item(i, 0.0, size=400) for i in range(10)]
    run = simulate(items, min_size=1, max_size=10, window=0, max_bytes=1000)
    assert [len(f.items) for f in run.flushes] == [2, 2, 2, 2, 2]


def test_a_batch_full_by_its_bytes_goes_before_its_count_or_window() -> None:
    """A queue waiting for 10 calls or an hour sends the calls it holds at once when the
    next would not fit their batch's body: that batch cannot grow."""
    items = [Item(i, float(i), size=400) for i in range(5)]
    run = simulate(items, min_size=10, max_size=10, window=3600, max_bytes=1000)
    assert [(f.at, f.reason, len(f.items)) for f in run.flushes] == [
        (2.0, "size", 2),
        (4.0, "size", 2),
        (3604.0, "window", 1),
    ]


def test_queue_refuses_a_call_that_can_never_fit() -> None:
    queue: FlushQueue[Item] = FlushQueue(min_size=1, max_size=2, window=0, max_bytes=100)
    with pytest.raises(ValueError, match="never fit"):
        queue.push(Item(0, 0.0, size=100))


def test_queue_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="min_size"):
        FlushQueue[Item](min_size=3, max_size=2, window=0, max_bytes=100)
