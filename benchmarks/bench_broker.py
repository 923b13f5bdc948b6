"""One fleet across processes on Redis: calls/s and batch fill for 1, 2, 4 and 8 processes.

Method: a redis-server of our own (no persistence, free port) and the emulator (its own
thread, batches end 0.2 s after create) serve P member processes. Each member opens
``open_fleet(client, broker=...)`` (or, for the comparison, a plain one-process fleet), waits
for a start signal in Redis, then submits C calls at once with ``submit_batch`` and waits for
every answer. The policy flushes at 100 calls or after a 1 s window (batches of at most 100).
Reported per P and mode: calls/s = P·C / (last answer − start signal), wall time; batches
created and their mean fill (mean size / 100), against the fewest batches the calls fit in,
⌈P·C / 100⌉. Every answer is checked against its own call (the emulator echoes the text).

``python benchmarks/bench_broker.py [--quick]`` prints one JSON document (``run.py`` makes
the table). Needs ``redis-server`` on the PATH.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from _common import emit, log

PROCESSES = (1, 2, 4, 8)
BATCH = 100
GO_KEY = "bench:go"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def member(config: dict[str, Any]) -> dict[str, Any]:
    import coredis
    from anthropic import AsyncAnthropic

    from llmfleet import RoutingPolicy, open_fleet

    policy = RoutingPolicy(
        batch_window_ms=1_000,
        batch_min_size=BATCH,
        batch_max_size=BATCH,
        poll_interval_ms=100,
        poll_max_interval_ms=200,
        batch_api_rpm=None,
    )
    redis: coredis.Redis[str] = coredis.Redis.from_url(config["redis"], decode_responses=True)
    tag = config["tag"]
    wrong = 0
    async with (
        redis,
        AsyncAnthropic(api_key="sk-bench", base_url=config["emulator"]) as client,
    ):
        opened: Any = (
            open_fleet(client, policy=policy, broker=config["redis"])
            if config["mode"] == "broker"
            else open_fleet(client, policy=policy)
        )
        async with opened as fleet:
            print("ready", flush=True)
            while not await redis.get(GO_KEY):  # noqa: ASYNC110 - the signal is in Redis
                await anyio.sleep(0.005)

            async def one(i: int) -> None:
                nonlocal wrong
                text = f"{tag}-{i}"
                message = await fleet.submit_batch(
                    model="claude-haiku-4-5",
                    max_tokens=16,
                    messages=[{"role": "user", "content": text}],
                )
                if not message.content[0].text.endswith(text):
                    wrong += 1

            async with anyio.create_task_group() as tg:
                for i in range(config["calls"]):
                    tg.start_soon(one, i)
            last = time.time()
    return {"last": last, "wrong": wrong}


def run_case(
    redis_url: str, emulator: Any, processes: int, calls: int, mode: str
) -> dict[str, Any]:
    before = Counter(e.batch_id for e in emulator.ledger.select(route="batch"))
    config = {"redis": redis_url, "emulator": emulator.url, "calls": calls, "mode": mode}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    members = [
        subprocess.Popen(
            [sys.executable, __file__, "--member", json.dumps({**config, "tag": f"p{n}"})],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(processes)
    ]
    try:
        return _measure(redis_url, emulator, members, before, processes * calls, mode, processes)
    finally:
        for proc in members:  # a failed run leaves no member behind
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _measure(
    redis_url: str,
    emulator: Any,
    members: list[subprocess.Popen[str]],
    before: Counter[str | None],
    total: int,
    mode: str,
    processes: int,
) -> dict[str, Any]:
    for proc in members:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    async def go(value: str | None) -> None:
        import coredis

        client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
        async with client:
            if value is None:
                await client.delete([GO_KEY])
            else:
                await client.set(GO_KEY, value)

    start = time.time()
    anyio.run(go, "1")
    results = []
    for proc in members:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"a member failed ({proc.returncode})"
        results.append(json.loads(out.strip().splitlines()[-1]))
    anyio.run(go, None)
    wall = max(r["last"] for r in results) - start
    after = Counter(e.batch_id for e in emulator.ledger.select(route="batch"))
    sizes = [n - before.get(batch, 0) for batch, n in after.items() if n > before.get(batch, 0)]
    return {
        "processes": processes,
        "mode": mode,
        "calls": total,
        "wall_s": wall,
        "calls_per_s": total / wall,
        "batches": len(sizes),
        "fewest_batches": math.ceil(total / BATCH),
        "fill": (sum(sizes) / len(sizes) / BATCH) if sizes else 0.0,
        "wrong_answers": sum(r["wrong"] for r in results),
    }


def main() -> None:
    if "--member" in sys.argv:
        config = json.loads(sys.argv[sys.argv.index("--member") + 1])
        print(json.dumps(anyio.run(member, config)), flush=True)
        return
    from llmfleet.emulator import EmulatorConfig, start_emulator

    quick = "--quick" in sys.argv
    calls = 150 if quick else 500
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench_broker needs redis-server on the PATH (apt-get install it)")
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    rows = []
    try:
        time.sleep(0.3)
        with start_emulator(EmulatorConfig(turnaround_s=0.2)) as emu:
            for processes in PROCESSES:
                for mode in ("broker", "local"):
                    log(f"broker bench: {processes} processes × {calls} calls, {mode}")
                    rows.append(
                        run_case(f"redis://127.0.0.1:{port}/0", emu, processes, calls, mode)
                    )
    finally:
        server.kill()
        server.wait()
    emit({"calls_per_process": calls, "batch_max_size": BATCH, "rows": rows})


if __name__ == "__main__":
    main()
