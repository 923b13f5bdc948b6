"""How ``llmfleet run`` shows its progress: a snapshot of the run (:class:`RunSnapshot`),
rendered as one line by a pure function (:func:`render_progress`), written either as one
updating line on a terminal (:class:`TerminalProgress`) or as plain periodic lines in a log
(:class:`PlainProgress`).

A batch can run for hours with no line answered: the line therefore shows what the provider
itself reports of each batch in flight (its state and its count of finished requests), and an
estimate of the time left from the rate at which requests finish.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, final

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..providers import BatchStatus

__all__ = [
    "PlainProgress",
    "Progress",
    "RunSnapshot",
    "TerminalProgress",
    "estimate_eta",
    "render_progress",
]

#: Batches named one by one in a plain line; beyond, "+N more".
PLAIN_BATCHES: Final = 8
#: A plain line at least this often (seconds), even when nothing changed: a log of a run
#: that waits hours on a batch still shows it is alive.
HEARTBEAT_S: Final = 60.0


@final
@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """Where a run stands at one instant.

    :param lines: request lines read from the input (blank lines not counted).
    :param submitted: lines sent to the provider in a batch (this run's or a re-attached one).
    :param queued: lines waiting for their batch to fill.
    :param answered: lines whose output line is decided (any status).
    :param from_journal: of ``answered``, those answered from the journal with no request.
    :param batches: each batch in flight, with the status last polled (``None`` before it).
    :param elapsed_s: seconds since the run started.
    :param eta_s: an estimate of the seconds left, if there is one.
    :param total: request lines in the whole input, if known (``lines`` of them read so far).
    :param rate: requests finished a second since the run started, once there is one.
    :param paid: dollars the succeeded lines cost so far (at batch price), if priced.
    """

    lines: int
    submitted: int
    queued: int
    answered: int
    from_journal: int = 0
    batches: tuple[tuple[str, BatchStatus | None], ...] = ()
    elapsed_s: float = 0.0
    eta_s: float | None = None
    total: int | None = None
    rate: float | None = None
    paid: Decimal | None = None

    @property
    def processing(self) -> int | None:
        """Requests the provider reports not yet finished, over the batches in flight that
        report counts (``None`` when batches are in flight but none has reported yet)."""
        counts = [s for _, s in self.batches if s is not None and s.requests is not None]
        if not counts:
            return None if self.batches else 0
        return sum((s.requests or 0) - (s.requests_done or 0) for s in counts)

    @property
    def provider_done(self) -> int:
        """Requests the provider reports finished in the batches in flight (their results
        not yet fetched)."""
        return sum((s.requests_done or 0) for _, s in self.batches if s is not None)


def estimate_eta(
    start: tuple[float, int], now: float, done: int, total: int, *, min_elapsed_s: float = 5.0
) -> float | None:
    """Seconds left at the rate requests finished since ``start``, or ``None`` while there
    is no rate to go by.

    :param start: ``(time, done)`` when the estimate started.
    :param now: the time now (same clock).
    :param done: requests finished now (answered, or finished by the provider).
    :param total: requests in all.
    """
    elapsed = now - start[0]
    progress = done - start[1]
    if done >= total:
        return 0.0
    if elapsed < min_elapsed_s or progress <= 0:
        return None
    return (total - done) * elapsed / progress


def duration(seconds: float) -> str:
    """``42s``, ``5m07s``, ``3h02m``, ``2d04h``: short and stable in width."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


def _dollars(amount: Decimal) -> str:
    """``$12.34``, ``$0.4200``, ``$0.000042``: the first significant digits of a small sum."""
    if amount >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.4f}" if amount >= Decimal("0.01") else f"${amount:.6f}"


def _batch(batch_id: str, status: BatchStatus | None) -> str:
    if status is None:
        return f"{batch_id} (created)"
    count = ""
    if status.requests is not None:
        count = f" {status.requests_done if status.requests_done is not None else '?'}"
        count += f"/{status.requests}"
    return f"{batch_id} ({status.state or '?'}{count})"


