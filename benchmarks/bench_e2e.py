"""End to end over HTTP: a fleet of agents with mixed budgets against the emulator.

The real SDK (``AsyncAnthropic``) against the emulator (another process; batches end 1 s after
their create). N agents start over 2 s (uniform, seeded), each makes one call with a budget
drawn by index: 1 in 5 without a budget or with 1 s (direct), the rest 60 s or 1 h (batch).
Policy: defaults except ``batch_window_ms=1_000``, ``batch_min_size=100``,
``batch_max_size=1_000`` (a realistic fleet's flush sizes). This process (the client only)
reports wall time, CPU time, peak RSS; ``run.py`` reads the emulator's request counts before
and after.

``python benchmarks/bench_e2e.py --url URL --agents N --backend asyncio|trio``.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from typing import Any

import anyio

from _common import emit, sdk_client
from _fake_client import REQUEST
from llmfleet import RoutingPolicy, open_fleet

BUDGETS = (None, 1_000, 60_000, 3_600_000, 60_000, 3_600_000, 60_000, 3_600_000, 60_000, 60_000)
ARRIVAL_S = 2.0


async def run(url: str, agents: int) -> dict[str, Any]:
    import psutil

    rng = random.Random(0)
    starts = [rng.uniform(0, ARRIVAL_S) for _ in range(agents)]
    client = sdk_client(url)
    routing = RoutingPolicy(batch_window_ms=1_000, batch_min_size=100, batch_max_size=1_000)
    rss0 = psutil.Process().memory_info().rss
    errors = 0
    # Each failed call's error type and, for a wrapped one, its cause's (a connect timeout
    # under the burst of direct connections is an `APITimeoutError` from a `ConnectTimeout`).
    kinds: dict[str, int] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with open_fleet(client, policy=routing) as fleet:

        async def agent(i: int) -> None:
            nonlocal errors
            await anyio.sleep(starts[i])
            budget = BUDGETS[i % len(BUDGETS)]
            try:
                if budget is None:
                    await fleet.submit(**REQUEST)
                else:
                    await fleet.submit(latency_budget_ms=budget, **REQUEST)
            except Exception as exc:
                errors += 1
                cause = exc.__cause__
                kind = type(exc).__name__ + (f" ({type(cause).__name__})" if cause else "")
                kinds[kind] = kinds.get(kind, 0) + 1

        async with anyio.create_task_group() as tg:
            for i in range(agents):
                tg.start_soon(agent, i)
        stats = fleet.stats.snapshot()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await client.close()
    return {
        "agents": agents,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_start_mb": rss0 / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "errors": errors,
        "error_kinds": kinds,
        "sync_calls": stats.sync_calls,
        "batched_calls": stats.batched_calls,
        "batches": stats.batches_submitted,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    emit(anyio.run(run, args.url, args.agents, backend=args.backend))


if __name__ == "__main__":
    main()
