"""The current llmfleet over the fake client: one place that builds fleets for the benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmfleet import RoutingPolicy, open_fleet
from llmfleet.providers.anthropic import AnthropicProvider

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from _fake_client import FakeClient
    from llmfleet import FleetDispatcher

__all__ = ["LOOSE_MS", "TIGHT_MS", "fleet_over", "policy"]

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
