"""The emulator's batch-endpoint rate limit and per-minute counts (docs/design.md §5.4), HTTP."""

from __future__ import annotations

import anthropic
import pytest

from llmfleet.emulator import EmulatorConfig, run_emulator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks: the SDK talks HTTP to a real server.
    return str(request.param)


REQUEST = {
    "custom_id": "a",
    "params": {
        "model": "claude-haiku-4-5",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    },
}


async def test_batch_endpoints_answer_429_beyond_the_limit_and_count_per_minute() -> None:
    async with run_emulator(EmulatorConfig(batch_rpm=3, turnaround_s=None)) as emu:
        async with anthropic.AsyncAnthropic(
            api_key="sk-test", base_url=emu.url, max_retries=0
        ) as client:
            batch = await client.messages.batches.create(requests=[REQUEST])  # type: ignore[list-item]
            await client.messages.batches.retrieve(batch.id)
            await client.messages.batches.retrieve(batch.id)
            with pytest.raises(anthropic.RateLimitError) as info:
                await client.messages.batches.retrieve(batch.id)
            # The direct route is not a batch endpoint: never limited.
            for _ in range(4):
                await client.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=8,
                    messages=[{"role": "user", "content": "hi"}],
                )
    retry_after = float(info.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert emu.rate_limited == 1
    assert emu.per_minute[("batch_create", 0)] == 1
    assert emu.per_minute[("batch_retrieve", 0)] == 3
    assert emu.per_minute[("messages", 0)] == 4


async def test_no_limit_by_default() -> None:
    async with run_emulator(EmulatorConfig(turnaround_s=None)) as emu:
        async with anthropic.AsyncAnthropic(
            api_key="sk-test", base_url=emu.url, max_retries=0
        ) as client:
            batch = await client.messages.batches.create(requests=[REQUEST])  # type: ignore[list-item]
            for _ in range(60):
                await client.messages.batches.retrieve(batch.id)
    assert emu.rate_limited == 0


def test_batch_rpm_is_checked() -> None:
    with pytest.raises(ValueError, match="batch_rpm"):
        EmulatorConfig(batch_rpm=0)
