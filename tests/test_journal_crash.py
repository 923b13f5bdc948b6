"""``kill -9`` at every phase of a batch's life, then the same command again: every request is
answered exactly once, no batch is billed twice, no result is lost (docs/journal.md).

A real ``python -m llmfleet run`` subprocess (on asyncio and on trio) against the emulator,
which runs in this test process so that its ledger survives the kill.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from llmfleet.emulator import EmulatorConfig, Fault, start_emulator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from llmfleet.emulator import Emulator, Endpoint

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="kill -9 is POSIX"),
    pytest.mark.slow,
]

SRC = str(Path(__file__).resolve().parent.parent / "src")
MODEL = "claude-haiku-4-5"
N = 6
BACKENDS = ["asyncio", "trio"]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = start_emulator(EmulatorConfig(turnaround_s=1.0))
    try:
        yield emulator
    finally:
        emulator.close()


def write_requests(path: Path, provider: str = "anthropic") -> list[str]:
    texts = [f"request number {i}" for i in range(N)]
    with path.open("w") as file:
        for i, text in enumerate(texts):
            params: dict[str, Any] = {
                "model": MODEL if provider == "anthropic" else "gpt-4o-mini",
                "max_tokens": 32,
                "messages": [{"role": "user", "content": text}],
            }
            file.write(json.dumps({"custom_id": f"id-{i}", "params": params}) + "\n")
    return texts


class Run:
    """One ``llmfleet run`` subprocess, its stderr in a file."""

    def __init__(self, tmp: Path, emu: Emulator, backend: str, provider: str, *args: str):
        self.log = tmp / f"stderr-{time.monotonic_ns()}.txt"
        env = {
            **os.environ,
            "PYTHONPATH": SRC,
            "ANTHROPIC_API_KEY": "sk-test",
            "OPENAI_API_KEY": "sk-test",
        }
        command = [
            sys.executable,
            "-m",
            "llmfleet",
            "run",
            str(tmp / "requests.jsonl"),
            "--out",
            str(tmp / "results.jsonl"),
            "--base-url",
            emu.url if provider == "anthropic" else emu.url + "/v1",
            "--provider",
            provider,
            "--backend",
            backend,
            "--poll",
            "0.1",
            *args,
        ]
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=err, text=True
            )

    def stderr(self) -> str:
        return self.log.read_text()

    def wait_for(self, what: str, predicate: Callable[[], bool], limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"the run ended before {what}: {self.stderr()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.communicate()
                pytest.fail(f"no {what} within {limit} s: {self.stderr()}")
            time.sleep(0.01)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=10)  # reaps it and closes its stdout pipe
        assert self.proc.returncode == -signal.SIGKILL

    def finish(self, limit: float = 60.0) -> str:
        try:
            out, _ = self.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            pytest.fail(f"the run did not end within {limit} s: {self.stderr()}")
        assert self.proc.returncode == 0, (out, self.stderr())
        return out


def journal_rows(tmp: Path, sql: str) -> list[tuple[Any, ...]]:
    path = tmp / "results.jsonl.journal"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not made yet
        return []
    finally:
        db.close()


def batches_of(emu: Emulator, provider: str) -> int:
    return len(emu.openai.batches) if provider == "openai" else len(emu.batches)


def sent_texts(emu: Emulator, provider: str) -> list[str]:
    """The user text of every request in every batch the emulator created."""
    texts: list[str] = []
    if provider == "openai":
        for batch in emu.openai.batches.values():
            data = emu.openai.files[batch.input_file_id].content.decode()
            texts.extend(
                json.loads(line)["body"]["messages"][-1]["content"] for line in data.splitlines()
            )
        return texts
    for request in emu.requests:
        if request.endpoint == "batch_create" and isinstance(request.body, dict):
            texts.extend(r["params"]["messages"][-1]["content"] for r in request.body["requests"])
    return texts


def check_once(tmp: Path, emu: Emulator, texts: list[str], provider: str, report: str) -> None:
    """Every request answered exactly once, in input order, none sent in two batches."""
    lines = [json.loads(line) for line in (tmp / "results.jsonl").read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"id-{i}" for i in range(N)]
    assert all(line["status"] == "succeeded" for line in lines), lines
    if provider == "anthropic":
        replies = [line["response"]["content"][0]["text"] for line in lines]
    else:
        replies = [line["response"]["choices"][0]["message"]["content"] for line in lines]
    assert replies == texts
    sent = sent_texts(emu, provider)
    assert sorted(sent) == sorted(texts), "a request was sent in two batches, or never"
    assert emu.ledger.batches_created == batches_of(emu, provider) == 1
    assert emu.counts.get("messages", 0) == 0  # nothing went the direct route
    assert f"{N} succeeded" in report


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_while_queued(tmp_path: Path, emu: Emulator, backend: str) -> None:
    texts = write_requests(tmp_path / "requests.jsonl")
    run = Run(tmp_path, emu, backend, "anthropic", "--window", "60", "--batch-size", "100")
    run.wait_for("a full queue", lambda: f"{N} queued" in run.stderr())
    run.kill9()
    assert emu.counts.get("batch_create", 0) == 0
    report = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1").finish()
    check_once(tmp_path, emu, texts, "anthropic", report)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_while_the_create_is_answered(
    tmp_path: Path, emu: Emulator, backend: str, provider: str
) -> None:
    """The batch exists, the answer carrying its id is on its way: the journal has the
    intent only. The rerun finds the batch (OpenAI by its tag, Anthropic by count and time)
    and re-attaches instead of creating another."""
    texts = write_requests(tmp_path / "requests.jsonl", provider)
    endpoint: Endpoint = "openai_batch_create" if provider == "openai" else "batch_create"
    emu.add_fault(Fault(endpoint, "accept_then_slow", delay_s=30))
    run = Run(tmp_path, emu, backend, provider, "--window", "0.1")
    run.wait_for("the batch", lambda: batches_of(emu, provider) == 1)
    assert journal_rows(tmp_path, "SELECT batch_id FROM flushes") == [(None,)]
    run.kill9()
    report = Run(tmp_path, emu, backend, provider, "--window", "0.1").finish()
    assert "1 re-attached" in report
    check_once(tmp_path, emu, texts, provider, report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_while_the_create_is_on_its_way(tmp_path: Path, emu: Emulator, backend: str) -> None:
    """The create reached the provider, which makes the batch only after the process died:
    the rerun keeps looking for it for a while before it would send anything again."""
    texts = write_requests(tmp_path / "requests.jsonl")
    emu.add_fault(Fault("batch_create", "slow", delay_s=1.5))
    run = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1")
    run.wait_for("the create", lambda: emu.counts.get("batch_create", 0) == 1)
    run.kill9()
    assert batches_of(emu, "anthropic") == 0  # not made yet
    report = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1").finish()
    check_once(tmp_path, emu, texts, "anthropic", report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_while_the_batch_runs(tmp_path: Path, emu: Emulator, backend: str) -> None:
    texts = write_requests(tmp_path / "requests.jsonl")
    emu.config.turnaround_s = 3.0
    run = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1")
    run.wait_for(
        "the batch id in the journal",
        lambda: bool(journal_rows(tmp_path, "SELECT 1 FROM flushes WHERE batch_id IS NOT NULL")),
    )
    run.kill9()
    (batch,) = emu.batches.values()
    assert batch.processing_status == "in_progress"
    # The dead run's lock file stays, naming it (its lock went with it) ...
    lock = tmp_path / "results.jsonl.journal.lock"
    assert lock.read_text() == str(run.proc.pid)
    report = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1").finish()
    assert "1 re-attached" in report
    check_once(tmp_path, emu, texts, "anthropic", report)
    assert not lock.exists()  # ... and the next run, taking it over, removes it at its end


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_with_half_the_results_stored(tmp_path: Path, emu: Emulator, backend: str) -> None:
    texts = write_requests(tmp_path / "requests.jsonl")
    emu.config.turnaround_s = 0.2
    emu.config.results_line_delay_s = 0.4
    run = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1")
    run.wait_for(
        "half the results",
        lambda: len(journal_rows(tmp_path, "SELECT key FROM results")) >= N // 2,
    )
    run.kill9()
    stored = len(journal_rows(tmp_path, "SELECT key FROM results"))
    assert N // 2 <= stored < N
    emu.config.results_line_delay_s = 0.0
    report = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1").finish()
    check_once(tmp_path, emu, texts, "anthropic", report)
    # The stored results, and then the rest from the re-attached batch, all through the
    # journal: no request sent twice.
    assert f"answered from the journal (no request): {N}" in report
    assert "1 re-attached" in report


# One backend: the in-process tests (test_journal_fleet.py) cover both.
@pytest.mark.parametrize("backend", ["trio"])
def test_a_finished_run_reruns_from_the_journal_alone(
    tmp_path: Path, emu: Emulator, backend: str
) -> None:
    texts = write_requests(tmp_path / "requests.jsonl")
    Run(tmp_path, emu, backend, "anthropic", "--window", "0.1").finish()
    requests = len(emu.requests)
    report = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1").finish()
    # Not one request but the endpoint check the run makes before it starts.
    assert [r.endpoint for r in emu.requests[requests:]] == ["batch_list"]
    assert f"answered from the journal (no request): {N}" in report
    check_once(tmp_path, emu, texts, "anthropic", report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_leaves_the_batch_running_for_the_rerun(
    tmp_path: Path, emu: Emulator, backend: str
) -> None:
    texts = write_requests(tmp_path / "requests.jsonl")
    emu.config.turnaround_s = 3.0
    run = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1")
    run.wait_for(
        "the batch id in the journal",
        lambda: bool(journal_rows(tmp_path, "SELECT 1 FROM flushes WHERE batch_id IS NOT NULL")),
    )
    run.proc.send_signal(signal.SIGINT)
    run.proc.communicate(timeout=30)
    assert run.proc.returncode == 130, run.stderr()
    assert "run the same command again" in run.stderr().lower()
    assert emu.counts.get("batch_cancel", 0) == 0  # not cancelled: the rerun collects it
    report = Run(tmp_path, emu, backend, "anthropic", "--window", "0.1").finish()
    assert "1 re-attached" in report
    check_once(tmp_path, emu, texts, "anthropic", report)


def test_kill_at_half_of_a_long_run_sends_no_line_twice(tmp_path: Path, emu: Emulator) -> None:
    """6,000 lines in batches of 2,000, streamed: a kill -9 once half the results are stored
    (batches still in flight then are re-attached by the rerun), then the same command. Every
    line is answered exactly once, in input order, and the emulator received each request in
    exactly one batch (none sent again)."""
    n = 6_000
    emu.config.turnaround_s = 0.2
    with (tmp_path / "requests.jsonl").open("w") as file:
        for i in range(n):
            params = {
                "model": MODEL,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"long {i}"}],
            }
            file.write(json.dumps({"custom_id": f"id-{i}", "params": params}) + "\n")
    args = ("--batch-size", "2000", "--max-lines", "6000", "--window", "5", "--no-progress")
    run = Run(tmp_path, emu, "asyncio", "anthropic", *args)
    run.wait_for(
        "half the results",
        lambda: len(journal_rows(tmp_path, "SELECT key FROM results")) >= n // 2,
        limit=240,
    )
    run.kill9()
    assert len(journal_rows(tmp_path, "SELECT key FROM results")) < n
    report = Run(tmp_path, emu, "asyncio", "anthropic", *args).finish(limit=300)
    assert f"{n} succeeded" in report
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [x["line"] for x in lines] == list(range(1, n + 1))
    assert all(x["status"] == "succeeded" for x in lines)
    assert [x["response"]["content"][0]["text"] for x in lines] == [f"long {i}" for i in range(n)]
    sent = [cid for batch in emu.batches.values() for cid in batch.custom_ids]
    assert len(sent) == len(set(sent)) == n, "a line was sent in two batches, or never"
