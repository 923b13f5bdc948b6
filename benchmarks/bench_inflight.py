"""Batches in flight (docs/design.md §5.4): batch-endpoint traffic and the lag from a batch's
end to its callers, in virtual time.

N lanes each keep one batch in flight for a simulated duration: a lane submits a call
(``submit_batch``), waits for its result and submits the next; lane i starts at i/N of a
turnaround, so creates and ends are spread over time as in a steady fleet.
``batch_max_size=1`` makes each call its own batch, so N lanes hold N batches in flight.
The fake client's batches end ``TURNAROUND_S`` (60 s) after their create; time is trio's
``MockClock`` with autojump, so an hour costs what its work costs, not an hour. Every
batch-endpoint request is logged with its virtual time.

Reported per (N, request budget):

- requests per minute to the batch endpoints: the busiest minute (target: ≤ the budget) and
  the mean per kind over the run; status requests (``retrieve`` + ``list``) per minute should
  grow with the number of list pages (1,000 batches a page), not with the number of batches;
- the mean number of batches actually in flight (a budget too small for N holds it lower);
- lag = a caller's resolution − its batch's end (p50/p95/max), against the poll interval in
  effect at the end: the gap between the status refresh before the end and the one that saw
  it (requests less than 1 ms apart count as one refresh). Target: p95 lag ≤ p95 gap + 1 s.

Budgets: 50 requests a minute (Anthropic's first tier, the policy default) and 4,000 (a higher
tier). At 50 a minute the budget, not the poll cadence, bounds large N: creating and
downloading N batches alone takes 2·N requests.

``python benchmarks/bench_inflight.py [--quick]``.
"""

from __future__ import annotations

import bisect
import sys
from collections import Counter
from typing import Any

import anyio
import anyio.lowlevel
import trio.testing

from _common import emit, log, percentile
from _fake_client import REQUEST, FakeClient
from llmfleet import ResultEvent, RoutingPolicy, open_fleet
from llmfleet.providers.anthropic import AnthropicProvider

TURNAROUND_S = 60.0
LANES = (1, 10, 100, 1_000)
BUDGETS = (50, 4_000)
STATUS = ("retrieve", "list")


def _refreshes(requests: list[tuple[float, str]]) -> list[float]:
    """Start times of status refreshes: status requests closer than 1 ms are one refresh."""
    starts: list[float] = []
    for t, kind in requests:
        if kind in STATUS and (not starts or t - starts[-1] > 0.001):
            starts.append(t)
    return starts


async def lanes(n: int, rpm: int, duration: float) -> dict[str, Any]:
    resolved: dict[str, float] = {}

    def on_result(event: ResultEvent) -> None:
        if event.batch_id is not None:
            resolved[event.batch_id] = anyio.current_time()

    fake = FakeClient(
        turnaround_s=TURNAROUND_S,
        clock=anyio.current_time,
        checkpoint=anyio.lowlevel.checkpoint,
        log_requests=True,
    )
    routing = RoutingPolicy(
        batch_window_ms=0,
        batch_min_size=1,
        batch_max_size=1,
        batch_api_rpm=rpm,
        deadline_action="wait",
    )
    t0 = anyio.current_time()
    async with open_fleet(AnthropicProvider(fake), policy=routing, on_result=on_result) as fleet:  # type: ignore[arg-type]

        async def lane(offset: float) -> None:
            await anyio.sleep(offset)
            while anyio.current_time() - t0 < duration:
                await fleet.submit_batch(**REQUEST)

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(lane, i * TURNAROUND_S / n)
        stats = fleet.stats.snapshot()
    t_end = anyio.current_time()
    requests = fake.requests
    assert requests is not None

    # Requests per minute, over the whole minutes of the run.
    minutes = max(1, int((t_end - t0) // 60))
    per_minute: list[Counter[str]] = [Counter() for _ in range(minutes)]
    for t, kind in requests:
        m = int((t - t0) // 60)
        if m < minutes:
            per_minute[m][kind] += 1
    busiest = max(sum(c.values()) for c in per_minute)
    busiest_status = max(sum(c[k] for k in STATUS) for c in per_minute)
    mean = {
        kind: sum(c[kind] for c in per_minute) / minutes
        for kind in ("create", "retrieve", "list", "results", "cancel")
    }

    # Lag from each batch's end to its caller, and the poll interval around that end.
    refreshes = _refreshes(requests)
    lags: list[float] = []
    gaps: list[float] = []
    within = 0
    in_flight_s = 0.0
    for batch in fake.batches.values():
        done = resolved.get(batch.id)
        if done is None:
            continue
        in_flight_s += min(done, t0 + duration) - min(batch.start, t0 + duration)
        lag = done - batch.end
        i = bisect.bisect_left(refreshes, batch.end)
        gap = refreshes[i] - refreshes[i - 1] if 0 < i < len(refreshes) else 0.0
        lags.append(lag)
        gaps.append(gap)
        within += lag <= gap + 1.0
    batches = len(lags)
    return {
        "lanes": n,
        "rpm": rpm,
        "virtual_s": t_end - t0,
        "batches": batches,
        "mean_in_flight": in_flight_s / duration,
        "busiest_minute": busiest,
        "busiest_minute_status": busiest_status,
        "mean_per_minute": mean,
        "lag_p50_s": percentile(lags, 0.5) if lags else None,
        "lag_p95_s": percentile(lags, 0.95) if lags else None,
        "lag_max_s": max(lags, default=None),
        "gap_p95_s": percentile(gaps, 0.95) if gaps else None,
        "within_gap_plus_1s": within / batches if batches else None,
        "rate_limited": stats.rate_limited,
        "budget_wait_s": stats.budget_wait_s,
        "failed": stats.failed,
        "succeeded": stats.succeeded,
    }


def main() -> None:
    quick = "--quick" in sys.argv
    duration = 300.0 if quick else 900.0
    out: dict[str, Any] = {
        "turnaround_s": TURNAROUND_S,
        "duration_s": duration,
        "rows": [],
    }
    for rpm in BUDGETS:
        for n in LANES:
            log(f"in flight: N={n} budget={rpm}/min ({duration:.0f} s simulated)")
            clock = trio.testing.MockClock(autojump_threshold=0)
            row = anyio.run(
                lanes, n, rpm, duration, backend="trio", backend_options={"clock": clock}
            )
            out["rows"].append(row)
    emit(out)


if __name__ == "__main__":
    main()
