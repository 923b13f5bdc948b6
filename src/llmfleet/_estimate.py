"""What the fleet has learnt of latencies: a decayed high quantile per model (docs/design.md §8).

Pure: observations and the clock come in as arguments, so convergence is tested without
sleeping.
"""

from __future__ import annotations

from collections import deque
from typing import Final, final

__all__ = ["Estimator"]

#: Observations kept per model; older ones have decayed to nothing anyway.
KEEP: Final = 64
#: Each newer observation weighs this much more than the one before it.
DECAY: Final = 0.85


@final
class Estimator:
    """A high quantile (``q``) of recent observations per key, newest weighted most.

    Weights fall geometrically with age (``DECAY`` per newer observation), so after a change
    the estimate follows the new values within a few observations instead of averaging
    over the whole history.

    :param q: the quantile, e.g. 0.9 for a p90.
    :param prior: the estimate for a key with no observation (``None``: unknown).
    """

    __slots__ = ("_cache", "_prior", "_q", "_seen")

    def __init__(self, q: float, prior: float | None = None) -> None:
        if not 0 < q <= 1:
            raise ValueError(f"q must be in (0, 1], got {q}")
        self._q = q
        self._prior = prior
        self._seen: dict[str, deque[float]] = {}
        # The estimate per key until its next observation: it is read on every submit and
        # costs a sort of up to KEEP weighted values.
        self._cache: dict[str, float] = {}

    def observe(self, key: str, value: float) -> None:
        """Record one observation for ``key``."""
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = deque(maxlen=KEEP)
        seen.append(value)
        self._cache.pop(key, None)

    def count(self, key: str) -> int:
        """Observations kept for ``key``."""
        seen = self._seen.get(key)
        return len(seen) if seen is not None else 0

    def estimate(self, key: str) -> float | None:
        """The decayed quantile for ``key``; the prior when nothing was seen (maybe ``None``)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        seen = self._seen.get(key)
        if not seen:
            return self._prior
        value = self._cache[key] = self._quantile(seen)
        return value

    def _quantile(self, seen: deque[float]) -> float:
        weighted = []
        weight = 1.0
        for value in reversed(seen):
            weighted.append((value, weight))
            weight *= DECAY
        weighted.sort()
        total = sum(w for _, w in weighted)
        target = self._q * total
        running = 0.0
        for value, w in weighted:
            running += w
            if running >= target - 1e-12:
                return value
        return weighted[-1][0]
