"""``llmfleet run`` on inputs larger than what it may hold: the input is streamed, the lines
held between input and answer stay bounded whatever the input's length, output order holds
through a reorder buffer that overflows to the journal, bad lines are answered each on its
own (docs/journal.md, "llmfleet run at scale"). Counts, not megabytes: nothing here is timed.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from anthropic import AsyncAnthropic

from llmfleet._policy import MAX_BATCH_REQUESTS
from llmfleet.emulator import EmulatorConfig, start_emulator
from llmfleet.journal._fleet import KeyFilter
from llmfleet.journal._run import (
    RunConfig,
    RunReport,
    format_report,
    read_requests,
    run_requests,
)
from llmfleet.journal._runview import RunSnapshot, render_progress
from llmfleet.journal._sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping
    from pathlib import Path

    from llmfleet.emulator import Emulator
    from llmfleet.journal import StoredOutcome

MODEL = "claude-haiku-4-5"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)  # real clocks: the emulator answers over real HTTP


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = start_emulator(EmulatorConfig(turnaround_s=0.0))
    try:
        yield emulator
    finally:
        emulator.close()


class Snapshots:
    """A progress sink that keeps every snapshot."""

    def __init__(self) -> None:
        self.seen: list[RunSnapshot] = []

    def update(self, snap: RunSnapshot, *, final: bool = False) -> None:
        self.seen.append(snap)

    def close(self) -> None:
        pass


def write_input(path: Path, n: int, *, bad_every: int = 0) -> dict[int, str]:
    """``n`` request lines; with ``bad_every``, a bad line of four kinds in turn at every
    ``bad_every``-th line. Returns the bad lines' numbers and kinds."""
    bad: dict[int, str] = {}
    with path.open("w") as file:
        for i in range(n):
            params: dict[str, Any] = {
                "model": MODEL,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"text {i}"}],
            }
            text = json.dumps({"custom_id": f"r{i}", "params": params})
            if bad_every and i % bad_every == bad_every - 1:
                kind = ("json", "params", "duplicate", "schema")[len(bad) % 4]
                bad[i + 1] = kind
                if kind == "json":
                    text = "{not json"
                elif kind == "params":
                    text = json.dumps({"custom_id": f"r{i}"})
                elif kind == "duplicate":
                    text = json.dumps({"custom_id": "r0", "params": params})
                else:  # refused by the request schema before anything is sent
                    text = json.dumps({"custom_id": f"r{i}", "params": params | {"max_tokens": 0}})
            file.write(text + "\n")
    return bad


def config(tmp: Path, **overrides: Any) -> RunConfig:
    fields: dict[str, Any] = {
        "requests": tmp / "in.jsonl",
        "out": tmp / "out.jsonl",
        "journal": tmp / "out.jsonl.journal",
        "batch_size": 250,
        "max_lines": 500,
        "window_s": None,
        "poll_s": 0.1,
        "poll_max_s": 0.2,
        "batch_api_rpm": None,  # the emulator has no limit: no minute-long waits
    } | overrides
    return RunConfig(**fields)


def outputs(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp / "out.jsonl").read_text().splitlines()]


def check_succeeded(out: list[dict[str, Any]], n: int, bad: dict[int, str]) -> None:
    assert [o["line"] for o in out] == list(range(1, n + 1))  # every line, in input order
    for o in out:
        if o["line"] in bad:
            assert o["status"] == "invalid", o
        else:
            assert o["status"] == "succeeded", o
            assert o["response"]["content"][0]["text"] == f"text {o['line'] - 1}"