def render_progress(
    snap: RunSnapshot, *, width: int | None = None, max_batches: int = PLAIN_BATCHES
) -> str:
    """The snapshot as one line of text: counts, batches in flight, elapsed time and ETA.

    :param width: the most characters the line may take (a terminal's width): batches that
        do not fit are summed up as ``+N more``, and the line is cut at ``width``.
    :param max_batches: the most batches named one by one.
    """
    processing = snap.processing
    journal = f" ({snap.from_journal} from the journal)" if snap.from_journal else ""
    # "120000/1000000 read" while the input is being read, "1000000 read" once it all is.
    total = snap.total
    read = f"{snap.lines}" if total is None or snap.lines >= total else f"{snap.lines}/{total}"
    head = (
        f"{read} read, {snap.submitted} submitted, "
        f"{'?' if processing is None else processing} processing, "
        f"{snap.answered} answered{journal}, {snap.queued} queued"
    )
    eta = "" if snap.eta_s is None else f", ETA {duration(snap.eta_s)}"
    rate = "" if snap.rate is None else f", {snap.rate:,.0f}/s"
    paid = "" if not snap.paid else f", {_dollars(snap.paid)} so far"
    tail = f" | {duration(snap.elapsed_s)} elapsed{rate}{eta}{paid}"
    names = [_batch(batch_id, status) for batch_id, status in snap.batches]
    n = len(names)
    batches = ""
    if n:
        label = f" | {n} batch{'es' if n != 1 else ''} in flight"
        shown = min(n, max_batches)
        while True:
            more = f", +{n - shown} more" if 0 < shown < n else ""
            batches = label + (": " + ", ".join(names[:shown]) if shown else "") + more
            if width is None or shown == 0 or len(head + batches + tail) <= width:
                break
            shown -= 1
    line = head + batches + tail
    if width is not None and len(line) > width:
        line = line[: max(0, width - 1)] + "…"
    return line


class Progress(Protocol):
    """Where a run shows how far it is."""

    def update(self, snap: RunSnapshot, *, final: bool = False) -> None:
        """Show ``snap`` (``final``: the run's last, always shown)."""

    def close(self) -> None:
        """End the display (a terminal's updating line gets its newline); idempotent."""


@final
class PlainProgress:
    """Progress as plain lines (stderr is a file or a pipe): a line when the counts changed,
    at most one a second (every change of the queue at once), one at least every
    :data:`HEARTBEAT_S` seconds, and the last one."""

    def __init__(self, stream: TextIO, clock: Callable[[], float]) -> None:
        self._stream = stream
        self._clock = clock
        self._last: tuple[Any, ...] | None = None
        self._printed = -math.inf

    def update(self, snap: RunSnapshot, *, final: bool = False) -> None:
        state = (
            snap.lines,
            snap.submitted,
            snap.queued,
            snap.answered,
            snap.from_journal,
            snap.batches,
        )
        now = self._clock()
        quiet = now - self._printed
        if not final and quiet < HEARTBEAT_S:
            if state == self._last:
                return
            # Every change of the queue is shown at once (a test waits for "N queued").
            queue_changed = self._last is None or self._last[2] != snap.queued
            if not queue_changed and quiet < 1.0:
                return
        self._last, self._printed = state, now
        self._stream.write(f"progress: {render_progress(snap)}\n")
        self._stream.flush()

    def close(self) -> None:
        pass


@final
class TerminalProgress:
    """Progress as one line redrawn in place on a terminal, at most five times a second."""

    def __init__(
        self,
        stream: TextIO,
        clock: Callable[[], float],
        width: Callable[[], int] = lambda: shutil.get_terminal_size().columns,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._width = width
        self._open = False
        self._drawn = -math.inf

    def update(self, snap: RunSnapshot, *, final: bool = False) -> None:
        now = self._clock()
        if not final and now - self._drawn < 0.2:
            return
        self._drawn = now
        # One column spare: a line as wide as the terminal wraps on some terminals.
        line = render_progress(snap, width=max(20, self._width() - 1))
        self._stream.write(f"\r{line}\x1b[K")
        self._stream.flush()
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self._stream.write("\n")
            self._stream.flush()
