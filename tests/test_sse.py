"""Synthesised streams (docs/design.md, "Synthesised streams"): the bytes of llmfleet._sse, fed to
the real SDKs' stream parsers and helpers through an in-memory transport, rebuild the very result
they were made from. No network: each client's HTTP transport answers every request with the
synthesised body.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
import pytest
from anthropic.types import (
    Message,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet._sse import anthropic_error_event, anthropic_message_events

if TYPE_CHECKING:
    from collections.abc import Iterable

pytestmark = pytest.mark.timeout(60)

USER: list[MessageParam] = [{"role": "user", "content": "hi"}]


def sse_handler(events: Iterable[bytes]) -> httpx2.MockTransport:
    body = b"".join(events)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.MockTransport(handler)


def anthropic_client(events: Iterable[bytes]) -> anthropic.AsyncAnthropic:
    transport = sse_handler(events)
    return anthropic.AsyncAnthropic(
        api_key="x", base_url="http://test", http_client=httpx2.AsyncClient(transport=transport)
    )


def parse_sse(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each event, split as the SSE format says."""
    events: list[tuple[str | None, str]] = []
    for raw in body.decode().split("\n\n"):
        if not raw:
            continue
        name: str | None = None
        data: list[str] = []
        for line in raw.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            else:
                assert field == "data", line
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


# --------------------------------------------------------------------------------------------
# Anthropic
# --------------------------------------------------------------------------------------------

MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "The user greets me… ünïcode 😀", "signature": "EqQBCg=="},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
        {"type": "text", "text": "Hello! Let me look up the weather for you, in Zürich. " * 3},
        {
            "type": "tool_use",
            "id": "toolu_01",
            "name": "get_weather",
            "input": {
                "city": "Zürich",
                "days": [1, 2.5, None, True, -0.0, 10**30],
                "nested": {"a": {"b": 'quote " and newline \n and tab \t'}},
            },
        },
        {"type": "tool_use", "id": "toolu_02", "name": "no_arguments", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 472,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 40,
        "output_tokens": 187,
        "service_tier": "batch",
    },
}


async def test_messages_stream_rebuilds_the_message() -> None:
    client = anthropic_client(anthropic_message_events(MESSAGE, chunk_chars=7))
    texts: list[str] = []
    inputs: list[object] = []
    async with client.messages.stream(model="m", max_tokens=1024, messages=USER) as stream:
        async for event in stream:
            if event.type == "text":
                texts.append(event.text)
            elif event.type == "input_json":
                inputs.append(event.snapshot)
        final = await stream.get_final_message()
    assert final.model_dump() == Message.model_validate(MESSAGE).model_dump()
    # The text arrived in several deltas, and the tool input grew as its JSON arrived.
    assert len(texts) > 1
    assert "".join(texts) == MESSAGE["content"][2]["text"]
    assert len(inputs) > 2
    assert inputs[-1] == {}  # the tool without arguments ends the input_json events
    assert MESSAGE["content"][3]["input"] in inputs


async def test_messages_stream_text_stream_yields_the_text() -> None:
    message = {**MESSAGE, "content": [{"type": "text", "text": "Bonjour, ça va ? 🙂"}]}
    client = anthropic_client(anthropic_message_events(message, chunk_chars=4))
    async with client.messages.stream(model="m", max_tokens=1024, messages=USER) as stream:
        pieces = [text async for text in stream.text_stream]
    assert pieces == ["Bonj", "our,", " ça ", "va ?", " 🙂"]


def test_sync_client_reads_the_same_bytes() -> None:
    transport = sse_handler(anthropic_message_events(MESSAGE))
    client = anthropic.Anthropic(
        api_key="x", base_url="http://test", http_client=httpx2.Client(transport=transport)
    )
    with client.messages.stream(model="m", max_tokens=1024, messages=USER) as stream:
        final = stream.get_final_message()
    assert final.model_dump() == Message.model_validate(MESSAGE).model_dump()


async def test_create_stream_true_yields_the_raw_events_in_wire_order() -> None:
    client = anthropic_client(anthropic_message_events(MESSAGE, chunk_chars=16))
    stream = await client.messages.create(model="m", max_tokens=1024, messages=USER, stream=True)
    events = [event async for event in stream]
    assert [event.type for event in events][-2:] == ["message_delta", "message_stop"]
    start = events[0]
    assert isinstance(start, RawMessageStartEvent)
    assert start.message.content == []
    assert start.message.stop_reason is None
    assert start.message.usage.input_tokens == 472
    assert start.message.usage.output_tokens == 1
    delta = events[-2]
    assert isinstance(delta, RawMessageDeltaEvent)
    assert delta.delta.stop_reason == "tool_use"
    assert delta.usage.output_tokens == 187
    # Each block: one start, its deltas, one stop, in index order.
    order = [
        (event.type, event.index)
        for event in events
        if isinstance(event, (RawContentBlockStartEvent, RawContentBlockStopEvent))
    ]
    n = len(MESSAGE["content"])
    assert order == [
        (kind, i) for i in range(n) for kind in ("content_block_start", "content_block_stop")
    ]
    by_index: dict[int, list[Any]] = {}
    for event in events:
        if isinstance(event, RawContentBlockDeltaEvent):
            by_index.setdefault(event.index, []).append(event.delta)
    thinking = by_index[0]
    assert [d.type for d in thinking][-1] == "signature_delta"
    assert "".join(d.thinking for d in thinking[:-1]) == MESSAGE["content"][0]["thinking"]
    assert 1 not in by_index  # redacted_thinking arrives whole in its start event
    assert "".join(d.text for d in by_index[2]) == MESSAGE["content"][2]["text"]
    assert len(by_index[3]) > 1
    arguments = "".join(d.partial_json for d in by_index[3])
    assert json.loads(arguments) == MESSAGE["content"][3]["input"]
    assert [d.partial_json for d in by_index[4]] == [""]


