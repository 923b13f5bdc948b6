"""What the demo observed, as plain data: the figures, the report, its JSON and its text.

No terminal display here (``render`` draws the tables with rich, which only the ``emulator``
extra brings): ``llmfleet demo --json`` and any other reader use this module alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, final

from .._stats import Route
from ..pricing import Cost

if TYPE_CHECKING:
    from .._policy import RoutingPolicy
    from .._stats import Percentiles, StatsSnapshot
    from .config import DemoConfig

__all__ = [
    "DEMO_ROUTES",
    "BudgetFigures",
    "DemoReport",
    "EscalationFigures",
    "LedgerFigures",
    "minus",
    "ms",
    "percent",
    "policy_line",
    "report_json",
    "span",
    "usd",
]

#: The routes the demo's callers take (its models have no flex tier): the report's rows.
DEMO_ROUTES: Final = (Route.DIRECT, Route.BATCH)


# -- what the run observed ------------------------------------------------------------------


def minus(a: Cost, b: Cost) -> Cost:
    """``a - b``, list price and paid apart."""
    return Cost(a.list_price - b.list_price, a.paid - b.paid)


@final
@dataclass(frozen=True, slots=True)
class LedgerFigures:
    """What the emulator billed: cost per route (``"direct"``, ``"batch"``) and batches made.

    ``unused`` is the part of the batch route's bill for calls whose caller did not take the
    batch's answer (escalated to the direct route, or failed at the deadline): the batch item
    was processed and billed anyway.
    """

    cost: dict[Route, Cost]
    batches_created: int
    unused: Cost = field(default_factory=Cost)
    unused_items: int = 0

    @property
    def total(self) -> Cost:
        return sum(self.cost.values(), Cost())


@final
@dataclass(frozen=True, slots=True)
class BudgetFigures:
    """Calls with a budget, measured by their callers: wait from submit to outcome vs budget.

    ``kept``: an outcome (a result, or an error of its own) within the budget; ``late``: an
    outcome after it; ``exceeded``: ``DeadlineExceededError`` (``deadline_action="fail"``).
    """

    calls: int = 0
    kept: int = 0
    late: int = 0
    exceeded: int = 0
    #: The longest wait as a share of its call's budget (1.0: right at the deadline).
    worst_ratio: float | None = None

    @property
    def kept_percent(self) -> Decimal:
        if not self.calls:
            return Decimal(100)
        return (Decimal(self.kept) / self.calls * 100).quantize(Decimal("0.1"))

    def __add__(self, other: BudgetFigures) -> BudgetFigures:
        ratios = [r for r in (self.worst_ratio, other.worst_ratio) if r is not None]
        return BudgetFigures(
            calls=self.calls + other.calls,
            kept=self.kept + other.kept,
            late=self.late + other.late,
            exceeded=self.exceeded + other.exceeded,
            worst_ratio=max(ratios) if ratios else None,
        )


@final
@dataclass(frozen=True, slots=True)
class EscalationFigures:
    """What keeping the budgets cost (docs/design.md §8).

    ``stats.escalation_cost`` is the escalated direct calls plus the batch price of results that
    came anyway; the first part is also in the direct route's cost, the second in no route's.
    ``direct`` is the first part, summed from the ``on_result`` events of escalated calls;
    ``dropped`` the rest.
    """

    escalations: int
    #: Escalated calls the direct route answered (with their cost in ``direct``).
    answered: int
    cost: Cost
    direct: Cost
    routed_by_deadline: int
    results_dropped: int

    @property
    def dropped(self) -> Cost:
        """The batch price of results that came after their caller had its answer (or its
        ``DeadlineExceededError``): billed, unused, and in no route's cost."""
        return minus(self.cost, self.direct)


