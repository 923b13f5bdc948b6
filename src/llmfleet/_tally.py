"""Recording on every call's path, reading exactly later: the wait histogram, and one
route's tally of waits, tokens and deadline hits (docs/design.md §6).

A record costs an append or a few integer additions; the work (bucketing the waits, pricing
the tokens) is done when the stats are read. :class:`~llmfleet.FleetStats` holds a
:class:`Tally` per route and a :class:`Histogram` of batch end lags, and is their only
writer; its counters, the live view and the snapshot are in ``_stats``.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass
from itertools import repeat
from operator import truediv
from typing import Final, final

from .pricing import Cost, PriceTable, TokenUsage

__all__ = ["Histogram", "Percentiles", "Tally"]


@final
@dataclass(frozen=True, slots=True)
class Percentiles:
    """A distribution of waits, in milliseconds (``None`` where nothing was seen)."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


_BASE: Final = math.log(1.01)
#: Waits kept raw before they are folded into buckets (one C-speed pass per this many).
PENDING: Final = 1024


def _key(ms: float) -> int:
    """The bucket of a wait (1% wide)."""
    return int(math.log1p(ms) / _BASE)


@final
class Histogram:
    """Waits in log-spaced buckets (1% wide): exact count and max, percentiles within 1%,
    memory independent of how many calls are recorded.

    ``add`` is on every call's path, so it only appends to a small list of floats (not an
    ``array("d")``: its append parses its argument, and its ``max``, ``min`` and ``sorted``
    box every value again, twice the cost per wait); the list is folded into the buckets at
    C speed when it fills up or when someone reads.
    A recorder on the hottest paths (``FleetStats``) may do ``add`` inline, with no call:
    append a non-negative wait to ``pending`` and call :meth:`fold` once it holds
    :data:`PENDING` waits.
    """

    __slots__ = ("_buckets", "_count", "_max", "pending")

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.pending: list[float] = []
        self._count = 0
        self._max: float | None = None

    def add(self, ms: float) -> None:
        pending = self.pending
        pending.append(ms if ms > 0.0 else 0.0)
        if len(pending) >= PENDING:
            self.fold()

    def fold(self) -> None:
        """Fold the pending waits into the buckets."""
        pending = self.pending
        if not pending:
            return
        buckets = self._buckets
        top = max(pending)
        low = _key(min(pending))
        high = _key(top)
        if high - low < len(pending) >> 3:
            # Waits that span few buckets (a batch's results come together): sorted, each
            # bucket's count is a bisection, one Python step per bucket, not per wait.
            waits = sorted(pending)
            i, n = 0, len(waits)
            while i < n:
                key = _key(waits[i])
                j = bisect_left(waits, math.expm1((key + 1) * _BASE), i + 1)
                if _key(waits[j - 1]) != key:
                    # The edge, rounded the other way: the run's exact end, by its keys.
                    j = bisect_right(waits, key, i + 1, j, key=_key)
                buckets[key] += j - i
                i = j
        else:
            # key = int(log1p(ms) / _BASE), for every pending wait, with no Python-level loop.
            buckets.update(map(int, map(truediv, map(math.log1p, pending), repeat(_BASE))))
        self._count += len(pending)
        if self._max is None or top > self._max:
            self._max = top
        self.pending = []

    @property
    def count(self) -> int:
        return self._count + len(self.pending)

    @property
    def max(self) -> float | None:
        self.fold()
        return self._max

    def quantile(self, q: float) -> float | None:
        self.fold()
        if not self._count:
            return None
        rank = max(1, math.ceil(q * self._count))
        seen = 0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                # The bucket's upper edge, never above the exact max.
                value = math.expm1((key + 1) * _BASE)
                return min(value, self._max if self._max is not None else value)
        return self._max

    def summary(self) -> Percentiles:
        self.fold()
        return Percentiles(self._count, self.quantile(0.5), self.quantile(0.95), self._max)


@final
class Tally:
    """One route's waits, tokens and deadline hits.

    Recording a call is a few integer additions: tokens are summed per model as plain ints
    and priced only when someone reads ``cost`` (a price is linear in tokens, so the cost of
    the sums is the sum of the costs, to the last digit in ``Decimal``).
    """

    __slots__ = ("held", "hits", "misses", "tokens", "waits")

    def __init__(self) -> None:
        self.waits = Histogram()
        #: model -> [input, output, cache write, cache read, calls with usage]; written by
        #: FleetStats' per-call recorders, inline (they are on the hot path), or summed from
        #: ``held``.
        self.tokens: dict[str, list[int]] = {}
        #: model -> token tuples recorded but not summed yet: a batched call's recorder only
        #: appends its tuple, and :meth:`fold_tokens` sums them at C speed once a model holds
        #: :data:`PENDING` (or someone reads).
        self.held: dict[str, list[tuple[int, int, int, int]]] = {}
        self.hits = 0
        self.misses = 0

    def fold_tokens(self) -> None:
        """Sum the held token tuples into ``tokens``."""
        for model, held in self.held.items():
            if not held:
                continue
            slot = self.tokens.get(model)
            if slot is None:
                slot = self.tokens[model] = [0, 0, 0, 0, 0]
            for i, total in enumerate(map(sum, zip(*held, strict=True))):
                slot[i] += total
            slot[4] += len(held)
            held.clear()

    def usage(self) -> TokenUsage:
        self.fold_tokens()
        total = [0, 0, 0, 0]
        for slot in self.tokens.values():
            for i in range(4):
                total[i] += slot[i]
        return TokenUsage(*total)

    def cost(self, prices: PriceTable, *, batch: bool, flex: bool = False) -> tuple[Cost, int]:
        """The cost of the priced models' tokens, and how many calls had no price."""
        self.fold_tokens()
        cost = Cost()
        unpriced = 0
        for model, slot in self.tokens.items():
            priced = prices.cost(model, TokenUsage(*slot[:4]), batch=batch, flex=flex)
            if priced is None:
                unpriced += slot[4]
            else:
                cost = cost + priced
        return cost, unpriced
