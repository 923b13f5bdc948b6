"""The fleet client's overhead per call (``fleet.client().messages.create``), against
``fleet.submit`` and against the bare SDK, on both routes, on asyncio and trio.

The fleet client is the SDK over :class:`llmfleet.FleetTransport`: the SDK builds and sends the
request, the transport decodes it, ``fleet.submit`` makes the call (itself an SDK call on the
direct route), and the transport encodes the result for the SDK to parse again. So on the
direct route it costs about a second SDK request/response cycle in process, minus the socket.

- **direct**, ``sdk``: ``AsyncAnthropic`` over httpx2's ``MockTransport`` (the real SDK, no
  socket); ``bare`` is ``client.messages.create``, ``submit`` is ``fleet.submit`` with no
  budget, ``client`` is the fleet client with no budget. Calls alternate one by one, each
  timed, medians kept (``_common.compare_calls(paired=True)``).
- **direct**, ``http``: the same against the emulator over HTTP on 127.0.0.1 (the emulator in
  another process: this process's CPU is the client side only).
- **batch**: bursts of ``N`` concurrent calls with a loose budget, pooled into one batch by the
  emulator over HTTP: ``submit`` (``fleet.submit``) against ``client`` (the fleet client under
  ``latency_budget``); CPU per call in this process, best of rounds, variants alternating.
  The bare SDK has no batch call of its own: its direct call's CPU (``sdk`` ``bare``) is the
  reference for "as much again as an SDK call".

Ratios compare within this run only. ``python benchmarks/bench_client.py [--quick] [--json]``
(starts its own emulator process), or ``--url`` of a running emulator.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from _common import Stopwatch, compare_calls, emit, log, mock_sdk_client, no_gc, sdk_client
from _fake_client import REQUEST
from llmfleet import RoutingPolicy, latency_budget, open_fleet

if TYPE_CHECKING:
    from collections.abc import Iterator

BACKENDS = ("asyncio", "trio")
LOOSE_MS = 3_600_000


async def direct(kind: str, url: str, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    client: Any = mock_sdk_client() if kind == "sdk" else sdk_client(url)
    async with open_fleet(client, policy=RoutingPolicy()) as fleet:
        fleet_client = fleet.client()
        create = client.messages.create
        via_client = fleet_client.messages.create

        async def bare() -> Any:
            return await create(**REQUEST)

        async def submit() -> Any:
            return await fleet.submit(**REQUEST)

        async def through_client() -> Any:
            return await via_client(**REQUEST)

        result = await compare_calls(
            {"bare": bare, "submit": submit, "client": through_client},
            calls=calls,
            rounds=rounds,
            paired=True,
        )
        await fleet_client.close()
    await client.close()
    return result


async def batch(url: str, n: int, rounds: int) -> dict[str, dict[str, float]]:
    policy = RoutingPolicy(
        batch_min_size=n,
        batch_max_size=n,
        poll_interval_ms=5,
        poll_max_interval_ms=5,
        batch_api_rpm=None,
    )
    client: Any = sdk_client(url)
    cpu: dict[str, list[float]] = {"submit": [], "client": []}
    wall: dict[str, list[float]] = {"submit": [], "client": []}
    async with open_fleet(client, policy=policy) as fleet:
        fleet_client = fleet.client()

        async def by_submit() -> None:
            await fleet.submit(latency_budget_ms=LOOSE_MS, **REQUEST)

        async def by_client() -> None:
            await fleet_client.messages.create(**REQUEST)

        variants = {"submit": by_submit, "client": by_client}
        for r in range(rounds + 1):  # round 0 warms up
            order = list(variants) if r % 2 else list(reversed(variants))
            for name in order:
                with no_gc(), latency_budget(LOOSE_MS):
                    watch = Stopwatch()
                    async with anyio.create_task_group() as tg:
                        for _ in range(n):
                            tg.start_soon(variants[name])
                    w, c = watch.read()
                if r:
                    wall[name].append(w / n)
                    cpu[name].append(c / n)
        await fleet_client.close()
    await client.close()
    return {
        name: {"cpu_us": min(cpu[name]) * 1e6, "wall_ms_per_burst": min(wall[name]) * n * 1e3}
        for name in cpu
    }


@contextlib.contextmanager
def emulator(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    here = Path(__file__).resolve().parent
    proc = subprocess.Popen(
        [sys.executable, str(here / "_emu_server.py"), "--turnaround", "0.02"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


HEADERS = [
    "backend",
    "route",
    "stack",
    "bare SDK µs",
    "fleet.submit µs",
    "fleet client µs",
    "client / submit",
    "client / bare",
]
METHOD = (
    "CPU per call in this process: direct, medians of calls alternating one by one; batch, "
    "the best burst (the bare SDK has no batch call: its direct call is the reference)."
)


def rows(out: dict[str, Any]) -> list[list[Any]]:
    """The table of ratios, a row per backend, route and stack."""
    table: list[list[Any]] = []
    for backend in BACKENDS:
        sdk_bare = out[backend]["direct"]["sdk"]["bare"]["cpu_us"]
        for kind in ("sdk", "http"):
            row = out[backend]["direct"][kind]
            bare, submit, client = (row[k]["cpu_us"] for k in ("bare", "submit", "client"))
            table.append(
                [backend, "direct", kind, bare, submit, client, client / submit, client / bare]
            )
        row = out[backend]["batch"]
        submit, client = row["submit"]["cpu_us"], row["client"]["cpu_us"]
        table.append(
            [
                backend,
                f"batch (burst of {out['plan']['batch_n']})",
                "http",
                sdk_bare,
                submit,
                client,
                client / submit,
                client / sdk_bare,
            ]
        )
    return table


def report(out: dict[str, Any]) -> str:
    lines = [
        METHOD,
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows(out):
        cells = [
            f"{c:.2f}" if i >= 6 else f"{c:.0f}" if i >= 3 else str(c) for i, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw figures, one JSON line")
    args = parser.parse_args()
    plan = {
        "sdk": (100 if args.quick else 400, 3 if args.quick else 5),
        "http": (50 if args.quick else 200, 3 if args.quick else 5),
        "batch_n": 100 if args.quick else 200,
        "batch_rounds": 2 if args.quick else 5,
    }
    out: dict[str, Any] = {"plan": plan}
    started = time.time()
    with emulator(args.url) as url:
        for backend in BACKENDS:
            out[backend] = {"direct": {}}
            for kind in ("sdk", "http"):
                log(f"client: {backend} direct {kind}")
                calls, rounds = plan[kind]

                async def run_direct(
                    kind: str = kind, calls: int = calls, rounds: int = rounds
                ) -> Any:
                    return await direct(kind, url, calls, rounds)

                out[backend]["direct"][kind] = anyio.run(run_direct, backend=backend)
            log(f"client: {backend} batch")

            async def run_batch() -> Any:
                return await batch(url, plan["batch_n"], plan["batch_rounds"])

            out[backend]["batch"] = anyio.run(run_batch, backend=backend)
    out["seconds"] = time.time() - started
    if args.json:
        emit(out)
    else:
        print(report(out))


if __name__ == "__main__":
    main()