@final
@dataclass(frozen=True, slots=True)
class DemoReport:
    """Everything the demo observed: the fleet's stats, the callers' side, the ledger's bill."""

    config: DemoConfig
    backend: str
    #: ``"emulator"`` or the real endpoint's base URL.
    target: str
    elapsed_s: float
    stats: StatsSnapshot
    #: Calls planned, and calls whose caller got a result or an exception, per route.
    planned: dict[Route, int]
    ended: dict[Route, int]
    #: Outcomes per route, as the ``on_result`` hook saw them.
    outcomes: dict[Route, dict[str, int]]
    #: One line per call whose caller handled an exception.
    handled: list[str]
    ledger: LedgerFigures | None
    #: Per planned route (chat: direct, grading: batch), as each caller measured it.
    budgets: dict[Route, BudgetFigures]
    escalation: EscalationFigures

    @property
    def cost(self) -> Cost:
        """The fleet's cost of the answers its callers got, over both routes."""
        return sum(self.stats.cost.values(), Cost())

    @property
    def spent(self) -> Cost:
        """Everything paid for: the answers, plus the batch results dropped (see
        :attr:`EscalationFigures.dropped`)."""
        return self.cost + self.escalation.dropped

    @property
    def saving_percent(self) -> Decimal:
        """Saving as a percentage of the list price, to two places."""
        return percent(self.cost.saving, self.cost.list_price)

    @property
    def batching_saving(self) -> Decimal:
        """What the batch route saved on the answers it gave (list price − paid)."""
        return self.stats.cost[Route.BATCH].saving

    @property
    def net_saving(self) -> Decimal:
        """The list price of every answer (as if all went direct) minus everything paid,
        dropped batch results included: what batching saved, less what escalating wasted."""
        return self.cost.list_price - self.spent.paid

    @property
    def budgets_total(self) -> BudgetFigures:
        return sum(self.budgets.values(), BudgetFigures())

    @property
    def budgets_kept(self) -> bool | None:
        """With ``deadline_action="escalate"`` against the emulator (whose direct latency the
        demo sets), every call answered within its budget; ``None`` where nothing is
        promised (``"wait"``, ``"fail"``, a real endpoint)."""
        if self.config.deadline_action != "escalate" or not self.config.emulated:
            return None
        total = self.budgets_total
        return total.kept == total.calls

    @property
    def ledger_matches(self) -> bool | None:
        """The ledger's bill equals the fleet's figures, exactly; ``None`` without one.

        Direct route: the ledger equals the fleet's direct cost (escalated calls included).
        Batch route: the ledger equals the fleet's batch cost plus the dropped results, the
        part of ``escalation_cost`` no route holds; and that part equals what the ledger billed
        for the calls that did not take their batch's answer.
        """
        if self.ledger is None:
            return None
        cost = self.stats.cost
        dropped = self.escalation.dropped
        return (
            cost[Route.DIRECT] == self.ledger.cost[Route.DIRECT]
            and cost[Route.BATCH] + dropped == self.ledger.cost[Route.BATCH]
            and dropped == self.ledger.unused
        )

    @property
    def all_ended(self) -> bool:
        """Every planned call ended (with a result or an exception)."""
        return self.ended == self.planned

    @property
    def ok(self) -> bool:
        """Every call ended and, against the emulator, the figures match the ledger and, with
        ``"escalate"``, every budget was kept."""
        return (
            self.all_ended and self.ledger_matches is not False and self.budgets_kept is not False
        )


def percent(part: Decimal, whole: Decimal) -> Decimal:
    """``part`` as a percentage of ``whole``, to two places (0 when ``whole`` is 0)."""
    if not whole:
        return Decimal(0)
    return (part / whole * 100).quantize(Decimal("0.01"))


def span(value: float | tuple[float, float], scale: float = 1.0) -> str:
    """A value or a ``low–high`` range, divided by ``scale``."""
    if isinstance(value, tuple):
        return f"{value[0] / scale:g}–{value[1] / scale:g}"
    return f"{value / scale:g}"


# -- the JSON and the text ------------------------------------------------------------------


def usd(amount: Decimal) -> str:
    """Dollars, every digit kept."""
    # Exact: these are the figures compared with the ledger, so no rounding on display.
    return f"${amount.normalize():f}"


def ms(value: float | None) -> str:
    """Milliseconds for a table cell (``–`` for none)."""
    return "–" if value is None else f"{value:,.0f} ms"


def _cost_json(cost: Cost) -> dict[str, str]:
    return {"list_price": str(cost.list_price), "paid": str(cost.paid), "saving": str(cost.saving)}


def _wait_json(p: Percentiles) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "count": p.count,
        "p50": rounded(p.p50),
        "p95": rounded(p.p95),
        "max": rounded(p.max),
    }


def _budget_json(b: BudgetFigures) -> dict[str, Any]:
    return {
        "calls": b.calls,
        "kept": b.kept,
        "late": b.late,
        "deadline_exceeded": b.exceeded,
        "kept_percent": str(b.kept_percent),
        "worst_wait_over_budget": None if b.worst_ratio is None else round(b.worst_ratio, 3),
    }


