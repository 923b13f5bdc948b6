"""What type checkers see (docs/design.md §1): a fleet's calls are typed as the SDK's own result
for the client it was opened over, on every route and both fleet forms.

Each ``assert_type`` is checked by mypy (``nox -s typecheck`` runs over tests/): a wrong
type fails it. The same code runs here against the emulator (the Bedrock stand-in, a
real Redis for the broker), so the static types are checked against what really comes back.
Real clocks, as in the other end-to-end modules.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from typing_extensions import assert_type

from llmfleet import FleetDispatcher, RoutingPolicy, open_fleet
from llmfleet.broker import BrokeredFleet
from llmfleet.emulator import BedrockConfig, EmulatorConfig, run_emulator

import bedrock_env
from broker_support import redis_server
from e2e import KEY, params, text_of
from fakes import FakeMessage, FakeProvider, request

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from broker_support import RedisServer

pytestmark = [pytest.mark.timeout(60)]

#: Every call goes by the route it is sent on at once: batches of one, fast polls.
POLICY = RoutingPolicy(
    sync_max_latency_ms=1_000,
    batch_window_ms=50,
    batch_min_size=1,
    batch_max_size=10,
    poll_interval_ms=20,
    poll_max_interval_ms=100,
    batch_api_rpm=None,
)
LONG = 60_000  # a budget for the batch route


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks: the emulator and Redis answer over real sockets.
    return str(request.param)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


async def test_anthropic_calls_are_typed_message() -> None:
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        async with open_fleet(client, policy=POLICY) as fleet:
            assert_type(fleet, FleetDispatcher[Message])
            direct = await fleet.submit(**params("direct"))
            assert_type(direct, Message)
            batched = await fleet.submit(latency_budget_ms=LONG, **params("batched"))
            assert_type(batched, Message)
            forced_direct = await fleet.submit_sync(**params("sync"))
            assert_type(forced_direct, Message)
            forced_batch = await fleet.submit_batch(**params("batch"))
            assert_type(forced_batch, Message)
        # Typed and real: the SDK's own Message on both routes.
        assert [text_of(m) for m in (direct, batched, forced_direct, forced_batch)] == [
            "direct",
            "batched",
            "sync",
            "batch",
        ]
        assert fleet.stats.batched_calls == 2
        async with FleetDispatcher(client, policy=POLICY) as by_class:
            assert_type(by_class, FleetDispatcher[Message])
            assert text_of(assert_type(await by_class.submit_sync(**params("c")), Message)) == "c"


async def test_openai_calls_are_typed_chat_completion_or_response() -> None:
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncOpenAI(api_key=KEY, base_url=emu.url + "/v1") as client,
        open_fleet(client, policy=POLICY) as fleet,
    ):
        assert_type(fleet, FleetDispatcher[ChatCompletion | Response])
        chat = await fleet.submit_batch(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert_type(chat, ChatCompletion | Response)
        response = await fleet.submit_sync(model="gpt-4.1-mini", input="hi")
        assert_type(response, ChatCompletion | Response)
        # The union narrows by isinstance, as the endpoint (messages= or input=) decides.
        assert isinstance(chat, ChatCompletion)
        assert chat.choices[0].message.content
        assert isinstance(response, Response)
        assert response.output_text


async def test_bedrock_calls_are_typed_message() -> None:
    async with bedrock_env.stand_in(BedrockConfig(min_records=1)) as (emu, bucket):
        client = bedrock_env.bedrock_client(emu, bucket)
        async with open_fleet(client, policy=POLICY) as fleet:
            assert_type(fleet, FleetDispatcher[Message])
            batched = await fleet.submit_batch(**bedrock_env.params("batched"))
            assert_type(batched, Message)
            direct = await fleet.submit(**bedrock_env.params("direct"))
            assert_type(direct, Message)
    assert (text_of(batched), text_of(direct)) == ("batched", "direct")


async def test_a_custom_provider_gives_any() -> None:
    async with open_fleet(FakeProvider(turnaround=0.05), policy=POLICY) as fleet:
        assert_type(fleet, FleetDispatcher[Any])
        value = await fleet.submit_batch(**request("x"))
        assert_type(value, Any)
    assert isinstance(value, FakeMessage)


async def test_a_brokered_fleet_is_typed_like_the_dispatcher(redis: RedisServer) -> None:
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        opened = open_fleet(client, policy=POLICY, broker=redis.url)
        assert_type(opened, AbstractAsyncContextManager[BrokeredFleet[Message]])
        async with opened as fleet:
            assert_type(fleet, BrokeredFleet[Message])
            batched = await fleet.submit(latency_budget_ms=LONG, **params("batched"))
            assert_type(batched, Message)
            forced_batch = await fleet.submit_batch(**params("batch"))
            assert_type(forced_batch, Message)
            direct = await fleet.submit_sync(**params("direct"))
            assert_type(direct, Message)
    assert [text_of(m) for m in (batched, forced_batch, direct)] == ["batched", "batch", "direct"]
