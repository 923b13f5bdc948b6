"""The gate every batch create passes, and the reconciliation of a create left unanswered.

A create whose answer is lost (the connection dropped after the provider accepted it) may or
may not have made a batch. Sending it again at once could make a second batch, billed too;
giving up could leave the first running for nobody. So the fleet looks for the batch first
(docs/design.md §5): one reconciliation at a time, with no other create in flight and none
starting, so that every batch this fleet made is in :attr:`CreateGate.owned_ids` and none is
taken for the one looked for.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, final

import anyio

from ._budget import Priority, RequestBudget

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ._stats import FleetStats
    from .providers import ErrorInfo, Provider

__all__ = ["RECONCILE_FIRST_S", "RECONCILE_WINDOW_S", "CreateGate"]

logger = logging.getLogger("llmfleet")

#: After an unanswered create, how long the fleet keeps looking for the batch it may have
#: made before it sends the create again, and its first pause between looks.
RECONCILE_WINDOW_S: Final = 5.0
RECONCILE_FIRST_S: Final = 0.25


@final
class CreateGate:
    """Lets creates through unless a reconciliation runs, and runs reconciliations.

    Made inside the running fleet (it holds an ``anyio.Lock``).
    """

    __slots__ = (
        "_budget",
        "_clock",
        "_creates_done",
        "_creating",
        "_lock",
        "_on_error",
        "_provider",
        "_reconciling",
        "_stats",
        "owned_ids",
    )

    def __init__(
        self,
        provider: Provider,
        budget: RequestBudget,
        stats: FleetStats,
        on_error: Callable[[ErrorInfo], None],
        clock: Callable[[], float],
    ) -> None:
        self._provider = provider
        self._budget = budget
        self._stats = stats
        self._on_error = on_error
        self._clock = clock
        #: Every batch id this fleet made (or adopted).
        self.owned_ids: set[str] = set()
        self._creating = 0
        self._creates_done: anyio.Event | None = None
        self._reconciling: anyio.Event | None = None
        self._lock = anyio.Lock()

    async def wait_open(self) -> None:
        """Return once no reconciliation runs: a create starting during one could make the
        batch it is looking for, and be mistaken for it."""
        while self._reconciling is not None:
            await self._reconciling.wait()

    @contextmanager
    def creating(self) -> Iterator[None]:
        """Around one create request: a reconciliation waits until none is in flight."""
        self._creating += 1
        try:
            yield
        finally:
            self._creating -= 1
            if not self._creating and self._creates_done is not None:
                self._creates_done.set()

    def adopt(self, batch_id: str) -> None:
        """Count ``batch_id`` as this fleet's: no reconciliation will take it for another."""
        self.owned_ids.add(batch_id)

    async def reconcile(self, count: int, since: float) -> str | None:
        """Find the batch of ``count`` requests an unanswered create sent at ``since`` (wall
        time) may have made; ``None`` if none shows up within ``RECONCILE_WINDOW_S``."""
        async with self._lock:
            gate = self._reconciling = anyio.Event()
            try:
                while self._creating:
                    self._creates_done = anyio.Event()
                    await self._creates_done.wait()
                self._creates_done = None
                return await self._look(count, since)
            finally:
                self._reconciling = None
                gate.set()

    async def _look(self, count: int, since: float) -> str | None:
        # A create the provider carries out after the client gave up on it shows up late:
        # keep looking for a while before concluding it made nothing (a second create sent
        # too early would be a second batch billed).
        give_up = self._clock() + RECONCILE_WINDOW_S
        delay = RECONCILE_FIRST_S
        while True:
            await self._budget.acquire(Priority.CREATE)
            self._stats._api_request("list")
            try:
                found = await self._provider.find_batch(
                    count=count, created_after=since, exclude=self.owned_ids
                )
            except Exception as exc:
                info = self._provider.classify(exc)
                if info is None:
                    raise
                self._on_error(info)
                found = None
            if found is not None or self._clock() >= give_up:
                return found
            await anyio.sleep(delay)
            delay = min(delay * 2, RECONCILE_WINDOW_S / 4)
