"""``llmfleet run`` at scale: a JSONL job of N lines against the emulator (turnaround 0),
beside the same job done by hand with the raw SDK, in the same run.

For each size: ``python -m llmfleet run`` in a subprocess on each backend (asyncio, trio),
and the hand-written floor (``--floor``: read every line, chunk into batches of the
provider's largest size, create them all, poll each until it ends, download its results,
write the output in input order) in a subprocess too. Each child's wall time, peak RSS
(``os.wait4``'s ``ru_maxrss``: that child alone), CPU seconds (its ``ru_utime + ru_stime``)
and, for ours, the journal's size on disk.
Optionally a kill -9 once half the lines are answered (``--kill``), then the same command
again: the emulator's count of requests received in batches says whether any was sent twice.
Optionally a bad line every K lines (``--bad-every``): each must get its ``invalid`` line.

``python benchmarks/bench_run.py [--lines 100000,1000000] [--backends asyncio,trio]
[--kill 1000000] [--bad-every 0]``; JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, log

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
MODEL = "claude-haiku-4-5"
#: Anthropic's most requests in one batch (src/llmfleet/providers/anthropic.py).
BATCH = 100_000


def write_input(path: Path, n: int, bad_every: int) -> int:
    """N request lines, one bad every ``bad_every`` (0: none); returns the bad count."""
    bad = 0
    with path.open("w") as file:
        for i in range(n):
            if bad_every and i % bad_every == bad_every // 2:
                bad += 1
                file.write("{not json\n" if bad % 2 else json.dumps({"custom_id": f"r{i}"}) + "\n")
                continue
            params = {
                "model": MODEL,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"line {i}: say something short"}],
            }
            file.write(json.dumps({"custom_id": f"r{i}", "params": params}) + "\n")
    return bad


def emulator() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_emu_server.py"), "--turnaround", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise RuntimeError("the emulator did not start")
    return proc, url


def counts(proc: subprocess.Popen[str]) -> dict[str, int]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write("counts\n")
    proc.stdin.flush()
    return dict(json.loads(proc.stdout.readline()))


def child(command: list[str], log_path: Path, kill_when: Any = None) -> dict[str, Any]:
    """Run ``command``; its wall time, CPU time, peak RSS (MiB) and exit status. ``kill_when``: a
    predicate polled every 50 ms; once true, the child gets SIGKILL."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "ANTHROPIC_API_KEY": "sk-bench"}
    start = time.perf_counter()
    with log_path.open("w") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        killed = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if kill_when is not None and not killed and kill_when():
                proc.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.05)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": wall,
        # CPU seconds of that child alone (user + system): on a shared machine, a steadier
        # measure of its own work than the wall time.
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "exit": proc.returncode,
        "killed": killed,
    }


def run_command(tmp: Path, url: str, backend: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llmfleet",
        "run",
        str(tmp / "in.jsonl"),
        "--out",
        str(tmp / "out.jsonl"),
        "--base-url",
        url,
        "--backend",
        backend,
        "--poll",
        "0.5",
    ]


