"""Flush precision in real time: how late a window flush sends its batch.

One call at a time is submitted (``batch_window_ms=50``, ``batch_min_size=100``, so only the
window can flush it); lateness = the fake's create call time − (the submit time + 50 ms), on
``anyio.current_time()``. The next call is submitted as soon as the batch is created, after a
random 0–2 ms pause (so submits do not stay in phase with the loop's timer ticks). Real
clocks, real sleeps, cyclic GC on.

``python benchmarks/bench_flush.py [--quick]``.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import anyio
import anyio.lowlevel

from _common import emit, log, percentile
from _fake_client import REQUEST, FakeClient
from _ours import LOOSE_MS, fleet_over, policy

BACKENDS = ("asyncio", "trio")
WINDOW_MS = 50


async def lateness(k: int) -> list[float]:
    state: dict[str, Any] = {}

    def on_create(batch: object) -> None:
        state["t"] = anyio.current_time()
        state["event"].set()

    fake = FakeClient(checkpoint=anyio.lowlevel.checkpoint, on_create=on_create)
    routing = policy(
        batch_window_ms=WINDOW_MS, batch_min_size=100, batch_max_size=100, poll_interval_ms=1
    )
    rng = random.Random(0)
    late: list[float] = []
    async with fleet_over(fake, routing) as fleet, anyio.create_task_group() as tg:

        async def caller() -> None:
            await fleet.submit(latency_budget_ms=LOOSE_MS, **REQUEST)

        for _ in range(k):
            state["event"] = anyio.Event()
            submitted = anyio.current_time()
            tg.start_soon(caller)
            await state["event"].wait()
            late.append(state["t"] - (submitted + WINDOW_MS / 1000))
            await anyio.sleep(rng.uniform(0, 0.002))
    return late


def main() -> None:
    quick = "--quick" in sys.argv
    k = 100 if quick else 1_000
    out: dict[str, Any] = {"flushes": k, "window_ms": WINDOW_MS}
    for backend in BACKENDS:
        log(f"flush: {backend} ({k} window flushes)")
        late = anyio.run(lateness, k, backend=backend)
        out[backend] = {
            "p50_ms": percentile(late, 0.5) * 1e3,
            "p99_ms": percentile(late, 0.99) * 1e3,
            "max_ms": max(late) * 1e3,
            "min_ms": min(late) * 1e3,
        }
    emit(out)


if __name__ == "__main__":
    main()
