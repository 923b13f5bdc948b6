"""Burst throughput: N callers submit at once (batch route), fake batches end at once.

For each N and ``batch_max_size``: wall and CPU time from the first spawn to the last caller
holding its result, items/s, batches, and the per-item overhead beyond the callers' own
spawn cost: (CPU − spawn baseline's CPU) / N, the spawn baseline being N trivial tasks that
wait on one Event, spawned as the burst's callers are (``_ours.spawn_callers``: natively,
``asyncio.create_task`` on asyncio as 0.1.0's callers are, so both libraries' throughput
includes the same spawn cost; a trio nursery on trio). The fake client's own share (building
batch objects and result lines) is measured alone and shown, not subtracted.

Best settings: ``poll_interval_ms=1`` (the least the policy allows), the default window
(30 s; never reached: size flushes), ``batch_min_size=10``, no batch-endpoint request budget
(``batch_api_rpm=None``). Defaults: ``RoutingPolicy()`` as shipped. Best of several repeats,
each without the cyclic GC. One burst is also profiled (cProfile, top functions by own time).

``python benchmarks/bench_burst.py [--quick]``.
"""

from __future__ import annotations

import cProfile
import sys
from typing import Any

import anyio
import anyio.lowlevel

from _common import Stopwatch, emit, log, no_gc
from _fake_client import REQUEST, FakeClient
from _ours import LOOSE_MS, fleet_over, policy, spawn_baseline, spawn_callers
from bench_direct import top_functions
from bench_floor import best_of, floor_for
from llmfleet import RoutingPolicy

BACKENDS = ("asyncio", "trio")
MAX_SIZES = (100, 10_000)


async def best_spawn(n: int, repeats: int) -> dict[str, float]:
    """The callers' own spawn cost, spawned as :func:`burst` spawns them (best of repeats)."""
    runs = []
    for _ in range(repeats):
        with no_gc():
            runs.append(await spawn_baseline(n))
    return {"wall_s": min(w for w, _ in runs), "cpu_s": min(c for _, c in runs)}


async def burst(n: int, routing: RoutingPolicy) -> dict[str, float]:
    fake = FakeClient(checkpoint=anyio.lowlevel.checkpoint)
    async with fleet_over(fake, routing) as fleet:

        async def caller() -> None:
            await fleet.submit(latency_budget_ms=LOOSE_MS, **REQUEST)

        watch = Stopwatch()
        await spawn_callers(n, caller)
        wall, cpu = watch.read()
    requests = sum(fake.counts.values())
    return {"wall_s": wall, "cpu_s": cpu, "batches": fake.counts["create"], "requests": requests}


async def best_burst(n: int, routing: RoutingPolicy, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        with no_gc():
            runs.append(await burst(n, routing))
    best = dict(runs[0])
    best["wall_s"] = min(r["wall_s"] for r in runs)
    best["cpu_s"] = min(r["cpu_s"] for r in runs)
    return best


async def fake_alone(n: int, max_size: int) -> tuple[float, float]:
    """(wall, cpu) of the fake client's own work for N items in batches of ``max_size``."""
    fake = FakeClient(checkpoint=anyio.lowlevel.checkpoint)
    watch = Stopwatch()
    for start in range(0, n, max_size):
        body = [
            {"custom_id": f"id_{i}", "params": REQUEST}
            for i in range(start, min(n, start + max_size))
        ]
        batch = await fake.messages.batches.create(requests=body)
        await fake.messages.batches.retrieve(batch.id)
        async for _line in await fake.messages.batches.results(batch.id):
            pass
    return watch.read()


def profile_burst(n: int, max_size: int) -> list[dict[str, Any]]:
    """cProfile one burst on asyncio; the top functions by own time."""
    profiler = cProfile.Profile()

    async def run() -> None:
        with no_gc():
            profiler.enable()
            await burst(n, policy(batch_max_size=max_size, poll_interval_ms=1))
            profiler.disable()

    anyio.run(run, backend="asyncio")
    return top_functions(profiler)


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    repeats = 3 if quick else 7
    defaults_n = 200 if quick else 1_000
    out: dict[str, Any] = {
        "sizes": sizes,
        "max_sizes": list(MAX_SIZES),
        "repeats": repeats,
        "defaults_n": defaults_n,
    }
    for backend in BACKENDS:

        async def measure(backend: str = backend) -> dict[str, Any]:
            res: dict[str, Any] = {
                "floor": await floor_for(sizes, repeats),
                "spawn": {str(n): await best_spawn(n, repeats) for n in sizes},
                "best": {},
                "fake": {},
            }
            for max_size in MAX_SIZES:
                routing = policy(batch_max_size=max_size, poll_interval_ms=1)
                for n in sizes:
                    log(f"burst: {backend} N={n} batch_max_size={max_size}")
                    reps = repeats if n < 100_000 else max(2, repeats // 2)
                    res["best"][f"{n}/{max_size}"] = await best_burst(n, routing, reps)
                    fake = await best_of(3, fake_alone, n, max_size)
                    res["fake"][f"{n}/{max_size}"] = fake[1]
            log(f"burst: {backend} defaults N={defaults_n}")
            res["defaults"] = {str(defaults_n): await best_burst(defaults_n, RoutingPolicy(), 1)}
            return res

        out[backend] = anyio.run(measure, backend=backend)
    log("burst: profile")
    out["profile"] = {
        "case": "asyncio N=10000 batch_max_size=100",
        "top": profile_burst(10_000, 100),
    }
    emit(out)


if __name__ == "__main__":
    main()
