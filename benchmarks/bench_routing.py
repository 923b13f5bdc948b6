"""Result routing at scale: one batch of N results, every caller waiting on its own.

N callers (``_ours.spawn_callers``: asyncio tasks on asyncio, a trio nursery on trio)
submit at once into one batch (``batch_min_size = batch_max_size = N``); the fake
batch ends at once and streams N result lines, yielding to the loop every 100 lines (as a
socket read per 64 KB chunk would). Measured from the moment the results are requested:

- time until the last caller holds its result;
- the longest gap of a heartbeat task that sleeps 1 ms in a loop, over gaps overlapping the
  routing (a gap of ~1 ms means no stall); also the gap around the batch's create (the
  flusher taking N calls and the adapter building the body), for information;
- in a second run under tracemalloc: peak traced memory above the level when results were
  requested (the results path's own working memory);
- the backend's floor, in the same run: N callers spawned the same way, each parked on the
  backend's own bare wake-up (a future on asyncio; ``wait_task_rescheduled`` and
  ``reschedule`` on trio) and woken 100 per checkpoint, timed from the first wake to the
  last caller's. What the backend alone costs to wake N waiting tasks and let them end: no
  library that gives each caller its own task can route below it.

Timing runs: best of several, without the cyclic GC. ``python benchmarks/bench_routing.py``
(``--sizes 100000 --backends trio --repeats 5`` to time one case).

``--instructions``: instructions per result of the routing phase alone (from the results
request to the last caller's end, no heartbeat), counted with valgrind's callgrind over 500
and 5,000 results, as (I(5,000) - I(500)) / 4,500 (``_common.instructions_per_item``): a
figure that does not move with the machine's load, to compare trees with.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from _common import callgrind_mark, callgrind_on, emit, instructions_per_item, log, no_gc
from _fake_client import REQUEST, FakeClient
from _ours import LOOSE_MS, fleet_over, on_asyncio, policy, spawn_callers

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

BACKENDS = ("asyncio", "trio")


async def route(n: int, *, trace: bool, counted: bool = False) -> dict[str, float]:
    """One routing run (see the module docstring). ``counted``: under callgrind, a mark
    (``_common.callgrind_mark``) as the results are requested and one once every caller
    has ended, and no heartbeat (whose turns would be counted with the routing)."""
    marks: dict[str, float] = {}

    def on_create(batch: object) -> None:
        marks["create"] = time.perf_counter()

    def on_results(batch: object) -> None:
        if counted:
            callgrind_mark()
        if trace:
            tracemalloc.reset_peak()
            marks["base"] = tracemalloc.get_traced_memory()[0]
        marks["t0"] = time.perf_counter()

    fake = FakeClient(
        checkpoint=anyio.lowlevel.checkpoint, on_create=on_create, on_results=on_results
    )
    routing = policy(
        batch_max_size=n, batch_min_size=n, poll_interval_ms=1, max_queued=max(n + 1, 100_000)
    )
    last = 0.0
    gaps: list[tuple[float, float]] = []

    async def heartbeat(*, task_status: TaskStatus[None]) -> None:
        task_status.started()
        prev = time.perf_counter()
        while True:
            await anyio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((prev, now))
            prev = now

    async with fleet_over(fake, routing) as fleet:

        async def caller() -> None:
            nonlocal last
            await fleet.submit(latency_budget_ms=LOOSE_MS, **REQUEST)
            last = max(last, time.perf_counter())

        if counted:
            await spawn_callers(n, caller)
            callgrind_mark()
            return {}
        async with anyio.create_task_group() as outer:
            await outer.start(heartbeat)
            await spawn_callers(n, caller)
            outer.cancel_scope.cancel()
    t0 = marks["t0"]
    routing_gaps = [end - start for start, end in gaps if end > t0 and start < last] or [0.0]
    create_gaps = [end - start for start, end in gaps if start <= marks["create"] <= end] or [0.0]
    out = {
        "resolve_s": last - t0,
        "stall_s": max(routing_gaps),
        "create_gap_s": max(create_gaps),
    }
    if trace:
        out["peak_bytes"] = tracemalloc.get_traced_memory()[1] - marks["base"]
    return out


async def floor(n: int) -> float:
    """Seconds from waking the first of N parked callers to the last caller's end, with no
    fleet: the backend's own share of :func:`route` (see the module docstring)."""
    parked = 0
    all_parked = anyio.Event()
    last = 0.0
    if not on_asyncio():
        import trio.lowlevel

        tasks: list[Any] = []

        async def caller() -> None:
            nonlocal parked, last
            tasks.append(trio.lowlevel.current_task())
            parked += 1
            if parked == n:
                all_parked.set()
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)
            last = max(last, time.perf_counter())

        def wake(i: int) -> None:
            trio.lowlevel.reschedule(tasks[i])

    else:
        import asyncio

        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(n)]

        async def caller() -> None:
            nonlocal parked, last
            future = futures[parked]
            parked += 1
            if parked == n:
                all_parked.set()
            await future
            last = max(last, time.perf_counter())

        def wake(i: int) -> None:
            futures[i].set_result(None)

    t0 = 0.0

    async def driver() -> None:
        nonlocal t0
        await all_parked.wait()
        t0 = time.perf_counter()
        for i in range(n):
            wake(i)
            if i % 100 == 99:
                await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(driver)
        await spawn_callers(n, caller)
    return last - t0


