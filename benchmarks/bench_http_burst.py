"""Budget check (docs/design.md §5.4): a burst in batches of 100 over HTTP, ours side.

The real SDK (``AsyncAnthropic``) against the emulator (another process; ``run.py`` starts
one whose batches end 0.2 s after their create, with no rate limit of its own). N callers
all ``submit(latency_budget_ms=3_600_000)`` at once. Policy: ``batch_max_size=100`` and
``batch_min_size=100`` (each full batch leaves as soon as it fills), ``batch_window_ms=1_000``,
``batch_api_rpm=4_000`` (a higher tier's batch limit; the 100 creates and 100 downloads of a
10k burst alone are 4 minutes' worth of the default 50 a minute), the rest defaults (first
status refresh 1 s after a create). GC on, one run.

Wall and CPU (this process, the client only) from the first spawn to the last caller holding
its result; any failed call fails the run. ``run.py`` reads the emulator's request counts
before and after. 0.1.0's side of the check is ``legacy_runner.py --only http_burst``.

``python benchmarks/bench_http_burst.py --url URL --callers N --backend asyncio|trio``.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import anyio

from _common import Stopwatch, emit, sdk_client
from _fake_client import REQUEST
from llmfleet import RoutingPolicy, open_fleet

LOOSE_MS = 3_600_000
POLICY = RoutingPolicy(
    batch_max_size=100, batch_min_size=100, batch_window_ms=1_000, batch_api_rpm=4_000
)


async def run(url: str, callers: int) -> dict[str, Any]:
    client = sdk_client(url)
    async with open_fleet(client, policy=POLICY) as fleet:
        watch = Stopwatch()
        async with anyio.create_task_group() as tg:
            for _ in range(callers):
                tg.start_soon(partial(fleet.submit, latency_budget_ms=LOOSE_MS, **REQUEST))
        wall, cpu = watch.read()
        stats = fleet.stats.snapshot()
    await client.close()
    return {
        "callers": callers,
        "wall_s": wall,
        "cpu_s": cpu,
        "batches": stats.batches_submitted,
        "batched_calls": stats.batched_calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--callers", type=int, default=10_000)
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    emit(anyio.run(run, args.url, args.callers, backend=args.backend))


if __name__ == "__main__":
    main()
