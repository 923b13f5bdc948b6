"""Turns at reading batch results, for a fleet whose callers use results in batch order.

``llmfleet run`` writes its output in input order. Two batches whose results are read at
once interleave their lines, and one batch's lines wait for the other's (in memory, or
marked to be read back from the journal). With :class:`ReadTurns`, one batch's results are
read at a time, and of the batches that have ended, the one made first is read first
(docs/journal.md, "llmfleet run at scale"). A batch that has not ended holds up nobody: a
later batch that ended first is read at once, so its lines leave memory for the journal.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, final

import anyio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._batch import Batch

__all__ = ["ReadTurns"]


@final
class ReadTurns:
    """Whose turn it is to read its results, among the batches waiting to end or to read."""

    __slots__ = ("_changed", "_reading", "_waiting")

    def __init__(self) -> None:
        # In the order they started waiting for their end (the order they were made).
        self._waiting: dict[Batch, None] = {}
        self._reading: Batch | None = None
        self._changed = anyio.Event()

    def waiting(self, batch: Batch) -> None:
        """``batch`` was made and waits for its end."""
        self._waiting[batch] = None

    def left(self, batch: Batch) -> None:
        """``batch`` reads no more results (read, failed, cancelled, or sent again)."""
        if self._waiting.pop(batch, 0) is None:
            self._tell()

    @asynccontextmanager
    async def turn(self, batch: Batch) -> AsyncIterator[None]:
        """Hold the turn to read ``batch``'s results (it has ended). Read to the end, it
        leaves the order; a read that broke off keeps its place for the next try."""
        while not self._mine(batch):
            await self._changed.wait()
        self._reading = batch
        try:
            yield
            self._waiting.pop(batch, None)
        finally:
            self._reading = None
            self._tell()

    def _mine(self, batch: Batch) -> bool:
        if self._reading is not None:
            return False
        for earlier in self._waiting:
            if earlier is batch:
                return True
            if _ended(earlier):
                return False  # made before, ended too: it reads first
        return True  # not listed (its turn is not ordered)

    def _tell(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


def _ended(batch: Batch) -> bool:
    """Whether ``batch`` has ended, as its task knows it or as the status board last saw."""
    if batch.ended:
        return True
    watch = batch.watch
    return watch is not None and watch.status is not None and watch.status.ended
