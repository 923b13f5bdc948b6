"""Memory per queued item: what the fleet holds for a call waiting in its queue.

N callers (each with its own, distinct request dict, made beforehand and not counted) submit
to a fleet whose window (1 h) and ``batch_min_size`` keep them all queued; traced memory
growth (tracemalloc) minus the growth for N bare tasks parked on one shared Event, per item.
The fleet keeps a snapshot of each request (so later changes by the caller are not sent):
what the adapter's ``prepare`` returns, the request's encoded JSON for Anthropic. Its size,
measured alone, grows with the request and is reported apart.

``python benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import anyio
import anyio.lowlevel

from _common import emit, log, no_gc
from _fake_client import FakeClient
from _ours import LOOSE_MS, fleet_over, policy
from legacy_runner import make_requests
from llmfleet.providers.anthropic import AnthropicProvider

BACKENDS = ("asyncio", "trio")
N = 10_000


def traced() -> int:
    return tracemalloc.get_traced_memory()[0]


async def settle() -> None:
    for _ in range(5):
        await anyio.lowlevel.checkpoint()
    gc.collect()


async def queued_memory(n: int) -> dict[str, float]:
    requests = make_requests(n)
    with no_gc():
        tracemalloc.start()
        try:
            go = anyio.Event()
            started = 0
            all_in = anyio.Event()

            async def idle(params: dict[str, Any]) -> None:
                nonlocal started
                started += 1
                if started == n:
                    all_in.set()
                await go.wait()

            before = traced()
            async with anyio.create_task_group() as tg:
                for p in requests:
                    tg.start_soon(idle, p)
                await all_in.wait()
                idle_bytes = traced() - before
                go.set()
            await settle()

            before = traced()
            adapter = AnthropicProvider(FakeClient())  # type: ignore[arg-type]
            copies = [adapter.prepare(f"lf_0123abcd_{i}", p)[1] for i, p in enumerate(requests)]
            copy_bytes = traced() - before
            del copies
            await settle()

            fake = FakeClient()
            routing = policy(
                batch_window_ms=3_600_000,
                batch_min_size=100_000,
                batch_max_size=100_000,
                max_queued=n + 1,
            )
            async with fleet_over(fake, routing) as fleet:

                async def caller(params: dict[str, Any]) -> None:
                    await fleet.submit(latency_budget_ms=LOOSE_MS, **params)

                await settle()
                before = traced()
                snap0 = tracemalloc.take_snapshot()
                async with anyio.create_task_group() as tg:
                    for p in requests:
                        tg.start_soon(caller, p)
                    while fleet.stats.queued < n:  # noqa: ASYNC110 - the fleet offers no event
                        await anyio.sleep(0.01)
                    await anyio.sleep(0.05)  # the flusher has taken them into its queue
                    queued_bytes = traced() - before
                    snap1 = tracemalloc.take_snapshot()
                    tg.cancel_scope.cancel()
        finally:
            tracemalloc.stop()
    top = [
        {"where": _short(str(d.traceback[0])), "bytes_per_item": d.size_diff / n}
        for d in snap1.compare_to(snap0, "lineno")[:12]
        if d.size_diff / n >= 8
    ]
    return {
        "n": n,
        "top": top,
        "idle_task_bytes": idle_bytes / n,
        "queued_caller_bytes": queued_bytes / n,
        "per_item_bytes": (queued_bytes - idle_bytes) / n,
        "params_copy_bytes": copy_bytes / n,
    }


def _short(where: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3."):
        if marker in where:
            return where.split(marker, 1)[1]
    return where


def main() -> None:
    out: dict[str, Any] = {"n": N}
    for backend in BACKENDS:
        log(f"memory: {backend}")
        out[backend] = anyio.run(queued_memory, N, backend=backend)
    emit(out)


if __name__ == "__main__":
    main()
