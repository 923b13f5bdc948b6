"""Polls per batch vs batch turnaround, in virtual time (trio's MockClock, autojump).

One call, one batch, on the fake client whose batches end ``T`` virtual seconds after their
create; the fleet's status requests (``retrieve`` + ``list``) are counted, and how long after
the batch's end its results were fetched (detection delay). With backoff ×1.5 from
``poll_interval_ms`` up to ``poll_max_interval_ms`` and, past it, up to a tenth of the batch's
age, polls grow with log(T) and the delay stays within ~10 % of T. Shown at the defaults and
with the cap raised to 24 h (the age bound then never applies).

``python benchmarks/bench_polls.py``.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import trio.testing

from _common import emit, log
from _fake_client import REQUEST, FakeClient
from _ours import fleet_over, policy

TURNAROUNDS = (10, 60, 600, 3_600, 86_400)
CAPS = {"default (60 s cap)": None, "cap 24 h": 86_400_000}


async def one_batch(turnaround: float, cap: int | None) -> dict[str, float]:
    marks: dict[str, float] = {}
    fake = FakeClient(
        turnaround_s=turnaround,
        clock=anyio.current_time,
        checkpoint=anyio.lowlevel.checkpoint,
        on_results=lambda batch: marks.setdefault("results", anyio.current_time()),
    )
    fields: dict[str, Any] = {"batch_window_ms": 0, "batch_min_size": 1}
    if cap is not None:
        fields["poll_max_interval_ms"] = cap
    async with fleet_over(fake, policy(**fields)) as fleet:
        await fleet.submit_batch(**REQUEST)
    batch = next(iter(fake.batches.values()))
    return {
        "polls": fake.counts["retrieve"] + fake.counts["list"],
        "delay_s": marks["results"] - batch.end,
    }


def main() -> None:
    out: dict[str, Any] = {"turnarounds_s": list(TURNAROUNDS), "caps": {}}
    for label, cap in CAPS.items():
        rows = {}
        for t in TURNAROUNDS:
            log(f"polls: {label} T={t}s")
            clock = trio.testing.MockClock(autojump_threshold=0)
            res = anyio.run(one_batch, t, cap, backend="trio", backend_options={"clock": clock})
            res["polls_per_ln_t"] = res["polls"] / math.log(t)
            rows[str(t)] = res
        out["caps"][label] = rows
    emit(out)


if __name__ == "__main__":
    main()
