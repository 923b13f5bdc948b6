"""The floor: what handing an item to another task and waking its caller costs in bare anyio.

- Round trip: one caller sends an item (its own ``anyio.Event``) into a memory object stream;
  a server task receives it and sets the Event; the caller wakes. Sequential, per round trip.
- Spawn baseline: N trivial tasks that each wait on one shared Event, set once all wait.
  This is what the callers of a burst cost by themselves; the other figures subtract it.
- Burst hand-off: N caller tasks each make an Event, ``send_nowait`` it and wait on it; one
  task receives (one await, then ``receive_nowait`` until empty) and sets them all, as the
  fleet's flusher takes a burst. Per item: (CPU − spawn baseline's CPU) / N.

Every figure is the best of several repeats, timed without the cyclic GC (see
``_common.no_gc``), in this process's CPU time (the machine is shared: CPU time is what the
work costs, wall time also counts other processes' turns); wall times are reported alongside.

Run alone: ``python benchmarks/bench_floor.py [--quick]`` (prints JSON).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from _common import Stopwatch, emit, log, no_gc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskStatus

Timing = tuple[float, float]  # (wall, cpu) seconds

BACKENDS = ("asyncio", "trio")


async def round_trip(n: int) -> Timing:
    """(wall, cpu) seconds for ``n`` Event round trips through a memory object stream."""
    send, receive = anyio.create_memory_object_stream[anyio.Event](float("inf"))

    async def server() -> None:
        async with receive:
            async for event in receive:
                event.set()

    async with anyio.create_task_group() as tg, send:
        tg.start_soon(server)
        await anyio.lowlevel.checkpoint()
        watch = Stopwatch()
        for _ in range(n):
            event = anyio.Event()
            send.send_nowait(event)
            await event.wait()
        elapsed = watch.read()
    return elapsed


async def spawn_baseline(n: int) -> Timing:
    """(wall, cpu) seconds for N tasks that wait on one shared Event, first spawn to last exit."""
    go = anyio.Event()
    all_in = anyio.Event()
    started = 0

    async def trivial() -> None:
        nonlocal started
        started += 1
        if started == n:
            all_in.set()
        await go.wait()

    watch = Stopwatch()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(trivial)
        await all_in.wait()
        go.set()
    return watch.read()


async def burst_handoff(n: int) -> Timing:
    """(wall, cpu) seconds for N callers to hand an Event each to one resolver task and be woken."""
    send, receive = anyio.create_memory_object_stream[anyio.Event](float("inf"))

    async def resolver(*, task_status: TaskStatus[None]) -> None:
        task_status.started()
        async with receive:
            while True:
                try:
                    first = await receive.receive()
                except anyio.EndOfStream:
                    return
                items = [first]
                while True:
                    try:
                        items.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                for event in items:
                    event.set()

    async def caller() -> None:
        event = anyio.Event()
        send.send_nowait(event)
        await event.wait()

    async with anyio.create_task_group() as outer:
        await outer.start(resolver)
        watch = Stopwatch()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(caller)
        elapsed = watch.read()
        send.close()
    return elapsed


async def best_of(
    repeats: int, fn: Callable[..., Awaitable[Timing]], n: int, *args: object
) -> Timing:
    """The fastest of ``repeats`` runs of ``fn(n, *args)``: (min wall, min cpu), GC off."""
    runs = []
    for _ in range(repeats):
        with no_gc():
            runs.append(await fn(n, *args))
    return min(w for w, _ in runs), min(c for _, c in runs)


async def floor_for(sizes: list[int], repeats: int) -> dict[str, dict[str, float]]:
    """Spawn baseline and burst hand-off per N.

    The hand-off's own cost is a small difference of two large figures, so the two run
    alternately and the per-item floor is the median of the paired differences (each pair
    close in time); the spawn baseline is the best of its runs.
    """
    out: dict[str, dict[str, float]] = {}
    for n in sizes:
        spawns: list[Timing] = []
        handoffs: list[Timing] = []
        for _ in range(repeats):
            with no_gc():
                spawns.append(await spawn_baseline(n))
            with no_gc():
                handoffs.append(await burst_handoff(n))
        diffs = sorted(h[1] - s[1] for s, h in zip(spawns, handoffs, strict=True))
        out[str(n)] = {
            "spawn_wall_s": min(w for w, _ in spawns),
            "spawn_cpu_s": min(c for _, c in spawns),
            "handoff_wall_s": min(w for w, _ in handoffs),
            "handoff_cpu_s": min(c for _, c in handoffs),
            "spawn_per_item_us": min(c for _, c in spawns) / n * 1e6,
            "handoff_per_item_us": diffs[len(diffs) // 2] / n * 1e6,
        }
    return out


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    repeats = 5 if quick else 9
    rt_n = 20_000 if quick else 50_000
    result: dict[str, object] = {"sizes": sizes, "repeats": repeats, "round_trip_n": rt_n}
    for backend in BACKENDS:
        log(f"floor: {backend}")

        async def measure() -> dict[str, object]:
            wall, cpu = await best_of(repeats, round_trip, rt_n)
            return {
                "round_trip_us": cpu / rt_n * 1e6,
                "round_trip_wall_us": wall / rt_n * 1e6,
                "burst": await floor_for(sizes, repeats),
            }

        result[backend] = anyio.run(measure, backend=backend)
    emit(result)


if __name__ == "__main__":
    main()