def answered(tmp: Path) -> int:
    path = tmp / "out.jsonl.journal"
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return int(db.execute("SELECT count(*) FROM results").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def check_output(tmp: Path, n: int, bad: int) -> dict[str, int]:
    statuses: dict[str, int] = {}
    expected = 0
    with (tmp / "out.jsonl").open() as file:
        for text in file:
            line = json.loads(text)
            if line["line"] != expected + 1:
                raise RuntimeError(f"output out of order at line {line['line']}")
            expected += 1
            statuses[line["status"]] = statuses.get(line["status"], 0) + 1
    if expected != n or statuses.get("invalid", 0) != bad:
        raise RuntimeError(f"{expected} output lines for {n}, statuses {statuses}")
    return statuses


def journal_mib(tmp: Path) -> float:
    return sum(p.stat().st_size for p in tmp.glob("out.jsonl.journal*")) / 2**20


def ours(n: int, backend: str, bad_every: int, kill: bool) -> dict[str, Any]:
    emu, url = emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_run_") as name:
            tmp = Path(name)
            bad = write_input(tmp / "in.jsonl", n, bad_every)
            log(f"ours {backend}: {n:,} lines{' (kill -9 at 50%)' if kill else ''}")
            before = counts(emu)
            row: dict[str, Any] = {"lines": n, "backend": backend, "bad": bad}
            if kill:
                first = child(
                    run_command(tmp, url, backend),
                    tmp / "first.log",
                    kill_when=lambda: answered(tmp) >= n // 2,
                )
                row["killed_at"] = answered(tmp)
                row["first"] = first
            res = child(run_command(tmp, url, backend), tmp / "run.log")
            if res["exit"] not in (0, 1):
                raise RuntimeError((tmp / "run.log").read_text()[-2000:])
            after = counts(emu)
            row |= res
            row["statuses"] = check_output(tmp, n, bad)
            row["journal_mib"] = journal_mib(tmp)
            row["batch_requests_received"] = after.get("batch_requests", 0) - before.get(
                "batch_requests", 0
            )
            row["batches_created"] = after.get("batch_create", 0) - before.get("batch_create", 0)
            row["report"] = (tmp / "run.log").read_text().splitlines()[-8:]
            log(f"  {res}")
            return row
    finally:
        assert emu.stdin is not None
        emu.stdin.close()
        emu.wait(60)


def floor(n: int) -> dict[str, Any]:
    emu, url = emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_run_") as name:
            tmp = Path(name)
            write_input(tmp / "in.jsonl", n, 0)
            log(f"floor: {n:,} lines, raw SDK")
            command = [sys.executable, __file__, "--floor", str(tmp), url]
            res = child(command, tmp / "floor.log")
            if res["exit"] != 0:
                raise RuntimeError((tmp / "floor.log").read_text()[-2000:])
            check_output(tmp, n, 0)
            log(f"  {res}")
            return {"lines": n} | res
    finally:
        assert emu.stdin is not None
        emu.stdin.close()
        emu.wait(60)


async def floor_job(tmp: Path, url: str) -> None:
    """The job done by hand: chunk, create, poll, download, write in input order."""
    import asyncio

    from anthropic import AsyncAnthropic

    client = AsyncAnthropic(base_url=url, api_key="sk-bench", max_retries=5)
    order: list[str] = []
    numbers: dict[str, int] = {}
    chunks: list[list[dict[str, Any]]] = [[]]
    with (tmp / "in.jsonl").open() as file:
        for number, text in enumerate(file, start=1):
            line = json.loads(text)
            order.append(line["custom_id"])
            numbers[line["custom_id"]] = number
            if len(chunks[-1]) == BATCH:
                chunks.append([])
            chunks[-1].append(line)

    async def one(chunk: list[dict[str, Any]]) -> dict[str, Any]:
        batch = await client.messages.batches.create(requests=chunk)  # type: ignore[arg-type]
        while batch.processing_status != "ended":
            await asyncio.sleep(0.5)
            batch = await client.messages.batches.retrieve(batch.id)
        got: dict[str, Any] = {}
        async for item in await client.messages.batches.results(batch.id):
            got[item.custom_id] = item.result.model_dump(mode="json")
        return got

    results: dict[str, Any] = {}
    for got in await asyncio.gather(*(one(c) for c in chunks)):
        results |= got
    with (tmp / "out.jsonl").open("w") as out:
        for custom_id in order:
            result = results[custom_id]
            record = {"custom_id": custom_id, "line": numbers[custom_id], "status": result["type"]}
            if result["type"] == "succeeded":
                record["response"] = result["message"]
            out.write(json.dumps(record) + "\n")
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", default="100000,1000000")
    parser.add_argument("--backends", default="asyncio,trio")
    parser.add_argument("--kill", type=int, default=0, help="a kill -9 run at this size")
    parser.add_argument("--bad-every", type=int, default=0)
    parser.add_argument("--no-floor", action="store_true", help="ours only")
    parser.add_argument("--floor", nargs=2, metavar=("DIR", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        import asyncio

        asyncio.run(floor_job(Path(args.floor[0]), args.floor[1]))
        return
    sizes = [int(x) for x in args.lines.split(",") if x]
    rows = []
    for n in sizes:
        if not args.no_floor:
            rows.append({"kind": "floor"} | floor(n))
        rows.extend(
            {"kind": "ours"} | ours(n, backend, args.bad_every, kill=False)
            for backend in args.backends.split(",")
        )
    kill = None
    if args.kill:
        kill = ours(args.kill, "asyncio", args.bad_every, kill=True)
    emit({"rows": rows, "kill": kill, "load": os.getloadavg()})


if __name__ == "__main__":
    main()
