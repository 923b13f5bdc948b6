"""What the fleet did: :class:`FleetStats` (live) and :class:`StatsSnapshot` (frozen).

docs/design.md §6. :class:`FleetStats` is the only writer of its counters: the rest of the
fleet reports through its private recording methods. The structures that take each call's
wait and tokens cheaply and read them exactly (the histogram, a route's tally, and
:class:`Percentiles`, re-exported here) are in ``_tally``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, final, overload

from ._tally import PENDING, Histogram, Percentiles, Tally
from .pricing import Cost, PriceTable, TokenUsage

if TYPE_CHECKING:
    from ._budget import RequestBudget

__all__ = [
    "FleetStats",
    "Outcome",
    "Percentiles",
    "ResultEvent",
    "Route",
    "StatsSnapshot",
]


class Route(enum.Enum):
    """The way a call went to the provider."""

    DIRECT = "direct"
    BATCH = "batch"
    #: The provider's flex tier: the synchronous endpoint at batch prices (docs/design.md §2.3).
    FLEX = "flex"


# Read on per-call paths: a member read through the enum class costs ten times a global's.
_BATCH: Final = Route.BATCH


Outcome = Literal["succeeded", "errored", "expired", "canceled", "withdrawn", "failed"]
_OUTCOMES: Final[tuple[Outcome, ...]] = (
    "succeeded",
    "errored",
    "expired",
    "canceled",
    "withdrawn",
    "failed",
)
_REASONS: Final = ("size", "window", "drain", "deadline")
#: Why a flex call went on to the standard tier: a 429 saying the flex tier has no capacity,
#: another 429, any other provider error, or its budget running out (docs/design.md §2.3).
_FLEX_FALLBACKS: Final = ("unavailable", "rate_limited", "error", "deadline")


@final
@dataclass(frozen=True, slots=True)
class ResultEvent:
    """What the optional ``on_result`` hook receives when a call ends."""

    route: Route
    outcome: Outcome
    model: str
    #: Seconds from ``submit`` to the outcome.
    wait_s: float
    batch_id: str | None = None
    custom_id: str | None = None
    usage: TokenUsage | None = None
    #: ``None`` when the model has no known price (or nothing was billed).
    cost: Cost | None = None


@final
@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A frozen copy of :class:`FleetStats` at one instant. Field meanings are documented there."""

    sync_calls: int
    batched_calls: int
    batches_submitted: int
    queued: int
    in_flight_batches: int
    succeeded: int
    errored: int
    expired: int
    canceled: int
    withdrawn: int
    failed: int
    results_dropped: int
    flushes: Mapping[str, int]
    batch_size_min: int | None
    batch_size_mean: float | None
    batch_size_max: int | None
    wait_ms: Mapping[Route, Percentiles]
    tokens: Mapping[Route, TokenUsage]
    cost: Mapping[Route, Cost]
    unpriced_calls: int
    api_requests: Mapping[str, int]
    rate_limited: int
    budget_wait_s: float
    end_lag_ms: Percentiles
    escalations: int
    escalation_cost: Cost
    routed_by_deadline: int
    below_min_batch: int
    deadline_hits: Mapping[Route, int]
    deadline_misses: Mapping[Route, int]
    from_journal: int = 0
    reattached_batches: int = 0
    flex_calls: int = 0
    flex_fallbacks: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(_FLEX_FALLBACKS, 0))
    )
    flex_fallback_cost: Cost = field(default_factory=Cost)

    @property
    def saving(self) -> Decimal:
        """Money saved against list price, over every priced call (USD)."""
        return sum((c.saving for c in self.cost.values()), Decimal(0))


T = TypeVar("T")


class _View(Generic[T]):
    """A read-only attribute of :class:`FleetStats` backed by its private counters."""

    __slots__ = ("_name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _View[T]: ...
    @overload
    def __get__(self, obj: FleetStats, owner: type) -> T: ...
    def __get__(self, obj: FleetStats | None, owner: type) -> T | _View[T]:
        if obj is None:
            return self
        value: T = getattr(obj._c, self._name)
        return value


@dataclass(slots=True)
class _Counters:
    sync_calls: int = 0
    batched_calls: int = 0
    batches_submitted: int = 0
    queued: int = 0
    in_flight_batches: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0
    withdrawn: int = 0
    failed: int = 0
    results_dropped: int = 0
    rate_limited: int = 0
    api_requests: dict[str, int] = field(default_factory=dict)
    end_lag: Histogram = field(default_factory=lambda: Histogram())
    escalations: int = 0
    escalation_cost: Cost = field(default_factory=Cost)
    routed_by_deadline: int = 0
    from_journal: int = 0
    reattached_batches: int = 0
    below_min_batch: int = 0
    batch_items: int = 0
    batch_size_min: int | None = None
    batch_size_max: int | None = None
    flushes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_REASONS, 0))
    direct: Tally = field(default_factory=lambda: Tally())
    batch: Tally = field(default_factory=lambda: Tally())
    flex: Tally = field(default_factory=lambda: Tally())
    flex_calls: int = 0
    flex_fallbacks: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(_FLEX_FALLBACKS, 0)
    )
    flex_fallback_cost: Cost = field(default_factory=Cost)

    def tally(self, route: Route) -> Tally:
        if route is Route.DIRECT:
            return self.direct
        return self.batch if route is Route.BATCH else self.flex


