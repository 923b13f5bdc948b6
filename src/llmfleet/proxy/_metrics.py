"""The proxy's ``/metrics``, in Prometheus text format (docs/design.md §13)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.responses import Response

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from .._stats import FleetStats

__all__ = ["Metrics"]


class _FleetCollector:
    """Reads the fleet's live stats at each scrape."""

    def __init__(self) -> None:
        self.stats: FleetStats | None = None

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        if stats is None:
            return
        gauges = {
            "llmfleet_queue_depth": ("Calls waiting in the fleet's queue.", stats.queued),
            "llmfleet_batches_in_flight": (
                "Batches created and not yet resolved.",
                stats.in_flight_batches,
            ),
            "llmfleet_batches_submitted": (
                "Batches the provider accepted.",
                stats.batches_submitted,
            ),
            "llmfleet_cost_usd": (
                "What the fleet's calls cost, at the price paid (USD).",
                float(sum((c.paid for c in stats.cost.values()), start=0)),
            ),
            "llmfleet_saving_usd": (
                "List price minus the price paid, over the fleet's calls (USD).",
                float(stats.saving),
            ),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """The proxy's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._calls = Counter(
            "llmfleet_proxy_calls",
            "Requests the proxy answered, per route and outcome.",
            ["route", "outcome"],
            registry=self.registry,
        )
        self._wait = Histogram(
            "llmfleet_proxy_wait_seconds",
            "How long a fleet call took, from the request to its answer.",
            ["route"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400),
            registry=self.registry,
        )
        self._fleet = _FleetCollector()
        self.registry.register(self._fleet)

    def call(self, route: str, outcome: str, waited_s: float | None = None) -> None:
        """Count one answered request (and its wait, for a fleet call)."""
        self._calls.labels(route, outcome).inc()
        if waited_s is not None:
            self._wait.labels(route).observe(waited_s)

    def render(self, stats: FleetStats) -> Response:
        """The ``/metrics`` response."""
        self._fleet.stats = stats
        return Response(
            generate_latest(self.registry), media_type="text/plain; version=0.0.4; charset=utf-8"
        )
