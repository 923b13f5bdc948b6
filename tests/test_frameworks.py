"""Real agent frameworks from the package index, driven unchanged by a fleet client
(docs/design.md §12): each takes an SDK client, and its calls are pooled into the fleet's
batches. Real SDKs over loopback HTTP to the emulator, real clocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from llmfleet import latency_budget, open_fleet
from llmfleet.emulator import EmulatorConfig, run_emulator

from e2e import policy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from llmfleet import FleetDispatcher
    from llmfleet.emulator import Emulator

pytestmark = [pytest.mark.timeout(60)]

MODEL = "gpt-4o-mini"
N = 50


@pytest.fixture
def anyio_backend() -> str:
    # Both frameworks run on asyncio only (they call asyncio.create_task); the fleet client
    # itself is tested on both backends in tests/test_fleet_client.py.
    return "asyncio"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emulator:
        yield emulator


async def pooled(
    emu: Emulator,
    make_agent: Callable[[Any], Callable[[str], Awaitable[str]]],
    *,
    openai: bool = True,
) -> tuple[dict[int, str], FleetDispatcher[Any]]:
    """Run :data:`N` concurrent framework calls under one loose budget; their outputs."""
    out: dict[int, str] = {}
    sdk: AsyncOpenAI | AsyncAnthropic = (
        AsyncOpenAI(api_key="sk-test", base_url=emu.url + "/v1")
        if openai
        else AsyncAnthropic(api_key="sk-test", base_url=emu.url)
    )
    async with (
        sdk as client,
        open_fleet(
            client, policy=policy(batch_min_size=N, batch_max_size=N, batch_window_ms=10_000)
        ) as fleet,
    ):
        run = make_agent(fleet.client())

        async def one(i: int) -> None:
            out[i] = await run(f"question {i}")

        with latency_budget(60_000):
            async with anyio.create_task_group() as tg:
                for i in range(N):
                    tg.start_soon(one, i)
    return out, fleet


def check_pooled(
    emu: Emulator, out: dict[int, str], fleet: FleetDispatcher[Any], counter: str
) -> None:
    # The emulator answers with the last user text: each caller got its own answer.
    assert out == {i: f"question {i}" for i in range(N)}
    creates = "openai_batch_create" if counter.startswith("openai") else "batch_create"
    assert emu.counts[creates] == 1
    assert emu.counts[counter] == 0
    assert fleet.stats.batched_calls == N
    assert dict(fleet.stats.flushes)["size"] == 1


async def test_pydantic_ai_agents_are_pooled_into_one_batch(emu: Emulator) -> None:
    """pydantic-ai's ``Agent`` over ``OpenAIChatModel(provider=OpenAIProvider(openai_client=
    fleet.client()))``: 50 concurrent ``agent.run()`` calls, one batch of chat completions."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    def make(client: AsyncOpenAI) -> Callable[[str], Awaitable[str]]:
        agent = Agent(OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client)))

        async def run(prompt: str) -> str:
            result = await agent.run(prompt)
            return result.output

        return run

    out, fleet = await pooled(emu, make)
    check_pooled(emu, out, fleet, "openai_chat")


async def test_openai_agents_sdk_runs_are_pooled_into_one_batch(emu: Emulator) -> None:
    """The OpenAI Agents SDK's ``Runner.run`` over ``OpenAIResponsesModel(openai_client=
    fleet.client())``: 50 concurrent runs, one batch of responses."""
    from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # tracing would export to the network

    def make(client: AsyncOpenAI) -> Callable[[str], Awaitable[str]]:
        agent = Agent(
            name="assistant",
            instructions="Answer briefly.",
            model=OpenAIResponsesModel(model=MODEL, openai_client=client),
        )

        async def run(prompt: str) -> str:
            result = await Runner.run(agent, prompt)
            return str(result.final_output)

        return run

    out, fleet = await pooled(emu, make)
    check_pooled(emu, out, fleet, "openai_responses")


async def test_pydantic_ai_over_anthropic_is_pooled_into_one_batch(emu: Emulator) -> None:
    """pydantic-ai's ``AnthropicModel(provider=AnthropicProvider(anthropic_client=
    fleet.client()))``: 50 concurrent runs, one message batch."""
    from pydantic_ai import Agent
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    def make(client: AsyncAnthropic) -> Callable[[str], Awaitable[str]]:
        model = AnthropicModel(
            "claude-haiku-4-5", provider=AnthropicProvider(anthropic_client=client)
        )
        agent = Agent(model)

        async def run(prompt: str) -> str:
            result = await agent.run(prompt)
            return result.output

        return run

    out, fleet = await pooled(emu, make, openai=False)
    check_pooled(emu, out, fleet, "messages")