@final
class FleetStats:
    """A live, read-only view of what the fleet has done; :meth:`snapshot` freezes it.

    ``sync_calls`` / ``batched_calls`` count calls by the route chosen at submit, whatever
    their outcome; ``batches_submitted`` counts batches the provider accepted. Each call ends
    in exactly one outcome: ``succeeded`` (a response), ``errored`` (the provider answered it
    with an error), ``expired``, ``canceled`` (its batch was canceled), ``withdrawn`` (its
    caller left first) or ``failed`` (anything else: a refused batch, a closed fleet, a lost
    connection).
    """

    __slots__ = ("_budget", "_c", "_prices")

    sync_calls = _View[int]()
    batched_calls = _View[int]()
    batches_submitted = _View[int]()
    #: Calls waiting in the queue now.
    queued = _View[int]()
    #: Batches created (or being created) and not yet resolved.
    in_flight_batches = _View[int]()
    succeeded = _View[int]()
    errored = _View[int]()
    expired = _View[int]()
    canceled = _View[int]()
    withdrawn = _View[int]()
    failed = _View[int]()
    #: Batch results that arrived after their caller had left.
    results_dropped = _View[int]()
    #: 429 answers the fleet got from the batch endpoints.
    rate_limited = _View[int]()
    #: Batched calls sent down the direct route near their deadline (docs/design.md §8).
    escalations = _View[int]()
    #: What escalations cost: their direct calls, plus the batch price of results that
    #: came anyway (and were dropped); and the direct calls of ``below_min_batch``.
    escalation_cost = _View[Cost]()
    #: Calls over ``sync_max_latency_ms`` routed direct because no batch could meet their
    #: budget (the turnaround estimate exceeds it).
    routed_by_deadline = _View[int]()
    #: Batched calls answered from the journal, with no request (their outcome is counted
    #: as well; their tokens and cost are not: they were paid for by an earlier run).
    from_journal = _View[int]()
    #: Batches of an earlier run that this fleet re-attached to through its journal.
    reattached_batches = _View[int]()
    #: Batched calls sent direct because their flush was smaller than the provider's
    #: smallest batch (``min_batch_requests``: Bedrock's 100 records a job).
    below_min_batch = _View[int]()
    #: Calls routed to the provider's flex tier at submit, whatever their outcome (a call
    #: that fell back to the standard tier is counted here, and its answer on the direct
    #: route).
    flex_calls = _View[int]()
    #: What flex fallbacks cost: the standard-tier calls that answered them (their price is
    #: in ``cost[Route.DIRECT]`` too).
    flex_fallback_cost = _View[Cost]()

    @property
    def flex_fallbacks(self) -> Mapping[str, int]:
        """Flex calls that went on to the standard tier, by reason: ``unavailable`` (a 429
        saying flex has no capacity), ``rate_limited`` (another 429), ``error`` (another
        provider error), ``deadline`` (the flex answer would have come too late)."""
        return MappingProxyType(self._c.flex_fallbacks)

    @property
    def deadline_hits(self) -> Mapping[Route, int]:
        """Calls with a budget answered by their deadline, per route that answered."""
        return MappingProxyType({r: self._c.tally(r).hits for r in Route})

    @property
    def deadline_misses(self) -> Mapping[Route, int]:
        """Calls with a budget answered after their deadline, per route that answered."""
        return MappingProxyType({r: self._c.tally(r).misses for r in Route})

    def __init__(
        self, budget: RequestBudget | None = None, prices: PriceTable | None = None
    ) -> None:
        self._c = _Counters()
        self._budget = budget
        self._prices = prices if prices is not None else PriceTable()

    @property
    def api_requests(self) -> Mapping[str, int]:
        """Requests made to the batch endpoints, by kind: ``create``, ``status``, ``list``,
        ``results``, ``cancel``. (The direct route is counted in ``sync_calls``.)"""
        return MappingProxyType(self._c.api_requests)

    @property
    def budget_wait_s(self) -> float:
        """Seconds spent waiting for the batch-endpoint request budget, summed over requests."""
        return self._budget.waited_s if self._budget is not None else 0.0

    @property
    def end_lag_ms(self) -> Percentiles:
        """Per batch: from the provider's end of the batch to its callers' resolution (ms)."""
        return self._c.end_lag.summary()

    @property
    def flushes(self) -> Mapping[str, int]:
        """Flushes by reason: ``size``, ``window``, ``drain``, ``deadline``."""
        return MappingProxyType(self._c.flushes)

    @property
    def tokens(self) -> Mapping[Route, TokenUsage]:
        """Tokens per route, from each response's ``usage``."""
        return MappingProxyType({r: self._c.tally(r).usage() for r in Route})

    @property
    def cost(self) -> Mapping[Route, Cost]:
        """Cost per route at list price and as paid, over priced calls."""
        return self._priced()[0]

    @property
    def saving(self) -> Decimal:
        """Money saved against list price, over every priced call (USD)."""
        return sum((c.saving for c in self.cost.values()), Decimal(0))

    @property
    def unpriced_calls(self) -> int:
        """Calls whose model has no known price (their tokens are counted, not their cost)."""
        return self._priced()[1]

    def _priced(self) -> tuple[Mapping[Route, Cost], int]:
        """Cost per route and the unpriced calls, from one pass over the token sums."""
        costs: dict[Route, Cost] = {}
        unpriced = 0
        for route in Route:
            costs[route], missing = self._c.tally(route).cost(
                self._prices, batch=route is Route.BATCH, flex=route is Route.FLEX
            )
            unpriced += missing
        return MappingProxyType(costs), unpriced

    @property
    def batch_size_min(self) -> int | None:
        """Fewest calls in one flushed batch (``None`` before the first flush)."""
        return self._c.batch_size_min

    @property
    def batch_size_max(self) -> int | None:
        """Most calls in one flushed batch (``None`` before the first flush)."""
        return self._c.batch_size_max

    @property
    def batch_size_mean(self) -> float | None:
        """Mean calls per flushed batch (``None`` before the first flush)."""
        batches = sum(self._c.flushes.values())
        return self._c.batch_items / batches if batches else None

    def wait_ms(self, route: Route) -> Percentiles:
        """Wait from submit to outcome on ``route`` (p50/p95/max, ms)."""
        return self._c.tally(route).waits.summary()

    def snapshot(self) -> StatsSnapshot:
        """A frozen copy of every figure, taken now."""
        c = self._c
        cost, unpriced = self._priced()
        return StatsSnapshot(
            sync_calls=c.sync_calls,
            batched_calls=c.batched_calls,
            batches_submitted=c.batches_submitted,
            queued=c.queued,
            in_flight_batches=c.in_flight_batches,
            succeeded=c.succeeded,
            errored=c.errored,
            expired=c.expired,
            canceled=c.canceled,
            withdrawn=c.withdrawn,
            failed=c.failed,
            results_dropped=c.results_dropped,
            flushes=MappingProxyType(dict(c.flushes)),
            batch_size_min=c.batch_size_min,
            batch_size_mean=self.batch_size_mean,
            batch_size_max=c.batch_size_max,
            wait_ms=MappingProxyType({r: self.wait_ms(r) for r in Route}),
            tokens=self.tokens,
            cost=cost,
            unpriced_calls=unpriced,
            api_requests=MappingProxyType(dict(c.api_requests)),
            rate_limited=c.rate_limited,
            budget_wait_s=self.budget_wait_s,
            end_lag_ms=self.end_lag_ms,
            escalations=c.escalations,
            escalation_cost=c.escalation_cost,
            routed_by_deadline=c.routed_by_deadline,
            below_min_batch=c.below_min_batch,
            deadline_hits=self.deadline_hits,
            deadline_misses=self.deadline_misses,
            from_journal=c.from_journal,
            reattached_batches=c.reattached_batches,
            flex_calls=c.flex_calls,
            flex_fallbacks=MappingProxyType(dict(c.flex_fallbacks)),
            flex_fallback_cost=c.flex_fallback_cost,
        )

    def __repr__(self) -> str:
        c = self._c
        return (
            f"<FleetStats sync_calls={c.sync_calls} batched_calls={c.batched_calls} "
            f"batches_submitted={c.batches_submitted} queued={c.queued} "
            f"in_flight_batches={c.in_flight_batches}>"
        )

    # -- recording (the fleet's side; not public) -----------------------------------------
    #
    # These are the only writers of the counters: the rest of the fleet says what happened
    # through them. Each is a few integer operations; the direct route's two are on every
    # direct call's path (a budget of a couple of microseconds for the whole call), and
    # every batched call makes one call to :meth:`_enqueue` and one to :meth:`_outcome`.

    def _direct_started(self) -> None:
        """A call routed direct (counted whatever its outcome)."""
        self._c.sync_calls += 1

    def _outcome(
        self,
        route: Route,
        outcome: Outcome,
        model: str,
        wait_s: float,
        tokens: tuple[int, int, int, int] | None,
        hit: bool | None,
    ) -> None:
        """One call's outcome; ``hit``: answered by its deadline (``None``: no deadline).

        Every batched call's outcome comes here, so Histogram.add is inline and the tokens
        are held, summed per 1,024 at C speed (Tally.fold_tokens)."""
        c = self._c
        tally = c.batch if route is _BATCH else c.tally(route)  # batched: most calls
        if outcome == "succeeded":
            c.succeeded += 1
        else:
            setattr(c, outcome, getattr(c, outcome) + 1)
        waits = tally.waits
        pending = waits.pending
        pending.append(wait_s * 1000 if wait_s > 0.0 else 0.0)
        if len(pending) >= PENDING:
            waits.fold()
        if tokens is not None:
            held = tally.held.get(model)
            if held is None:
                held = tally.held[model] = []
            held.append(tokens)
            if len(held) >= PENDING:
                tally.fold_tokens()
        if hit is not None:
            if hit:
                tally.hits += 1
            else:
                tally.misses += 1

    def _flex_started(self) -> None:
        """A call routed to the flex tier (counted whatever its outcome)."""
        self._c.flex_calls += 1

    def _flex_fallback(self, reason: str) -> None:
        """A flex call goes on to the standard tier (``reason``: see ``flex_fallbacks``)."""
        self._c.flex_fallbacks[reason] += 1

    def _flex_fallback_answered(self, cost: Cost | None) -> None:
        if cost is not None:
            self._c.flex_fallback_cost = self._c.flex_fallback_cost + cost

    def _queue_below(self, limit: int) -> bool:
        """Whether fewer than ``limit`` calls are queued (``queued`` without its view)."""
        return self._c.queued < limit

    def _enqueue(self, limit: int) -> bool:
        """Count a call routed to the batch route as queued if fewer than ``limit`` calls
        are; ``False`` (nothing counted) if the queue is full. One call per batched item:
        the room check and the count together."""
        c = self._c
        if c.queued >= limit:
            return False
        c.queued += 1
        c.batched_calls += 1
        return True

    def _dequeued(self) -> None:
        """A queued call left the queue for anything but a flush."""
        self._c.queued -= 1

    def _flushed(self, reason: str, size: int) -> None:
        """``size`` queued calls left the queue in one batch."""
        c = self._c
        c.queued -= size
        c.in_flight_batches += 1
        c.flushes[reason] += 1
        c.batch_items += size
        c.batch_size_min = size if c.batch_size_min is None else min(c.batch_size_min, size)
        c.batch_size_max = size if c.batch_size_max is None else max(c.batch_size_max, size)

    def _batch_submitted(self) -> None:
        self._c.batches_submitted += 1

    def _batch_done(self, end_lag_s: float | None) -> None:
        """A flushed batch is resolved; ``end_lag_s``: from the provider's end to now."""
        c = self._c
        c.in_flight_batches -= 1
        if end_lag_s is not None:
            c.end_lag.add(end_lag_s * 1000)

    def _result_dropped(self, escalation_cost: Cost | None) -> None:
        """A batch result came for a caller that left or was answered direct (then billed
        at batch price too: ``escalation_cost``)."""
        c = self._c
        c.results_dropped += 1
        if escalation_cost is not None:
            c.escalation_cost = c.escalation_cost + escalation_cost

    def _escalated(self) -> None:
        self._c.escalations += 1

    def _escalation_answered(self, cost: Cost | None) -> None:
        if cost is not None:
            self._c.escalation_cost = self._c.escalation_cost + cost

    def _routed_by_deadline(self) -> None:
        self._c.routed_by_deadline += 1

    def _from_journal(self, succeeded: bool) -> None:
        """A batched call answered from the journal with no request (its stored outcome is
        final: succeeded or errored). Its outcome counts; its tokens and cost do not (an
        earlier run paid for them)."""
        c = self._c
        c.batched_calls += 1
        c.from_journal += 1
        if succeeded:
            c.succeeded += 1
        else:
            c.errored += 1

    def _reattached(self) -> None:
        """A batch of an earlier run, re-attached through the journal, is in flight."""
        c = self._c
        c.in_flight_batches += 1
        c.reattached_batches += 1

    def _below_min_batch(self, size: int) -> None:
        """``size`` queued calls left the queue for the direct route: their flush was smaller
        than the provider's smallest batch (their direct price counts in ``escalation_cost``
        through :meth:`_escalation_answered`)."""
        c = self._c
        c.queued -= size
        c.below_min_batch += size

    def _api_request(self, endpoint: str) -> None:
        """One request to a batch endpoint (``create``, ``status``, ``list``, ...)."""
        requests = self._c.api_requests
        requests[endpoint] = requests.get(endpoint, 0) + 1

    def _rate_limited(self) -> None:
        self._c.rate_limited += 1


OnResult = Callable[[ResultEvent], Any]
