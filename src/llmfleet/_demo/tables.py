"""The report for people, as plain data: tables (:class:`Sheet`) and lines of text
(:class:`Line`) with a tone per span, in the order they are shown.

No terminal library here: ``render`` draws these with rich; anything else can print
:attr:`Line.text` and the cells as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias, final

from .._stats import Route
from ..pricing import Cost
from .report import DEMO_ROUTES, minus, ms, percent, policy_line, span, usd

if TYPE_CHECKING:
    from .config import DemoConfig
    from .report import DemoReport

__all__ = ["Column", "Line", "Row", "Sheet", "Tone", "intro", "report_blocks"]

#: How a span of text is shown: as it is, in bold, as good news, as bad news.
Tone: TypeAlias = Literal["plain", "strong", "good", "bad"]


@final
@dataclass(frozen=True, slots=True)
class Line:
    """A line of text, in spans of one tone each (none: an empty line)."""

    spans: tuple[tuple[str, Tone], ...] = ()

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.spans)


def _line(*spans: str | tuple[str, Tone]) -> Line:
    return Line(tuple((s, "plain") if isinstance(s, str) else s for s in spans))


@final
@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its header, whether it holds figures (right-aligned), or labels in bold."""

    name: str = ""
    figures: bool = False
    strong: bool = False


@final
@dataclass(frozen=True, slots=True)
class Row:
    """A table row; ``strong`` for a total."""

    cells: tuple[str, ...]
    strong: bool = False


