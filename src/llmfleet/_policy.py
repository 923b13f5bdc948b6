"""How calls are routed and batched: :class:`RoutingPolicy`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, Literal, final

from .errors import PolicyError

__all__ = ["MAX_BATCH_REQUESTS", "RoutingPolicy"]

#: The most requests any provider accepts in one batch (Anthropic: 100,000).
MAX_BATCH_REQUESTS: Final = 100_000


@final
@dataclass(frozen=True, kw_only=True, slots=True)
class RoutingPolicy:
    """Where each call goes and when queued calls are flushed (docs/design.md §3).

    Frozen and validated at construction: a bad field raises :class:`~llmfleet.PolicyError`
    naming the field and the reason.

    :param sync_max_latency_ms: a ``submit`` whose budget is at most this goes direct.
    :param batch_window_ms: no call waits in the queue longer than this (0 flushes at once).
    :param batch_min_size: a queue this long is flushed at once.
    :param batch_max_size: the most calls in one batch (an adapter may cap it lower).
    :param poll_interval_ms: first poll of a new batch after this; then ×1.5 per poll …
    :param poll_max_interval_ms: … up to this, or up to a tenth of the youngest in-flight
        batch's age once that is longer: a batch that runs for hours is polled a number of
        times that grows with the log of its turnaround, and its end is seen at most ~10 %
        of its turnaround late.
    :param max_queued: queued calls beyond which ``submit`` waits for room (backpressure).
    :param batch_api_rpm: most requests a minute to the provider's batch endpoints (create,
        status, results, cancel), shared by the whole fleet; ``None`` for no limit. The
        direct route is not counted.
    :param deadline_action: what a batched call's budget promises (docs/design.md §8):
        ``"escalate"`` (default) sends a call still unresolved near its deadline down the
        direct route; ``"fail"`` raises :class:`~llmfleet.DeadlineExceededError` at the
        deadline; ``"wait"`` only routes by the budget and then waits as long as it takes.
    :param expected_turnaround_ms: a batch's turnaround to assume before the fleet has seen
        one for a model (``None``: assume nothing; batch as usual and rely on escalation).
    :param escalation_margin_ms: how long before a deadline, beyond the direct route's p95
        latency, a call is escalated.
    :param flex_max_latency_ms: budgets above ``sync_max_latency_ms`` and up to this go by
        the provider's **flex tier** when it offers one for the model (OpenAI's
        ``service_tier="flex"``: the synchronous endpoint at batch prices, slower, sometimes
        unavailable), rather than into a batch (docs/design.md §2). Default 15 minutes (the
        timeout OpenAI suggests for flex calls); ``None`` never uses flex. Providers without
        a flex tier (Anthropic, Bedrock) never route there.
    """

    sync_max_latency_ms: int = 5_000
    batch_window_ms: int = 30_000
    batch_min_size: int = 10
    batch_max_size: int = 100
    poll_interval_ms: int = 1_000
    poll_max_interval_ms: int = 60_000
    max_queued: int = 100_000
    batch_api_rpm: int | None = 50
    deadline_action: Literal["escalate", "wait", "fail"] = "escalate"
    expected_turnaround_ms: int | None = None
    escalation_margin_ms: int = 2_000
    flex_max_latency_ms: int | None = 900_000

    def __post_init__(self) -> None:
        if self.batch_api_rpm is not None and (
            isinstance(self.batch_api_rpm, bool)
            or not isinstance(self.batch_api_rpm, int)
            or self.batch_api_rpm < 1
        ):
            raise PolicyError(
                "batch_api_rpm",
                f"must be an int >= 1, or None for no limit, got {self.batch_api_rpm!r}",
            )
        if self.deadline_action not in ("escalate", "wait", "fail"):
            raise PolicyError(
                "deadline_action",
                f'must be "escalate", "wait" or "fail", got {self.deadline_action!r}',
            )
        if self.expected_turnaround_ms is not None and (
            isinstance(self.expected_turnaround_ms, bool)
            or not isinstance(self.expected_turnaround_ms, int)
            or self.expected_turnaround_ms < 0
        ):
            raise PolicyError(
                "expected_turnaround_ms",
                f"must be an int >= 0, or None, got {self.expected_turnaround_ms!r}",
            )
        if self.flex_max_latency_ms is not None and (
            isinstance(self.flex_max_latency_ms, bool)
            or not isinstance(self.flex_max_latency_ms, int)
            or self.flex_max_latency_ms < 0
        ):
            raise PolicyError(
                "flex_max_latency_ms",
                f"must be an int >= 0, or None to never use flex, got {self.flex_max_latency_ms!r}",
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in (
                "batch_api_rpm",
                "deadline_action",
                "expected_turnaround_ms",
                "flex_max_latency_ms",
            ):
                continue
            # bool is an int subclass; RoutingPolicy(batch_min_size=True) is a mistake.
            if isinstance(value, bool) or not isinstance(value, int):
                raise PolicyError(f.name, f"must be an int, got {value!r}")
            if value < 0:
                raise PolicyError(f.name, f"must be >= 0, got {value}")
        if self.batch_min_size < 1:
            raise PolicyError("batch_min_size", "must be >= 1 (a batch holds at least one call)")
        if self.batch_max_size > MAX_BATCH_REQUESTS:
            raise PolicyError(
                "batch_max_size",
                f"must be <= {MAX_BATCH_REQUESTS:,} (the most any provider accepts), "
                f"got {self.batch_max_size:,}",
            )
        if self.batch_min_size > self.batch_max_size:
            raise PolicyError(
                "batch_min_size",
                f"must be <= batch_max_size ({self.batch_max_size}), got {self.batch_min_size}; "
                "lower it or raise batch_max_size",
            )
        if self.poll_interval_ms < 1:
            raise PolicyError("poll_interval_ms", "must be >= 1 ms (0 would poll in a busy loop)")
        if self.poll_max_interval_ms < self.poll_interval_ms:
            raise PolicyError(
                "poll_max_interval_ms",
                f"must be >= poll_interval_ms ({self.poll_interval_ms}), "
                f"got {self.poll_max_interval_ms}",
            )
        if self.max_queued < 1:
            raise PolicyError("max_queued", "must be >= 1")
