"""The current llmfleet over the fake client: one place that builds fleets for the benchmarks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from _common import Stopwatch
from llmfleet import RoutingPolicy, open_fleet
from llmfleet.providers.anthropic import AnthropicProvider

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
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