@pytest.mark.anyio
@pytest.mark.slow
async def test_lines_held_stay_bounded_whatever_the_input_length(
    tmp_path: Path, emu: Emulator
) -> None:
    """At every progress snapshot, lines read but not answered stay within ``max_lines`` (and
    the two lines read ahead), for an input 5x longer alike; the report's peak says the same.
    The run before streaming read the whole file first: its first snapshot had every line
    read and none answered."""
    held: dict[int, int] = {}
    for n in (1_000, 5_000):
        tmp = tmp_path / str(n)
        tmp.mkdir()
        write_input(tmp / "in.jsonl", n)
        progress = Snapshots()
        async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
            report = await run_requests(client, config(tmp), progress)
        assert report.statuses == {"succeeded": n}
        check_succeeded(outputs(tmp), n, {})
        worst = max(s.lines - s.answered for s in progress.seen)
        # max_lines, the line read ahead, and the line just read waiting for room.
        assert worst <= 500 + 2, worst
        assert 0 < report.peak_held <= 500
        held[n] = max(worst, report.peak_held)
    assert held[5_000] <= 1.1 * held[1_000] + 2  # flat in the input's length


@pytest.mark.anyio
@pytest.mark.slow
async def test_lines_answered_early_are_written_in_order_from_the_journal(
    tmp_path: Path, emu: Emulator
) -> None:
    """The emulator returns a batch's results in a shuffled order: with no room to keep early
    lines (``reorder_lines=0``) every early line is written from the journal, in order, with
    the same content; a rerun answers them all from the journal and writes the same file."""
    n = 2_000
    write_input(tmp_path / "in.jsonl", n)
    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        report = await run_requests(client, config(tmp_path, reorder_lines=0), None)
        first = (tmp_path / "out.jsonl").read_text()
        check_succeeded(outputs(tmp_path), n, {})
        assert report.spilled > n // 2  # most lines came before their turn
        creates = emu.counts.get("batch_create", 0)
        again = await run_requests(client, config(tmp_path, reorder_lines=0), None)
    assert again.from_journal == n
    assert emu.counts.get("batch_create", 0) == creates
    assert (tmp_path / "out.jsonl").read_text() == first


@pytest.mark.anyio
@pytest.mark.slow
async def test_bad_lines_sprinkled_through_a_long_input_each_get_their_line(
    tmp_path: Path, emu: Emulator
) -> None:
    n = 4_000
    bad = write_input(tmp_path / "in.jsonl", n, bad_every=97)
    assert len(bad) == n // 97
    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        report = await run_requests(client, config(tmp_path), None)
    out = outputs(tmp_path)
    check_succeeded(out, n, bad)
    assert report.statuses == {"succeeded": n - len(bad), "invalid": len(bad)}
    by_line = {o["line"]: o for o in out}
    for number, kind in bad.items():
        message = by_line[number]["error"]["message"]
        expected = {
            "json": "not JSON",
            "params": '"params" must be a JSON object',
            "duplicate": "duplicate custom_id: line 1 has it already",
            "schema": "max_tokens",
        }[kind]
        assert expected in message, (kind, message)


class TaskCounts(Snapshots):
    """Snapshots, and the number of tasks running at each."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[int] = []

    def update(self, snap: RunSnapshot, *, final: bool = False) -> None:
        super().update(snap, final=final)
        self.tasks.append(len(anyio.get_running_tasks()))


@pytest.mark.anyio
async def test_held_lines_cost_no_task_each(tmp_path: Path, emu: Emulator) -> None:
    """A line handed to the fleet is a call and a small record, not a task: with a thousand
    lines held at once, the run's tasks stay a handful (the fleet's own, one per batch)."""
    emu.config.turnaround_s = 0.5  # each batch holds its lines long enough to be seen
    n = 3_000
    write_input(tmp_path / "in.jsonl", n)
    progress = TaskCounts()
    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        report = await run_requests(
            client, config(tmp_path, batch_size=1_000, max_lines=2_000), progress
        )
    assert report.statuses == {"succeeded": n}
    check_succeeded(outputs(tmp_path), n, {})
    held = [s.lines - s.answered for s in progress.seen]
    assert max(held) >= 1_000, held  # the snapshots saw many lines held
    assert max(progress.tasks) < 40, progress.tasks


@pytest.mark.anyio
async def test_a_rerun_reads_journaled_lines_a_page_at_a_time(
    tmp_path: Path, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun answers every line from the journal with one read per page of lines (a
    thousand), not one per line, and writes the same file."""
    n = 2_500
    write_input(tmp_path / "in.jsonl", n)
    reads: list[int] = []
    fetch = SQLiteStore.fetch_results

    async def counted(self: SQLiteStore, keys: Iterable[str]) -> Mapping[str, StoredOutcome]:
        keys = list(keys)
        reads.append(len(keys))
        return await fetch(self, keys)

    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        done = await run_requests(client, config(tmp_path, batch_size=1_000, max_lines=2_000), None)
        first = (tmp_path / "out.jsonl").read_text()
        creates = emu.counts.get("batch_create", 0)
        monkeypatch.setattr(SQLiteStore, "fetch_results", counted)
        again = await run_requests(client, config(tmp_path), None)
    assert again.from_journal == n
    assert again.statuses == {"succeeded": n}
    assert emu.counts.get("batch_create", 0) == creates
    assert (tmp_path / "out.jsonl").read_text() == first
    assert sum(reads) == n
    assert len(reads) == 3, reads  # 1,000 + 1,000 + 500
    # Money: every line's at batch price both times, but only the first run's requests cost.
    assert done.cost.paid > 0
    assert done.cost_this_run == done.cost
    assert (again.cost, again.tokens, again.unpriced) == (done.cost, done.tokens, 0)
    assert again.cost_this_run.paid == 0


