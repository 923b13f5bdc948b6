"""The emulator, driven through the real ``anthropic`` SDK over loopback HTTP.

These tests run on real time on both backends: the server lives on its own thread, and an
autojumping virtual clock would make the SDK's timeouts fire at once.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import anyio.to_thread
import httpx2
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message, TextBlock
from anthropic.types.messages import (
    MessageBatchErroredResult,
    MessageBatchIndividualResponse,
    MessageBatchSucceededResult,
)

from llmfleet.emulator import (
    Emulator,
    EmulatorConfig,
    Fault,
    run_emulator,
    start_emulator,
)
from llmfleet.pricing import Cost, ModelPrice, PriceTable, TokenUsage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from anthropic.types.beta.messages.batch_create_params import Request as BetaRequest
    from anthropic.types.messages.batch_create_params import Request

MODEL = "claude-sonnet-4-6"
KEY = "test-key-sk-ant-0123456789"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with run_emulator(EmulatorConfig(turnaround_s=None)) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0) as c:
        yield c


def req(custom_id: str, text: str = "hi", *, model: str = MODEL, max_tokens: int = 64) -> Request:
    return {
        "custom_id": custom_id,
        "params": {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}],
        },
    }


async def results_of(client: AsyncAnthropic, batch_id: str) -> list[MessageBatchIndividualResponse]:
    return [r async for r in await client.messages.batches.results(batch_id)]


def http(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A plain blocking HTTP call (run it in a worker thread), to see the raw wire."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


# -- Messages -------------------------------------------------------------------------------


async def test_message_echoes_last_user_text_with_usage(client: AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        system="be brief",  # 8 chars
        messages=[
            {"role": "user", "content": "first"},  # 5
            {"role": "assistant", "content": "ok"},  # 2
            {"role": "user", "content": [{"type": "text", "text": "hello there"}]},  # 11
        ],
    )
    assert message.id.startswith("msg_")
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.content == [TextBlock(type="text", text="hello there", citations=None)]
    assert message.usage.input_tokens == 7  # ceil(26 / 4)
    assert message.usage.output_tokens == 3  # ceil(11 / 4)
    assert message.usage.service_tier == "standard"


async def test_message_reply_is_cut_at_max_tokens(client: AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "abcdefghijklmnop"}]
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "abcdefgh"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


async def test_prompt_cache_is_written_then_read(client: AsyncAnthropic) -> None:
    async def ask() -> Message:
        return await client.messages.create(
            model=MODEL,
            max_tokens=10,
            system=[{"type": "text", "text": "s" * 400, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "q" * 40}],
        )

    first, second = await ask(), await ask()
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (
        100,
        0,
    )
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (
        0,
        100,
    )
    assert first.usage.input_tokens == second.usage.input_tokens == 10


async def test_message_latency_is_applied(emu: Emulator, client: AsyncAnthropic) -> None:
    emu.config.direct_latency_s = lambda rng: rng.uniform(0.3, 0.35)
    start = time.monotonic()
    await client.messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert time.monotonic() - start >= 0.3


# -- Batches --------------------------------------------------------------------------------


async def test_batch_lifecycle_with_every_result_type(
    emu: Emulator, client: AsyncAnthropic
) -> None:
    batch = await client.messages.batches.create(
        requests=[
            req("ok", "echo me"),
            req("err", "please [[errored]]"),
            req("bad", "[[errored:invalid_request_error]]"),
            req("exp", "[[expired]] soon"),
        ]
    )
    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 4
    assert batch.results_url is None
    assert batch.ended_at is None

    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        await client.messages.batches.results(batch.id)

    emu.end_batch(batch.id)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None
    assert ended.results_url == f"{emu.url}/v1/messages/batches/{batch.id}/results"
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.expired) == (0, 1, 2, 1)

    results = {r.custom_id: r.result for r in await results_of(client, batch.id)}
    assert set(results) == {"ok", "err", "bad", "exp"}
    ok = results["ok"]
    assert isinstance(ok, MessageBatchSucceededResult)
    assert ok.message.content[0].type == "text"
    assert ok.message.content[0].text == "echo me"
    assert ok.message.usage.service_tier == "batch"
    err, bad = results["err"], results["bad"]
    assert isinstance(err, MessageBatchErroredResult)
    assert isinstance(bad, MessageBatchErroredResult)
    assert err.error.error.type == "api_error"
    assert bad.error.error.type == "invalid_request_error"
    assert results["exp"].type == "expired"
    assert emu.batches[batch.id].results == {
        "ok": "succeeded",
        "err": "errored",
        "bad": "errored",
        "exp": "expired",
    }


async def test_results_wire_format(emu: Emulator, client: AsyncAnthropic) -> None:
    emu.config.results_chunk_bytes = 7  # chunks split lines: the SDK must still decode them
    batch = await client.messages.batches.create(requests=[req(f"r{i}") for i in range(20)])
    emu.end_batch(batch.id)
    status, headers, body = await anyio.to_thread.run_sync(
        http, "GET", f"{emu.url}/v1/messages/batches/{batch.id}/results", {"x-api-key": KEY}
    )
    assert status == 200
    assert headers["request-id"].startswith("req_")
    assert body.endswith(b"\n")
    assert b"\r" not in body
    lines = body.split(b"\n")[:-1]
    assert all(lines)  # no blank line
    ids = [json.loads(line)["custom_id"] for line in lines]
    assert sorted(ids) == sorted(f"r{i}" for i in range(20))
    assert ids != [f"r{i}" for i in range(20)]  # shuffled...
    again = [r.custom_id for r in await results_of(client, batch.id)]
    assert again == ids  # ...the same way every time


async def test_batch_ends_on_its_own_after_turnaround(
    emu: Emulator, client: AsyncAnthropic
) -> None:
    emu.config.turnaround_s = 0.2
    batch = await client.messages.batches.create(requests=[req("a")])
    assert batch.processing_status == "in_progress"
    await anyio.sleep(0.25)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 1
    # ended_at is when the turnaround ran out, not when someone looked.
    assert ended.ended_at is not None
    assert (ended.ended_at - batch.created_at).total_seconds() == pytest.approx(0.2, abs=1e-3)


def test_random_turnaround_and_outcomes_are_seeded() -> None:
    def run(seed: int) -> tuple[list[float], list[dict[str, str]]]:
        config = EmulatorConfig(
            turnaround_s=lambda rng: rng.uniform(100, 200),
            errored_ratio=0.3,
            expired_ratio=0.2,
            seed=seed,
        )
        with (
            start_emulator(config) as emulator,
            anthropic.Anthropic(api_key=KEY, base_url=emulator.url, max_retries=0) as c,
        ):
            ids = [
                c.messages.batches.create(requests=[req(f"r{i}") for i in range(40)]).id
                for _ in range(2)
            ]
            waits = [(b.ends_at or 0) - b.created_at for b in emulator.batches.values()]
            emulator.end_all_batches()
            return waits, [dict(emulator.batches[i].results) for i in ids]

    first, second, other = run(7), run(7), run(8)
    assert first == second
    assert first != other
    assert all(100 <= wait <= 200 for wait in first[0])
    assert first[1][0] != first[1][1]  # the batch id is part of the draw
    outcomes = [t for results in first[1] for t in results.values()]
    assert 0 < outcomes.count("errored") < 40
    assert 0 < outcomes.count("expired") < 40
    assert outcomes.count("succeeded") > 20


async def test_list_pages_newest_first(emu: Emulator, client: AsyncAnthropic) -> None:
    created = [(await client.messages.batches.create(requests=[req("a")])).id for _ in range(5)]
    newest_first = created[::-1]

    page = await client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True
    assert (page.first_id, page.last_id) == (newest_first[0], newest_first[1])

    seen = [b.id async for b in await client.messages.batches.list(limit=2)]
    assert seen == newest_first
    assert emu.counts["batch_list"] == 1 + 3  # pages of 2, 2 and 1

    before = await client.messages.batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in before.data] == newest_first[2:4]
    assert before.has_more is True
    after = await client.messages.batches.list(limit=20, after_id=newest_first[2])
    assert [b.id for b in after.data] == newest_first[3:]
    assert after.has_more is False

    with pytest.raises(anthropic.BadRequestError, match="limit"):
        await client.messages.batches.list(limit=1001)


async def test_cancel_ends_with_items_canceled(emu: Emulator, client: AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[req("a"), req("b")])
    canceling = await client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 2
    assert {r.result.type for r in await results_of(client, batch.id)} == {"canceled"}
    assert [e.result for e in emu.ledger.entries] == ["canceled", "canceled"]
    assert emu.ledger.total() == Cost()


async def test_external_cancel_and_expiry(emu: Emulator, client: AsyncAnthropic) -> None:
    emu.config.cancel_delay_s = 60.0
    one = await client.messages.batches.create(requests=[req("a")])
    two = await client.messages.batches.create(requests=[req("a"), req("b")])
    assert emu.cancel_batch_externally(one.id).processing_status == "canceling"
    assert (await client.messages.batches.retrieve(one.id)).processing_status == "canceling"
    emu.end_batch(one.id)
    assert emu.expire_batch(two.id).results == {"a": "expired", "b": "expired"}
    assert [r.result.type for r in await results_of(client, one.id)] == ["canceled"]
    assert emu.counts["batch_cancel"] == 0


async def test_delete_only_once_ended(emu: Emulator, client: AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[req("a")])
    with pytest.raises(anthropic.BadRequestError, match="cannot be deleted"):
        await client.messages.batches.delete(batch.id)
    emu.end_batch(batch.id)
    deleted = await client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.retrieve(batch.id)
    assert [b async for b in await client.messages.batches.list()] == []


async def test_unknown_batch_is_404_with_request_id(emu: Emulator, client: AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client.messages.batches.retrieve("msgbatch_nope")
    assert caught.value.request_id is not None
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "No batch found with id 'msgbatch_nope'."},
    }
    status, _, body = await anyio.to_thread.run_sync(
        http, "GET", f"{emu.url}/v1/messages/batches/msgbatch_nope/results", {"x-api-key": KEY}
    )
    assert status == 404
    assert json.loads(body)["error"]["type"] == "not_found_error"


async def test_results_before_end_is_400(emu: Emulator, client: AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[req("a")])
    status, _, body = await anyio.to_thread.run_sync(
        http, "GET", f"{emu.url}/v1/messages/batches/{batch.id}/results", {"x-api-key": KEY}
    )
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


async def test_beta_batches_work_the_same(emu: Emulator, client: AsyncAnthropic) -> None:
    beta_request: BetaRequest = {
        "custom_id": "a",
        "params": {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "b"}]},
    }
    batch = await client.beta.messages.batches.create(
        requests=[beta_request], betas=["message-batches-2024-09-24"]
    )
    emu.end_batch(batch.id)
    assert [r.custom_id async for r in await client.beta.messages.batches.results(batch.id)] == [
        "a"
    ]
    assert any("anthropic-beta" in r.headers for r in emu.requests)
    # Older SDKs mark beta calls with a query string instead: routing ignores it.
    status, _, body = await anyio.to_thread.run_sync(
        http, "GET", f"{emu.url}/v1/messages/batches/{batch.id}?beta=true", {"x-api-key": KEY}
    )
    assert status == 200
    assert json.loads(body)["processing_status"] == "ended"


# -- Validation -----------------------------------------------------------------------------


def _params(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    }
    for key, value in overrides.items():
        if value is None:
            del params[key]
        else:
            params[key] = value
    return params


_BATCH_CASES: list[tuple[Any, str]] = [
    (
        [{"custom_id": "x" * 65, "params": _params()}],
        "requests.0.custom_id: String should have at most 64 characters",
    ),
    (
        [{"custom_id": "a b", "params": _params()}],
        "requests.0.custom_id: String should match pattern",
    ),
    (
        [{"custom_id": "", "params": _params()}],
        "requests.0.custom_id: String should have at least 1",
    ),
    (
        [{"custom_id": "a", "params": _params()}, {"custom_id": "a", "params": _params()}],
        "requests.1.custom_id: Duplicate custom_id 'a'",
    ),
    ([], "requests: List should have at least 1 item"),
    ([{"custom_id": f"r{i}", "params": _params()} for i in range(4)], "at most 3 items"),
    ([{"custom_id": "a", "params": _params(stream=True)}], "requests.0.params.stream"),
    (
        [{"custom_id": "a", "params": _params(max_tokens=None)}],
        "requests.0.params.max_tokens: Field required",
    ),
    ([{"custom_id": "a", "params": _params(max_tokens=0)}], "greater than or equal to 1"),
    (
        [{"custom_id": "a", "params": _params(model=None)}],
        "requests.0.params.model: Field required",
    ),
    (
        [{"custom_id": "a", "params": _params(messages=None)}],
        "requests.0.params.messages: Field required",
    ),
    ([{"custom_id": "a", "params": _params(messages=[])}], "at least one message is required"),
]


async def test_batch_create_validation(emu: Emulator, client: AsyncAnthropic) -> None:
    # One emulator for all the cases: starting one per case would dominate the suite's time.
    emu.config.max_batch_requests = 3
    for requests, message in _BATCH_CASES:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.batches.create(requests=requests)
        assert message in str(caught.value)
        assert caught.value.request_id is not None
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert emu.counts["batch_create"] == len(_BATCH_CASES)
    assert emu.batches == {}
    assert emu.ledger.batches_created == 0


async def test_batch_create_too_large_is_413(emu: Emulator, client: AsyncAnthropic) -> None:
    emu.config.max_batch_bytes = 2_000
    with pytest.raises(anthropic.APIStatusError) as caught:
        await client.messages.batches.create(requests=[req("a", "x" * 3_000)])
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert emu.batches == {}


_MESSAGE_CASES: list[tuple[dict[str, Any], str]] = [
    (_params(stream=True), "does not stream"),
    (_params(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
    (_params(max_tokens=None), "max_tokens: Field required"),
    (_params(model=None), "model: Field required"),
    (_params(messages=None), "messages: Field required"),
    (_params(messages=[]), "at least one message is required"),
    (_params(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
]


async def test_message_validation(emu: Emulator, client: AsyncAnthropic) -> None:
    for body, message in _MESSAGE_CASES:
        with pytest.raises(anthropic.BadRequestError, match=message):
            await client.post("/v1/messages", cast_to=Message, body=body)
    assert emu.counts["messages"] == len(_MESSAGE_CASES)
    assert emu.ledger.entries == ()


async def test_stream_true_is_refused(client: AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="does not stream"):
        await client.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}], stream=True
        )


async def test_auth_required_and_key_never_recorded(emu: Emulator, client: AsyncAnthropic) -> None:
    url = f"{emu.url}/v1/messages"
    body = json.dumps(_params()).encode()
    status, headers, raw = await anyio.to_thread.run_sync(
        http, "POST", url, {"content-type": "application/json"}, body
    )
    assert status == 401
    assert headers["request-id"]
    assert json.loads(raw)["error"]["type"] == "authentication_error"
    status, _, _ = await anyio.to_thread.run_sync(
        http, "POST", url, {"content-type": "application/json", "x-api-key": KEY}, body
    )
    assert status == 200
    await client.messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    records = emu.requests
    assert len(records) == 3
    assert records[1].headers["x-api-key"] == "[redacted]"
    assert records[2].headers["authorization"] == "[redacted]"
    assert records[2].body == _params(max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert KEY not in repr(records)
    assert emu.counts["messages"] == 3


# -- Faults ---------------------------------------------------------------------------------


async def test_status_fault_with_retry_after_is_retried(emu: Emulator) -> None:
    emu.add_fault(Fault("messages", "status", status=429, retry_after_ms=20))
    async with AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=1) as c:
        message = await c.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "again"}]
        )
    assert message.content[0].type == "text"
    assert emu.counts["messages"] == 2
    assert [r.headers["x-stainless-retry-count"] for r in emu.requests] == ["0", "1"]
    assert emu.faults == ()


_STATUS_CASES: list[tuple[int, type[anthropic.APIStatusError], str]] = [
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (503, anthropic.ServiceUnavailableError, "api_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
]


async def test_status_fault_on_create_creates_nothing(
    emu: Emulator, client: AsyncAnthropic
) -> None:
    for status, exc_type, error_type in _STATUS_CASES:
        emu.add_fault(Fault("batch_create", "status", status=status, retry_after=2))
        with pytest.raises(exc_type) as caught:
            await client.messages.batches.create(requests=[req("a")])
        assert caught.value.status_code == status
        assert caught.value.response.headers["retry-after"] == "2"
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == error_type
        assert emu.batches == {}
    assert (await client.messages.batches.create(requests=[req("a")])).id in emu.batches


async def test_nth_fault_hits_only_that_call(emu: Emulator, client: AsyncAnthropic) -> None:
    batch = await client.messages.batches.create(requests=[req("a")])
    emu.add_fault(Fault("batch_retrieve", "status", nth=2, times=2, status=500))
    await client.messages.batches.retrieve(batch.id)
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError):
            await client.messages.batches.retrieve(batch.id)
    await client.messages.batches.retrieve(batch.id)
    assert emu.counts["batch_retrieve"] == 4


async def test_slow_fault_delays_and_can_time_out(emu: Emulator, client: AsyncAnthropic) -> None:
    emu.add_fault(Fault("messages", "slow", delay_s=0.3, times=2))
    start = time.monotonic()
    await client.messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert time.monotonic() - start >= 0.3
    with pytest.raises(anthropic.APITimeoutError):
        await client.with_options(timeout=0.1).messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


async def test_drop_fault_is_a_connection_error(emu: Emulator, client: AsyncAnthropic) -> None:
    async def ask() -> Message:
        return await client.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )

    await ask()
    emu.add_fault(Fault("messages", "drop"))  # on the kept-alive connection
    with pytest.raises(anthropic.APIConnectionError) as caught:
        await ask()
    assert not isinstance(caught.value, anthropic.APITimeoutError)
    assert len(emu.ledger.entries) == 1
    await ask()
    assert emu.counts["messages"] == 3
    assert len(emu.ledger.entries) == 2


async def test_accept_then_drop_creates_the_batch(emu: Emulator, client: AsyncAnthropic) -> None:
    emu.add_fault(Fault("batch_create", "accept_then_drop"))
    with pytest.raises(anthropic.APIConnectionError):
        await client.messages.batches.create(requests=[req("a")])
    listed = [b.id async for b in await client.messages.batches.list()]
    assert len(listed) == 1
    assert listed == list(emu.batches)
    assert emu.ledger.batches_created == 1


async def test_cut_stream_breaks_the_decoder_mid_way(emu: Emulator, client: AsyncAnthropic) -> None:
    emu.config.results_chunk_bytes = 64
    batch = await client.messages.batches.create(requests=[req(f"r{i}") for i in range(10)])
    emu.end_batch(batch.id)
    emu.add_fault(Fault("batch_results", "cut_stream"))
    decoder = await client.messages.batches.results(batch.id)
    received: list[str] = []

    async def drain() -> None:
        async for item in decoder:
            # A loop, not a comprehension: the items before the failure are the point.
            received.append(item.custom_id)  # noqa: PERF401

    # Recent anthropic releases (2.17 here) wrap a read error of the results stream in
    # APIConnectionError, as they do every transport error; earlier ones let httpx's through.
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)) as info:
        await drain()
    cause: BaseException | None = info.value
    while cause is not None and not isinstance(cause, httpx2.RemoteProtocolError):
        cause = cause.__cause__
    assert isinstance(cause, httpx2.RemoteProtocolError)
    await decoder.close()
    # The server sent 5 whole lines; the SDK re-chunks what it reads and may lose the tail.
    everything = [r.custom_id for r in await results_of(client, batch.id)]
    assert len(everything) == 10
    assert 1 <= len(received) <= 5
    assert received == everything[: len(received)]


@pytest.mark.parametrize("endpoint", ["batch_retrieve", "batch_results"])
async def test_transient_404_then_success(
    emu: Emulator, client: AsyncAnthropic, endpoint: Any
) -> None:
    batch = await client.messages.batches.create(requests=[req("a")])
    emu.end_batch(batch.id)
    emu.add_fault(Fault(endpoint, "transient_404"))
    with pytest.raises(anthropic.NotFoundError):
        await results_of(client, batch.id)
    assert [r.custom_id for r in await results_of(client, batch.id)] == ["a"]


def test_fault_and_config_are_checked() -> None:
    with pytest.raises(ValueError, match="does not apply"):
        Fault("messages", "cut_stream")
    with pytest.raises(ValueError, match="nth"):
        Fault("messages", "drop", nth=0)
    with pytest.raises(ValueError, match="errored_ratio"):
        EmulatorConfig(errored_ratio=1.5)
    config = EmulatorConfig()
    with pytest.raises(ValueError, match="turnaround_s"):
        config.turnaround_s = -1.0
    with pytest.raises(ValueError, match="loopback"):
        start_emulator(host="0.0.0.0")


# -- Ledger ---------------------------------------------------------------------------------


async def test_ledger_prices_each_route(emu: Emulator, client: AsyncAnthropic) -> None:
    emu.config.models = None  # serve the made-up models below
    emu.config.prices = PriceTable({"my-model": ModelPrice.of("2", "10", "2.5", "0.2")})
    text = "x" * 400  # 100 tokens in, 100 out
    await client.messages.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": text}]
    )
    batch = await client.messages.batches.create(
        requests=[
            req("ok", text, max_tokens=200),
            req("err", "[[errored]]"),
            req("unknown", text, model="no-such-model", max_tokens=200),
            req("mine", text, model="my-model", max_tokens=200),
        ]
    )
    assert len(emu.ledger.entries) == 1  # batch items are entered when the batch ends
    emu.end_batch(batch.id)
    ledger = emu.ledger
    by_id = {(e.route, e.custom_id): e for e in ledger.entries}
    direct = by_id[("direct", None)]
    assert direct.usage == TokenUsage(input_tokens=100, output_tokens=100)
    assert direct.cost == Cost(Decimal("0.0018"), Decimal("0.0018"))
    ok = by_id[("batch", "ok")]
    assert ok.batch_id == batch.id
    assert ok.cost == Cost(Decimal("0.0018"), Decimal("0.0009"))
    err = by_id[("batch", "err")]
    assert (err.result, err.usage, err.cost) == ("errored", TokenUsage(), Cost())
    assert by_id[("batch", "unknown")].cost is None
    assert by_id[("batch", "mine")].cost == Cost(Decimal("0.0012"), Decimal("0.0006"))
    assert ledger.total() == Cost(Decimal("0.0048"), Decimal("0.0033"))
    assert ledger.total(route="batch").paid == Decimal("0.0015")
    assert ledger.usage(route="batch").output_tokens == 300  # errored items use nothing
    assert ledger.batches_created == 1


# -- Start-up and the command line ----------------------------------------------------------


def test_start_emulator_sync_and_free_port() -> None:
    armed = [Fault("messages", "status", status=529, should_retry=False)]
    with start_emulator(EmulatorConfig(faults=armed)) as one, start_emulator() as two:
        assert one.url != two.url
        assert one.url.startswith("http://127.0.0.1:")
        assert not one.url.endswith("/")
        with anthropic.Anthropic(api_key=KEY, base_url=one.url, max_retries=2) as c:
            with pytest.raises(anthropic.OverloadedError):  # x-should-retry: false is obeyed
                c.messages.create(
                    model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "sync"}]
                )
            assert one.counts["messages"] == 1
            message = c.messages.create(
                model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "sync"}]
            )
        assert message.content[0].type == "text"
        assert message.content[0].text == "sync"


@pytest.fixture
def cli() -> Iterator[tuple[subprocess.Popen[str], str]]:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "llmfleet.emulator", "--port", "0", "--turnaround", "-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        yield process, url
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_command_line_serves(cli: tuple[subprocess.Popen[str], str]) -> None:
    process, url = cli
    assert url.startswith("http://127.0.0.1:"), url
    with anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0) as c:
        message = c.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "from a shell"}]
        )
    assert message.content[0].type == "text"
    assert message.content[0].text == "from a shell"
    process.terminate()
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert KEY not in stderr


def test_public_names_are_exported_and_documented() -> None:
    import llmfleet.emulator as module

    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name
