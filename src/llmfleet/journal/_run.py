"""``llmfleet run requests.jsonl --out results.jsonl``: an offline job on top of the fleet,
resumable through its journal (docs/journal.md).

Input: one request per line, ``{"custom_id": "...", "params": {...}}``, where ``params`` are
the keyword arguments of the SDK's create call (``messages.create`` for Anthropic,
``chat.completions.create`` or ``responses.create`` for OpenAI), as in the providers' own
batch files. Blank (whitespace-only) lines are skipped: they get no output line, and the
report counts them. JSONL tools treat a blank line as no record (a file often ends in one),
and every output line carries its input ``line`` number, so outputs still pair with inputs.

Output: one line per request line, in input order::

    {"custom_id": "a", "line": 1, "status": "succeeded", "response": {...}}
    {"custom_id": "b", "line": 2, "status": "errored", "error": {"type": "...", "message": "..."}}

``status`` is ``succeeded`` (``response`` is the SDK's response as JSON), ``errored`` (the
provider answered it with an error), ``expired``, ``canceled``, ``missing`` (not processed:
a rerun sends it again), ``failed`` (the batch was refused, the fleet closed), or
``invalid`` (the line itself is wrong; nothing was sent). The output file is written to
``<out>.part`` and renamed at the end, so ``<out>`` is always a whole run's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from .._open import open_fleet
from .._policy import RoutingPolicy
from ..errors import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultMissingError,
    UnbatchableRequestError,
)
from ..pricing import Cost, PriceTable, TokenUsage
from ._keys import params_hash
from ._runcheck import for_cli
from ._runview import RunSnapshot, estimate_eta

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from decimal import Decimal
    from pathlib import Path

    from .._dispatcher import FleetDispatcher
    from .._stats import ResultEvent
    from ..providers import BatchStatus
    from ._runview import Progress

__all__ = ["Line", "RunConfig", "RunReport", "journal_path_for", "read_requests", "run_requests"]

#: Longest ``custom_id`` a line may carry.
MAX_CUSTOM_ID: Final = 256
# Keyword arguments of submit_batch() itself, which params must not carry.
_RESERVED: Final = frozenset({"idempotency_key", "latency_budget_ms"})


def journal_path_for(out: Path) -> Path:
    """The default journal of a run writing ``out``: ``<out>.journal`` beside it."""
    return out.with_name(out.name + ".journal")


@final
@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its number, its ``custom_id``, and its params or what is wrong."""

    number: int
    custom_id: str | None
    params: dict[str, Any] | None
    error: str | None = None


def read_requests(path: Path, *, blank: Callable[[int], None] | None = None) -> Iterator[Line]:
    """Parse the input file line by line; a bad line is a :class:`Line` with its ``error``
    set, never an exception.

    :param blank: called with the number of each blank (whitespace-only) line, which is
        skipped.
    """
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            if not text.strip():
                if blank is not None:
                    blank(number)
                continue
            yield _parse(number, text, seen)


def _parse(number: int, text: str, seen: dict[str, int]) -> Line:
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Line(number, None, None, f"not JSON ({exc})")
    if not isinstance(data, dict):
        return Line(
            number, None, None, 'not a JSON object: expected {"custom_id": ..., "params": {...}}'
        )
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
        return Line(
            number,
            None,
            None,
            f'"custom_id" must be a string of 1 to {MAX_CUSTOM_ID} characters, '
            f"got {custom_id!r:.60}",
        )
    if custom_id in seen:
        return Line(
            number, custom_id, None, f"duplicate custom_id: line {seen[custom_id]} has it already"
        )
    seen[custom_id] = number
    params = data.get("params")
    if not isinstance(params, dict):
        return Line(
            number, custom_id, None, '"params" must be a JSON object: the create call\'s arguments'
        )
    reserved = sorted(set(params) & _RESERVED)
    if reserved:
        return Line(
            number,
            custom_id,
            None,
            f"{', '.join(reserved)} in params: the fleet's own arguments, not the API's; drop them",
        )
    extra = sorted(set(data) - {"custom_id", "params"})
    if extra:
        return Line(
            number,
            custom_id,
            None,
            f"unknown field(s) {', '.join(extra)}: a line has only custom_id and params",
        )
    return Line(number, custom_id, params)