def report_json(report: DemoReport) -> dict[str, Any]:
    """The report as JSON-ready data: money as exact decimal strings, waits in ms."""
    s = report.stats
    e = report.escalation
    config = asdict(report.config)
    config.pop("api_key")  # never printed
    ledger: dict[str, Any] | None = None
    if report.ledger is not None:
        total = report.ledger.total
        ledger = {
            "batches_created": report.ledger.batches_created,
            "cost": {
                **{route.value: _cost_json(report.ledger.cost[route]) for route in DEMO_ROUTES},
                "total": _cost_json(total),
            },
            # The part of the batch route's bill for calls that did not take their batch's
            # answer: the fleet has it in escalation_cost, not in the batch route's cost.
            "unused_batch_results": {
                "items": report.ledger.unused_items,
                **_cost_json(report.ledger.unused),
            },
            "saving": str(total.saving),
            "matches": report.ledger_matches,
        }
    return {
        "ok": report.ok,
        "scenario": report.config.scenario,
        "provider": report.config.provider,
        "backend": report.backend,
        "target": report.target,
        "elapsed_s": round(report.elapsed_s, 3),
        "config": config,
        "policy": asdict(report.config.policy()),
        "calls": {
            "planned": {route.value: report.planned[route] for route in DEMO_ROUTES},
            "routed": {"direct": s.sync_calls, "batch": s.batched_calls},
            "ended": {route.value: report.ended[route] for route in DEMO_ROUTES},
        },
        "batches": {
            "submitted": s.batches_submitted,
            "flushes": dict(s.flushes),
            "size": {"min": s.batch_size_min, "mean": s.batch_size_mean, "max": s.batch_size_max},
        },
        "waits_ms": {route.value: _wait_json(s.wait_ms[route]) for route in DEMO_ROUTES},
        "outcomes": {
            "total": {
                "succeeded": s.succeeded,
                "errored": s.errored,
                "expired": s.expired,
                "canceled": s.canceled,
                "withdrawn": s.withdrawn,
                "failed": s.failed,
            },
            **{route.value: report.outcomes[route] for route in DEMO_ROUTES},
        },
        "handled_errors": report.handled,
        "budgets": {
            **{route.value: _budget_json(report.budgets[route]) for route in DEMO_ROUTES},
            "total": _budget_json(report.budgets_total),
            "all_kept": report.budgets_kept,
            "fleet_hits": {route.value: s.deadline_hits[route] for route in DEMO_ROUTES},
            "fleet_misses": {route.value: s.deadline_misses[route] for route in DEMO_ROUTES},
        },
        "escalations": {
            "count": e.escalations,
            "answered": e.answered,
            "routed_direct_by_deadline": e.routed_by_deadline,
            "results_dropped": e.results_dropped,
            "escalation_cost": _cost_json(e.cost),
            "direct_calls": _cost_json(e.direct),
            "dropped_results": _cost_json(e.dropped),
        },
        "tokens": {route.value: asdict(s.tokens[route]) for route in DEMO_ROUTES},
        "cost": {
            **{route.value: _cost_json(s.cost[route]) for route in DEMO_ROUTES},
            "total": _cost_json(report.cost),
        },
        "spent": _cost_json(report.spent),
        "saving": str(report.cost.saving),
        "saving_percent": str(report.saving_percent),
        "batching_saving": str(report.batching_saving),
        "net_saving": str(report.net_saving),
        "unpriced_calls": s.unpriced_calls,
        "ledger": ledger,
    }


def policy_line(policy: RoutingPolicy) -> str:
    """The policy in one sentence."""
    deadline = f"deadline action {policy.deadline_action!r}"
    if policy.deadline_action == "escalate":
        deadline += f" with a {policy.escalation_margin_ms / 1000:g} s margin"
    return (
        f"direct up to {policy.sync_max_latency_ms / 1000:g} s budgets; batches of "
        f"{policy.batch_min_size}–{policy.batch_max_size} calls or after a "
        f"{policy.batch_window_ms / 1000:g} s window; polls every "
        f"{policy.poll_interval_ms / 1000:g} s, slowing to "
        f"{policy.poll_max_interval_ms / 1000:g} s"
        + ("" if policy.batch_api_rpm is None else f" (at most {policy.batch_api_rpm}/min)")
        + f"; {deadline}"
    )
