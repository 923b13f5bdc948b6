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
import sys
from array import array
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from .._dispatcher import _Then
from .._open import open_fleet
from .._policy import MAX_BATCH_REQUESTS, RoutingPolicy
from ..errors import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultMissingError,
    UnbatchableRequestError,
)
from ..pricing import Cost, PriceTable, TokenUsage
from ._keys import MAX_KEY_CHARS, params_hash
from ._runcheck import for_cli
from ._runview import RunSnapshot, estimate_eta
from ._store import FINAL_KINDS, StoredOutcome

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from decimal import Decimal
    from pathlib import Path
    from typing import TextIO

    from .._dispatcher import FleetDispatcher
    from ..providers import BatchStatus
    from ._fleet import FleetJournal
    from ._runview import Progress

#: The queue's window while the input is read, when none is asked for: the queue is sent
#: when full, or at the input's end (FleetDispatcher._send_queue_now).
READING_WINDOW_S: Final = 60.0
#: Lines read back from the journal in one query.
_PAGE: Final = 1000

__all__ = [
    "Line",
    "RunConfig",
    "RunReport",
    "journal_path_for",
    "read_requests",
    "run_key",
    "run_requests",
    "scan_requests",
]

# RoutingPolicy's own defaults (a slotted dataclass: read from its fields).
_POLICY_DEFAULTS: Final[dict[str, Any]] = {f.name: f.default for f in fields(RoutingPolicy)}

#: Longest ``custom_id`` a line may carry: its key (``run:<custom_id>:<32-hex hash>``, see
#: run_key) must fit the journal's longest key.
MAX_CUSTOM_ID: Final = MAX_KEY_CHARS - len("run:") - 1 - 32
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


def read_requests(
    path: Path,
    *,
    blank: Callable[[int], None] | None = None,
    duplicates: Mapping[int, int] | None = None,
) -> Iterator[Line]:
    """Parse the input file line by line, as it is read (the file is never held whole); a
    bad line is a :class:`Line` with its ``error`` set, never an exception.

    :param blank: called with the number of each blank (whitespace-only) line, which is
        skipped.
    :param duplicates: the lines whose ``custom_id`` an earlier line has, by number, each with
        that earlier line's number, as :func:`scan_requests` found them; ``None`` to find
        them while reading (keeping a table of every id read). A reader of lines already
        judged (the writer's second pass) gives ``{}``.
    """
    seen: _SeenIds | _Known = _SeenIds() if duplicates is None else _Known(duplicates)
    with path.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            if not text.strip():
                if blank is not None:
                    blank(number)
                continue
            yield _parse(number, text, seen)


def scan_requests(path: Path) -> tuple[int, dict[int, int]]:
    """The number of request (non-blank) lines of ``path``, and its lines whose ``custom_id``
    an earlier line has (by line number, each with the earlier line's number): one pass
    before the run reads the input for good. The table of the ids seen that it needs (a
    dozen bytes or two an id) is let go of before any line is held, rather than held while
    every line is (24 MiB at a million lines)."""
    seen = _SeenIds()
    total = 0
    duplicates: dict[int, int] = {}
    with path.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            if not text.strip():
                continue
            total += 1
            custom_id = _custom_id(text)
            if custom_id is not None:
                earlier = seen.add(custom_id, number)
                if earlier is not None:
                    duplicates[number] = earlier
    return total, duplicates


