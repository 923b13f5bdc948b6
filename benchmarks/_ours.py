"""The current llmfleet over the fake client: one place that builds fleets for the benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from _common import Stopwatch
from _sdk_hand import on_asyncio, spawn_callers
from llmfleet import RoutingPolicy, open_fleet
from llmfleet.providers.anthropic import AnthropicProvider

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from _fake_client import FakeClient
    from llmfleet import FleetDispatcher

__all__ = [
    "LOOSE_MS",
    "TIGHT_MS",
    "fleet_over",
    "on_asyncio",
    "policy",
    "spawn_baseline",
    "spawn_callers",
]

#: A budget the default policy sends direct (<= sync_max_latency_ms).
TIGHT_MS = 1_000
#: A budget the default policy sends to the batch route.
LOOSE_MS = 3_600_000


def policy(**fields: Any) -> RoutingPolicy:
    """A policy for in-process runs: no request budget on the batch endpoints (the fake is
    not rate-limited; the default of 50 a minute would time the limiter, not the fleet)."""
    fields.setdefault("batch_api_rpm", None)
    return RoutingPolicy(**fields)


def fleet_over(
    fake: FakeClient, routing: RoutingPolicy
) -> AbstractAsyncContextManager[FleetDispatcher]:
    """``open_fleet`` over the fake client, through llmfleet's real Anthropic adapter."""
    return open_fleet(AnthropicProvider(fake), policy=routing)  # type: ignore[arg-type]


async def spawn_baseline(n: int) -> tuple[float, float]:
    """(wall, cpu) of :func:`spawn_callers` running N trivial callers that wait on one Event:
    the callers' own cost, subtracted from a burst's."""
    go = anyio.Event()
    started = 0

    async def trivial() -> None:
        nonlocal started
        started += 1
        if started == n:
            go.set()
        else:
            await go.wait()

    watch = Stopwatch()
    await spawn_callers(n, trivial)
    return watch.read()