@final
@dataclass(frozen=True, kw_only=True, slots=True)
class RunConfig:
    """What ``llmfleet run`` was asked to do (see ``llmfleet run --help``)."""

    requests: Path
    out: Path
    journal: Path
    batch_size: int = 10_000
    window_s: float = 2.0
    poll_s: float = 5.0
    poll_max_s: float = 60.0
    prices: PriceTable = field(default_factory=PriceTable)

    def policy(self) -> RoutingPolicy:
        size = max(1, self.batch_size)
        return RoutingPolicy(
            sync_max_latency_ms=0,
            batch_window_ms=round(self.window_s * 1000),
            batch_min_size=size,
            batch_max_size=size,
            poll_interval_ms=round(self.poll_s * 1000),
            poll_max_interval_ms=max(round(self.poll_max_s * 1000), round(self.poll_s * 1000)),
            deadline_action="wait",
        )


@final
@dataclass(slots=True)
class RunReport:
    """What a run did: lines by status, requests and batches, tokens and money."""

    lines: int = 0
    #: Blank lines skipped (no output line).
    blank: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    from_journal: int = 0
    batches_created: int = 0
    batches_reattached: int = 0
    tokens: TokenUsage = field(default_factory=TokenUsage)
    #: Every succeeded line's cost at batch price (this run's and earlier runs').
    cost: Cost = field(default_factory=Cost)
    #: The share of ``cost`` answered by requests of this run.
    cost_this_run: Cost = field(default_factory=Cost)
    unpriced: int = 0

    @property
    def ok(self) -> bool:
        """Every line succeeded."""
        return self.statuses.get("succeeded", 0) == self.lines


async def run_requests(client: Any, config: RunConfig, progress: Progress | None) -> RunReport:
    """Run every request of ``config.requests`` through a journaled fleet over ``client`` and
    write ``config.out`` in input order.

    :raises JournalError: the journal cannot be used.
    :raises OSError: the input cannot be read or the output written.
    """
    blank: list[int] = []
    lines = list(read_requests(config.requests, blank=blank.append))
    report = RunReport(lines=len(lines), blank=len(blank))
    started = anyio.current_time()
    # Lines handed to the fleet, those it refused at once, lines whose output is decided.
    handed = refused = answered = 0
    this_run: list[Cost] = []

    def on_result(event: ResultEvent) -> None:
        if event.cost is not None:
            this_run.append(event.cost)

    out_lines: list[str | None] = [None] * len(lines)
    part = config.out.with_name(config.out.name + ".part")
    written = 0
    async with open_fleet(
        client,
        policy=config.policy(),
        journal=config.journal,
        on_result=on_result,
        prices=config.prices,
    ) as fleet:
        provider = fleet.provider
        dump = getattr(provider, "dump_value", None)
        with part.open("w", encoding="utf-8") as out:

            def finish(index: int, record: dict[str, Any]) -> None:
                # In input order: a line is written once every line before it is.
                nonlocal written, answered
                answered += 1
                out_lines[index] = json.dumps(record, ensure_ascii=False)
                _count(report, record["status"])
                while written < len(out_lines) and out_lines[written] is not None:
                    out.write(f"{out_lines[written]}\n")
                    out_lines[written] = ""  # written: release it
                    written += 1

            async def one(index: int, line: Line) -> None:
                assert line.params is not None
                assert line.custom_id is not None
                # The custom_id names the call across reruns; the params hash makes an
                # edited line a new call rather than the old one's answer.
                key = f"run:{line.custom_id}:{params_hash(line.params)}"
                head = {"custom_id": line.custom_id, "line": line.number}
                nonlocal handed, refused
                handed += 1
                try:
                    value = await fleet.submit_batch(idempotency_key=key, **line.params)
                except Exception as exc:  # every line gets its output line, whatever failed
                    if isinstance(exc, UnbatchableRequestError):
                        refused += 1  # refused at submit: never sent
                    finish(index, head | _error_record(exc))
                    return
                tokens = provider.tokens_of(value)
                if tokens is not None:
                    usage = TokenUsage(*tokens)
                    report.tokens += usage
                    cost = config.prices.cost(provider.model_of(line.params), usage, batch=True)
                    if cost is None:
                        report.unpriced += 1
                    else:
                        report.cost += cost
                response = dump(value) if dump is not None else value
                finish(index, head | {"status": "succeeded", "response": response})

            eta_start: tuple[float, int] | None = None

            def snapshot() -> RunSnapshot:
                nonlocal eta_start
                stats = fleet.stats
                batches = tuple(_in_flight(fleet))
                snap = RunSnapshot(
                    lines=len(lines),
                    submitted=max(0, handed - refused - stats.queued - stats.from_journal),
                    queued=stats.queued,
                    answered=answered,
                    from_journal=stats.from_journal,
                    batches=batches,
                    elapsed_s=anyio.current_time() - started,
                )
                # The rate counts requests the provider finished for this run: lines answered
                # at once (invalid, or from the journal) would make it look fast.
                instant = stats.from_journal + report.statuses.get("invalid", 0)
                done = answered - instant + snap.provider_done
                now = anyio.current_time()
                if eta_start is None:
                    eta_start = (now, done)
                eta = estimate_eta(eta_start, now, done, len(lines) - instant)
                return replace(snap, eta_s=eta)

            async with anyio.create_task_group() as display:
                if progress is not None:
                    display.start_soon(_show, progress, snapshot)
                async with anyio.create_task_group() as calls:
                    for index, line in enumerate(lines):
                        if line.error is not None or line.params is None:
                            record = {"custom_id": line.custom_id, "line": line.number}
                            error = {"type": "invalid_line", "message": line.error}
                            finish(index, record | {"status": "invalid", "error": error})
                        else:
                            calls.start_soon(one, index, line)
                        if index % 1000 == 999:
                            await anyio.lowlevel.checkpoint()  # let early calls start
                display.cancel_scope.cancel()
            out.flush()
            os.fsync(out.fileno())
        stats = fleet.stats
        report.from_journal = stats.from_journal
        report.batches_created = stats.batches_submitted
        report.batches_reattached = stats.reattached_batches
        if progress is not None:
            progress.update(snapshot(), final=True)
    report.cost_this_run = sum(this_run, Cost())
    part.replace(config.out)
    return report


