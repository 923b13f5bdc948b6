"""A request budget shared by every task of a fleet for the provider's batch endpoints.

Batch endpoints are rate-limited per organisation (as low as 50 requests a minute), while a
fleet may have hundreds of batches in flight. Every batch-endpoint request (create, status,
results, cancel) first takes a slot here; the direct route is not counted (docs/design.md §5.4).
"""

from __future__ import annotations

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
    #: (A status refresh that has waited ``status_patience_s``: it ranks here.)
    _OVERDUE_STATUS: Final = 2
    CREATE: Final = 3
    #: Status refreshes can usually wait for the next round.
    STATUS: Final = 4


@final
class _Waiter:
    __slots__ = ("event", "priority", "seq", "since")

    def __init__(self, priority: int, seq: int, since: float) -> None:
        self.priority = priority
        self.seq = seq
        self.since = since
        self.event = anyio.Event()


@final
class RequestBudget:
    """At most ``per_minute`` requests in any 60-second window, granted by priority.

    A sliding log rather than a refilling bucket: a bucket of capacity C lets C + rate
    requests through in some minute, a log never more than ``per_minute``. A 429 with
    ``retry-after`` pauses every requester (:meth:`pause`), not just the one that got it.

    Status refreshes come last, but not forever: one that has waited ``status_patience_s``
    goes before creates. Otherwise a backlog of creates (a burst far above the budget) would
    hold every refresh back until the last create is sent, and batches that ended meanwhile
    would go unseen, their callers waiting, for as long as the backlog lasts.

    :param per_minute: requests allowed in any 60 s window; ``None`` for no limit.
    :param status_patience_s: how long a status refresh waits behind creates at most.
    """

    __slots__ = (
        "_log",
        "_patience",
        "_paused_until",
        "_per_minute",
        "_seq",
        "_waiters",
        "waited_s",
    )
    WINDOW_S: Final = 60.0

    def __init__(self, per_minute: int | None, *, status_patience_s: float = 60.0) -> None:
        self._per_minute = per_minute
        self._patience = status_patience_s
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
        me = _Waiter(priority, next(self._seq), now)
        self._waiters.append(me)
        start = now
        try:
            while True:
                now = anyio.current_time()
                head = self._head(now)
                if head is me:
                    free = self._next_free(now)
                    if free <= now:
                        self._waiters.remove(me)
                        self._take(now)
                        self.waited_s += now - start
                        self._signal_head()
                        return
                    # First in line: sleep until the slot frees. A waiter that ranks higher
                    # may arrive (or a refresh become overdue) meanwhile and take it; we
                    # then wait our turn.
                    with anyio.move_on_after(free - now):
                        await me.event.wait()
                else:
                    head.event.set()  # the head may not know it is first now
                    await me.event.wait()
                me.event = anyio.Event()
        except BaseException:
            self._waiters.remove(me)
            self._signal_head()
            raise

    def _rank(self, waiter: _Waiter, now: float) -> tuple[int, int]:
        priority = waiter.priority
        if priority == Priority.STATUS and now - waiter.since >= self._patience:
            priority = Priority._OVERDUE_STATUS
        return (priority, waiter.seq)

    def _head(self, now: float) -> _Waiter:
        # A scan, not a heap: ranks change as refreshes wait, and grants are few (tens to
        # thousands a minute) while waiters are at most the fleet's batch tasks.
        return min(self._waiters, key=lambda w: self._rank(w, now))

    def _signal_head(self) -> None:
        if self._waiters:
            self._head(anyio.current_time()).event.set()

    def _take(self, now: float) -> None:
        limit = self._per_minute
        if limit is None:
            return
        log = self._log
        log.append(now)
        # Only the last `limit` grants decide when the next one may go.
        while len(log) > limit:
            log.popleft()
