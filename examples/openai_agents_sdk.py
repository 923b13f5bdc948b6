"""OpenAI Agents SDK runs, unchanged, pooled into one batch of Responses calls.

``pip install openai-agents``; runs against the local emulator:
``python examples/openai_agents_sdk.py``.
"""

import anyio
from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from openai import AsyncOpenAI

from llmfleet import RoutingPolicy, open_fleet
from llmfleet.emulator import EmulatorConfig, run_emulator

set_tracing_disabled(True)  # no trace export from this offline example


async def main():
    async with run_emulator(EmulatorConfig(turnaround_s=0.5)) as emu:
        async with AsyncOpenAI(api_key="test", base_url=emu.url + "/v1") as sdk:
            policy = RoutingPolicy(poll_interval_ms=100, batch_min_size=20)
            async with open_fleet(sdk, policy=policy) as fleet:
                # Every call of this client may wait ten minutes.
                client = fleet.client(latency_budget_ms=600_000)
                agent = Agent(
                    name="triage",
                    instructions="Answer in one line.",
                    model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client),
                )
                outputs = {}

                async def triage(n):
                    result = await Runner.run(agent, f"Triage ticket {n}")
                    outputs[n] = result.final_output

                async with anyio.create_task_group() as tg:
                    for n in range(20):
                        tg.start_soon(triage, n)
            print(outputs[0])
            print(fleet.stats)


anyio.run(main)  # the Agents SDK runs on asyncio
