"""One status board per fleet: a single task learns the state of every in-flight batch.

Polling each batch on its own clock costs a request per batch per interval (a hundred
batches polled every second is 6,000 requests a minute) against batch endpoints limited per
organisation. The board refreshes them all at once: ``retrieve`` while one or two are in
flight, ``list`` pages (newest first, stopping once every in-flight id is seen) beyond that,
at the cadence of the youngest batch's backoff (docs/design.md §5 poll).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final, final

import anyio

from ._budget import Priority, RequestBudget
from .providers import BatchStatus, ErrorInfo, ErrorKind, Provider

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

    from ._policy import RoutingPolicy

__all__ = ["StatusBoard", "Watch"]

logger = logging.getLogger("llmfleet")

#: Batches in flight up to which the board retrieves each one instead of listing.
RETRIEVE_UP_TO: Final = 2
#: A 404 this soon after create is the provider's lag, not a deleted batch (docs/design.md §A).
NOT_FOUND_GRACE_S: Final = 60.0
#: Non-transient status errors in a row before a batch's callers are told.
FATAL_LIMIT: Final = 5
_BACKOFF: Final = 1.5
#: Past ``poll_max_interval_ms``, the interval may still grow up to this share of the
#: youngest batch's age: polls then grow with log(turnaround), not linearly, and a batch's
#: end is seen at most this share of its turnaround late.
AGE_SHARE: Final = 0.1


@final
class Watch:
    """A batch the board is watching. ``event`` is set when it ended, failed, or when the
    dispatcher sets it itself (every caller left)."""

    __slots__ = ("batch_id", "error", "event", "fatal", "registered", "status")

    def __init__(self, batch_id: str, now: float) -> None:
        self.batch_id = batch_id
        self.registered = now
        self.event = anyio.Event()
        self.status: BatchStatus | None = None
        self.error: BaseException | None = None
        self.fatal = 0


@final
class StatusBoard:
    """Refreshes the state of every watched batch in one task.

    :param count: called with an endpoint name (``status``, ``list``) for each request made.
    """

    def __init__(
        self,
        provider: Provider,
        budget: RequestBudget,
        policy: RoutingPolicy,
        count: Callable[[str], None],
        on_error: Callable[[ErrorInfo], None],
    ) -> None:
        self._provider = provider
        self._budget = budget
        self._first = policy.poll_interval_ms / 1000
        self._ceiling = policy.poll_max_interval_ms / 1000
        self._count = count
        self._on_error = on_error
        self._watches: dict[str, Watch] = {}
        self._interval = self._first
        self._youngest = -math.inf  # when the youngest watched batch was registered
        self._due = math.inf
        self._changed = anyio.Event()
        self.refreshes = 0

    def watch(self, batch_id: str) -> Watch:
        """Start watching a new batch; its first status comes ``poll_interval_ms`` from now."""
        now = anyio.current_time()
        watch = self._watches[batch_id] = Watch(batch_id, now)
        # The youngest batch sets the cadence: restart the backoff for it.
        self._interval = self._first
        self._youngest = now
        self._due = min(self._due, now + self._first)
        self._changed.set()
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Stop watching (the batch ended, or nobody waits for it any more)."""
        self._watches.pop(watch.batch_id, None)
        if not self._watches:
            self._due = math.inf

    def statuses(self) -> list[tuple[str, BatchStatus | None]]:
        """Each watched batch, in the order it was first watched, with the status last
        polled (``None`` before its first poll). Read-only: for progress displays."""
        return [(batch_id, watch.status) for batch_id, watch in self._watches.items()]

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """The board's task: refresh when due, forever (the fleet cancels it)."""
        task_status.started()
        while True:
            now = anyio.current_time()
            if now < self._due:
                self._changed = anyio.Event()
                with anyio.move_on_after(self._due - now):
                    await self._changed.wait()
                continue
            await self._refresh()
            now = anyio.current_time()
            ceiling = max(self._ceiling, (now - self._youngest) * AGE_SHARE)
            self._interval = min(self._interval * _BACKOFF, ceiling)
            self._due = now + self._interval if self._watches else math.inf

    async def _refresh(self) -> None:
        self.refreshes += 1
        pending = {bid for bid, w in self._watches.items() if not w.event.is_set()}
        if len(pending) > RETRIEVE_UP_TO:
            pending -= await self._list(pending)
        # Few batches, or some not found in the listing: ask for each one.
        for batch_id in pending:
            if (watch := self._watches.get(batch_id)) is None or watch.event.is_set():
                continue
            await self._budget.acquire(Priority.STATUS)
            self._count("status")
            try:
                status = await self._provider.poll(batch_id)
            except Exception as exc:
                self._failed(watch, exc)
                continue
            self._update(watch, status)

    async def _list(self, wanted: set[str]) -> set[str]:
        """Page through the listing until every wanted id is seen; return those seen."""
        seen: set[str] = set()
        cursor: str | None = None
        while seen != wanted:
            await self._budget.acquire(Priority.STATUS)
            self._count("list")
            try:
                page, cursor = await self._provider.list_page(cursor)
            except Exception as exc:
                info = self._provider.classify(exc)
                if info is None:
                    raise
                self._on_error(info)
                logger.debug("status listing failed (%s); retrieving instead", info.kind.value)
                return seen
            for batch_id, status in page:
                watch = self._watches.get(batch_id)
                if batch_id in wanted and watch is not None:
                    seen.add(batch_id)
                    self._update(watch, status)
            if cursor is None:
                break
        return seen

    def _update(self, watch: Watch, status: BatchStatus) -> None:
        watch.fatal = 0
        watch.status = status
        logger.debug("status %s: %s", watch.batch_id, status.state)
        if status.ended:
            logger.debug("batch %s ended", watch.batch_id)
            watch.event.set()

    def _failed(self, watch: Watch, exc: Exception) -> None:
        info = self._provider.classify(exc)
        if info is None:
            raise exc
        self._on_error(info)
        transient = info.kind is not ErrorKind.FATAL
        if info.kind is ErrorKind.NOT_FOUND:
            transient = anyio.current_time() - watch.registered < NOT_FOUND_GRACE_S
        logger.debug("status of %s failed (%s); retrying", watch.batch_id, info.kind.value)
        if not transient:
            watch.fatal += 1
            if watch.fatal >= FATAL_LIMIT:
                # A live batch is never abandoned for a passing fault; this one is not passing.
                watch.error = exc
                watch.event.set()
