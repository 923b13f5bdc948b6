"""Direct-path overhead: ``fleet.submit`` (tight budget) and ``fleet.submit_sync`` against the
bare ``client.messages.create`` they wrap, on asyncio and trio.

Three clients, each timed in rounds of back-to-back sequential calls (variants interleaved,
best round kept, see ``_common.compare_calls``):

- ``fake``: the in-process fake client (``_fake_client.FakeClient``), wrapped in llmfleet's
  real Anthropic adapter. Isolates the fleet's own cost.
- ``sdk``: ``AsyncAnthropic`` over httpx2's ``MockTransport`` (the real SDK, no socket).
- ``http``: ``AsyncAnthropic`` against the emulator over HTTP on 127.0.0.1 (the emulator runs in
  another process, so this process's CPU time is the client side only).

Overhead = extra CPU per call in this process (the fleet's work), as µs and as a share of the
bare call's wall time; wall-time differences are reported too (noisy over HTTP).

Run alone: ``python benchmarks/bench_direct.py --url http://127.0.0.1:PORT [--quick]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from typing import Any

import anyio

from _common import compare_calls, emit, log, mock_sdk_client, sdk_client
from _fake_client import REQUEST, FakeClient
from llmfleet import RoutingPolicy, open_fleet
from llmfleet.providers.anthropic import AnthropicProvider

BACKENDS = ("asyncio", "trio")
#: A budget the policy sends direct (<= sync_max_latency_ms).
TIGHT_MS = 1_000


async def measure(kind: str, url: str, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    client: Any
    if kind == "fake":
        client = FakeClient()
        fleet_client: Any = AnthropicProvider(client)  # type: ignore[arg-type]
    else:
        client = mock_sdk_client() if kind == "sdk" else sdk_client(url)
        fleet_client = client
    async with open_fleet(fleet_client, policy=RoutingPolicy()) as fleet:
        create = client.messages.create

        async def bare() -> Any:
            return await create(**REQUEST)

        async def submit() -> Any:
            return await fleet.submit(latency_budget_ms=TIGHT_MS, **REQUEST)

        async def submit_sync() -> Any:
            return await fleet.submit_sync(**REQUEST)

        result = await compare_calls(
            {"bare": bare, "submit": submit, "submit_sync": submit_sync},
            calls=calls,
            rounds=rounds,
            paired=kind != "fake",
        )
    if kind != "fake":
        await client.close()
    return result


def profile_submit_sync(calls: int) -> list[dict[str, Any]]:
    """cProfile ``submit_sync`` over the fake client on asyncio; top functions by own time."""
    profiler = cProfile.Profile()

    async def run() -> None:
        async with open_fleet(AnthropicProvider(FakeClient()), policy=RoutingPolicy()) as fleet:  # type: ignore[arg-type]
            profiler.enable()
            for _ in range(calls):
                await fleet.submit_sync(**REQUEST)
            profiler.disable()

    anyio.run(run, backend="asyncio")
    return top_functions(profiler)


def top_functions(profiler: cProfile.Profile, limit: int = 15) -> list[dict[str, Any]]:
    stats: Any = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _) in stats.stats.items():
        short = file.split("/site-packages/")[-1].split("/src/")[-1].split("/lib/python3.11/")[-1]
        rows.append(
            {
                "function": f"{short}:{line}({func})",
                "calls": ncalls,
                "tottime_pct": 100 * tottime / total,
                "cumtime_pct": 100 * cumtime / total,
            }
        )
    rows.sort(key=lambda r: -r["tottime_pct"])
    return rows[:limit]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    plan = {
        # kind: (calls per round, rounds)
        "fake": (5_000 if args.quick else 20_000, 5 if args.quick else 9),
        "sdk": (200 if args.quick else 1_000, 5 if args.quick else 11),
        "http": (100 if args.quick else 300, 5 if args.quick else 11),
    }
    out: dict[str, Any] = {"plan": plan, "tight_budget_ms": TIGHT_MS}
    for backend in BACKENDS:
        out[backend] = {}
        for kind, (calls, rounds) in plan.items():
            log(f"direct: {backend} {kind}")

            async def run(kind: str = kind, calls: int = calls, rounds: int = rounds) -> Any:
                return await measure(kind, args.url, calls, rounds)

            out[backend][kind] = anyio.run(run, backend=backend)
    log("direct: profile")
    out["profile"] = {
        "case": "asyncio submit_sync, fake client",
        "top": profile_submit_sync(20_000),
    }
    emit(out)


if __name__ == "__main__":
    main()
