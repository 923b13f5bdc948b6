"""``llmfleet run`` and ``llmfleet demo`` as a user meets them from a shell: the endpoint
checked before anything is sent, errors said for a command-line user, progress for long
runs, the journal's lock file, blank lines, a closed pipe, a missing trio, and the base URLs
each SDK needs.

Exit codes and terminal text are tested through the real console script in a subprocess;
the progress line is a pure function, tested with fixed inputs.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from llmfleet._cli import main
from llmfleet.emulator import EmulatorConfig, Fault, start_emulator
from llmfleet.journal import SQLiteStore
from llmfleet.journal._runcheck import for_cli
from llmfleet.journal._runview import (
    PlainProgress,
    RunSnapshot,
    TerminalProgress,
    estimate_eta,
    render_progress,
)
from llmfleet.providers import BatchStatus

if TYPE_CHECKING:
    from collections.abc import Iterator

    from llmfleet.emulator import Emulator

SRC = str(Path(__file__).resolve().parent.parent / "src")
MODEL = "claude-haiku-4-5"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
    "ANTHROPIC_API_KEY": "sk-test",
    "OPENAI_API_KEY": "sk-test",
}


def llmfleet_command() -> list[str]:
    """The installed ``llmfleet`` console script (this source through PYTHONPATH)."""
    script = Path(sys.executable).with_name("llmfleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmfleet"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*llmfleet_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=ENV,
    )


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = start_emulator(EmulatorConfig(turnaround_s=0.2))
    try:
        yield emulator
    finally:
        emulator.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def params(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": text}]} | (
        extra
    )


def write_lines(path: Path, *lines: str) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def request(custom_id: str, text: str, **extra: Any) -> str:
    return json.dumps({"custom_id": custom_id, "params": params(text, **extra)})


def run_args(tmp: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "run",
        str(tmp / "in.jsonl"),
        "-o",
        str(tmp / "out.jsonl"),
        "--base-url",
        base_url,
        "--window",
        "0.05",
        "--poll",
        "0.05",
        *extra,
    ]


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the endpoint, checked once before anything is sent --------------------------------


def test_nothing_listening_is_said_before_the_run(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", request("a", "x"))
    url = f"http://127.0.0.1:{closed_port()}"
    result = cli(*run_args(tmp_path, url))
    assert result.returncode == 2, result.stderr
    assert f"nothing listens at {url} (is the server/emulator running?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "out.jsonl.journal").exists()  # nothing opened either


def test_a_v1_too_many_or_too_few_is_said(tmp_path: Path, emu: Emulator) -> None:
    write_lines(tmp_path / "in.jsonl", request("a", "x"))
    wrong = emu.url + "/v1"  # Anthropic's base URL has no /v1
    result = cli(*run_args(tmp_path, wrong))
    assert result.returncode == 2, result.stderr
    assert f"{wrong} answered 404 on the batches route" in result.stderr
    assert "Anthropic's base URL has no /v1 (e.g. http://127.0.0.1:8787)" in result.stderr
    assert "OpenAI's ends in /v1 (e.g. http://127.0.0.1:8787/v1)" in result.stderr
    assert "Traceback" not in result.stderr
    # OpenAI's needs it: without, the same advice.
    assert main([*run_args(tmp_path, emu.url, "--provider", "openai", "--no-progress")]) == 2
    assert emu.counts.get("batch_create", 0) == emu.counts.get("openai_batch_create", 0) == 0


def test_a_refused_key_is_said(
    tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    write_lines(tmp_path / "in.jsonl", request("a", "x"))
    emu.add_fault(Fault("batch_list", "status", status=401))
    assert main([*run_args(tmp_path, emu.url, "--no-progress")]) == 2
    err = capsys.readouterr().err
    assert f"{emu.url} refused the API key in ANTHROPIC_API_KEY (401" in err
    assert emu.counts.get("batch_create", 0) == 0


def test_a_passing_error_at_the_check_is_a_warning(
    tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    write_lines(tmp_path / "in.jsonl", request("a", "x"))
    emu.add_fault(Fault("batch_list", "status", status=529))
    assert main([*run_args(tmp_path, emu.url, "--no-progress")]) == 0
    assert "warning: " + emu.url + " answered 529" in capsys.readouterr().err


# -- errors said for a command-line user -----------------------------------------------


LIBRARY_MESSAGES = [
    (
        "max_tokens=0 is not allowed inside a batch; use max_tokens >= 1 or submit_sync()",
        "max_tokens=0 is not allowed inside a batch; use max_tokens >= 1",
    ),
    (
        "the request params are not JSON-serializable (x); a batch carries plain JSON: pass "
        "dicts, lists, strings and numbers, or use submit_sync()",
        "the request params are not JSON-serializable (x); a batch carries plain JSON: pass "
        "dicts, lists, strings and numbers",
    ),
    (
        "the request is 300 bytes, over Anthropic's 200-byte limit per batch (starts 'x'); "
        "send it with submit_sync() or make it smaller",
        "the request is 300 bytes, over Anthropic's 200-byte limit per batch (starts 'x'); "
        "make it smaller",
    ),
    (
        "timeout is a per-request SDK option(s) a batch line cannot carry; drop them or use "
        "submit_sync()",
        "timeout is a per-request SDK option(s) a batch line cannot carry; drop them",
    ),
    (
        "the provider refused the batch of 3 calls (status 400: 'bad'); nothing was billed "
        "for it. Submit again, or use submit_sync()",
        "the provider refused the batch of 3 calls (status 400: 'bad'); nothing was billed "
        "for it. Run the same command again to send it again",
    ),
    (
        "stream=True is not supported: the fleet returns whole messages. Call "
        "client.messages.stream(...) or create(stream=True) on the client directly.",
        'stream=True is not supported: the fleet returns whole messages. Drop "stream" from '
        "the line's params.",
    ),
    (
        "no result within the latency budget (5 ms); use a longer budget, "
        "deadline_action='escalate', or submit_sync()",
        "no result within the latency budget (5 ms); use a longer budget, "
        "deadline_action='escalate'",
    ),
    (
        "the journal j is in use by another process (pid 7); wait for it to end, or pass "
        "another journal path",
        "the journal j is in use by another process (pid 7); wait for it to end, or pass "
        "another --journal PATH",
    ),
    ("something new; call fleet submit_sync(x=1) instead", "something new"),
]


@pytest.mark.parametrize(("message", "said"), LIBRARY_MESSAGES)
def test_library_advice_is_said_for_the_cli(message: str, said: str) -> None:
    assert for_cli(message) == said


def test_output_lines_never_suggest_a_library_call(tmp_path: Path, emu: Emulator) -> None:
    write_lines(
        tmp_path / "in.jsonl",
        request("zero", "x", max_tokens=0),
        request("streamed", "y", stream=True),
        request("ok", "z"),
    )
    assert main([*run_args(tmp_path, emu.url, "--no-progress")]) == 1
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["status"] for o in out] == ["invalid", "invalid", "succeeded"]
    assert out[0]["error"]["message"].endswith("use max_tokens >= 1")
    assert 'Drop "stream" from the line\'s params' in out[1]["error"]["message"]
    text = (tmp_path / "out.jsonl").read_text()
    assert "submit_sync" not in text
    assert "client directly" not in text


# -- progress --------------------------------------------------------------------------


def running(done: int | None, total: int | None, state: str = "in_progress") -> BatchStatus:
    return BatchStatus(ended=False, state=state, requests=total, requests_done=done)


SNAP = RunSnapshot(
    lines=507,
    submitted=500,
    queued=7,
    answered=100,
    from_journal=40,
    batches=(
        ("msgbatch_A", running(60, 250)),
        ("msgbatch_B", running(0, 250)),
        ("msgbatch_C", None),
    ),
    elapsed_s=3725,
    eta_s=7260,
)


def test_progress_line_says_where_the_run_stands() -> None:
    assert render_progress(SNAP) == (
        "507 read, 500 submitted, 440 processing, 100 answered (40 from the journal), "
        "7 queued | 3 batches in flight: msgbatch_A (in_progress 60/250), "
        "msgbatch_B (in_progress 0/250), msgbatch_C (created) | 1h02m elapsed, ETA 2h01m"
    )
    # Before any batch reports counts, and before there is a rate to go by.
    early = RunSnapshot(lines=3, submitted=0, queued=3, answered=0, elapsed_s=4)
    assert render_progress(early) == (
        "3 read, 0 submitted, 0 processing, 0 answered, 3 queued | 4s elapsed"
    )


def test_progress_line_fits_a_terminal() -> None:
    line = render_progress(SNAP, width=190)
    assert len(line) <= 190
    assert line.startswith("507 read, 500 submitted, 440 processing")
    assert "3 batches in flight: msgbatch_A (in_progress 60/250), +2 more |" in line
    assert line.endswith("| 1h02m elapsed, ETA 2h01m")
    assert "| 3 batches in flight | 1h02m" in render_progress(SNAP, width=150)
    narrow = render_progress(SNAP, width=40)
    assert len(narrow) == 40
    assert narrow.endswith("…")
    batches = tuple((f"b{i}", running(0, 1)) for i in range(20))
    many = RunSnapshot(lines=1, submitted=1, queued=0, answered=0, batches=batches)
    assert "b7 (in_progress 0/1), +12 more |" in render_progress(many)


def test_eta_from_the_rate_requests_finish() -> None:
    assert estimate_eta((100.0, 10), 100.0, 10, 110) is None  # no time yet
    assert estimate_eta((100.0, 10), 200.0, 10, 110) is None  # nothing finished yet
    assert estimate_eta((100.0, 10), 200.0, 60, 110) == pytest.approx(100.0)
    assert estimate_eta((100.0, 10), 200.0, 110, 110) == 0.0


def test_plain_progress_lines_change_and_heartbeat() -> None:
    now = [0.0]
    stream = io.StringIO()
    plain = PlainProgress(stream, lambda: now[0])
    snap = RunSnapshot(lines=5, submitted=0, queued=5, answered=0)
    plain.update(snap)
    plain.update(snap)  # no change: no line
    now[0] = 0.5
    plain.update(RunSnapshot(lines=5, submitted=5, queued=0, answered=0))  # queue: at once
    now[0] = 0.6
    plain.update(RunSnapshot(lines=5, submitted=5, queued=0, answered=1))  # < 1 s: not yet
    now[0] = 59.0
    plain.update(RunSnapshot(lines=5, submitted=5, queued=0, answered=1))
    now[0] = 119.5
    plain.update(RunSnapshot(lines=5, submitted=5, queued=0, answered=1))  # a minute quiet
    plain.update(RunSnapshot(lines=5, submitted=5, queued=0, answered=5), final=True)
    lines = stream.getvalue().splitlines()
    assert [line.split(", ")[3] for line in lines] == [
        "0 answered",
        "0 answered",
        "1 answered",
        "1 answered",
        "5 answered",
    ]
    assert all(line.startswith("progress: 5 read, ") for line in lines)


def test_terminal_progress_is_one_line_redrawn() -> None:
    now = [0.0]
    stream = io.StringIO()
    tty = TerminalProgress(stream, lambda: now[0], width=lambda: 60)
    tty.close()
    assert stream.getvalue() == ""  # nothing drawn, nothing to end
    tty.update(RunSnapshot(lines=2, submitted=0, queued=2, answered=0))
    now[0] = 0.1
    tty.update(RunSnapshot(lines=2, submitted=2, queued=0, answered=0))  # too soon
    tty.update(RunSnapshot(lines=2, submitted=2, queued=0, answered=2), final=True)
    tty.close()
    tty.close()
    text = stream.getvalue()
    assert text.count("\r") == 2
    assert "\n" not in text[:-1]
    assert text.endswith("\x1b[K\n")
    drawn = [part.removesuffix("\n").removesuffix("\x1b[K") for part in text.split("\r")[1:]]
    assert all(len(line) <= 59 for line in drawn)


def test_progress_shows_the_providers_counts_while_a_batch_runs(tmp_path: Path) -> None:
    with start_emulator(EmulatorConfig(turnaround_s=2.5)) as emu:
        write_lines(tmp_path / "in.jsonl", *(request(f"r{i}", f"t{i}") for i in range(4)))
        result = cli(*run_args(tmp_path, emu.url))
        (batch_id,) = emu.batches
    assert result.returncode == 0, result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("progress: ")]
    running_line = (
        f"4 submitted, 4 processing, 0 answered, 0 queued | 1 batch in flight: {batch_id} "
        "(in_progress 0/4)"
    )
    assert running_line in result.stderr
    assert lines[-1].startswith("progress: 4 read, 4 submitted, 0 processing, 4 answered")


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal is POSIX")
def test_ctrl_c_ends_the_progress_line_first(tmp_path: Path) -> None:
    import pty

    with start_emulator(EmulatorConfig(turnaround_s=30)) as emu:
        write_lines(tmp_path / "in.jsonl", request("a", "x"))
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [*llmfleet_command(), *run_args(tmp_path, emu.url)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            env=ENV,
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 30
        while b"in flight" not in seen and time.monotonic() < deadline:
            seen += os.read(master, 4096)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
        os.close(master)
    text = seen.decode().replace("\r\n", "\n")
    assert "in flight" in text
    assert "\x1b[K\nllmfleet run: interrupted" in text


# -- the journal's lock file -----------------------------------------------------------


def test_a_clean_run_leaves_no_lock_file(tmp_path: Path, emu: Emulator) -> None:
    write_lines(tmp_path / "in.jsonl", request("a", "x"))
    assert main([*run_args(tmp_path, emu.url, "--no-progress")]) == 0
    assert (tmp_path / "out.jsonl.journal").exists()
    assert not (tmp_path / "out.jsonl.journal.lock").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
async def test_a_dead_holders_lock_file_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    lock = tmp_path / "j.db.lock"
    lock.write_text("99999999")  # left by a process killed with its lock (released)
    store = SQLiteStore(path, provider="anthropic")
    await store.open()
    assert lock.read_text() == str(os.getpid())
    await store.aclose()
    assert not lock.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
async def test_a_lock_file_removed_under_the_opener_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another store let go (removing its file) after this one opened it, and a third made
    a new one: this store must lock the file now at the path, not the removed one."""
    import fcntl

    path = tmp_path / "j.db"
    lock = tmp_path / "j.db.lock"
    real = fcntl.flock
    raced: list[int] = []

    def flock(fd: int, op: int) -> None:
        if not raced:
            raced.append(fd)
            lock.unlink()
            lock.write_text("")
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    store = SQLiteStore(path, provider="anthropic")
    await store.open()
    try:
        assert raced
        assert lock.read_text() == str(os.getpid())  # the file at the path holds the lock
        with lock.open() as other, pytest.raises(BlockingIOError):
            real(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        await store.aclose()


# -- blank lines -------------------------------------------------------------------------


def test_blank_lines_are_skipped_and_said(
    tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    write_lines(tmp_path / "in.jsonl", request("a", "x"), "", "   ", request("b", "y"), "")
    assert main([*run_args(tmp_path, emu.url, "--no-progress")]) == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(o["custom_id"], o["line"]) for o in out] == [("a", 1), ("b", 4)]
    report = capsys.readouterr().out
    assert "llmfleet run: 2 lines -> " in report
    assert "(2 succeeded); 3 blank lines skipped" in report
    assert main(["run", "--help"]) == 0
    assert "Blank lines are skipped: no output line" in capsys.readouterr().out


# -- a closed pipe, a missing trio, the base URLs --------------------------------------


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.Popen(
        [*llmfleet_command(), "demo", "--agents", "1", "--turns", "1", "--calls", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before anything is written (`| head -0`)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err


# Makes trio look uninstalled: its import fails as a missing module's does.
HIDE_TRIO = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "trio":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
from llmfleet._cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["demo", "run"])
def test_backend_trio_without_trio_says_what_to_install(tmp_path: Path, command: str) -> None:
    write_lines(tmp_path / "in.jsonl", request("a", "x"))
    args = ["--json"] if command == "demo" else run_args(tmp_path, "http://127.0.0.1:9")[1:]
    result = subprocess.run(
        [sys.executable, "-c", HIDE_TRIO, command, *args, "--backend", "trio"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=ENV,
    )
    assert result.returncode == 2, result.stderr
    assert "--backend trio needs trio: pip install 'llmfleet[trio]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_emulator_says_each_sdks_base_url() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmfleet.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        url = proc.stdout.readline().strip()
        said = "".join(proc.stderr.readline() for _ in range(3))
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert url.startswith("http://127.0.0.1:")
    assert f"Anthropic SDK: base_url={url}  (no /v1)" in said
    assert f"OpenAI SDK:    base_url={url}/v1" in said
    help_text = subprocess.run(
        [sys.executable, "-m", "llmfleet.emulator", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=ENV,
    ).stdout
    assert "base_url=http://127.0.0.1:PORT/v1" in " ".join(help_text.split())
    run_help = cli("run", "--help").stdout
    assert "OpenAI's ends in /v1 (the emulator: http://127.0.0.1:PORT/v1)" in " ".join(
        run_help.split()
    )


def test_each_adapter_reports_the_providers_request_counts() -> None:
    from anthropic.types.messages import MessageBatch
    from openai.types import Batch

    from llmfleet.providers import anthropic as anthropic_adapter
    from llmfleet.providers import openai as openai_adapter
    from llmfleet.providers._bedrock_wire import status_of

    message_batch = MessageBatch.model_validate(
        {
            "id": "msgbatch_1",
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": 5,
                "succeeded": 3,
                "errored": 1,
                "canceled": 0,
                "expired": 1,
            },
            "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z",
            "archived_at": None,
            "cancel_initiated_at": None,
            "ended_at": None,
            "results_url": None,
        }
    )
    status = anthropic_adapter._status(message_batch)
    assert (status.requests, status.requests_done) == (10, 5)

    def openai_batch(counts: dict[str, int] | None, state: str) -> Batch:
        return Batch.model_validate(
            {
                "id": "batch_1",
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file_1",
                "completion_window": "24h",
                "status": state,
                "created_at": 0,
                "request_counts": counts,
            }
        )

    status = openai_adapter._status(
        openai_batch({"total": 8, "completed": 2, "failed": 1}, "in_progress")
    )
    assert (status.requests, status.requests_done) == (8, 3)
    status = openai_adapter._status(openai_batch(None, "validating"))
    assert (status.requests, status.requests_done) == (None, None)

    job = {"status": "InProgress", "totalRecordCount": 100, "processedRecordCount": 40}
    status = status_of(job)
    assert (status.requests, status.requests_done) == (100, 40)
    status = status_of({"status": "Validating"})
    assert (status.requests, status.requests_done) == (None, None)
