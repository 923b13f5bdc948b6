"""A request budget shared by every task of a fleet for the provider's batch endpoints.

Batch endpoints are rate-limited per organisation (as low as 50 requests a minute), while a
fleet may have hundreds of batches in flight. Every batch-endpoint request (create, status,
results, cancel) first takes a slot here; the direct route is not counted (issue 7).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from typing import Final, final

import anyio

__all__ = ["Priority", "RequestBudget"]


@final
class Priority:
    """Who goes first when slots are scarce: lower is sooner."""

    #: Cancels stop billing; result downloads resolve waiting callers.
    CANCEL: Final = 0
    RESULTS: Final = 1
    CREATE: Final = 2
    #: Status refreshes can always wait for the next round.
    STATUS: Final = 3


@final
class _Waiter:
    __slots__ = ("event", "priority", "seq")

    def __init__(self, priority: int, seq: int) -> None:
        self.priority = priority
        self.seq = seq
        self.event = anyio.Event()

    def __lt__(self, other: _Waiter) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)


@final
class RequestBudget:
    """At most ``per_minute`` requests in any 60-second window, granted by priority.

    A sliding log rather than a refilling bucket: a bucket of capacity C lets C + rate
    requests through in some minute, a log never more than ``per_minute``. A 429 with
    ``retry-after`` pauses every requester (:meth:`pause`), not just the one that got it.

    :param per_minute: requests allowed in any 60 s window; ``None`` for no limit.
    """

    __slots__ = ("_log", "_paused_until", "_per_minute", "_seq", "_waiters", "waited_s")
    WINDOW_S: Final = 60.0

    def __init__(self, per_minute: int | None) -> None:
        self._per_minute = per_minute
        self._log: deque[float] = deque()
        self._paused_until = -math.inf
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        #: Seconds requesters spent waiting for a slot, summed.
        self.waited_s = 0.0

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` from now (the provider said ``retry-after``)."""
        self._paused_until = max(self._paused_until, anyio.current_time() + seconds)

    def _next_free(self, now: float) -> float:
        """The earliest instant a slot may be granted, seen from ``now``."""
        at = self._paused_until
        limit = self._per_minute
        if limit is not None and len(self._log) >= limit:
            at = max(at, self._log[-limit] + self.WINDOW_S)
        return max(at, now)

    async def acquire(self, priority: int) -> None:
        """Wait for a slot, in priority order (FIFO within a priority), and take it."""
        now = anyio.current_time()
        if not self._waiters and self._next_free(now) <= now:
            self._take(now)
            return
        me = _Waiter(priority, next(self._seq))
        heapq.heappush(self._waiters, me)
        start = now
        try:
            while True:
                if self._waiters[0] is me:
                    now = anyio.current_time()
                    free = self._next_free(now)
                    if free <= now:
                        heapq.heappop(self._waiters)
                        self._take(now)
                        self.waited_s += now - start
                        self._signal_head()
                        return
                    # First in line: sleep until the slot frees. A newer waiter of higher
                    # priority becomes head meanwhile and takes it; we then wait our turn.
                    with anyio.move_on_after(free - now):
                        await me.event.wait()
                else:
                    await me.event.wait()
                me.event = anyio.Event()
        except BaseException:
            self._waiters.remove(me)
            heapq.heapify(self._waiters)
            self._signal_head()
            raise

    def _signal_head(self) -> None:
        if self._waiters:
            self._waiters[0].event.set()

    def _take(self, now: float) -> None:
        limit = self._per_minute
        if limit is None:
            return
        log = self._log
        log.append(now)
        # Only the last `limit` grants decide when the next one may go.
        while len(log) > limit:
            log.popleft()
