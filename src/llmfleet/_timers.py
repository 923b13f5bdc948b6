"""A heap of timers served by one task: wake at the earliest, never on a polling interval;
and the running backend's clock, found once."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import sys
from typing import TYPE_CHECKING, Final, Generic, TypeVar, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

__all__ = ["Timers", "backend_clock"]

T = TypeVar("T")


@final
class Timers(Generic[T]):
    """Calls ``fire(item)`` at each scheduled instant (the fleet's clock), in order.

    ``fire`` decides for itself whether the item still matters: cancelling a timer is just
    never acting on it, so scheduling and forgetting are O(log n) and O(1). So that entries
    for items that no longer matter (``alive(item)`` is false) do not pile up until their
    instant (an hour away, say), the heap is compacted whenever it has doubled: amortised O(1)
    per timer, and at most twice the live timers held.
    """

    __slots__ = ("_alive", "_changed", "_compact_at", "_fire", "_heap", "_seq")
    _MIN_COMPACT: Final = 1024

    def __init__(
        self, fire: Callable[[T], None], *, alive: Callable[[T], bool] = lambda _: True
    ) -> None:
        self._fire = fire
        self._alive = alive
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        self._changed: anyio.Event | None = None
        self._compact_at = self._MIN_COMPACT

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at: float, item: T) -> None:
        """Fire for ``item`` at ``at``."""
        heap = self._heap
        if len(heap) >= self._compact_at:
            alive = self._alive
            heap[:] = [entry for entry in heap if alive(entry[2])]
            heapq.heapify(heap)
            self._compact_at = max(self._MIN_COMPACT, 2 * len(heap))
        heapq.heappush(heap, (at, next(self._seq), item))
        if heap[0][2] is item and self._changed is not None:
            self._changed.set()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """The timers' task: runs until cancelled."""
        task_status.started()
        heap = self._heap
        while True:
            now = anyio.current_time()
            while heap and heap[0][0] <= now:
                _, _, item = heapq.heappop(heap)
                self._fire(item)
            self._changed = anyio.Event()
            with anyio.CancelScope(deadline=heap[0][0] if heap else math.inf):
                await self._changed.wait()


def backend_clock() -> Callable[[], float]:
    """``anyio.current_time`` of the running backend, as one function found once.

    anyio finds the backend on every read; the fleet reads the clock a few times per call,
    so it asks anyio once which loop runs and keeps that loop's own clock.
    """
    token = anyio.lowlevel.current_token()
    native = token.native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return native.time  # what anyio's asyncio backend reads
    trio = sys.modules.get("trio")
    if trio is not None and isinstance(native, trio.lowlevel.TrioToken):
        # What trio.current_time() reads, without its two lookups (a MockClock too).
        clock: Callable[[], float] = trio.lowlevel.current_clock().current_time
        return clock
    return token.backend_class.current_time
