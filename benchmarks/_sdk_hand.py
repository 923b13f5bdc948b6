"""The hand-written raw-SDK batch loop, and the callers' spawn, shared by both venvs.

Imported by ``bench_sdk_floor.py`` (this tree) and by ``legacy_runner.py`` (llmfleet 0.1.0's
venv), so the floor both are compared with is one piece of code, run in each one's own
process. Needs only ``anyio`` (a dependency of the ``anthropic`` SDK) and ``_fake_client``;
no llmfleet.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from _common import callgrind_mark, callgrind_on, no_gc, sdk_client
from _fake_client import REQUEST

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["counted_run", "hand", "iqr", "on_asyncio", "paired_batch", "spawn_callers"]


def on_asyncio() -> bool:
    """True when the running anyio backend is asyncio."""
    return isinstance(anyio.lowlevel.current_token().native_token, asyncio.AbstractEventLoop)


async def spawn_callers(n: int, caller: Callable[[], Awaitable[Any]]) -> None:
    """Run N callers at once and wait for all, spawned natively: ``asyncio.create_task`` on
    asyncio (as llmfleet 0.1.0's callers are in ``legacy_runner``, so the callers' own spawn
    cost is the same for both libraries), a trio nursery on trio. (An anyio task group adds a
    cancel scope and a handle per task: its own cost, several times the fleet's per call.)"""
    if on_asyncio():
        # Not gather(): it builds one list of N results at the end, a stall of its own.
        left = n
        all_done = asyncio.Event()

        async def run() -> None:
            nonlocal left
            await caller()
            left -= 1
            if not left:
                all_done.set()

        tasks = {asyncio.create_task(run()) for _ in range(n)}
        await all_done.wait()
        for task in tasks:
            task.result()  # raise a caller's exception here, if one failed
    else:
        import trio

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(caller)


async def hand(client: Any, n: int, size: int) -> None:
    """N callers, one driver: create, poll, stream results, hand each result to its caller.

    Each caller puts its request and an ``anyio.Event`` on a list and waits; the driver cuts
    the list into batches of ``size`` and per batch does ``batches.create`` (custom ids),
    ``batches.retrieve`` until ended (no sleep: the emulator's turnaround is 0) and ``async
    for`` over ``batches.results``, handing each result to its caller.
    """
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


def iqr(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


async def paired_batch(
    url: str, n: int, size: int, rounds: int, variants: dict[str, Callable[..., Awaitable[Any]]]
) -> dict[str, Any]:
    """``hand`` and one other variant (``fleet`` or ``legacy``) alternating, order swapped
    each round, a fresh client per run, GC off; the median of the per-round ratios of CPU
    time (and of wall time) other / hand, with the CPU ratio's interquartile range."""
    (other,) = (name for name in variants if name != "hand")
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
            ratios.append(got[other] / got["hand"])
            wall_ratios.append(got_wall[other] / got_wall["hand"])
    lo, hi = iqr(ratios)
    return {
        "n": n,
        "size": size,
        "rounds": rounds,
        "hand_cpu_s": statistics.median(cpus["hand"]),
        "other": other,
        "other_cpu_s": statistics.median(cpus[other]),
        "hand_wall_s": statistics.median(walls["hand"]),
        "other_wall_s": statistics.median(walls[other]),
        "ratio": statistics.median(ratios),
        "ratio_q1": lo,
        "ratio_q3": hi,
        "ratios": ratios,
        "wall_ratio": statistics.median(wall_ratios),
        "wall_ratios": wall_ratios,
    }


async def counted_run(
    fn: Callable[[Any, int, int], Awaitable[Any]], url: str, n: int, size: int, *, callgrind: bool
) -> None:
    """One run of ``fn`` (``fn(client, calls, batch size)``) at N calls (``size`` 0: one batch
    of N), after a warm-up of 10; under ``callgrind``, between the marks that
    ``_common.instructions_per_item`` counts (N/10 calls, then N). What ``--one`` runs in
    either venv."""
    client = sdk_client(url)
    await fn(client, 10, min(size or 10, 10))  # imports, connection
    if not callgrind:
        await fn(client, n, size or n)
    else:
        callgrind_on()
        for k in (max(1, n // 10), n):
            callgrind_mark()
            await fn(client, k, size or k)
        callgrind_mark()
    await client.close()
