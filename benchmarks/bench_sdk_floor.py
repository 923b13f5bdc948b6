"""The fleet against the same work written by hand with the raw SDK, over HTTP, paired.

The real ``AsyncAnthropic`` against the emulator in its own process (``_emu_server.py``,
turnaround 0: a batch has ended by the time its create returns), so this process's CPU time
is the client side only.

Batch route, N calls (full run: 10k in batches of 100, 10k in one batch, 100k in one batch;
quick: 2k, 2k and 10k):

- ``hand`` (``_sdk_hand.hand``): what a hand-written loop on the raw SDK does for N callers:
  each caller (a task, spawned natively as the fleet's callers are) puts its request and an
  ``anyio.Event`` on a list and waits; one driver task cuts the list into batches of the
  size, and per batch, one batch at a time, ``batches.create`` (custom ids),
  ``batches.retrieve`` until ended (never, here: the create's answer says ended),
  ``batches.results`` streamed with ``async for``, each result handed to its caller.
- ``fleet``: N callers ``fleet.submit(latency_budget_ms=1 h)``; policy ``batch_max_size =
  batch_min_size =`` the size, ``poll_interval_ms=1``, no request budget on the batch
  endpoints. Its batches go out at once, not one at a time, and it waits for its first
  status refresh (1 ms, one more request a batch) rather than read the create's answer.
- ``0.1.0`` (``--legacy-python``): llmfleet 0.1.0 in its own venv (``legacy_runner.py
  --only sdk_floor``) at its best settings, paired the same way against the same hand loop
  run in that process (asyncio only; the 10k cases only: its result matching is quadratic).

The two alternate (order swapping each round), each round timed in this process's CPU time
and wall time, GC off; the figures are the medians over rounds of the per-round ratios
lib / hand, the CPU ratio with its interquartile range. The wall ratio also counts the
emulator's turns, the first-status wait and the rest of the machine.

``--instructions``: instructions per item under ``valgrind --tool=callgrind`` (hand, fleet
and 0.1.0 with its own hand loop), 2,000 calls in one batch and in batches of 100, counted
between marks after the warm-up as (I(N) − I(N/10)) / (0.9 N) (``_common.
instructions_per_item``). Counts do not depend on the machine's load: the figure to compare
trees with.

Direct route, call by call: ``fleet.submit_sync(**req)`` and ``client.messages.create(**req)``
alternate (order swapping each call), each call timed on its own (CPU and wall); per round of
``calls`` pairs the ratio of the medians; the figure is the median of the rounds' ratios and
its IQR (full: 200 pairs × 21 rounds; quick: 100 × 9). The overhead kept ≤ 1 % is the CPU
overhead over the bare call's wall time, median [IQR] over the rounds. Both run inside the
open fleet's block, so the bare call there also walks the fleet's cancel scopes at each
checkpoint; ``--instructions`` counts the direct route against a bare call made with no
fleet open (200 calls each, ``direct_bare`` / ``direct_fleet``), which includes that cost.

``--profile``: cProfile of one round of each, function calls per item (deterministic).

``python benchmarks/bench_sdk_floor.py [--quick] [--profile] [--instructions]
[--legacy-python benchmarks/.venv-legacy/bin/python] [--url URL]``: without ``--url`` it
starts its own emulator process.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from _common import (
    emit,
    instructions_per_item,
    log,
    no_gc,
    sdk_client,
)
from _fake_client import REQUEST
from _ours import LOOSE_MS, policy
from _sdk_hand import counted_run, hand, iqr, paired_batch, spawn_callers
from llmfleet import RoutingPolicy, open_fleet

BACKENDS = ("asyncio", "trio")


async def fleet_burst(client: Any, n: int, size: int) -> None:
    routing = policy(batch_max_size=size, batch_min_size=size, poll_interval_ms=1)
    async with open_fleet(client, policy=routing) as fleet:

        async def caller() -> None:
            await fleet.submit(latency_budget_ms=LOOSE_MS, **REQUEST)

        await spawn_callers(n, caller)


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
        lo, hi = iqr(values)
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


async def direct_bare(client: Any, n: int, size: int) -> None:
    """N direct calls one after another: ``messages.create``."""
    create = client.messages.create
    for _ in range(n):
        await create(**REQUEST)


async def direct_fleet(client: Any, n: int, size: int) -> None:
    """N direct calls one after another: ``fleet.submit_sync``."""
    async with open_fleet(client, policy=RoutingPolicy()) as fleet:
        for _ in range(n):
            await fleet.submit_sync(**REQUEST)


VARIANTS = {"hand": hand, "fleet": fleet_burst}
#: ``--one`` only: the direct route's instructions per call.
DIRECT = {"direct_bare": direct_bare, "direct_fleet": direct_fleet}


def one(
    url: str, variant: str, backend: str, n: int, size: int, *, callgrind: bool = False
) -> None:
    """One run of ``variant`` at N calls (``size`` 0: one batch of N), after a warm-up of
    10: what ``--instructions`` counts under callgrind."""
    fn = {**VARIANTS, **DIRECT}[variant]
    anyio.run(partial(counted_run, fn, url, n, size, callgrind=callgrind), backend=backend)


def count_instructions(
    url: str, backends: list[str], n: int, legacy_python: str | None
) -> dict[str, Any]:
    """Instructions per item (callgrind) of hand / fleet / 0.1.0 (hand again in 0.1.0's
    venv, asyncio), N calls in one batch (``one``) and in batches of 100 (``size100``)."""
    here = Path(__file__).parent
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the legacy venv imports its own llmfleet
    out: dict[str, Any] = {"n": n}

    def this_one(variant: str, backend: str, *more: str) -> list[str]:
        # This script's --one run of ``variant`` (what callgrind counts).
        script = str(here / "bench_sdk_floor.py")
        command = [sys.executable, script, "--url", url, "--one", variant]
        return [*command, "--backends", backend, *more]

    for backend in backends:
        out[backend] = {}
        for key, size in (("one", 0), ("size100", 100)):
            counts = out[backend][key] = {}
            for variant in VARIANTS:
                log(f"sdk floor: instructions {backend} {variant} n={n} {key}")
                counts[variant] = instructions_per_item(
                    this_one(variant, backend, "--size", str(size)), n
                )
            if legacy_python is not None and backend == "asyncio":
                for variant in ("hand", "legacy"):
                    log(f"sdk floor: instructions 0.1.0's venv {variant} n={n} {key}")
                    counts[f"legacy_venv_{variant}"] = instructions_per_item(
                        [
                            legacy_python,
                            str(here / "legacy_runner.py"),
                            "--url",
                            url,
                            "--one",
                            variant,
                            "--size",
                            str(size),
                        ],
                        n,
                        env=env,
                    )
        counts = out[backend]["direct"] = {}
        for variant in DIRECT:
            log(f"sdk floor: instructions {backend} {variant} n={n // 10}")
            counts[variant] = instructions_per_item(this_one(variant, backend), n // 10)
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


def run_legacy(legacy_python: str, url: str, cases: list[tuple[int, int]], rounds: int) -> Any:
    """0.1.0 against the same hand loop, paired the same way, in 0.1.0's own venv."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the legacy venv imports its own llmfleet
    here = Path(__file__).parent
    spec = ",".join(f"{n}/{size}" for n, size in cases)
    done = subprocess.run(
        [
            legacy_python,
            str(here / "legacy_runner.py"),
            "--url",
            url,
            "--only",
            "sdk_floor",
            "--floor-cases",
            spec,
            "--floor-rounds",
            str(rounds),
        ],
        check=True,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(done.stdout)["sdk_floor"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--instructions", action="store_true", help="callgrind counts")
    parser.add_argument("--legacy-python", help="0.1.0's venv python: run 0.1.0 alongside")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sections", default="batch,direct")
    parser.add_argument("--rounds", type=int, help="paired rounds of the batch cases")
    parser.add_argument(
        "--one", choices=sorted({**VARIANTS, **DIRECT}), help="one run, for callgrind"
    )
    parser.add_argument("--n", type=int, default=2_000, help="--one's calls")
    parser.add_argument("--callgrind", action="store_true", help="--one under callgrind")
    parser.add_argument("--size", type=int, default=0, help="--one's batch size (0: n)")
    args = parser.parse_args()
    backends = args.backends.split(",")
    if args.one:
        one(args.url, args.one, backends[0], args.n, args.size, callgrind=args.callgrind)
        return
    sections = args.sections.split(",")
    if args.quick:
        cases = [(2_000, 100), (2_000, 2_000), (10_000, 10_000)]
        legacy_cases = [(2_000, 100), (2_000, 2_000)]
    else:
        # 0.1.0 matches each result against its whole batch (quadratic): 100k results in
        # one batch would take it hours, so it runs the 10k cases only.
        cases = [(10_000, 100), (10_000, 10_000), (100_000, 100_000)]
        legacy_cases = [(10_000, 100), (10_000, 10_000)]
    rounds = args.rounds or (3 if args.quick else 5)
    out: dict[str, Any] = {"cases": cases, "backends": backends}

    def measure(url: str) -> None:
        for backend in backends:
            out[backend] = {}
            if "batch" in sections:
                for n, size in cases:
                    log(f"sdk floor: {backend} batch n={n} size={size}")
                    # The 100k case is long: fewer rounds.
                    r = rounds if n <= 10_000 else max(2, rounds // 2)
                    out[backend][f"batch_{n}_{size}"] = anyio.run(
                        paired_batch, url, n, size, r, VARIANTS, backend=backend
                    )
            if "direct" in sections:
                log(f"sdk floor: {backend} direct")
                calls, drounds = (100, 9) if args.quick else (200, 21)
                out[backend]["direct"] = anyio.run(
                    paired_direct, url, calls, drounds, backend=backend
                )
            if args.profile:
                log(f"sdk floor: {backend} profile")
                out[backend]["profile"] = call_counts(url, backend, 10_000, 10_000)
        if args.legacy_python and "batch" in sections:
            log("sdk floor: 0.1.0 (its own venv, asyncio)")
            out["legacy"] = run_legacy(args.legacy_python, url, legacy_cases, rounds)
        if args.instructions:
            out["instructions"] = count_instructions(url, backends, 2_000, args.legacy_python)

    if args.url:
        measure(args.url)
    else:
        with Emulator() as url:
            measure(url)
    emit(out)


if __name__ == "__main__":
    main()