def _custom_id(text: str) -> str | None:
    """A line's ``custom_id`` as :func:`_parse` takes it (before anything else of the line is
    checked), or None where it has none."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    custom_id = data.get("custom_id") if isinstance(data, dict) else None
    if isinstance(custom_id, str) and 1 <= len(custom_id) <= MAX_CUSTOM_ID:
        return custom_id
    return None


@final
class _Known:
    """The duplicates :func:`scan_requests` found, asked as a :class:`_SeenIds` is."""

    __slots__ = ("_duplicates",)

    def __init__(self, duplicates: Mapping[int, int]) -> None:
        self._duplicates = duplicates

    def add(self, custom_id: str, number: int) -> int | None:
        return self._duplicates.get(number)


#: The largest line number :class:`_SeenIds` keeps (a later line is named as this one).
_MAX_NUMBER: Final = 2**32 - 1


@final
class _SeenIds:
    """The ``custom_id`` of every line read so far, compactly: an open-addressing table of
    their 64-bit hashes beside the line number of each (a 32-bit one: 12 bytes a slot, 24 to
    48 a line), rather than a dict of the strings (over 100 bytes a line). Two different
    ids share a hash with odds of about one in 3*10^7 for a million lines (and the hash is
    salted anew by each process, so a rerun does not repeat it)."""

    __slots__ = ("_hashes", "_mask", "_numbers", "_used")

    def __init__(self) -> None:
        self._hashes = array("q", bytes(8 * 1024))
        self._numbers = array("I", [0]) * 1024
        self._mask = 1023
        self._used = 0

    def add(self, custom_id: str, number: int) -> int | None:
        """Record ``custom_id`` at line ``number``; return the line that had it already."""
        h = hash(custom_id) or 1
        hashes, mask = self._hashes, self._mask
        slot = h & mask
        while True:
            found = hashes[slot]
            if found == 0:
                break
            if found == h:
                return self._numbers[slot]
            slot = (slot + 1) & mask
        hashes[slot] = h
        self._numbers[slot] = min(number, _MAX_NUMBER)
        self._used += 1
        if 2 * self._used > mask:
            self._grow()
        return None

    def _grow(self) -> None:
        old_h, old_n = self._hashes, self._numbers
        size = 2 * len(old_h)
        self._hashes = hashes = array("q", bytes(8 * size))
        self._numbers = numbers = array("I", [0]) * size
        self._mask = mask = size - 1
        for h, n in zip(old_h, old_n, strict=True):
            if h:
                slot = h & mask
                while hashes[slot]:
                    slot = (slot + 1) & mask
                hashes[slot] = h
                numbers[slot] = n


def _parse(number: int, text: str, seen: _SeenIds | _Known) -> Line:
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
    earlier = seen.add(custom_id, number)
    if earlier is not None:
        return Line(number, custom_id, None, f"duplicate custom_id: line {earlier} has it already")
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
    """What ``llmfleet run`` was asked to do (see ``llmfleet run --help``).

    :param batch_size: most requests per batch; ``None`` for the largest the provider takes
        (the fleet caps a batch at the provider's request count and body size: Anthropic
        100,000 requests / 256 MB, OpenAI 50,000 / 200 MB).
    :param max_lines: most lines handed to the fleet and not yet answered (queued, or in a
        batch in flight); ``None`` for two batches' worth. Memory grows with this, never with
        the length of the input.
    :param reorder_lines: most answered lines kept in memory while an earlier line is still
        waiting; beyond, a line answered from a batch is written later from the journal.
    :param reorder_bytes: most bytes of output those lines may take, likewise (a batch's
        results come in any order: the larger the buffer, the fewer lines read back).
    :param window_s: longest a line waits in the queue; ``None`` for
        :data:`READING_WINDOW_S` while the input is read, the queue going at once at the
        input's end.
    :param batch_api_rpm: the fleet's budget of batch-endpoint requests a minute
        (:class:`~llmfleet.RoutingPolicy`'s, by default).
    """

    requests: Path
    out: Path
    journal: Path
    batch_size: int | None = None
    window_s: float | None = None
    poll_s: float = 5.0
    poll_max_s: float = 60.0
    prices: PriceTable = field(default_factory=PriceTable)
    max_lines: int | None = None
    reorder_lines: int = 100_000
    reorder_bytes: int = 64 * 2**20
    batch_api_rpm: int | None = _POLICY_DEFAULTS["batch_api_rpm"]

    @property
    def window(self) -> float:
        """The queue's window in seconds."""
        return READING_WINDOW_S if self.window_s is None else self.window_s

    @property
    def size(self) -> int:
        """Requests per batch asked for (the fleet caps it at the provider's limits)."""
        return MAX_BATCH_REQUESTS if self.batch_size is None else max(1, self.batch_size)

    def policy(self) -> RoutingPolicy:
        size = self.size
        return RoutingPolicy(
            sync_max_latency_ms=0,
            batch_window_ms=round(self.window * 1000),
            batch_min_size=size,
            batch_max_size=size,
            poll_interval_ms=round(self.poll_s * 1000),
            poll_max_interval_ms=max(round(self.poll_max_s * 1000), round(self.poll_s * 1000)),
            # Room in the queue for one whole batch: the run holds no more than max_lines.
            max_queued=size,
            deadline_action="wait",
            batch_api_rpm=self.batch_api_rpm,
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
    #: Most lines handed to the fleet and not yet answered at one time.
    peak_held: int = 0
    #: Answered lines written from the journal rather than memory (an earlier line was slow).
    spilled: int = 0

    @property
    def ok(self) -> bool:
        """Every line succeeded."""
        return self.statuses.get("succeeded", 0) == self.lines


async def run_requests(client: Any, config: RunConfig, progress: Progress | None) -> RunReport:
    """Run every request of ``config.requests`` through a journaled fleet over ``client`` and
    write ``config.out`` in input order.

    The input is streamed (docs/journal.md, "llmfleet run at scale"): a line is read when the
    fleet has room for it, at most ``max_lines`` lines are held between the input and their
    answer (each costs the fleet's call and a small record here, no task), lines whose
    result the journal holds are answered from it a page at a time, and the output is
    written in input order through a bounded reorder buffer whose overflow is read back from
    the journal a page at a time.

    :raises JournalError: the journal cannot be used.
    :raises OSError: the input cannot be read or the output written.
    """
    # The count (for the progress) and the duplicates, before any line is held.
    total, duplicates = scan_requests(config.requests)
    report = RunReport()
    started = anyio.current_time()
    # Lines read, handed to the fleet, refused by it at once, whose output is decided,
    # answered from the journal by the run itself (a page at a time).
    read = handed = refused = answered = paged = 0
    held = 0  # handed and not answered
    reading = True
    idle: anyio.Event | None = None
    failures: list[BaseException] = []

    def on_blank(_number: int) -> None:
        report.blank += 1

    part = config.out.with_name(config.out.name + ".part")
    async with open_fleet(
        client,
        policy=config.policy(),
        journal=config.journal,
        prices=config.prices,
    ) as fleet:
        # The run only stores and writes each response: read as the provider's JSON, not
        # built into the SDK's objects first (the larger part of reading a batch's results).
        fleet._results_as_json()
        # Output goes in input order: one batch's results read at a time, not interleaved.
        fleet._one_results_stream()
        provider = fleet.provider
        tokens_in_json = hasattr(provider, "raw_results")  # its tokens_of reads JSON too
        journal = fleet._journal  # the run's own package: it reads journaled lines back
        assert journal is not None
        batch = min(config.size, provider.max_batch_requests)
        room = anyio.Semaphore(config.max_lines or 2 * batch)
        models: dict[str, str] = {}  # one string per model, shared by the lines held
        with part.open("w", encoding="utf-8") as out:
            # A provider whose small flushes go direct (Bedrock) answers some lines outside
            # the journal: those lines stay in memory until written.
            spill = getattr(provider, "min_batch_requests", 1) <= 1
            lines_limit = config.reorder_lines if spill else sys.maxsize
            bytes_limit = config.reorder_bytes if spill else sys.maxsize
            writer = _OrderedWriter(out, config.requests, journal, lines_limit, bytes_limit)

            def finish(index: int, record: dict[str, Any]) -> None:
                """Line ``index``'s output is ``record``."""
                written(index, record["status"], _text(record))

            def written(index: int, status: str, text: str) -> None:
                """Line ``index``'s output is ``text`` (``record`` encoded)."""
                nonlocal answered
                answered += 1
                _count(report, status)
                writer.put(index, status, text)

            # Tokens (input, output, cache write, cache read) and responses, per model:
            # summed per line, priced when read (the cost of a sum is the sum of the costs,
            # digit for digit: llmfleet/pricing.py).
            usage: dict[str, list[int]] = {}

            def priced(model: str, value: Any) -> None:
                """Count a response's tokens."""
                tokens = provider.tokens_of(value)
                if tokens is not None:
                    sums = usage.get(model)
                    if sums is None:
                        sums = usage[model] = [0, 0, 0, 0, 0]
                    sums[0] += tokens[0]
                    sums[1] += tokens[1]
                    sums[2] += tokens[2]
                    sums[3] += tokens[3]
                    sums[4] += 1

            def money() -> tuple[TokenUsage, Cost, int]:
                """Tokens, their cost at batch price, and responses of models with no price."""
                tokens, cost, unpriced = TokenUsage(), Cost(), 0
                for model, sums in usage.items():
                    used = TokenUsage(*sums[:4])
                    tokens += used
                    priced_cost = config.prices.cost(model, used, batch=True)
                    if priced_cost is None:
                        unpriced += sums[4]
                    else:
                        cost += priced_cost
                return tokens, cost, unpriced

            def let_go() -> None:
                """A held line is answered: its room is free."""
                nonlocal held
                held -= 1
                room.release()
                if held == 0 and not reading and idle is not None:
                    idle.set()

            def answer(held_line: _Held, value: Any, error: BaseException | None) -> None:
                """A handed line's outcome (from the fleet's task: never raises into it)."""
                let_go()
                try:
                    if error is not None:
                        if not isinstance(error, Exception):
                            return  # cancelled: the fleet is going down, and the run with it
                        head = {"custom_id": held_line.custom_id, "line": held_line.number}
                        finish(held_line.index, head | _error_record(error))
                    else:
                        priced(held_line.model, value)
                        # The response's JSON as the journal just stored it: not made again.
                        text = _succeeded(
                            held_line.custom_id, held_line.number, journal.dumped(value)
                        )
                        written(held_line.index, "succeeded", text)
                except Exception as exc:  # the output cannot be written: the run stops
                    failures.append(exc)
                    if idle is not None:
                        idle.set()

            async def hand_on(line: Line, key: str, *, index: int) -> None:
                """Give the fleet a line to send; it is answered through ``answer``."""
                # Backpressure: the next line is read once the fleet has room for this one.
                try:
                    room.acquire_nowait()  # no checkpoint per line while there is room
                except anyio.WouldBlock:
                    await room.acquire()
                if fleet._unsent() >= batch:
                    # The requests of one batch at most are held at once: while a full one
                    # is being made, the next waits to be read (a batch in flight holds
                    # only its lines' records).
                    await fleet._unsent_below(batch)
                await send(line, key, index=index, after_end=False)

            async def send(line: Line, key: str, *, index: int, after_end: bool) -> None:
                """:meth:`hand_on` once the line has its room."""
                nonlocal handed, refused, held
                assert line.params is not None
                assert line.custom_id is not None
                model = provider.model_of(line.params)
                model = models.setdefault(model, model)
                held_line = _Held(answer, index, line.custom_id, line.number, model)
                handed += 1
                held += 1
                report.peak_held = max(report.peak_held, held)
                arrival = None
                if after_end and config.window_s is None:
                    # A line sent after the input's end (its re-attached batch ended
                    # without it): it arrives with its window already over, so the queue
                    # goes at once rather than wait for a batch that will not fill.
                    arrival = fleet._clock() - config.window - 1.0
                try:
                    await fleet._enqueue_batch(
                        line.params, key, held_line, arrival=arrival, model=model
                    )
                except Exception as exc:  # every line gets its output line, whatever failed
                    if isinstance(exc, UnbatchableRequestError):
                        refused += 1  # refused at submit: never sent
                    held_line.answered(None, exc)
                else:
                    held_line.queued()

            # Lines in batches an earlier run created and this one re-attached, in input
            # order, each with the event set once its result is stored (or once every
            # re-attached batch has ended without it): one task waits for them all.
            reattached: deque[tuple[int, Line, str, anyio.Event]] = deque()
            more = anyio.Event()

            async def hand_reattached(
                line: Line, jkey: str, index: int, event: anyio.Event
            ) -> None:
                nonlocal held
                await room.acquire()
                held += 1
                report.peak_held = max(report.peak_held, held)
                reattached.append((index, line, jkey, event))
                more.set()

            async def serve_reattached() -> None:
                nonlocal held, more
                while reattached or reading:
                    if not reattached:
                        await more.wait()
                        more = anyio.Event()
                        continue
                    await reattached[0][3].wait()
                    page: list[tuple[int, Line, str]] = []
                    while reattached and len(page) < _PAGE and reattached[0][3].is_set():
                        index, line, jkey, _ = reattached.popleft()
                        page.append((index, line, jkey))
                    rest = await answer_stored(page)
                    for index, line, key in rest:
                        # Its batch ended without it: sent now, in the room it holds.
                        held -= 1
                        await send(line, key, index=index, after_end=True)
                    for _ in range(len(page) - len(rest)):
                        let_go()

            async def answer_stored(
                page: list[tuple[int, Line, str]],
            ) -> list[tuple[int, Line, str]]:
                """Answer a page of lines whose result the journal may hold, with one read;
                return those it does not hold after all (the filter's rare false "yes")."""
                nonlocal paged
                found = await journal.stored_final([key for _, _, key in page])
                rest = []
                for index, line, jkey in page:
                    outcome = found.get(jkey)
                    if outcome is None:
                        rest.append((index, line, run_key_of(line)))
                        continue
                    paged += 1
                    if outcome.kind == "succeeded":
                        assert line.params is not None
                        # An adapter that reads responses as JSON counts their tokens so too:
                        # no SDK object is built to count a stored line's.
                        stored = outcome.value if tokens_in_json else journal.answer(outcome)
                        priced(provider.model_of(line.params), stored)
                    assert line.custom_id is not None
                    written(index, outcome.kind, _stored_text(line.custom_id, line.number, outcome))
                return rest

            eta_start: tuple[float, int] | None = None

            def snapshot() -> RunSnapshot:
                nonlocal eta_start
                stats = fleet.stats
                batches = tuple(_in_flight(fleet))
                from_journal = stats.from_journal + paged
                snap = RunSnapshot(
                    lines=read,
                    total=total,
                    submitted=max(0, handed - refused - stats.queued - stats.from_journal),
                    queued=stats.queued,
                    answered=answered,
                    from_journal=from_journal,
                    batches=batches,
                    elapsed_s=anyio.current_time() - started,
                    paid=money()[1].paid,
                )
                # The rate counts requests the provider finished for this run: lines answered
                # at once (invalid, or from the journal) would make it look fast.
                instant = from_journal + report.statuses.get("invalid", 0)
                done = answered - instant + snap.provider_done
                now = anyio.current_time()
                if eta_start is None:
                    eta_start = (now, done)
                eta = estimate_eta(eta_start, now, done, total - instant)
                rate = None
                if now - eta_start[0] >= 1.0:
                    rate = (done - eta_start[1]) / (now - eta_start[0])
                return replace(snap, eta_s=eta, rate=rate)

            async with anyio.create_task_group() as display:
                if progress is not None:
                    display.start_soon(_show, progress, snapshot)
                display.start_soon(writer.serve)
                async with anyio.create_task_group() as calls:
                    calls.start_soon(serve_reattached)
                    stored: list[tuple[int, Line, str]] = []

                    async def queue(line: Line, key: str, index: int) -> None:
                        try:
                            provider.check(line.params or {})
                        except UnbatchableRequestError as exc:
                            # Refused before anything is sent (as the fleet would).
                            record = {"custom_id": line.custom_id, "line": line.number}
                            finish(index, record | _error_record(exc))
                            return
                        await hand_on(line, key, index=index)

                    for index, line in enumerate(
                        read_requests(config.requests, blank=on_blank, duplicates=duplicates)
                    ):
                        read += 1
                        if failures:
                            raise failures[0]
                        if line.error is not None or line.params is None:
                            record = {"custom_id": line.custom_id, "line": line.number}
                            error = {"type": "invalid_line", "message": line.error}
                            finish(index, record | {"status": "invalid", "error": error})
                            continue
                        key = run_key_of(line)
                        jkey = journal.key_of(line.params, key)
                        if journal.maybe_stored_before(jkey):
                            stored.append((index, line, jkey))
                            if len(stored) >= _PAGE:
                                for rest in await answer_stored(stored):
                                    await queue(rest[1], rest[2], rest[0])
                                stored = []
                        elif (event := journal.pending(jkey)) is not None:
                            await hand_reattached(line, jkey, index, event)
                        else:
                            await queue(line, key, index)
                        if index % 1000 == 999:
                            await anyio.lowlevel.checkpoint()  # let early calls start
                    if stored:
                        for rest in await answer_stored(stored):
                            await queue(rest[1], rest[2], rest[0])
                    if config.window_s is None:
                        # The input's end: what is queued goes now, rather than wait out the
                        # reading window for a batch that will not fill.
                        fleet._send_queue_now()
                    reading = False
                    more.set()
                    if held:
                        idle = anyio.Event()
                        await idle.wait()
                if failures:
                    raise failures[0]
                await writer.close(read)
                display.cancel_scope.cancel()
            out.flush()
            os.fsync(out.fileno())
            report.spilled = writer.spilled
            report.tokens, report.cost, report.unpriced = money()
            # This fleet's own requests, priced by route as the fleet prices them.
            report.cost_this_run = sum(fleet.stats.cost.values(), Cost())
        report.lines = read
        stats = fleet.stats
        report.from_journal = stats.from_journal + paged
        report.batches_created = stats.batches_submitted
        report.batches_reattached = stats.reattached_batches
        if progress is not None:
            progress.update(snapshot(), final=True)
    part.replace(config.out)
    return report


def run_key_of(line: Line) -> str:
    """:func:`run_key` of a valid line."""
    assert line.custom_id is not None
    assert line.params is not None
    return run_key(line.custom_id, line.params)


def run_key(custom_id: str, params: dict[str, Any]) -> str:
    """The idempotency key of a line: its ``custom_id`` names the call across reruns; the
    params hash makes an edited line a new call rather than the old one's answer."""
    return f"run:{custom_id}:{params_hash(params)}"


def _custom_id_in(jkey: str) -> str:
    """The ``custom_id`` a line's journal key names (``key:`` and its :func:`run_key`)."""
    assert jkey.startswith(_JKEY_HEAD), jkey
    return jkey[len(_JKEY_HEAD) : -_HASH_TAIL]


# A line's journal key: this head, its custom_id, then ":" and its 32-hex params hash.
_JKEY_HEAD: Final = "key:run:"
_HASH_TAIL: Final = 33


@final
class _Held(_Then):
    """A line handed to the fleet, until it is answered: what its output line needs, and
    the fleet's waiter on its call (one object; its params stay with the call, which lets
    go of them once it is in a batch). :meth:`answered` with the outcome, once.

    Its ``custom_id`` is kept only until its call holds the line's journal key, which names
    it (:func:`run_key`): read back from there, the line's id costs no string of its own
    while it waits for its batch."""

    __slots__ = ("_custom_id", "answer", "blanks", "index", "model")

    def __init__(
        self,
        answer: Callable[[_Held, Any, BaseException | None], None],
        index: int,
        custom_id: str,
        number: int,
        model: str,
    ) -> None:
        self.call = None
        self.answer = answer
        self.index = index
        self._custom_id: str | None = custom_id
        # Blank lines before it, rather than its number: almost always a small int, which
        # Python shares, where a number is one more object a line.
        self.blanks = number - index - 1
        self.model = model

    def queued(self) -> None:
        """Its call is in the fleet's queue: its id is read from the call's key from now on."""
        call = self.call
        if call is not None and call.jkey is not None:
            self._custom_id = None

    @property
    def custom_id(self) -> str:
        """The line's ``custom_id``."""
        if self._custom_id is not None:
            return self._custom_id
        call = self.call
        assert call is not None, "read while its call is held (answered from set())"
        assert call.jkey is not None
        return _custom_id_in(call.jkey)

    @property
    def number(self) -> int:
        """Its line number in the input (counting blank lines)."""
        return self.index + 1 + self.blanks

    def answered(self, value: Any, error: BaseException | None) -> None:
        self.answer(self, value, error)


@final
class _OrderedWriter:
    """Writes answered lines in input order: a ``next`` pointer and a bounded dict of lines
    answered early. Once that dict is full, an early line that its batch answered (so the
    journal holds its result) is only marked done; the writer's task reads such lines back
    from the journal a page at a time (their keys made again from a second pass over the
    input) once the pointer has reached a run of answered lines holding a page of them, or
    at the end. Memory is bounded by ``limit`` lines of at most ``max_bytes`` bytes in all,
    and one byte a line for the marks.

    :meth:`put` is synchronous (the fleet calls it from its own task as a result comes);
    :meth:`serve` is the writer's task; :meth:`close` ends it once every line is put."""

    def __init__(
        self, out: TextIO, requests: Path, journal: FleetJournal, limit: int, max_bytes: int
    ) -> None:
        self._out = out
        self._requests = requests
        self._journal = journal
        self._limit = max(0, limit)
        self._max_bytes = max_bytes
        self._bytes = 0  # of the texts in _ram
        self._next = 0
        self._ram: dict[int, str] = {}
        # One byte a line read: 1 once answered with its result in the journal only.
        self._marks = bytearray()
        self._cursor: _Cursor | None = None
        self._reading = False
        # Every line in [next, scan) is answered, ``marked`` of them in the journal only.
        self._scan = 0
        self._marked = 0
        self._closing: int | None = None
        self._wake = anyio.Event()
        self._done = anyio.Event()
        self.spilled = 0

    def put(self, index: int, status: str, text: str) -> None:
        """Line ``index`` is answered with ``text``, of ``status``: write it, keep it, or
        mark it for the journal."""
        if index == self._next and not self._reading:
            self._out.write(text + "\n")
            self._next += 1
            self._advance()
            return
        if (
            len(self._ram) >= self._limit or self._bytes >= self._max_bytes
        ) and status in FINAL_KINDS:
            marks = self._marks
            if len(marks) <= index:
                marks.extend(bytes(index + 1 - len(marks) + 4096))
            marks[index] = 1
            self.spilled += 1
        else:
            self._ram[index] = text
            self._bytes += len(text)
        if index == self._scan and not self._reading:
            self._advance()

    def _advance(self) -> None:
        """Write what is in memory from the pointer on; at a line in the journal only, look
        ahead for a page of them and wake the task to read it."""
        ram, marks, out = self._ram, self._marks, self._out
        while True:
            n = self._next
            text = ram.pop(n, None)
            if text is not None:
                out.write(text + "\n")
                self._bytes -= len(text)
                self._next = n + 1
                continue
            if n >= len(marks) or not marks[n]:
                self._scan, self._marked = n, 0  # line n is not answered yet
                return
            if self._scan <= n:
                self._scan, self._marked = n, 0
            i, marked = self._scan, self._marked
            while marked < _PAGE:
                if i < len(marks) and marks[i]:
                    marked += 1
                elif i not in ram:
                    break
                i += 1
            self._scan, self._marked = i, marked
            if marked >= _PAGE or self._closing is not None:
                self._wake.set()
            return

    async def serve(self) -> None:
        """The writer's task: read lines back from the journal when :meth:`put` asks."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._page_ready():
                await self._read_page()
                self._advance()
            if self._closing is not None and self._next >= self._closing:
                self._done.set()
                return

    def _page_ready(self) -> bool:
        n, marks = self._next, self._marks
        if n >= len(marks) or not marks[n]:
            return False
        return self._marked >= _PAGE or self._closing is not None

    async def close(self, lines: int) -> None:
        """Every one of ``lines`` lines is put: write what is left, then end the task."""
        self._closing = lines
        self._advance()
        self._wake.set()
        await self._done.wait()
        assert not self._ram, "every line read has its output line"

    async def _read_page(self) -> None:
        # From the pointer: every answered line up to a page of journaled ones, in order.
        start, marks, ram = self._next, self._marks, self._ram
        stop, indexes = start, list[int]()
        while len(indexes) < _PAGE:
            if stop < len(marks) and marks[stop]:
                indexes.append(stop)
            elif stop not in ram:
                break
            stop += 1
        self._reading = True
        try:
            texts = await self._stored(indexes)
        finally:
            self._reading = False
        out = self._out
        for index in range(start, stop):
            if marks[index] if index < len(marks) else False:
                out.write(texts[index] + "\n")
                marks[index] = 0
            else:
                text = ram.pop(index)
                self._bytes -= len(text)
                out.write(text + "\n")
        self._next = stop
        self._scan, self._marked = stop, 0

    async def _stored(self, indexes: list[int]) -> dict[int, str]:
        if self._cursor is None:
            self._cursor = _Cursor(self._requests)
        lines = [self._cursor.line(index) for index in indexes]
        journal = self._journal
        keys = []
        for line in lines:
            assert line.params is not None
            assert line.custom_id is not None
            keys.append(journal.key_of(line.params, run_key(line.custom_id, line.params)))
        found = await journal.stored_final(keys)
        texts = {}
        for index, line, key in zip(indexes, lines, keys, strict=True):
            assert line.custom_id is not None
            texts[index] = _stored_text(line.custom_id, line.number, found[key])
        return texts


@final
class _Cursor:
    """A second pass over the input, forward only: the ``index``-th request line, parsed."""

    def __init__(self, path: Path) -> None:
        self._lines = read_requests(path, duplicates={})
        self._index = -1

    def line(self, index: int) -> Line:
        assert index > self._index, "the cursor only goes forward"
        line = None
        while self._index < index:
            line = next(self._lines)
            self._index += 1
        assert line is not None
        return line


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


def _text(record: dict[str, Any]) -> str:
    """An output line (without its newline)."""
    return json.dumps(record, ensure_ascii=False)


def _succeeded(custom_id: str, number: int, response: str) -> str:
    """A succeeded line's output, ``response`` being the response's JSON text: the text
    ``_text`` makes of ``{"custom_id", "line", "status", "response"}``, the response
    spliced in as it is rather than decoded and encoded again."""
    head = _text({"custom_id": custom_id, "line": number, "status": "succeeded"})
    return f'{head[:-1]}, "response": {response}}}'


def _stored_text(custom_id: str, number: int, outcome: StoredOutcome) -> str:
    """The output line of a result the journal holds (succeeded or errored)."""
    if outcome.kind == "succeeded":
        response = outcome.encoded
        if response is None:
            response = json.dumps(outcome.value, ensure_ascii=False)
        return _succeeded(custom_id, number, response)
    error = {"type": outcome.error_type, "message": outcome.message}
    return _text({"custom_id": custom_id, "line": number, "status": "errored", "error": error})


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


#: Statuses a rerun of the same command sends again.
_SENT_AGAIN: Final = ("expired", "canceled", "missing", "failed")


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
    if report.spilled:
        lines.append(
            f"  {report.spilled} lines answered before an earlier one: written from the journal"
        )
    if report.unpriced:
        lines.append(f"  {report.unpriced} results of models with no price: tokens only")
    if not report.ok:
        advice = "  some lines did not succeed: see their error in the output"
        # A rerun answers invalid and errored lines the same way (nothing to send, or the
        # journal's stored answer); only the others are sent again.
        final = [s for s in ("invalid", "errored") if report.statuses.get(s)]
        again = [s for s in _SENT_AGAIN if report.statuses.get(s)]
        if final:
            advice += f"; fix the {' and '.join(final)} ones (a rerun answers them the same way)"
        if again:
            advice += f"; rerun the same command to send the {', '.join(again)} ones again"
        lines.append(advice)
    return "\n".join(lines)


def _usd(amount: Decimal) -> str:
    return f"{amount:.6f}"
