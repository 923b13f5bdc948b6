"""``llmfleet proxy`` (docs/design.md §13): the real ``anthropic`` and ``openai`` SDKs, and raw
``httpx2``, over loopback HTTP to the proxy, in front of the emulator. The proxy serves from its
own thread and asyncio loop; the clients run on asyncio and trio (real clocks).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import anyio.abc
import httpx2
import openai
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from llmfleet._cli import main
from llmfleet._decode import BUDGET_HEADER
from llmfleet.emulator import Emulator, EmulatorConfig, run_emulator
from llmfleet.proxy import ProxyConfig, run_proxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

from e2e import KEY, MODEL, policy, until

pytestmark = [pytest.mark.timeout(30)]

TOKEN = "proxy-token-1"
OPENAI_MODEL = "gpt-4o-mini"
LONG = {BUDGET_HEADER: "60000"}
DIRECT = {BUDGET_HEADER: "none"}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(EmulatorConfig(turnaround_s=0.05)) as emulator:
        yield emulator


def config(emu: Emulator, provider: str, **overrides: Any) -> ProxyConfig:
    fields: dict[str, Any] = {
        "provider": provider,
        "api_key": KEY,
        "tokens": (TOKEN, "proxy-token-2"),
        "upstream": emu.url,
        "port": 0,
        "policy": policy(batch_min_size=4, batch_max_size=4, batch_window_ms=2_000),
    } | overrides
    return ProxyConfig(**fields)


def calls(emu: Emulator) -> int:
    return sum(emu.counts.values())


def anthropic_params(text: str) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": text}]}


# -- Anthropic ------------------------------------------------------------------------------------


async def test_anthropic_sdk_calls_are_pooled_into_one_batch(emu: Emulator) -> None:
    async with run_proxy(config(emu, "anthropic")) as proxy:
        client = AsyncAnthropic(api_key=TOKEN, base_url=proxy.url)
        results: dict[int, Message] = {}

        async def one(i: int) -> None:
            results[i] = await client.messages.create(
                **anthropic_params(f"hello {i}"), extra_headers=LONG
            )

        async with client, anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(one, i)
    assert emu.counts["batch_create"] == 1
    assert emu.counts["messages"] == 0
    for i, message in results.items():
        assert type(message) is Message
        block = message.content[0]
        assert block.type == "text"
        assert block.text == f"hello {i}"


async def test_default_budget_batches_a_call_without_the_header(emu: Emulator) -> None:
    cfg = config(emu, "anthropic", default_budget_ms=60_000, policy=policy(batch_min_size=1))
    async with run_proxy(cfg) as proxy, AsyncAnthropic(api_key=TOKEN, base_url=proxy.url) as c:
        message = await c.messages.create(**anthropic_params("plain"))
    assert message.content[0].type == "text"
    assert emu.counts["batch_create"] == 1
    assert emu.counts["messages"] == 0


async def test_no_budget_anywhere_is_the_direct_route(emu: Emulator) -> None:
    async with run_proxy(config(emu, "anthropic")) as proxy:
        async with AsyncAnthropic(api_key=TOKEN, base_url=proxy.url) as client:
            message = await client.messages.create(**anthropic_params("now"))
            raw = await client.messages.with_raw_response.create(
                **anthropic_params("again"), extra_headers=DIRECT
            )
    assert message.content[0].type == "text"
    assert raw.headers.get("request-id", "").startswith("req_")
    assert emu.counts["messages"] == 2
    assert emu.counts["batch_create"] == 0


async def test_anthropic_stream_of_a_batched_call_is_synthesised(emu: Emulator) -> None:
    cfg = config(emu, "anthropic", policy=policy(batch_min_size=1))
    async with run_proxy(cfg) as proxy, AsyncAnthropic(api_key=TOKEN, base_url=proxy.url) as c:
        async with c.messages.stream(**anthropic_params("streamed"), extra_headers=LONG) as s:
            text = await s.get_final_text()
    assert text == "streamed"
    assert emu.counts["batch_create"] == 1


async def test_everything_else_passes_through_unchanged(emu: Emulator) -> None:
    cfg = config(emu, "anthropic", policy=policy(batch_min_size=1))
    async with run_proxy(cfg) as proxy, AsyncAnthropic(api_key=TOKEN, base_url=proxy.url) as c:
        await c.messages.create(**anthropic_params("one"), extra_headers=LONG)
        page = await c.messages.batches.list()
        with pytest.raises(anthropic.NotFoundError) as info:
            await c.messages.batches.retrieve("msgbatch_nope")
    assert [b.id for b in page.data] == list(emu.batches)
    # The provider's own error, as it sent it.
    assert info.value.status_code == 404
    assert KEY not in info.value.response.text
    assert emu.counts["batch_list"] == 1


async def test_a_direct_stream_goes_to_the_provider_and_its_error_comes_back(
    emu: Emulator,
) -> None:
    # The emulator does not stream: its own 400 comes through the proxy as it sent it.
    async with run_proxy(config(emu, "anthropic")) as proxy:
        async with AsyncAnthropic(api_key=TOKEN, base_url=proxy.url) as client:
            with pytest.raises(anthropic.BadRequestError) as info:
                async with client.messages.stream(**anthropic_params("s")) as stream:
                    await stream.get_final_text()
    assert "does not stream" in str(info.value)
    assert emu.counts["messages"] == 1


async def test_a_batched_item_error_is_the_providers_error_class(emu: Emulator) -> None:
    cfg = config(emu, "anthropic", policy=policy(batch_min_size=1))
    async with run_proxy(cfg) as proxy, AsyncAnthropic(api_key=TOKEN, base_url=proxy.url) as c:
        with pytest.raises(anthropic.BadRequestError) as info:
            # max_tokens 0: the emulator errors the item inside the batch.
            await c.messages.create(
                model=MODEL,
                max_tokens=0,
                messages=[{"role": "user", "content": "x"}],
                extra_headers=LONG,
            )
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert info.value.response.headers["x-should-retry"] == "false"


# -- OpenAI ---------------------------------------------------------------------------------------


async def test_openai_chat_and_responses_through_one_fleet(emu: Emulator) -> None:
    async with run_proxy(config(emu, "openai")) as proxy:
        client = AsyncOpenAI(api_key=TOKEN, base_url=proxy.url + "/v1")
        out: dict[str, Any] = {}

        async def chat(i: int) -> None:
            out[f"chat{i}"] = await client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=[{"role": "user", "content": f"c{i}"}],
                extra_headers=LONG,
            )

        async def responses(i: int) -> None:
            out[f"resp{i}"] = await client.responses.create(
                model=OPENAI_MODEL, input=f"r{i}", extra_headers=LONG
            )

        async with client, anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(chat, i)
                tg.start_soon(responses, i)
        async with AsyncOpenAI(api_key=TOKEN, base_url=proxy.url + "/v1") as again:
            direct = await again.chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": "d"}]
            )
    for i in range(4):
        assert type(out[f"chat{i}"]) is ChatCompletion
        assert out[f"chat{i}"].choices[0].message.content == f"c{i}"
        assert type(out[f"resp{i}"]) is Response
        assert out[f"resp{i}"].output_text == f"r{i}"
    assert direct.choices[0].message.content == "d"
    # One batch per endpoint (OpenAI batches hold one endpoint each), one direct call.
    assert emu.counts["openai_batch_create"] == 2
    assert emu.counts["openai_chat"] == 1


# The openai SDK stops reading a chat stream at ``data: [DONE]`` without closing its async
# generators; trio's finalizer warns about each (as in tests/test_fleet_client.py).
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object :pytest.PytestUnraisableExceptionWarning"
)
async def test_openai_chat_stream_of_a_batched_call_is_synthesised(emu: Emulator) -> None:
    cfg = config(emu, "openai", policy=policy(batch_min_size=1))
    async with run_proxy(cfg) as proxy:
        async with AsyncOpenAI(api_key=TOKEN, base_url=proxy.url + "/v1") as client:
            stream = await client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=[{"role": "user", "content": "flow"}],
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=LONG,
            )
            async with stream:
                chunks = [chunk async for chunk in stream]
            async with client.responses.stream(
                model=OPENAI_MODEL, input="responses flow", extra_headers=LONG
            ) as responses:
                final = await responses.get_final_response()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "flow"
    assert chunks[-1].usage is not None
    assert final.output_text == "responses flow"
    assert emu.counts["openai_batch_create"] == 2
    assert emu.counts["openai_chat"] + emu.counts["openai_responses"] == 0


# -- security and malformed requests ----------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_a_bad_token_gets_the_providers_401_and_nothing_goes_upstream(
    emu: Emulator, provider: str
) -> None:
    async with run_proxy(config(emu, provider, default_budget_ms=60_000)) as proxy:
        if provider == "anthropic":
            async with AsyncAnthropic(api_key=KEY, base_url=proxy.url) as client:
                with pytest.raises(anthropic.AuthenticationError) as info:
                    await client.messages.create(**anthropic_params("x"))
                with pytest.raises(anthropic.AuthenticationError):
                    await client.messages.batches.list()
            body = info.value.body
            assert isinstance(body, dict)
            assert body["error"]["type"] == "authentication_error"
            assert info.value.request_id is not None
        else:
            async with AsyncOpenAI(api_key="wrong", base_url=proxy.url + "/v1") as oc:
                with pytest.raises(openai.AuthenticationError) as oinfo:
                    await oc.chat.completions.create(
                        model=OPENAI_MODEL, messages=[{"role": "user", "content": "x"}]
                    )
            assert oinfo.value.code == "invalid_api_key"
            assert oinfo.value.request_id is not None
        async with httpx2.AsyncClient() as http:
            bare = await http.post(proxy.url + "/v1/messages", content=b"{}")
    assert bare.status_code == 401
    assert KEY not in bare.text
    assert calls(emu) == 0


async def test_a_huge_body_gets_413_and_nothing_goes_upstream(emu: Emulator) -> None:
    async with run_proxy(config(emu, "anthropic", max_body_bytes=10_000)) as proxy:
        async with AsyncAnthropic(api_key=TOKEN, base_url=proxy.url, max_retries=0) as client:
            with pytest.raises(anthropic.APIStatusError) as info:
                await client.messages.create(**anthropic_params("x" * 20_000))
        async with httpx2.AsyncClient() as http:

            async def chunks() -> AsyncIterator[bytes]:
                # No content-length: the cap holds on the bytes as they come.
                for _ in range(20):
                    yield b"x" * 1_000

            streamed = await http.post(
                proxy.url + "/v1/messages", content=chunks(), headers={"x-api-key": TOKEN}
            )
    assert info.value.status_code == 413
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "request_too_large"
    assert streamed.status_code == 413
    assert calls(emu) == 0


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_bad_json_and_a_bad_budget_get_the_providers_400(
    emu: Emulator, provider: str
) -> None:
    path = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"
    async with run_proxy(config(emu, provider)) as proxy, httpx2.AsyncClient() as http:
        auth = {"authorization": f"Bearer {TOKEN}"}
        bad = await http.post(proxy.url + path, content=b"{not json", headers=auth)
        budget = await http.post(
            proxy.url + path,
            json=anthropic_params("x"),
            headers=auth | {BUDGET_HEADER: "soon"},
        )
    for answer in (bad, budget):
        assert answer.status_code == 400
        body = answer.json()
        if provider == "anthropic":
            assert body["type"] == "error"
            assert body["error"]["type"] == "invalid_request_error"
            assert answer.headers["request-id"].startswith("req_")
        else:
            assert body["error"]["type"] == "invalid_request_error"
            assert answer.headers["x-request-id"].startswith("req_")
    assert BUDGET_HEADER in budget.json()["error"]["message"]
    assert calls(emu) == 0


def test_the_proxy_refuses_to_start_without_a_client_token() -> None:
    with pytest.raises(ValueError, match="auth-token"):
        ProxyConfig(provider="anthropic", api_key=KEY, tokens=())


def test_the_upstream_key_is_not_in_the_configs_repr() -> None:
    cfg = ProxyConfig(provider="anthropic", api_key=KEY, tokens=(TOKEN,))
    assert KEY not in repr(cfg)
    assert TOKEN not in repr(cfg)


# -- withdrawal, health, metrics -------------------------------------------------------------


async def test_a_client_that_disconnects_withdraws_its_queued_call(emu: Emulator) -> None:
    cfg = config(emu, "anthropic", policy=policy(batch_min_size=2, batch_window_ms=600))
    async with run_proxy(cfg) as proxy:
        async with httpx2.AsyncClient() as http:
            with anyio.move_on_after(0.3):
                await http.post(
                    proxy.url + "/v1/messages",
                    json=anthropic_params("leaving"),
                    headers={"x-api-key": TOKEN} | LONG,
                )
        stats = proxy.state.fleet.stats
        await until(lambda: stats.withdrawn == 1)
        await anyio.sleep(0.6)  # past the window: a call still queued would have flushed
    assert emu.counts["batch_create"] == 0


async def test_healthz_and_metrics(emu: Emulator) -> None:
    cfg = config(emu, "anthropic", policy=policy(batch_min_size=1))
    async with run_proxy(cfg) as proxy:
        async with AsyncAnthropic(api_key=TOKEN, base_url=proxy.url) as client:
            await client.messages.create(**anthropic_params("m"), extra_headers=LONG)
        async with httpx2.AsyncClient() as http:
            health = await http.get(proxy.url + "/healthz")
            metrics = await http.get(proxy.url + "/metrics")
    assert health.status_code == 200
    text = metrics.text
    assert 'llmfleet_proxy_calls_total{outcome="ok",route="/v1/messages"} 1.0' in text
    assert 'llmfleet_proxy_wait_seconds_count{route="/v1/messages"} 1.0' in text
    assert "llmfleet_batches_submitted 1.0" in text
    assert "llmfleet_queue_depth 0.0" in text
    assert "llmfleet_saving_usd" in text
    assert KEY not in text


# -- the command: SIGTERM drains ------------------------------------------------------------------


async def _start_cli(emu: Emulator, *extra: str) -> tuple[anyio.abc.Process, str]:
    env = dict(os.environ, ANTHROPIC_API_KEY=KEY, PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, "-m", "llmfleet", "proxy", "--upstream", emu.url, "--port", "0"]
    command += ["--auth-token", TOKEN, "--poll-ms", "20", *extra]
    process = await anyio.open_process(command, env=env)
    assert process.stderr is not None
    seen = b""
    with anyio.fail_after(15):
        while b"serving" not in seen or not seen.endswith(b"\n"):
            seen += await process.stderr.receive()
    match = re.search(rb"serving anthropic on (\S+)", seen)
    assert match is not None, seen
    return process, match.group(1).decode()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
@pytest.mark.timeout(60)
async def test_sigterm_flushes_the_queue_answers_every_client_then_exits(emu: Emulator) -> None:
    # A window of a minute and a minimum of 10: the three calls wait until SIGTERM flushes them.
    process, url = await _start_cli(emu, "--batch-min-size", "10", "--window-ms", "60000")
    answers: list[Message] = []
    async with process, AsyncAnthropic(api_key=TOKEN, base_url=url, max_retries=0) as client:

        async def one(i: int) -> None:
            answers.append(
                await client.messages.create(**anthropic_params(f"q{i}"), extra_headers=LONG)
            )

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(one, i)
            async with httpx2.AsyncClient() as http:

                async def queued() -> bool:
                    metrics = (await http.get(url + "/metrics")).text
                    return "llmfleet_queue_depth 3.0" in metrics

                with anyio.fail_after(10):
                    while not await queued():  # noqa: ASYNC110 - another process
                        await anyio.sleep(0.02)
            assert emu.counts["batch_create"] == 0
            process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            code = await process.wait()
    assert code == 0
    assert sorted(m.content[0].text for m in answers if m.content[0].type == "text") == [
        "q0",
        "q1",
        "q2",
    ]
    assert emu.counts["batch_create"] == 1


# -- many processes, one fleet ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the clients are their own processes
async def test_a_thousand_clients_in_four_processes_pool_into_full_batches(
    emu: Emulator,
) -> None:
    clients, per_process, size = 1_000, 250, 100
    cfg = config(
        emu,
        "anthropic",
        policy=policy(batch_min_size=size, batch_max_size=size, batch_window_ms=120_000),
    )
    worker = str(Path(__file__).with_name("proxy_worker.py"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    async with run_proxy(cfg) as proxy:
        outputs: list[dict[str, Any]] = []

        async def run(tag: str) -> None:
            settings = {"url": proxy.url, "token": TOKEN, "tag": tag, "calls": per_process}
            done = await anyio.run_process(
                [sys.executable, worker, json.dumps(settings)], env=env, check=True
            )
            outputs.append(json.loads(done.stdout.decode().strip().splitlines()[-1]))

        async with anyio.create_task_group() as tg:
            for p in range(clients // per_process):
                tg.start_soon(run, f"p{p}")
    assert len(outputs) == 4
    assert all(o["ok"] and o["statuses"] == [200] for o in outputs), outputs
    # ceil(n / batch_max_size) batches, each full.
    assert emu.counts["batch_create"] == math.ceil(clients / size)
    assert [len(b.custom_ids) for b in emu.batches.values()] == [size] * 10
    assert emu.counts["messages"] == 0


# -- journal and broker ---------------------------------------------------------------------------


async def test_a_restarted_proxy_answers_a_resubmitted_call_from_its_journal(
    emu: Emulator, tmp_path: Path
) -> None:
    journal = str(tmp_path / "proxy.journal")
    cfg = config(emu, "anthropic", journal=journal, policy=policy(batch_min_size=1))
    texts = []
    for _ in range(2):
        async with run_proxy(cfg) as proxy:
            async with AsyncAnthropic(api_key=TOKEN, base_url=proxy.url) as client:
                message = await client.messages.create(
                    **anthropic_params("paid once"), extra_headers=LONG
                )
            block = message.content[0]
            assert block.type == "text"
            texts.append(block.text)
            from_journal = proxy.state.fleet.stats.from_journal
    assert texts == ["paid once", "paid once"]
    assert from_journal == 1  # the second proxy's
    assert emu.counts["batch_create"] == 1


async def test_two_replicas_with_one_broker_are_one_fleet(emu: Emulator, tmp_path: Path) -> None:
    from broker_support import redis_server

    with redis_server(tmp_path) as redis:
        cfg = config(emu, "anthropic", broker=redis.url)
        async with run_proxy(cfg) as first, run_proxy(cfg) as second:
            results: list[str] = []

            async def one(url: str, i: int) -> None:
                async with AsyncAnthropic(api_key=TOKEN, base_url=url) as client:
                    message = await client.messages.create(
                        **anthropic_params(f"r{i}"), extra_headers=LONG
                    )
                block = message.content[0]
                assert block.type == "text"
                results.append(block.text)

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(one, (first, second)[i % 2].url, i)
    assert sorted(results) == ["r0", "r1", "r2", "r3"]
    # Two calls through each replica, one batch of four (the policy's minimum).
    assert emu.counts["batch_create"] == 1
    [batch] = emu.batches.values()
    assert len(batch.custom_ids) == 4


def test_the_command_refuses_to_start_without_a_token_or_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LLMFLEET_PROXY_TOKENS", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["proxy", "--auth-token", TOKEN]) == 2
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    assert main(["proxy"]) == 2
    assert "--auth-token" in capsys.readouterr().err
    assert main(["proxy", "--auth-token", KEY]) == 2
    err = capsys.readouterr().err
    assert "must not be the upstream API key" in err
    assert KEY not in err


async def test_a_batch_whose_clients_all_disconnect_is_canceled() -> None:
    async with run_emulator(EmulatorConfig(turnaround_s=30)) as slow:
        cfg = config(slow, "anthropic", policy=policy(batch_min_size=2))
        async with run_proxy(cfg) as proxy, httpx2.AsyncClient() as http:
            async with anyio.create_task_group() as tg:

                async def leave(i: int) -> None:
                    await http.post(
                        proxy.url + "/v1/messages",
                        json=anthropic_params(f"left {i}"),
                        headers={"x-api-key": TOKEN} | LONG,
                    )

                tg.start_soon(leave, 0)
                tg.start_soon(leave, 1)
                await until(lambda: slow.counts["batch_create"] == 1)
                tg.cancel_scope.cancel()
            stats = proxy.state.fleet.stats
            await until(lambda: stats.withdrawn == 2)
            await until(lambda: slow.counts["batch_cancel"] == 1)


async def test_a_draining_proxy_refuses_new_calls_with_503(emu: Emulator) -> None:
    async with run_proxy(config(emu, "anthropic", default_budget_ms=60_000)) as proxy:
        proxy.state.draining = True  # what SIGTERM sets first (a plain flag)
        async with AsyncAnthropic(api_key=TOKEN, base_url=proxy.url, max_retries=0) as client:
            with pytest.raises(anthropic.APIStatusError) as info:
                await client.messages.create(**anthropic_params("late"))
        async with httpx2.AsyncClient() as http:
            health = await http.get(proxy.url + "/healthz")
    assert info.value.status_code == 503
    assert "shutting down" in str(info.value)
    assert health.status_code == 503
    assert calls(emu) == 0