@pytest.mark.anyio
async def test_the_input_end_sends_a_partial_batch_at_once(tmp_path: Path, emu: Emulator) -> None:
    """With no window asked for, the queue waits up to 60 s to fill while the input is read,
    but the input's last line sends it at once: ten lines do not wait a minute."""
    write_input(tmp_path / "in.jsonl", 10)
    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        with anyio.fail_after(45):  # a tenth of the 60 s window would do; slack for load
            report = await run_requests(client, config(tmp_path), None)
    assert report.statuses == {"succeeded": 10}
    assert emu.counts.get("batch_create", 0) == 1


def test_the_default_batch_is_the_largest_a_provider_takes(tmp_path: Path) -> None:
    """No --batch-size: batches as large as the provider takes (the fleet cuts them at the
    provider's request count and body size), and room in the queue for one of them."""
    policy = RunConfig(requests=tmp_path, out=tmp_path, journal=tmp_path).policy()
    assert policy.batch_max_size == policy.batch_min_size == MAX_BATCH_REQUESTS
    assert policy.max_queued == MAX_BATCH_REQUESTS
    chosen = config(tmp_path, batch_size=7).policy()
    assert chosen.batch_max_size == chosen.max_queued == 7


def test_duplicate_ids_are_found_past_the_id_table_growth(tmp_path: Path) -> None:
    """The compact table of ids seen grows as lines come; every duplicate is named with the
    line that had the id first, before and after it grows."""
    path = tmp_path / "in.jsonl"
    with path.open("w") as file:
        for i in range(6_000):
            file.write(json.dumps({"custom_id": f"id{i}", "params": {}}) + "\n")
        for i in (0, 1_023, 4_999):
            file.write(json.dumps({"custom_id": f"id{i}", "params": {}}) + "\n")
    lines = list(read_requests(path))
    assert all(line.error is None for line in lines[:6_000])
    assert [line.error for line in lines[6_000:]] == [
        f"duplicate custom_id: line {i + 1} has it already" for i in (0, 1_023, 4_999)
    ]


def test_the_key_filter_never_forgets_a_key() -> None:
    keys = [f"key:run:r{i}:{i * 7919:032x}" for i in range(50_000)]
    kept = KeyFilter(keys[:30_000])
    for key in keys[30_000:]:
        kept.add(key)
    assert len(kept) == 50_000
    assert all(key in kept for key in keys)
    strangers = sum(f"key:other:{i}" in kept for i in range(20_000))
    assert strangers < 200  # a rare false "yes" (checked against the store), never a false "no"