async def _show(progress: Progress, snapshot: Callable[[], RunSnapshot]) -> None:
    while True:
        progress.update(snapshot())
        await anyio.sleep(0.2)


def _in_flight(fleet: FleetDispatcher) -> list[tuple[str, BatchStatus | None]]:
    """The batches in flight and their last polled status, from the fleet's status board
    (llmfleet/_board.py): part of this package, the run reads it rather than polling again."""
    ctx = fleet._ctx
    return [] if ctx is None else ctx.board.statuses()


def _count(report: RunReport, status: str) -> None:
    report.statuses[status] = report.statuses.get(status, 0) + 1


def _error_record(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, BatchRequestError):
        return {"status": "errored", "error": {"type": exc.error_type, "message": exc.message}}
    status = "failed"
    if isinstance(exc, UnbatchableRequestError):
        status = "invalid"  # refused before anything was sent: the line needs fixing
    elif isinstance(exc, BatchRequestExpiredError):
        status = "expired"
    elif isinstance(exc, BatchRequestCanceledError):
        status = "canceled"
    elif isinstance(exc, BatchResultMissingError):
        status = "missing"
    # The fleet's messages speak to library users (submit_sync(), ...): say it for the CLI.
    return {"status": status, "error": {"type": type(exc).__name__, "message": for_cli(str(exc))}}


def format_report(report: RunReport, config: RunConfig) -> str:
    """The final report, as plain text."""
    parts = [f"{n} {status}" for status, n in sorted(report.statuses.items())]
    money = report.cost
    lines = [
        f"llmfleet run: {report.lines} lines -> {config.out} ({', '.join(parts) or 'nothing'})"
        + (f"; {report.blank} blank lines skipped" if report.blank else ""),
        f"  answered from the journal (no request): {report.from_journal}",
        f"  batches: {report.batches_created} created, {report.batches_reattached} re-attached"
        f" (journal {config.journal})",
        f"  tokens: {report.tokens.input_tokens} in, {report.tokens.output_tokens} out",
        f"  cost at batch price: ${_usd(money.paid)} (list price ${_usd(money.list_price)},"
        f" saved ${_usd(money.saving)})",
        f"  of which answered by this run's own requests: ${_usd(report.cost_this_run.paid)}",
    ]
    if report.unpriced:
        lines.append(f"  {report.unpriced} results of models with no price: tokens only")
    if not report.ok:
        lines.append(
            "  some lines did not succeed: see their error in the output; rerun the same "
            "command to send the expired, canceled, missing and failed ones again"
        )
    return "\n".join(lines)


def _usd(amount: Decimal) -> str:
    return f"{amount:.6f}"
