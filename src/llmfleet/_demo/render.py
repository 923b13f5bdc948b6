"""The demo on a terminal, with rich: the live progress display and the report's tables.

rich comes with the ``emulator`` extra; the figures themselves are in ``report``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import anyio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._stats import Route
from ..pricing import Cost
from .report import minus, ms, percent, policy_line, span, usd

if TYPE_CHECKING:
    from rich.console import Console

    from .._stats import FleetStats
    from .config import DemoConfig
    from .report import DemoReport

__all__ = ["LiveView", "print_intro", "print_report"]


@final
class LiveView:
    """A progress display per route, drawn from the fleet's live stats on the event loop."""

    def __init__(self, console: Console, stats: FleetStats, planned: dict[Route, int]) -> None:
        self._stats = stats
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            # Redrawn by run() on the event loop, not by rich's own thread, so the stats are
            # read between the fleet's steps, never during one.
            auto_refresh=False,
        )
        self._direct = self.progress.add_task(
            "chat    (direct)", total=planned[Route.DIRECT], detail=""
        )
        self._batch = self.progress.add_task(
            "grading (batch) ", total=planned[Route.BATCH], detail=""
        )

    def draw(self) -> None:
        stats = self._stats
        done_direct = stats.wait_ms(Route.DIRECT).count
        done_batch = stats.wait_ms(Route.BATCH).count
        self.progress.update(
            self._direct,
            completed=done_direct,
            detail=f"in flight {stats.sync_calls - done_direct}",
        )
        self.progress.update(
            self._batch,
            completed=done_batch,
            detail=(
                f"queued {stats.queued} · batches in flight {stats.in_flight_batches} · "
                f"flushed {sum(stats.flushes.values())}"
            ),
        )
        self.progress.refresh()

    async def run(self) -> None:
        """Redraw ten times a second until cancelled."""
        while True:
            self.draw()
            await anyio.sleep(0.1)