def test_progress_shows_the_share_read_the_rate_and_the_money() -> None:
    snap = RunSnapshot(
        lines=120_000,
        total=1_000_000,
        submitted=100_000,
        queued=20_000,
        answered=40_000,
        elapsed_s=65,
        eta_s=600,
        rate=1234.4,
        paid=Decimal("12.3456"),
    )
    line = render_progress(snap)
    assert line.startswith("120000/1000000 read, 100000 submitted")
    assert "| 1m05s elapsed, 1,234/s, ETA 10m00s, $12.35 so far" in line
    small = RunSnapshot(lines=5, total=5, submitted=5, queued=0, answered=1, paid=Decimal("4e-5"))
    assert render_progress(small).startswith("5 read,")
    assert render_progress(small).endswith("$0.000040 so far")


@pytest.mark.parametrize(
    ("statuses", "fix", "rerun"),
    [
        ({"succeeded": 3, "invalid": 1}, "fix the invalid ones", None),
        ({"succeeded": 3, "errored": 1, "invalid": 1}, "fix the invalid and errored ones", None),
        ({"succeeded": 3, "expired": 1, "failed": 2}, None, "send the expired, failed ones"),
        ({"invalid": 1, "missing": 1}, "fix the invalid ones", "send the missing ones"),
    ],
)
def test_the_report_offers_a_rerun_only_for_lines_a_rerun_sends_again(
    tmp_path: Path, statuses: dict[str, int], fix: str | None, rerun: str | None
) -> None:
    """A rerun answers invalid and errored lines the same way: the report says to fix them,
    and suggests a rerun only for the lines it would send again."""
    report = RunReport(lines=sum(statuses.values()), statuses=statuses)
    config = RunConfig(
        requests=tmp_path / "in.jsonl", out=tmp_path / "out.jsonl", journal=tmp_path / "j"
    )
    text = format_report(report, config)
    assert "some lines did not succeed" in text
    assert (fix is not None) == ("fix the" in text)
    assert fix is None or fix in text
    assert (rerun is not None) == ("rerun the same command" in text)
    assert rerun is None or rerun in text