@final
@dataclass(frozen=True, slots=True)
class Sheet:
    """A table with a title, and with a caption when the figures need one."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    show_header: bool = True
    caption: str | None = None


Block: TypeAlias = "Sheet | Line"


def _per_route(title: str, names: tuple[str, ...]) -> tuple[str, tuple[Column, ...]]:
    return title, (Column("route"), *(Column(name, figures=True) for name in names))


def intro(config: DemoConfig, url: str) -> Line:
    """One paragraph: what runs, against what."""
    where = (
        config.vendor.where(url, span(config.turnaround_s))
        if config.emulated
        else f"{url} (a real endpoint: real batches, real money)"
    )
    budget = config.grading_budget_ms
    low = budget[0] if isinstance(budget, tuple) else budget
    grading = (
        f"budget {span(budget, 60_000)} min"
        if low >= 60_000
        else f"budgets {span(budget, 1000)} s, deadline action {config.deadline_action!r}"
    )
    return _line(
        ("llmfleet demo", "strong"),
        f" ({config.scenario}, {config.provider}): {config.agents} chat agents × "
        f"{config.turns} turns (budget {config.chat_budget_ms / 1000:g} s → direct) and a "
        f"grading burst of {config.calls} calls ({grading} → batch), against {where}.",
    )


def _calls(report: DemoReport) -> Sheet:
    s = report.stats
    routed = {Route.DIRECT: s.sync_calls, Route.BATCH: s.batched_calls}
    names = ("planned", "routed", "ended", "wait p50", "wait p95", "wait max")
    title, columns = _per_route("Calls per route (wait: from submit to result)", names)
    rows = []
    for route in DEMO_ROUTES:
        waits = s.wait_ms[route]
        cells = (str(report.planned[route]), str(routed[route]), str(report.ended[route]))
        rows.append(Row((route.value, *cells, ms(waits.p50), ms(waits.p95), ms(waits.max))))
    return Sheet(title, columns, tuple(rows))


def _outcomes(report: DemoReport) -> Sheet:
    names = ("succeeded", "errored", "expired", "canceled", "withdrawn", "failed")
    title, columns = _per_route("Outcomes per route", names)
    rows = tuple(
        Row((route.value, *(str(report.outcomes[route].get(name, 0)) for name in names)))
        for route in DEMO_ROUTES
    )
    return Sheet(title, columns, rows)


def _batches(report: DemoReport) -> Sheet:
    s = report.stats
    submitted = str(s.batches_submitted)
    if report.ledger is not None:
        submitted += f" (the emulator created {report.ledger.batches_created})"
    sizes = (
        "–"
        if s.batch_size_mean is None
        else f"{s.batch_size_min} / {s.batch_size_mean:.1f} / {s.batch_size_max}"
    )
    flushes = " · ".join(f"{reason} {count}" for reason, count in s.flushes.items())
    rows = (
        Row(("submitted", submitted)),
        Row(("flushed by reason", flushes)),
        Row(("size min / mean / max", sizes)),
    )
    return Sheet("Batches", (Column(strong=True), Column()), rows, show_header=False)


def _budgets(report: DemoReport) -> list[Block]:
    s = report.stats
    config = report.config
    names = ("budget", "calls", "kept", "late", "deadline exceeded", "worst wait")
    columns = (Column("planned route"), *(Column(name, figures=True) for name in names))
    budget_text = {
        Route.DIRECT: f"{config.chat_budget_ms / 1000:g} s",
        Route.BATCH: f"{span(config.grading_budget_ms, 1000)} s",
    }
    labels = {Route.DIRECT: "chat (direct)", Route.BATCH: "grading (batched)"}
    figures = [(labels[route], budget_text[route], report.budgets[route]) for route in DEMO_ROUTES]
    figures.append(("total", "", report.budgets_total))
    rows = tuple(
        Row(
            (
                name,
                budget,
                str(b.calls),
                f"{b.kept} ({b.kept_percent}%)",
                str(b.late),
                str(b.exceeded),
                "–" if b.worst_ratio is None else f"{b.worst_ratio:.0%} of budget",
            ),
            strong=name == "total",
        )
        for name, budget, b in figures
    )
    title = "Budgets, as each caller measured them (wait from submit to outcome)"
    hits = " · ".join(
        f"{route.value} {s.deadline_hits[route]} hit / {s.deadline_misses[route]} missed"
        for route in DEMO_ROUTES
    )
    return [
        Sheet(title, columns, rows),
        _line(f"The fleet's own count, per route that answered a batched call: {hits}."),
    ]


def _tokens(report: DemoReport) -> Sheet:
    names = ("input", "output", "cache write", "cache read")
    title, columns = _per_route("Tokens per route", names)
    rows = []
    for route in DEMO_ROUTES:
        t = report.stats.tokens[route]
        counts = (t.input_tokens, t.output_tokens, t.cache_write_tokens, t.cache_read_tokens)
        rows.append(Row((route.value, *(f"{n:,}" for n in counts))))
    return Sheet(title, columns, tuple(rows))


def _money(report: DemoReport) -> Sheet:
    s = report.stats
    ledger = report.ledger
    dropped = report.escalation.dropped
    names = ["list price", "paid", "saving"]
    if ledger is not None:
        names += ["ledger list", "ledger charged"]
    title, columns = _per_route("Cost (USD, exact)", tuple(names))
    figures: list[tuple[str, Cost, Cost | None]] = [
        (route.value, s.cost[route], ledger.cost[route] if ledger is not None else None)
        for route in DEMO_ROUTES
    ]
    show_dropped = dropped != Cost() or (ledger is not None and ledger.unused != Cost())
    if show_dropped:
        # Billed on the batch route but not in its cost (the fleet has it in escalation_cost):
        # the ledger's figure is already in its batch row, so it is shown here only to compare.
        billed = ledger.unused if ledger is not None else None
        figures.append(("  of which dropped", dropped, billed))
    figures.append(("total", report.spent, ledger.total if ledger is not None else None))
    rows = []
    for name, cost, billed in figures:
        cells = [name, usd(cost.list_price), usd(cost.paid), usd(cost.saving)]
        if billed is not None:
            cells += [usd(billed.list_price), usd(billed.paid)]
        rows.append(Row(tuple(cells), strong=name == "total"))
    caption = (
        "The fleet's batch row holds the answers its callers took; 'of which dropped' is the "
        "batch price of results that came after their caller had its answer (in "
        "escalation_cost), which the ledger bills on its batch row: batch + dropped = ledger "
        "batch."
    )
    return Sheet(title, columns, tuple(rows), caption=caption if show_dropped else None)


def _escalations(report: DemoReport) -> Sheet:
    e = report.escalation
    rows = (
        (
            "saving from batching",
            usd(report.batching_saving),
            f"{report.stats.batched_calls - e.escalations} batched calls not escalated; list "
            "price − paid on the batch route",
        ),
        (
            "escalations",
            str(e.escalations),
            f"{e.answered} answered by the direct route; {e.routed_by_deadline} more calls "
            "routed direct at submit (no batch could meet their budget)",
        ),
        (
            "escalation_cost (paid)",
            usd(e.cost.paid),
            f"list {usd(e.cost.list_price)}: the two lines below",
        ),
        (
            "  escalated direct calls",
            usd(e.direct.paid),
            "at list price; counted in the direct route's cost",
        ),
        (
            "  dropped batch results",
            usd(e.dropped.paid),
            f"{e.results_dropped} results that came after their caller had its answer: billed "
            "at batch price, unused, in no route's cost",
        ),
        (
            "net saving",
            usd(report.net_saving),
            f"{percent(report.net_saving, report.cost.list_price)}% of the list price of every "
            f"answer ({usd(report.cost.list_price)}): batching's saving − dropped results",
        ),
    )
    return Sheet(
        "Batching vs keeping the budgets (USD, exact)",
        (Column(strong=True), Column(figures=True), Column()),
        tuple(Row(cells) for cells in rows),
        show_header=False,
    )


def _verdicts(report: DemoReport) -> list[Line]:
    s = report.stats
    lines = [
        _line(
            "Saving: ",
            (usd(report.cost.saving), "strong"),
            f" ({report.saving_percent}% of the list price {usd(report.cost.list_price)}).",
        )
    ]
    if s.unpriced_calls:
        lines.append(
            _line(f"{s.unpriced_calls} calls had no known price: their tokens are counted.")
        )
    exceeded = report.budgets_total.exceeded
    if exceeded:
        lines.append(
            _line(f"{exceeded} callers got DeadlineExceededError (deadline action 'fail').")
        )
    if report.handled:
        lines.append(_line(f"Errors handled by their callers ({len(report.handled)}):"))
        lines.extend(_line(f"  • {handled}") for handled in report.handled)
    if not report.all_ended:
        lines.append(
            _line(
                ("✗ not every call ended:", "bad"),
                f" planned {report.planned}, ended {report.ended}",
            )
        )
    total = report.budgets_total
    if report.budgets_kept is False:
        missed = f"{total.calls - total.kept} of {total.calls} calls"
        lines.append(
            _line(
                (
                    f"✗ the budget is a promise, and {missed} did not get their answer within it",
                    "bad",
                ),
                " (deadline action 'escalate').",
            )
        )
    elif report.budgets_kept:
        lines.append(
            _line(
                ("✓ Every call got its answer within its budget", "good"),
                f" ({total.calls} calls, by their callers' own clocks).",
            )
        )
    lines.append(_ledger_verdict(report))
    return lines


def _ledger_verdict(report: DemoReport) -> Line:
    ledger = report.ledger
    if ledger is None or report.ledger_matches is None:
        return _line("No ledger to compare with: the demo ran against a real endpoint.")
    dropped = report.escalation.dropped
    if report.ledger_matches:
        if dropped == Cost() and ledger.unused == Cost():
            how = "list price and charged, per route, compared as Decimals"
        else:
            how = (
                "list price and charged, compared as Decimals: direct route = fleet's direct "
                "cost, escalated calls included; batch route = fleet's batch cost + the "
                f"{ledger.unused_items} dropped batch results in escalation_cost"
            )
        return _line(
            ("✓ The fleet's figures match the emulator's ledger exactly", "good"), f" ({how})."
        )
    s = report.stats
    unseen = minus(ledger.cost[Route.BATCH], s.cost[Route.BATCH] + dropped)
    direct = minus(ledger.cost[Route.DIRECT], s.cost[Route.DIRECT])
    return _line(
        ("✗ The fleet's figures do NOT match the emulator's ledger", "bad"),
        f" (see the last two columns above): the ledger billed {usd(unseen.paid)} on the "
        f"batch route that the fleet counted nowhere, and {usd(direct.paid)} more on the "
        "direct route.",
    )


def report_blocks(report: DemoReport) -> list[Block]:
    """The report as tables and lines, in order, ending with whether the fleet's bill
    matches the ledger's."""
    s = report.stats
    blocks: list[Block] = [
        Line(),
        _line(
            f"Done in {report.elapsed_s:.1f} s on {report.backend}. "
            f"Policy: {policy_line(report.config.policy())}."
        ),
        _calls(report),
        _outcomes(report),
        _batches(report),
    ]
    deadlines = report.config.scenario == "deadlines" or s.escalations or s.routed_by_deadline
    if deadlines:
        blocks += _budgets(report)
    blocks += [_tokens(report), _money(report)]
    if deadlines:
        blocks.append(_escalations(report))
    blocks += _verdicts(report)
    return blocks