def _option(name: str, default: list[str]) -> list[str]:
    """``--name a,b``: a comma-separated list from the command line, else ``default``."""
    args = sys.argv
    if name in args and args.index(name) + 1 < len(args):
        return args[args.index(name) + 1].split(",")
    return default


def counted_run(backend: str, n: int) -> None:
    """What ``--instructions`` runs under callgrind: a warm-up, then the routing of N / 10
    and of N results, each phase between two marks."""

    async def run() -> None:
        await route(500, trace=False)
        gc.collect()
        gc.disable()
        callgrind_on()
        # Dumps: .1 up to the first run's results request, .2 its routing, .3 up to the
        # second run's, .4 its routing.
        await route(max(1, n // 10), trace=False, counted=True)
        await route(n, trace=False, counted=True)

    anyio.run(run, backend=backend)


def count_instructions(backends: list[str], n: int) -> dict[str, float]:
    """Instructions per result of the routing phase, per backend (``--instructions``)."""
    counts = {}
    for backend in backends:
        log(f"routing: instructions {backend} n={n}")
        command = [sys.executable, str(Path(__file__).resolve()), "--counted", backend]
        counts[backend] = instructions_per_item(command, n, parts=(2, 4))
    return counts


def main() -> None:
    if "--counted" in sys.argv:
        counted_run(_option("--counted", [""])[0], int(_option("--n", ["0"])[0]))
        return
    quick = "--quick" in sys.argv
    # For iterating on one case: --sizes 100000 --backends trio (default: all of each).
    sizes = [int(n) for n in _option("--sizes", ["1000", "10000", "100000"])]
    backends = _option("--backends", list(BACKENDS))
    repeats = int(_option("--repeats", ["1" if quick else "3"])[0])
    out: dict[str, Any] = {"sizes": sizes, "repeats": repeats}
    for backend in backends:

        async def measure(backend: str = backend) -> dict[str, Any]:
            res: dict[str, Any] = {}
            for n in sizes:
                log(f"routing: {backend} N={n}")
                runs = []
                floors = []
                for _ in range(repeats):
                    # Side by side, in turn: the machine's speed drifts within a run.
                    with no_gc():
                        runs.append(await route(n, trace=False))
                    with no_gc():
                        floors.append(await floor(n))
                with no_gc():
                    tracemalloc.start()
                    try:
                        mem = await route(n, trace=True)
                    finally:
                        tracemalloc.stop()
                res[str(n)] = {
                    "resolve_s": min(r["resolve_s"] for r in runs),
                    "stall_s": min(r["stall_s"] for r in runs),
                    "create_gap_s": min(r["create_gap_s"] for r in runs),
                    "peak_bytes": mem["peak_bytes"],
                    "floor_s": min(floors),
                    # Each routing run over the floor run beside it: the spread of the ratio.
                    "over_floor": sorted(
                        r["resolve_s"] / f for r, f in zip(runs, floors, strict=True)
                    ),
                }
            return res

        out[backend] = anyio.run(measure, backend=backend)
    if "--instructions" in sys.argv:
        out["instructions"] = {"n": 5_000, **count_instructions(backends, 5_000)}
    emit(out)


if __name__ == "__main__":
    main()