@pytest.mark.anyio
async def test_ended_batches_are_read_one_at_a_time_in_the_order_they_were_made(
    tmp_path: Path, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches that end together have their results read one after the other, the first
    made first: the output goes in input order, so two batches read at once would interleave
    their lines and keep one batch's lines waiting for the other's (in memory, or read back
    from the journal). The output is whole and in order."""
    from llmfleet.providers.anthropic import AnthropicProvider

    # The batches end together, once the last is made: the status board (listing, with more
    # than two in flight) then sees every end in one refresh. Batches that end apart may be
    # read in the order they end, which the rule allows.
    emu.config.turnaround_s = None
    n = 3_000
    write_input(tmp_path / "in.jsonl", n)
    made: list[str] = []
    read: list[str] = []
    reading = [0]
    most = [0]
    create, raw = AnthropicProvider.create_batch, AnthropicProvider.raw_results

    async def create_batch(self: AnthropicProvider, requests: Any) -> str:
        batch_id = await create(self, requests)
        made.append(batch_id)
        if len(made) == 6:
            emu.end_all_batches()
        return batch_id

    async def raw_results(self: AnthropicProvider, batch_id: str) -> Any:
        read.append(batch_id)
        reading[0] += 1
        most[0] = max(most[0], reading[0])
        try:
            async for line in raw(self, batch_id):
                yield line
                await anyio.lowlevel.checkpoint()  # another reader may run between lines
        finally:
            reading[0] -= 1

    monkeypatch.setattr(AnthropicProvider, "create_batch", create_batch)
    monkeypatch.setattr(AnthropicProvider, "raw_results", raw_results)
    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        report = await run_requests(client, config(tmp_path, batch_size=500, max_lines=n), None)
    assert report.statuses == {"succeeded": n}
    check_succeeded(outputs(tmp_path), n, {})
    assert len(made) == 6
    assert most[0] == 1
    assert read == made


@pytest.mark.anyio
async def test_the_requests_of_one_batch_at_most_are_held_at_once(
    tmp_path: Path, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a full batch is being made (its create is slow), the next batch's lines wait to
    be read: the run holds the requests of one batch at most (queued, or in a batch being
    made), while its room (``max_lines``) spans two batches in flight."""
    from llmfleet import FleetDispatcher
    from llmfleet.emulator import Fault

    emu.add_fault(Fault("batch_create", "slow", delay_s=0.3, times=10))
    n, size = 2_000, 500
    write_input(tmp_path / "in.jsonl", n)
    unsent: list[int] = []
    enqueue = FleetDispatcher._enqueue_batch

    async def counted(self: FleetDispatcher, *args: Any, **kwargs: Any) -> None:
        unsent.append(self._unsent())
        await enqueue(self, *args, **kwargs)

    monkeypatch.setattr(FleetDispatcher, "_enqueue_batch", counted)
    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        report = await run_requests(
            client, config(tmp_path, batch_size=size, max_lines=2 * size), None
        )
    assert report.statuses == {"succeeded": n}
    check_succeeded(outputs(tmp_path), n, {})
    assert len(unsent) == n
    # Counted as each line is handed on, before it joins the queue.
    assert max(unsent) <= size, max(unsent)


@pytest.mark.anyio
async def test_no_table_of_ids_is_held_while_lines_are(
    tmp_path: Path, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table of the custom_ids seen (24 MiB at a million lines) serves the scan before
    the run and is gone before the first line is handed to the fleet: the run holds none
    while it holds lines. Duplicates are still each answered ``invalid``."""
    import weakref

    from llmfleet import FleetDispatcher
    from llmfleet.journal import _run

    tables: list[weakref.ref[Any]] = []

    # A spy subclass (the table is final, and slotted: a subclass can be weakly referred to).
    class Counted(_run._SeenIds):  # type: ignore[misc]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            tables.append(weakref.ref(self))

    alive: list[int] = []
    enqueue = FleetDispatcher._enqueue_batch

    async def counted(self: FleetDispatcher, *args: Any, **kwargs: Any) -> None:
        # A table is in no reference cycle: it is gone as soon as nothing holds it.
        alive.append(sum(1 for table in tables if table() is not None))
        await enqueue(self, *args, **kwargs)

    monkeypatch.setattr(_run, "_SeenIds", Counted)
    monkeypatch.setattr(FleetDispatcher, "_enqueue_batch", counted)
    n = 600
    bad = write_input(tmp_path / "in.jsonl", n, bad_every=50)
    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        report = await run_requests(client, config(tmp_path), None)
    check_succeeded(outputs(tmp_path), n, bad)
    assert "duplicate" in bad.values()
    assert report.statuses["invalid"] == len(bad)
    assert tables  # the scan made one
    assert alive
    assert max(alive) == 0


@pytest.mark.anyio
async def test_a_last_line_refused_at_once_does_not_hold_the_queue_for_its_window(
    tmp_path: Path, emu: Emulator
) -> None:
    """At the input's end what is queued goes at once: the last line carries its window
    over with it, but a last line the fleet refuses at once (here by the request schema)
    carried nothing, and the lines queued before it waited out the 60 s reading window."""
    n = 300
    write_input(tmp_path / "in.jsonl", n)
    last = json.loads((tmp_path / "in.jsonl").read_text().splitlines()[0])["params"]
    with (tmp_path / "in.jsonl").open("a") as file:
        # Past the reader's own checks; the adapter's schema check refuses it.
        file.write(json.dumps({"custom_id": "last", "params": last | {"max_tokens": 0}}))
        file.write("\n")
    async with AsyncAnthropic(api_key="sk-test", base_url=emu.url) as client:
        with anyio.fail_after(30):  # a hang guard, far below the window
            report = await run_requests(client, config(tmp_path, batch_size=1_000), None)
    assert report.statuses == {"succeeded": n, "invalid": 1}
    assert report.batches_created == 1
    (refused,) = [o for o in outputs(tmp_path) if o["status"] != "succeeded"]
    assert refused["custom_id"] == "last"
    assert "max_tokens" in refused["error"]["message"]
