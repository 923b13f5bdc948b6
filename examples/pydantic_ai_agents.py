"""pydantic-ai agents, unchanged, pooled into one batch through a fleet client.

``pip install 'pydantic-ai-slim[anthropic]'``; runs against the local emulator:
``python examples/pydantic_ai_agents.py``.
"""

import anyio
from anthropic import AsyncAnthropic
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.providers.anthropic import AnthropicProvider

from llmfleet import RoutingPolicy, latency_budget, open_fleet
from llmfleet.emulator import EmulatorConfig, run_emulator


async def main():
    async with run_emulator(EmulatorConfig(turnaround_s=0.5)) as emu:
        async with AsyncAnthropic(api_key="test", base_url=emu.url) as sdk:
            policy = RoutingPolicy(poll_interval_ms=100, batch_min_size=20)
            async with open_fleet(sdk, policy=policy) as fleet:
                provider = AnthropicProvider(anthropic_client=fleet.client())
                agent = Agent(AnthropicModel("claude-haiku-4-5", provider=provider))
                answers = {}

                async def grade(n):
                    result = await agent.run(f"Grade essay {n}")
                    answers[n] = result.output

                with latency_budget(600_000):  # graders can wait: pooled
                    async with anyio.create_task_group() as tg:
                        for n in range(20):
                            tg.start_soon(grade, n)
            print(answers[0])
            print(fleet.stats)


anyio.run(main)  # pydantic-ai runs on asyncio
