"""Existing call sites, unchanged: ``client.messages.create(...)`` through a fleet.

``fleet.client()`` is a real ``AsyncAnthropic``; a call's budget comes from a header, from
``with latency_budget(ms):`` (which reaches tasks started inside), or from the client's
default. Runs against the local emulator: ``python examples/fleet_client.py``.
"""

import anyio
from anthropic import AsyncAnthropic

from llmfleet import RoutingPolicy, latency_budget, open_fleet
from llmfleet.emulator import EmulatorConfig, run_emulator

MODEL = "claude-haiku-4-5"


async def summarise(client, n):
    # An agent's own code: it knows nothing of the fleet.
    message = await client.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": f"Summarise {n}"}]
    )
    return message.content[0].text


async def main():
    async with run_emulator(EmulatorConfig(turnaround_s=0.5)) as emu:
        async with AsyncAnthropic(api_key="test", base_url=emu.url) as sdk:
            policy = RoutingPolicy(poll_interval_ms=100)
            async with open_fleet(sdk, policy=policy) as fleet:
                client = fleet.client()  # no default budget: direct unless told otherwise
                print("direct:", await summarise(client, "now"))
                # A per-request budget, in the SDK's own extra_headers.
                hurried = await client.messages.create(
                    model=MODEL,
                    max_tokens=100,
                    messages=[{"role": "user", "content": "A person is waiting"}],
                    extra_headers={"llmfleet-latency-budget-ms": "2000"},
                )
                print("header:", hurried.content[0].text)
                # Everything started inside this block can wait ten minutes: one batch.
                with latency_budget(600_000):
                    async with anyio.create_task_group() as tg:
                        for n in range(30):
                            tg.start_soon(summarise, client, n)
            print(fleet.stats)


anyio.run(main)
