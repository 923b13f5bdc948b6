"""The pure flush rule (docs/design.md §4): when queued calls leave the queue, in which batches.

Nothing here awaits or reads a clock: the dispatcher passes ``now`` in, so the rule is tested
in plain code over generated schedules (G1–G6) and reused unchanged by the real flusher.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import TYPE_CHECKING, Final, Generic, Literal, Protocol, TypeVar, final

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["FlushQueue", "FlushReason", "Queueable"]

FlushReason = Literal["size", "window", "drain", "deadline"]

#: Bytes of ``{"requests":[`` … ``]}`` around the entries of a batch body.
ENVELOPE_BYTES: Final = 16


class Queueable(Protocol):
    """What the queue needs to know of a call."""

    #: When the call entered the queue (the dispatcher's clock, seconds).
    arrival: float
    #: Bytes the call adds to a batch body (its entry plus a separator).
    size: int
    #: Latest instant it may be flushed to meet its deadline (``inf``: none), docs/design.md §8.
    flush_by: float


T = TypeVar("T", bound=Queueable)


@final
class FlushQueue(Generic[T]):
    """A FIFO of queued calls and the rule that flushes them.

    A flush is due at the earliest instant the queue is non-empty and either holds
    ``min_size`` live calls, or more bytes than one batch body carries (a batch is full by
    its bytes before its count: reason ``size`` both), or its oldest live call has waited ``window``
    seconds (reason ``window``), or some live call's ``flush_by`` has come (reason
    ``deadline``: waiting longer would miss its deadline). A flush takes the first
    ``max_size`` live calls, fewer if the next one would push the body past ``max_bytes``,
    and repeats while a flush is still due.

    Calls withdrawn by their callers are dropped lazily, so withdrawing is O(1).

    A call may arrive earlier than the one pushed before it (the broker's leader queues calls
    that arrived in other processes with their own arrival, docs/design.md §9.3): its window
    then ends before the head's, and is kept in a heap beside the FIFO, so that it still
    leaves the queue by ``arrival + window`` (G3).

    :param min_size: live calls that make a flush due at once (>= 1).
    :param max_size: most calls in one batch (>= min_size).
    :param window: seconds a call may wait (>= 0).
    :param max_bytes: most bytes in one batch body; every call's ``size`` must fit alone.
    """

    __slots__ = (
        "_bytes",
        "_early",
        "_items",
        "_last",
        "_live",
        "_urgent",
        "_urgent_ids",
        "_withdrawn",
        "max_bytes",
        "max_size",
        "min_size",
        "window",
    )

    def __init__(self, *, min_size: int, max_size: int, window: float, max_bytes: int) -> None:
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size
        self.window = window
        self.max_bytes = max_bytes
        self._items: deque[T] = deque()
        # Ids of withdrawn calls still in the deque; they are skipped when reached.
        self._withdrawn: set[int] = set()
        self._live = 0
        # Bytes of the live calls (their ``size``, summed).
        self._bytes = 0
        # Calls with a finite flush_by, earliest first; entries of calls no longer queued are
        # dropped lazily (their ids leave _urgent_ids).
        self._urgent: list[tuple[float, int, T]] = []
        self._urgent_ids: set[int] = set()
        # Window ends of calls that arrived before the call pushed ahead of them, earliest
        # first; dropped lazily like _urgent's (the ids of both heaps are _urgent_ids).
        self._early: list[tuple[float, int, T]] = []
        self._last = -math.inf

    def __len__(self) -> int:
        """Live (not withdrawn) calls in the queue."""
        return self._live

    def __iter__(self) -> Iterator[T]:
        """Live calls, oldest first."""
        withdrawn = self._withdrawn
        return (item for item in self._items if id(item) not in withdrawn)

    def push(self, item: T) -> None:
        """Append a call (FIFO by push order; its ``arrival`` may precede the last one's)."""
        if item.size + ENVELOPE_BYTES > self.max_bytes:
            raise ValueError(f"a call of {item.size} bytes can never fit a batch body")
        self._items.append(item)
        self._live += 1
        self._bytes += item.size
        if item.flush_by != math.inf:
            heapq.heappush(self._urgent, (item.flush_by, id(item), item))
            self._urgent_ids.add(id(item))
        if item.arrival < self._last:
            heapq.heappush(self._early, (item.arrival + self.window, id(item), item))
            self._urgent_ids.add(id(item))
        else:
            self._last = item.arrival

    def withdraw(self, item: T) -> None:
        """Forget a queued call (its caller left); it will never be flushed."""
        self._withdrawn.add(id(item))
        self._urgent_ids.discard(id(item))
        self._live -= 1
        self._bytes -= item.size
        self._trim()

    def _trim(self) -> None:
        items, withdrawn = self._items, self._withdrawn
        while items and id(items[0]) in withdrawn:
            withdrawn.discard(id(items.popleft()))

    def oldest(self) -> T | None:
        """The oldest live call, or ``None``."""
        return self._items[0] if self._items else None

    def _flush_by(self) -> float:
        urgent, ids = self._urgent, self._urgent_ids
        while urgent and urgent[0][1] not in ids:
            heapq.heappop(urgent)
        return urgent[0][0] if urgent else math.inf

    def _window_end(self) -> float:
        """When the oldest live call's window ends (the head's, or an earlier arrival's)."""
        end = self._items[0].arrival + self.window
        early, ids = self._early, self._urgent_ids
        while early and early[0][1] not in ids:
            heapq.heappop(early)
        return min(end, early[0][0]) if early else end

    def deadline(self) -> float | None:
        """The next instant a flush falls due with no new arrival (the oldest call's window
        or the earliest ``flush_by``), or ``None`` if the queue is empty."""
        if not self._items:
            return None
        return min(self._window_end(), self._flush_by())

    def due(self, now: float) -> FlushReason | None:
        """Why a flush is due at ``now``, or ``None``."""
        if self._live >= self.min_size or self._bytes + ENVELOPE_BYTES > self.max_bytes:
            return "size"
        if self._items and now >= self._window_end():
            return "window"
        if self._items and now >= self._flush_by():
            return "deadline"
        return None

    def pop_batch(self) -> list[T]:
        """Take the next batch: the first ``max_size`` live calls, within ``max_bytes``."""
        items, withdrawn = self._items, self._withdrawn
        batch: list[T] = []
        total = ENVELOPE_BYTES
        while items and len(batch) < self.max_size:
            item = items[0]
            if id(item) in withdrawn:
                withdrawn.discard(id(items.popleft()))
                continue
            if batch and total + item.size > self.max_bytes:
                break
            items.popleft()
            self._urgent_ids.discard(id(item))
            total += item.size
            batch.append(item)
        self._live -= len(batch)
        self._bytes -= total - ENVELOPE_BYTES
        self._trim()
        return batch

    def take(self, now: float, *, drain: bool = False) -> Iterator[tuple[list[T], FlushReason]]:
        """Every batch due at ``now`` (with ``drain``, every queued call), in FIFO order.

        A generator, so the caller can start each batch before the next is cut.
        """
        while self._live:
            reason: FlushReason | None = "drain" if drain else self.due(now)
            if reason is None:
                return
            yield self.pop_batch(), reason
