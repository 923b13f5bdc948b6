"""The emulator's knobs for the journal's crash tests: a create whose batch exists before its
answer (``accept_then_slow``), and results that drip (``results_line_delay_s``)."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import pytest

from llmfleet.emulator import EmulatorConfig, Fault, run_emulator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks: the SDK talks to a real server (see tests/conftest.py).
    return str(request.param)


def requests(n: int) -> list[Any]:
    return [
        {
            "custom_id": f"c{i}",
            "params": {
                "model": "claude-haiku-4-5",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"t{i}"}],
            },
        }
        for i in range(n)
    ]


async def test_accept_then_slow_makes_the_batch_before_answering() -> None:
    config = EmulatorConfig(turnaround_s=None)
    config.faults = [Fault("batch_create", "accept_then_slow", delay_s=5)]
    async with run_emulator(config) as emu:
        client = anthropic.AsyncAnthropic(api_key="k", base_url=emu.url, max_retries=0)
        async with client:
            started = time.monotonic()
            with pytest.raises(anthropic.APITimeoutError):
                await client.with_options(timeout=0.5).messages.batches.create(requests=requests(2))
            assert time.monotonic() - started < 4
            (batch,) = emu.batches.values()  # made although its answer never came
            assert batch.custom_ids == ("c0", "c1")


async def test_results_drip_a_line_at_a_time() -> None:
    config = EmulatorConfig(turnaround_s=None, results_line_delay_s=0.2)
    async with run_emulator(config) as emu:
        async with anthropic.AsyncAnthropic(api_key="k", base_url=emu.url) as client:
            batch = await client.messages.batches.create(requests=requests(3))
            emu.end_batch(batch.id)
            started = time.monotonic()
            stream = await client.messages.batches.results(batch.id)
            arrivals = [(line.custom_id, time.monotonic() - started) async for line in stream]
    assert sorted(cid for cid, _ in arrivals) == ["c0", "c1", "c2"]
    # 0.2 s before each line: the stream takes 0.6 s, and the first line is in the
    # caller's hands well before the last (the SDK hands a line over once the next begins).
    assert arrivals[-1][1] >= 0.55, arrivals
    assert arrivals[-1][1] - arrivals[0][1] >= 0.15, arrivals


def test_line_delay_is_checked() -> None:
    with pytest.raises(ValueError, match="results_line_delay_s"):
        EmulatorConfig(results_line_delay_s=-1)
    with pytest.raises(ValueError, match="does not apply"):
        Fault("batch_retrieve", "accept_then_slow")
