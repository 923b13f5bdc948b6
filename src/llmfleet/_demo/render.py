"""The demo on a terminal, with rich: the live progress display, and the report's tables and
lines (built as plain data by ``tables``) drawn.

rich comes with the ``emulator`` extra; nothing else in the demo imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

import anyio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .._stats import Route
from .tables import Line, intro, report_blocks

if TYPE_CHECKING:
    from rich.console import Console

    from .._stats import FleetStats
    from .config import DemoConfig
    from .report import DemoReport
    from .tables import Sheet, Tone

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


_STYLES: Final[dict[Tone, str]] = {
    "plain": "",
    "strong": "bold",
    "good": "bold green",
    "bad": "bold red",
}


def _text(line: Line) -> Text:
    # Text, not markup: a handled error's message may hold brackets.
    return Text.assemble(*((text, _STYLES[tone]) for text, tone in line.spans))


def _table(sheet: Sheet) -> Table:
    table = Table(title=sheet.title, title_justify="left", show_header=sheet.show_header)
    for column in sheet.columns:
        table.add_column(
            column.name,
            justify="right" if column.figures else "left",
            style="bold" if column.strong else None,
        )
    for row in sheet.rows:
        table.add_row(*row.cells, style="bold" if row.strong else None)
    if sheet.caption is not None:
        table.caption = sheet.caption
        table.caption_justify = "left"
    return table


def print_intro(console: Console, config: DemoConfig, url: str) -> None:
    """One paragraph: what runs, against what."""
    console.print(_text(intro(config, url)), highlight=False)


def print_report(report: DemoReport, console: Console) -> None:
    """Print the report as tables, ending with whether the fleet's bill matches the ledger's."""
    for block in report_blocks(report):
        if isinstance(block, Line):
            console.print(_text(block), highlight=False)
        else:
            console.print(_table(block))
