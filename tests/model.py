"""A reference run of the flush rule over a whole arrival schedule, for the property tests.

It drives :class:`llmfleet._flush.FlushQueue` exactly as the real flusher does — wake on an
arrival or on the oldest call's deadline, flush whatever is due — but in plain code, so that
the dispatcher's batches can be compared with it call for call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llmfleet._flush import FlushQueue, FlushReason


@dataclass(eq=False)
class Item:
    """One scheduled call: arrives at ``arrival``, may be withdrawn at ``cancel_at``."""

    index: int
    arrival: float
    size: int = 100
    cancel_at: float | None = None
    flush_by: float = math.inf
    flushed_at: float | None = None
    withdrawn_at: float | None = None
    #: When it reaches the queue, if later than its arrival (a broker's leader queues calls
    #: that arrived in other processes, docs/design.md §9.3).
    queued_at: float | None = None


@dataclass
class Flush:
    at: float
    reason: FlushReason
    items: list[Item]


@dataclass
class Run:
    flushes: list[Flush] = field(default_factory=list)
    #: ``(time, live calls left in the queue)`` after each instant was fully processed.
    queue_lengths: list[tuple[float, int]] = field(default_factory=list)
    #: ``(time, bytes of the live calls left in the queue)``, at the same instants.
    queue_bytes: list[tuple[float, int]] = field(default_factory=list)


def simulate(
    items: list[Item],
    *,
    min_size: int,
    max_size: int,
    window: float,
    max_bytes: int = 10**12,
    drain_at: float | None = None,
) -> Run:
    """Play ``items`` (in the order they reach the queue: their ``queued_at``, else their
    arrival) through the flush rule; drain at ``drain_at``."""
    queue: FlushQueue[Item] = FlushQueue(
        min_size=min_size, max_size=max_size, window=window, max_bytes=max_bytes
    )
    run = Run()
    events: list[tuple[float, int, Item | None]] = []
    for queued in items:
        at = queued.arrival if queued.queued_at is None else queued.queued_at
        events.append((at, 0, queued))
        if queued.cancel_at is not None:
            events.append((queued.cancel_at, 1, queued))
    if drain_at is not None:
        events.append((drain_at, 2, None))
    # Stable: calls of one instant keep the order they are listed in (their arrival order).
    events.sort(key=lambda e: (e[0], e[1]))

    def note(at: float) -> None:
        run.queue_lengths.append((at, len(queue)))
        run.queue_bytes.append((at, sum(item.size for item in queue)))

    def flush(now: float, drain: bool = False) -> None:
        for batch, reason in queue.take(now, drain=drain):
            for item in batch:
                item.flushed_at = now
            run.flushes.append(Flush(now, reason, batch))

    i = 0
    while i < len(events):
        now = events[i][0]
        # Deadlines that fall before the next event fire first, at their exact instant.
        while (deadline := queue.deadline()) is not None and deadline < now:
            flush(deadline)
            note(deadline)
        # Every event at this instant is taken before deciding (the flusher drains its stream).
        drain = False
        while i < len(events) and events[i][0] == now:
            _, kind, event_item = events[i]
            item = event_item
            if kind == 0 and item is not None:
                queue.push(item)
            elif kind == 1 and item is not None and item.flushed_at is None:
                queue.withdraw(item)
                item.withdrawn_at = now
            elif kind == 2:
                drain = True
            i += 1
        flush(now, drain=drain)
        note(now)
        if drain:
            return run
    while queue.deadline() is not None:
        deadline = queue.deadline()
        assert deadline is not None
        flush(deadline)
        note(deadline)
    return run
