"""The emulator's bill: what each request would have cost, and what it was charged."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias, final

from llmfleet.pricing import Cost, TokenUsage

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Ledger", "LedgerEntry", "ResultType", "Route"]

Route: TypeAlias = Literal["direct", "batch", "flex"]
ResultType: TypeAlias = Literal["succeeded", "errored", "canceled", "expired"]


@final
@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One request's line on the bill.

    Direct calls are entered when answered (successful calls only: a rejected request produces
    no message and no charge). Batch items are entered when their batch ends, whatever their
    result; errored, canceled and expired items carry zero usage and a zero cost.

    ``cost`` is ``None`` when the price table does not know ``model``; otherwise
    ``cost.list_price`` is the undiscounted price and ``cost.paid`` what the route charges
    (batch: half; flex, an OpenAI direct call on ``service_tier="flex"``: the batch rate).
    """

    route: Route
    batch_id: str | None
    custom_id: str | None
    message_id: str | None
    model: str
    result: ResultType
    usage: TokenUsage
    cost: Cost | None
    #: Wall-clock time (``time.time()``) at which the entry was made.
    time: float


@final
class Ledger:
    """Thread-safe list of :class:`LedgerEntry`, with totals.

    Reads first bring batches that have ended by now up to date, so the figures are those of the
    moment they are read.
    """

    __slots__ = ("_batches_created", "_entries", "_lock", "_refresh")

    def __init__(self, refresh: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._batches_created = 0
        self._refresh = refresh

    def _add(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def _count_batch(self) -> None:
        with self._lock:
            self._batches_created += 1

    def _sync(self) -> None:
        # The refresh takes the emulator's state lock and may call _add; it must run before we
        # take our own lock, never under it.
        if self._refresh is not None:
            self._refresh()

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """Every entry so far, in the order they were made."""
        self._sync()
        with self._lock:
            return tuple(self._entries)

    @property
    def batches_created(self) -> int:
        """How many batches were created (each a billable object: a duplicate counts too)."""
        with self._lock:
            return self._batches_created

    def select(
        self, *, route: Route | None = None, result: ResultType | None = None
    ) -> tuple[LedgerEntry, ...]:
        """The entries of one route and/or one result type."""
        return tuple(
            e
            for e in self.entries
            if (route is None or e.route == route) and (result is None or e.result == result)
        )

    def total(self, *, route: Route | None = None) -> Cost:
        """Sum of the costs (list price and paid); entries of unknown models are left out."""
        total = Cost()
        for entry in self.select(route=route):
            if entry.cost is not None:
                total += entry.cost
        return total

    def usage(self, *, route: Route | None = None) -> TokenUsage:
        """Sum of the token usage, unknown models included."""
        total = TokenUsage()
        for entry in self.select(route=route):
            total += entry.usage
        return total
