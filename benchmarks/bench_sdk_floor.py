"""The fleet against the same work written by hand with the raw SDK, over HTTP, paired.

The real ``AsyncAnthropic`` against the emulator in its own process (``_emu_server.py``,
turnaround 0: a batch has ended by its first retrieve), so this process's CPU time is the
client side only.

Batch route, N calls (10k in batches of 100, and one batch of N):

- ``hand``: what a hand-written loop on the raw SDK does for N callers: each caller (a task,
  spawned as the fleet's callers are, ``_ours.spawn_callers``) puts its request and an
  ``anyio.Event`` on a list and waits; one driver task cuts the list into batches of the
  size, and per batch ``batches.create`` (custom ids), ``batches.retrieve`` until ended,
  ``batches.results`` streamed with ``async for``, each result handed to its caller.
- ``fleet``: N callers ``fleet.submit(latency_budget_ms=1 h)``; policy ``batch_max_size =
  batch_min_size =`` the size, ``poll_interval_ms=1`` (refresh at once, as the hand loop
  does), no request budget on the batch endpoints.

The two alternate (order swapping each round), each round timed in this process's CPU time,
GC off; the figure is the median over rounds of the per-round CPU ratio fleet / hand, with its
interquartile range (the wall ratio is printed too: it also counts the emulator's turns and
the rest of the machine).

Direct route, call by call: ``fleet.submit_sync(**req)`` and ``client.messages.create(**req)``
alternate (order swapping each call), each call timed on its own (CPU and wall); per round of
``calls`` pairs the ratio of the medians; the figure is the median of the rounds' ratios and
its IQR. The overhead kept ≤ 1 % is the CPU overhead over the bare call's wall time.

``--profile``: cProfile of one round of each, function calls per item (deterministic).

``python benchmarks/bench_sdk_floor.py [--quick] [--profile] [--url URL]``: without
``--url`` it starts its own emulator process.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from _common import emit, log, no_gc, sdk_client
from _fake_client import REQUEST
from _ours import LOOSE_MS, policy, spawn_callers
from llmfleet import RoutingPolicy, open_fleet

BACKENDS = ("asyncio", "trio")


async def hand(client: Any, n: int, size: int) -> None:
    """N callers, one driver: create, poll, stream results, hand each result to its caller."""
    pending: list[tuple[dict[str, Any], list[Any]]] = []
    full = anyio.Event()

    async def caller() -> None:
        slot: list[Any] = [anyio.Event()]
        pending.append((REQUEST, slot))
        if len(pending) == n:
            full.set()
        await slot[0].wait()
        if slot[1].type != "succeeded":
            raise RuntimeError(slot[1])

    async def driver() -> None:
        await full.wait()
        batches = client.messages.batches
        for start in range(0, n, size):
            chunk = pending[start : start + size]
            requests = [{"custom_id": f"c{i}", "params": p} for i, (p, _) in enumerate(chunk)]
            batch = await batches.create(requests=requests)
            while batch.processing_status != "ended":
                batch = await batches.retrieve(batch.id)
            async for line in await batches.results(batch.id):
                slot = chunk[int(line.custom_id[1:])][1]
                slot.append(line.result)
                slot[0].set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(driver)
        await spawn_callers(n, caller)


async def fleet_burst(client: Any, n: int, size: int) -> None:
    routing = policy(batch_max_size=size, batch_min_size=size, poll_interval_ms=1)
    async with open_fleet(client, policy=routing) as fleet:

        async def caller() -> None:
            await fleet.submit(latency_budget_ms=LOOSE_MS, **REQUEST)

        await spawn_callers(n, caller)


def _iqr(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


async def paired_batch(url: str, n: int, size: int, rounds: int) -> dict[str, Any]:
    variants = {"hand": hand, "fleet": fleet_burst}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    ratios: list[float] = []
    wall_ratios: list[float] = []
    for r in range(rounds + 1):  # round 0 warms up
        order = list(variants) if r % 2 else list(variants)[::-1]
        got: dict[str, float] = {}
        got_wall: dict[str, float] = {}
        for name in order:
            # A client per run: a keep-alive connection left idle between runs may be closed
            # by the server under the next run's first request.
            client = sdk_client(url)
            with no_gc():
                c0, w0 = time.process_time(), time.perf_counter()
                await variants[name](client, n, size)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            await client.close()
            if r:
                cpus[name].append(cpu)
                walls[name].append(wall)
                got[name] = cpu
                got_wall[name] = wall
        if r:
            ratios.append(got["fleet"] / got["hand"])
            wall_ratios.append(got_wall["fleet"] / got_wall["hand"])
    lo, hi = _iqr(ratios)
    return {
        "n": n,
        "size": size,
        "rounds": rounds,
        "hand_cpu_s": statistics.median(cpus["hand"]),
        "fleet_cpu_s": statistics.median(cpus["fleet"]),
        "hand_wall_s": statistics.median(walls["hand"]),
        "fleet_wall_s": statistics.median(walls["fleet"]),
        "ratio": statistics.median(ratios),
        "ratio_q1": lo,
        "ratio_q3": hi,
        "ratios": ratios,
        "wall_ratio": statistics.median(wall_ratios),
        "wall_ratios": wall_ratios,
    }


async def paired_direct(url: str, calls: int, rounds: int) -> dict[str, Any]:
    client = sdk_client(url)
    async with open_fleet(client, policy=RoutingPolicy()) as fleet:
        create = client.messages.create

        async def bare() -> Any:
            return await create(**REQUEST)

        async def ours() -> Any:
            return await fleet.submit_sync(**REQUEST)

        variants = {"bare": bare, "fleet": ours}
        cpu_ratios: list[float] = []
        wall_ratios: list[float] = []
        overheads: list[float] = []
        bare_walls: list[float] = []
        for r in range(rounds + 1):
            cpus: dict[str, list[float]] = {name: [] for name in variants}
            walls: dict[str, list[float]] = {name: [] for name in variants}
            with no_gc():
                for i in range(calls):
                    order = ("bare", "fleet") if i % 2 else ("fleet", "bare")
                    for name in order:
                        c0, w0 = time.process_time(), time.perf_counter()
                        await variants[name]()
                        cpus[name].append(time.process_time() - c0)
                        walls[name].append(time.perf_counter() - w0)
            if not r:
                continue
            bc, fc = statistics.median(cpus["bare"]), statistics.median(cpus["fleet"])
            bw, fw = statistics.median(walls["bare"]), statistics.median(walls["fleet"])
            cpu_ratios.append(fc / bc)
            wall_ratios.append(fw / bw)
            overheads.append(100 * (fc - bc) / bw)
            bare_walls.append(bw)
    await client.close()
    out: dict[str, Any] = {"calls": calls, "rounds": rounds}
    for key, values in (
        ("cpu_ratio", cpu_ratios),
        ("wall_ratio", wall_ratios),
        ("overhead_pct", overheads),
    ):
        lo, hi = _iqr(values)
        out[key] = statistics.median(values)
        out[f"{key}_q1"], out[f"{key}_q3"] = lo, hi
    out["bare_wall_us"] = 1e6 * statistics.median(bare_walls)
    return out


def call_counts(url: str, backend: str, n: int, size: int) -> dict[str, Any]:
    """Function calls per item (cProfile), one run of each, and the top functions by calls."""
    out: dict[str, Any] = {}
    for name, fn in (("hand", hand), ("fleet", fleet_burst)):
        client = sdk_client(url)
        profiler = cProfile.Profile()

        async def run(fn: Any = fn, client: Any = client, profiler: Any = profiler) -> None:
            await fn(client, 10, size)  # warm: imports, connection
            profiler.enable()
            await fn(client, n, size)
            profiler.disable()
            await client.close()

        anyio.run(run, backend=backend)
        stats: Any = pstats.Stats(profiler)
        total = sum(v[1] for v in stats.stats.values())
        rows = []
        for (file, line, func), (_cc, ncalls, *_rest) in stats.stats.items():
            short = file.split("/site-packages/")[-1].split("/src/")[-1]
            rows.append((ncalls, f"{short}:{line}({func})"))
        rows.sort(reverse=True)
        out[name] = {
            "calls_per_item": total / n,
            "top": [{"function": f, "per_item": c / n} for c, f in rows[:25]],
            "all": {f: c / n for c, f in rows if c >= n // 2},
        }
    return out


class Emulator:
    """``_emu_server.py`` in its own process (turnaround 0)."""

    def __enter__(self) -> str:
        here = Path(__file__).parent
        self.proc = subprocess.Popen(
            [sys.executable, str(here / "_emu_server.py"), "--turnaround", "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sections", default="batch,direct")
    parser.add_argument("--rounds", type=int, help="paired rounds of the batch cases")
    args = parser.parse_args()
    backends = args.backends.split(",")
    sections = args.sections.split(",")
    n_big = 10_000
    cases = [(n_big, 100), (n_big, n_big)] if not args.quick else [(2_000, 100), (2_000, 2_000)]
    rounds = args.rounds or (3 if args.quick else 5)
    out: dict[str, Any] = {"cases": cases, "backends": backends}

    def measure(url: str) -> None:
        for backend in backends:
            out[backend] = {}
            if "batch" in sections:
                for n, size in cases:
                    log(f"sdk floor: {backend} batch n={n} size={size}")
                    out[backend][f"batch_{n}_{size}"] = anyio.run(
                        paired_batch, url, n, size, rounds, backend=backend
                    )
            if "direct" in sections:
                log(f"sdk floor: {backend} direct")
                calls, drounds = (100, 5) if args.quick else (200, 15)
                out[backend]["direct"] = anyio.run(
                    paired_direct, url, calls, drounds, backend=backend
                )
            if args.profile:
                log(f"sdk floor: {backend} profile")
                out[backend]["profile"] = call_counts(url, backend, n_big, n_big)

    if args.url:
        measure(args.url)
    else:
        with Emulator() as url:
            measure(url)
    emit(out)


if __name__ == "__main__":
    main()