def test_events_are_framed_as_the_api_frames_them() -> None:
    body = b"".join(anthropic_message_events(MESSAGE))
    assert body.endswith(b"\n\n")
    events = parse_sse(body)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    for name, data in events:
        assert json.loads(data)["type"] == name
    assert "ü".encode() in body  # UTF-8, not \\u escapes
    assert (
        MESSAGE["content"][2]["text"]
        == "Hello! Let me look up the weather for you, in Zürich. " * 3
    )


def test_the_message_is_not_modified() -> None:
    before = json.dumps(MESSAGE)
    list(anthropic_message_events(MESSAGE))
    assert json.dumps(MESSAGE) == before


async def test_citations_server_tools_and_usage_details_round_trip() -> None:
    citation = {
        "type": "char_location",
        "cited_text": "The sky is blue.",
        "document_index": 0,
        "document_title": "Facts",
        "start_char_index": 0,
        "end_char_index": 16,
        "file_id": None,
    }
    message = {
        **MESSAGE,
        "content": [
            {"type": "text", "text": "According to the document, ", "citations": None},
            {"type": "text", "text": "the sky is blue", "citations": [citation, citation]},
            {
                "type": "server_tool_use",
                "id": "srvtoolu_01",
                "name": "web_search",
                "input": {"query": "weather Zürich"},
            },
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_01",
                "content": [
                    {
                        "type": "web_search_result",
                        "title": "Weather",
                        "url": "https://example.com",
                        "encrypted_content": "abc",
                        "page_age": None,
                    }
                ],
            },
        ],
        "stop_reason": "end_turn",
        "usage": {
            **MESSAGE["usage"],
            "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0},
            "cache_creation": {"ephemeral_1h_input_tokens": 1, "ephemeral_5m_input_tokens": 2},
        },
    }
    client = anthropic_client(anthropic_message_events(message, chunk_chars=5))
    async with client.messages.stream(model="m", max_tokens=1024, messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.model_dump() == Message.model_validate(message).model_dump()


async def test_stop_sequence_and_zero_output_tokens_round_trip() -> None:
    message = {
        **MESSAGE,
        "content": [{"type": "text", "text": ""}],
        "stop_reason": "stop_sequence",
        "stop_sequence": "\n\nHuman:",
        "usage": {"input_tokens": 5, "output_tokens": 0},
    }
    client = anthropic_client(anthropic_message_events(message))
    async with client.messages.stream(model="m", max_tokens=1024, messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.model_dump() == Message.model_validate(message).model_dump()


async def test_error_event_raises_in_the_sdk_after_the_events_before_it() -> None:
    events = [*anthropic_message_events(MESSAGE)][:4]
    events.append(anthropic_error_event("overloaded_error", "Overloaded"))
    client = anthropic_client(events)
    seen: list[str] = []

    async def read() -> None:
        async with client.messages.stream(model="m", max_tokens=1024, messages=USER) as stream:
            async for event in stream:
                # One at a time: the events before the error must be kept.
                seen.append(event.type)  # noqa: PERF401

    with pytest.raises(anthropic.APIStatusError) as caught:
        await read()
    assert seen[0] == "message_start"
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert "Overloaded" in str(caught.value)
    assert anthropic_error_event("api_error", "x") == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"x"}}\n\n'
    )


def test_chunk_chars_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="chunk_chars must be at least 1"):
        list(anthropic_message_events(MESSAGE, chunk_chars=0))


def json_values() -> st.SearchStrategy[object]:
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**30), max_value=10**30)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
    )
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    block = st.one_of(
        st.builds(lambda text: {"type": "text", "text": text}, st.text()),
        st.builds(
            lambda i, name, arguments: {
                "type": "tool_use",
                "id": f"toolu_{i}",
                "name": name,
                "input": arguments,
            },
            st.integers(0, 10**6),
            st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True),
            st.dictionaries(st.text(), json_values(), max_size=5),
        ),
        st.builds(
            lambda thinking, signature: {
                "type": "thinking",
                "thinking": thinking,
                "signature": signature,
            },
            st.text(),
            st.text(min_size=1),
        ),
        st.builds(lambda data: {"type": "redacted_thinking", "data": data}, st.text()),
    )
    return {
        "id": "msg_" + draw(st.text("abcdef0123456789", min_size=1, max_size=24)),
        "type": "message",
        "role": "assistant",
        "model": draw(st.sampled_from(["claude-sonnet-4-5", "claude-haiku-4-5"])),
        "content": draw(st.lists(block, max_size=5)),
        "stop_reason": draw(
            st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"])
        ),
        "stop_sequence": draw(st.none() | st.text(min_size=1)),
        "usage": {
            "input_tokens": draw(st.integers(0, 10**6)),
            "output_tokens": draw(st.integers(0, 10**6)),
            "cache_read_input_tokens": draw(st.none() | st.integers(0, 10**6)),
        },
    }


@settings(max_examples=60, deadline=None)
@given(messages(), st.integers(1, 40))
async def test_any_message_round_trips_through_the_sdk(
    message: dict[str, Any], chunk_chars: int
) -> None:
    client = anthropic_client(anthropic_message_events(message, chunk_chars=chunk_chars))
    async with client.messages.stream(model="m", max_tokens=1024, messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.model_dump() == Message.model_validate(message).model_dump()
