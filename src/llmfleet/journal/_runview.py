"""The live progress bar of ``llmfleet run`` on a terminal (rich, only when installed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from rich.progress import TaskID

    from .._dispatcher import FleetDispatcher

__all__ = ["RichProgress"]


@final
class RichProgress:
    """A bar of lines done, with the queue, the batches in flight and the journal's answers.
    Redrawn by each :meth:`update` (no refresh thread)."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("requests"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(stderr=True),
            auto_refresh=False,
        )
        self._task: TaskID | None = None

    def update(self, done: int, total: int, fleet: FleetDispatcher) -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("requests", total=total, detail="")
        s = fleet.stats
        detail = (
            f"{s.queued} queued, {s.in_flight_batches} batches in flight, "
            f"{s.from_journal} from the journal"
        )
        self._bar.update(self._task, completed=done, detail=detail)
        self._bar.refresh()
        if done >= total:
            self._bar.stop()