def print_intro(console: Console, config: DemoConfig, url: str) -> None:
    """One paragraph: what runs, against what."""
    where = (
        f"the emulator at {url} (batches end after {span(config.turnaround_s)} s)"
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
    console.print(
        f"[bold]llmfleet demo[/bold] ({config.scenario}, {config.provider}): {config.agents} "
        f"chat agents × {config.turns} turns (budget {config.chat_budget_ms / 1000:g} s → "
        f"direct) and a grading burst of {config.calls} calls ({grading} → batch), against "
        f"{where}.",
        highlight=False,
    )


def _print_budgets(report: DemoReport, console: Console) -> None:
    s = report.stats
    config = report.config
    table = Table(
        title="Budgets, as each caller measured them (wait from submit to outcome)",
        title_justify="left",
    )
    table.add_column("planned route")
    for name in ("budget", "calls", "kept", "late", "deadline exceeded", "worst wait"):
        table.add_column(name, justify="right")
    budget_text = {
        Route.DIRECT: f"{config.chat_budget_ms / 1000:g} s",
        Route.BATCH: f"{span(config.grading_budget_ms, 1000)} s",
    }
    names = {Route.DIRECT: "chat (direct)", Route.BATCH: "grading (batched)"}
    rows = [(names[route], budget_text[route], report.budgets[route]) for route in Route]
    rows.append(("total", "", report.budgets_total))
    for name, budget, b in rows:
        table.add_row(
            name,
            budget,
            str(b.calls),
            f"{b.kept} ({b.kept_percent}%)",
            str(b.late),
            str(b.exceeded),
            "–" if b.worst_ratio is None else f"{b.worst_ratio:.0%} of budget",
            style="bold" if name == "total" else None,
        )
    console.print(table)
    hits = " · ".join(
        f"{route.value} {s.deadline_hits[route]} hit / {s.deadline_misses[route]} missed"
        for route in Route
    )
    console.print(
        f"The fleet's own count, per route that answered a batched call: {hits}.",
        highlight=False,
    )


def _print_escalations(report: DemoReport, console: Console) -> None:
    e = report.escalation
    table = Table(
        title="Batching vs keeping the budgets (USD, exact)",
        title_justify="left",
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    table.add_row(
        "saving from batching",
        usd(report.batching_saving),
        f"{report.stats.batched_calls - e.escalations} batched calls not escalated; list price "
        "− paid on the batch route",
    )
    table.add_row(
        "escalations",
        str(e.escalations),
        f"{e.answered} answered by the direct route; {e.routed_by_deadline} more calls routed "
        "direct at submit (no batch could meet their budget)",
    )
    table.add_row(
        "escalation_cost (paid)",
        usd(e.cost.paid),
        f"list {usd(e.cost.list_price)}: the two lines below",
    )
    table.add_row(
        "  escalated direct calls",
        usd(e.direct.paid),
        "at list price; counted in the direct route's cost",
    )
    table.add_row(
        "  dropped batch results",
        usd(e.dropped.paid),
        f"{e.results_dropped} results that came after their caller had its answer: billed at "
        "batch price, unused, in no route's cost",
    )
    table.add_row(
        "net saving",
        usd(report.net_saving),
        f"{percent(report.net_saving, report.cost.list_price)}% of the list price of every "
        f"answer ({usd(report.cost.list_price)}): batching's saving − dropped results",
    )
    console.print(table)


def print_report(report: DemoReport, console: Console) -> None:
    """Print the report as tables, ending with whether the fleet's bill matches the ledger's."""
    s = report.stats
    console.print()
    console.print(
        f"Done in {report.elapsed_s:.1f} s on {report.backend}. "
        f"Policy: {policy_line(report.config.policy())}.",
        highlight=False,
    )

    routed = {Route.DIRECT: s.sync_calls, Route.BATCH: s.batched_calls}
    calls = Table(title="Calls per route (wait: from submit to result)", title_justify="left")
    for name in ("route", "planned", "routed", "ended", "wait p50", "wait p95", "wait max"):
        calls.add_column(name, justify="left" if name == "route" else "right")
    for route in Route:
        waits = s.wait_ms[route]
        calls.add_row(
            route.value,
            str(report.planned[route]),
            str(routed[route]),
            str(report.ended[route]),
            ms(waits.p50),
            ms(waits.p95),
            ms(waits.max),
        )
    console.print(calls)

    outcome_names = ("succeeded", "errored", "expired", "canceled", "withdrawn", "failed")
    outcomes = Table(title="Outcomes per route", title_justify="left")
    outcomes.add_column("route")
    for name in outcome_names:
        outcomes.add_column(name, justify="right")
    for route in Route:
        seen = report.outcomes[route]
        outcomes.add_row(route.value, *(str(seen.get(name, 0)) for name in outcome_names))
    console.print(outcomes)

    batches = Table(title="Batches", title_justify="left", show_header=False)
    batches.add_column(style="bold")
    batches.add_column()
    submitted = str(s.batches_submitted)
    if report.ledger is not None:
        submitted += f" (the emulator created {report.ledger.batches_created})"
    batches.add_row("submitted", submitted)
    batches.add_row(
        "flushed by reason",
        " · ".join(f"{reason} {count}" for reason, count in s.flushes.items()),
    )
    batches.add_row(
        "size min / mean / max",
        "–"
        if s.batch_size_mean is None
        else f"{s.batch_size_min} / {s.batch_size_mean:.1f} / {s.batch_size_max}",
    )
    console.print(batches)

    deadlines = report.config.scenario == "deadlines" or s.escalations or s.routed_by_deadline
    if deadlines:
        _print_budgets(report, console)

    tokens = Table(title="Tokens per route", title_justify="left")
    for name in ("route", "input", "output", "cache write", "cache read"):
        tokens.add_column(name, justify="left" if name == "route" else "right")
    for route in Route:
        t = s.tokens[route]
        tokens.add_row(
            route.value,
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            f"{t.cache_write_tokens:,}",
            f"{t.cache_read_tokens:,}",
        )
    console.print(tokens)

    _print_money(report, console)
    if deadlines:
        _print_escalations(report, console)

    console.print(
        f"Saving: [bold]{usd(report.cost.saving)}[/bold] "
        f"({report.saving_percent}% of the list price {usd(report.cost.list_price)}).",
        highlight=False,
    )
    if s.unpriced_calls:
        console.print(f"{s.unpriced_calls} calls had no known price: their tokens are counted.")
    exceeded = report.budgets_total.exceeded
    if exceeded:
        console.print(
            f"{exceeded} callers got DeadlineExceededError (deadline action 'fail').",
            highlight=False,
        )
    if report.handled:
        console.print(f"Errors handled by their callers ({len(report.handled)}):")
        for line in report.handled:
            console.print(f"  • {line}", highlight=False, markup=False)
    if not report.all_ended:
        console.print(
            f"[bold red]✗ not every call ended:[/bold red] planned {report.planned}, "
            f"ended {report.ended}",
            highlight=False,
        )
    total = report.budgets_total
    if report.budgets_kept is False:
        console.print(
            f"[bold red]✗ the budget is a promise, and {total.calls - total.kept} of "
            f"{total.calls} calls did not get their answer within it[/bold red] "
            "(deadline action 'escalate').",
            highlight=False,
        )
    elif report.budgets_kept:
        console.print(
            f"[bold green]✓ Every call got its answer within its budget[/bold green] "
            f"({total.calls} calls, by their callers' own clocks).",
            highlight=False,
        )
    _print_ledger_verdict(report, console)


def _print_money(report: DemoReport, console: Console) -> None:
    s = report.stats
    ledger = report.ledger
    dropped = report.escalation.dropped
    money = Table(title="Cost (USD, exact)", title_justify="left")
    for name in ("route", "list price", "paid", "saving"):
        money.add_column(name, justify="left" if name == "route" else "right")
    if ledger is not None:
        money.add_column("ledger list", justify="right")
        money.add_column("ledger charged", justify="right")
    rows: list[tuple[str, Cost, Cost | None]] = [
        (route.value, s.cost[route], ledger.cost[route] if ledger is not None else None)
        for route in Route
    ]
    show_dropped = dropped != Cost() or (ledger is not None and ledger.unused != Cost())
    if show_dropped:
        # Billed on the batch route but not in its cost (the fleet has it in escalation_cost):
        # the ledger's figure is already in its batch row, so it is shown here only to compare.
        rows.append(("  of which dropped", dropped, ledger.unused if ledger is not None else None))
    rows.append(("total", report.spent, ledger.total if ledger is not None else None))
    for name, cost, billed in rows:
        cells = [name, usd(cost.list_price), usd(cost.paid), usd(cost.saving)]
        if billed is not None:
            cells += [usd(billed.list_price), usd(billed.paid)]
        money.add_row(*cells, style="bold" if name == "total" else None)
    if show_dropped:
        money.caption = (
            "The fleet's batch row holds the answers its callers took; 'of which dropped' is "
            "the batch price of results that came after their caller had its answer (in "
            "escalation_cost), which the ledger bills on its batch row: batch + dropped = "
            "ledger batch."
        )
        money.caption_justify = "left"
    console.print(money)


def _print_ledger_verdict(report: DemoReport, console: Console) -> None:
    ledger = report.ledger
    if ledger is None or report.ledger_matches is None:
        console.print("No ledger to compare with: the demo ran against a real endpoint.")
        return
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
        console.print(
            f"[bold green]✓ The fleet's figures match the emulator's ledger exactly[/bold green] "
            f"({how}).",
            highlight=False,
        )
        return
    s = report.stats
    unseen = minus(ledger.cost[Route.BATCH], s.cost[Route.BATCH] + dropped)
    console.print(
        "[bold red]✗ The fleet's figures do NOT match the emulator's ledger[/bold red] "
        f"(see the last two columns above): the ledger billed {usd(unseen.paid)} on the "
        "batch route that the fleet counted nowhere, and "
        f"{usd(minus(ledger.cost[Route.DIRECT], s.cost[Route.DIRECT]).paid)} more on the "
        "direct route.",
        highlight=False,
    )
