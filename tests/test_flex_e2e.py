"""The flex route end to end (docs/design.md §2.3, §B): the real ``openai`` SDK over loopback
HTTP to the emulator, whose flex tier has its own latency, unavailability and ledger route;
and an Anthropic fleet, which has no flex tier. Real clocks (see tests/test_openai.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from llmfleet import Route, RoutingPolicy, open_fleet
from llmfleet.emulator import EmulatorConfig, run_emulator
from llmfleet.pricing import Cost
from llmfleet.providers.openai import DEFAULT_FLEX_MODELS, OpenAIProvider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmfleet.emulator import Emulator

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-SECRET-openai-123"
FLEX_MODEL = "o4-mini"  # offers flex, and has a list price (the cost figures are checked)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def policy(**overrides: Any) -> RoutingPolicy:
    values: dict[str, Any] = {
        "sync_max_latency_ms": 1_000,
        "flex_max_latency_ms": 600_000,
        "batch_window_ms": 50,
        "batch_min_size": 1,
        "poll_interval_ms": 20,
        "poll_max_interval_ms": 100,
        "batch_api_rpm": None,
        "escalation_margin_ms": 300,
    }
    return RoutingPolicy(**(values | overrides))


def chat(text: str, model: str = FLEX_MODEL) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as c:
        yield c


def sent(emu: Emulator, endpoint: str) -> list[dict[str, Any]]:
    return [r.body for r in emu.requests if r.endpoint == endpoint]


def test_the_adapter_knows_which_models_offer_flex() -> None:
    provider = OpenAIProvider(AsyncOpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1"))
    assert provider.flex_models == DEFAULT_FLEX_MODELS
    assert provider.supports_flex(chat("x", "o3"))
    assert provider.supports_flex(chat("x", "o4-mini-2025-04-16"))  # a dated snapshot
    assert not provider.supports_flex(chat("x", "gpt-4o-mini"))
    assert not provider.supports_flex(chat("x", "o3-pro"))
    assert not provider.supports_flex({**chat("x"), "service_tier": "default"})
    custom = OpenAIProvider(
        AsyncOpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1"), flex_models={"gpt-4o-mini"}
    )
    assert custom.supports_flex(chat("x", "gpt-4o-mini"))
    assert not custom.supports_flex(chat("x", "o3"))
    with pytest.raises(TypeError):
        OpenAIProvider(custom._client, flex_models="o3")  # type: ignore[arg-type]


async def test_flex_calls_go_out_as_flex_and_cost_the_batch_price(
    emu: Emulator, client: AsyncOpenAI
) -> None:
    async with open_fleet(client, policy=policy()) as fleet:
        completion = await fleet.submit(latency_budget_ms=60_000, **chat("flex me"))
        response = await fleet.submit(
            latency_budget_ms=60_000, model=FLEX_MODEL, input="flex me too"
        )
        batched = await fleet.submit(latency_budget_ms=60_000, **chat("no flex", "gpt-4o-mini"))
    assert type(completion) is ChatCompletion
    assert completion.choices[0].message.content == "flex me"
    assert completion.service_tier == "flex"
    assert type(response) is Response
    assert response.output_text == "flex me too"
    assert response.service_tier == "flex"
    assert type(batched) is ChatCompletion
    # On the wire: service_tier=flex on the synchronous endpoints, no batch for them.
    assert [b["service_tier"] for b in sent(emu, "openai_chat")] == ["flex"]
    assert [b["service_tier"] for b in sent(emu, "openai_responses")] == ["flex"]
    assert len(emu.openai.batches) == 1  # the gpt-4o-mini call only
    stats, ledger = fleet.stats, emu.ledger
    assert stats.flex_calls == 2
    assert len(ledger.select(route="flex")) == 2
    assert stats.tokens[Route.FLEX] == ledger.usage(route="flex")
    assert stats.cost[Route.FLEX] == ledger.total(route="flex")
    flex = stats.cost[Route.FLEX]
    assert flex.paid == flex.list_price / 2 > 0
    assert stats.cost[Route.DIRECT] == Cost()


async def test_flex_unavailable_is_answered_by_the_standard_tier() -> None:
    config = EmulatorConfig(turnaround_s=0.05, flex_unavailable_ratio=1.0)
    async with (
        run_emulator(config) as emu,
        AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        completion = await fleet.submit(latency_budget_ms=60_000, **chat("busy"))
    assert type(completion) is ChatCompletion
    assert completion.choices[0].message.content == "busy"
    assert completion.service_tier == "default"
    # One flex attempt (the SDK did not retry the 429), then the standard tier.
    assert [b.get("service_tier") for b in sent(emu, "openai_chat")] == ["flex", None]
    stats, ledger = fleet.stats, emu.ledger
    assert stats.flex_fallbacks["unavailable"] == 1
    assert ledger.select(route="flex") == ()  # the refused flex call was not billed
    assert stats.cost[Route.DIRECT] == ledger.total(route="direct")
    assert stats.flex_fallback_cost == ledger.total(route="direct")
    assert stats.flex_fallback_cost.paid > 0


async def test_a_late_flex_call_is_answered_in_time_by_the_standard_tier() -> None:
    config = EmulatorConfig(turnaround_s=0.05, flex_latency_s=2.0)
    async with (
        run_emulator(config) as emu,
        AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as client,
    ):
        async with open_fleet(client, policy=policy()) as fleet:
            completion = await fleet.submit(latency_budget_ms=1_500, **chat("slow"))
        # Past the time the flex answer would have come (cut off at 1.2 s, due at 2 s).
        await anyio.sleep(1.5)
    assert type(completion) is ChatCompletion
    assert completion.service_tier == "default"
    stats = fleet.stats
    assert stats.flex_fallbacks["deadline"] == 1
    assert stats.deadline_hits[Route.DIRECT] == 1
    assert [b.get("service_tier") for b in sent(emu, "openai_chat")] == ["flex", None]
    # The flex call the fleet cut off was never answered, so never billed.
    assert emu.ledger.select(route="flex") == ()
    assert len(emu.ledger.select(route="direct")) == 1


async def test_an_anthropic_fleet_with_a_flex_band_budget_batches() -> None:
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        anthropic.AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        message = await fleet.submit(
            latency_budget_ms=60_000,
            model="claude-haiku-4-5",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert message.content[0].type == "text"
    assert fleet.stats.flex_calls == 0
    assert fleet.stats.batched_calls == 1
    assert emu.counts.get("messages", 0) == 0


def test_emulator_command_line_sets_the_flex_knobs() -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "llmfleet.emulator", "--port", "0", "--flex-unavailable", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        with openai.OpenAI(api_key=KEY, base_url=url + "/v1", max_retries=0) as client:
            standard = client.chat.completions.create(**chat("standard"))
            assert standard.service_tier == "default"
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(**chat("flex"), service_tier="flex")
        assert refused.value.code == "resource_unavailable"
        provider = OpenAIProvider(AsyncOpenAI(api_key=KEY, base_url=url + "/v1"))
        assert provider.flex_unavailable(refused.value)
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_a_flex_refusal_is_told_apart_from_a_rate_limit() -> None:
    provider = OpenAIProvider(AsyncOpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1"))
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")

    def status(code: int, body: object) -> openai.APIStatusError:
        response = httpx2.Response(code, request=request)
        return openai.APIStatusError("x", response=response, body=body)

    unavailable = {"type": "rate_limit_error", "code": "resource_unavailable", "message": "m"}
    worded = {"type": "x", "code": None, "message": "Resource Unavailable, try later"}
    limited = {"type": "requests", "code": "rate_limit_exceeded", "message": "Rate limit reached"}
    assert provider.flex_unavailable(status(429, unavailable))
    assert provider.flex_unavailable(status(429, {"error": unavailable}))
    assert provider.flex_unavailable(status(429, worded))
    assert not provider.flex_unavailable(status(429, limited))
    assert not provider.flex_unavailable(status(400, unavailable))
    assert not provider.flex_unavailable(ValueError("resource unavailable"))


async def test_a_fleet_over_an_adapter_with_its_own_flex_models(
    emu: Emulator, client: AsyncOpenAI
) -> None:
    provider = OpenAIProvider(client, flex_models={"gpt-4o-mini"})
    async with open_fleet(provider, policy=policy()) as fleet:
        completion = await fleet.submit(latency_budget_ms=60_000, **chat("mine", "gpt-4o-mini"))
        batched = await fleet.submit(latency_budget_ms=60_000, **chat("not listed", "o3"))
    assert completion.service_tier == "flex"
    assert batched.service_tier == "default"
    assert fleet.stats.flex_calls == 1
    assert fleet.stats.batched_calls == 1
