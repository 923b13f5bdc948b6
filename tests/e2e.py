"""Helpers shared by the end-to-end modules: the real SDK over HTTP to the emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from anthropic.types import Message

from llmfleet import RoutingPolicy

if TYPE_CHECKING:
    from collections.abc import Callable

KEY = "sk-test-SECRET-123"
MODEL = "claude-haiku-4-5"
#: Marks a caller that left (its cancel scope fired) instead of getting an outcome.
CANCELLED = "cancelled"

Outcomes = dict[str, object]


def policy(**overrides: Any) -> RoutingPolicy:
    """Fast polls, a short window, no request budget; batches of at most 10, flushed at 10."""
    fields: dict[str, Any] = {
        "sync_max_latency_ms": 1_000,
        "batch_window_ms": 50,
        "batch_min_size": 10,
        "batch_max_size": 10,
        "poll_interval_ms": 20,
        "poll_max_interval_ms": 100,
        "batch_api_rpm": None,
    } | overrides
    return RoutingPolicy(**fields)


def params(text: str, *, max_tokens: int = 64) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    }


def text_of(message: object) -> str:
    assert type(message) is Message, message
    block = message.content[0]
    assert block.type == "text"
    return block.text


async def until(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    """Wait (real time, at most ``limit_s``) until ``predicate()`` holds."""
    with anyio.fail_after(limit_s):
        # Polling: the state watched is the emulator's, on another thread (no Event to wait on).
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)
