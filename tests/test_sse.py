"""Synthesised streams (docs/design.md §2.2): the bytes of llmfleet._sse, fed to
the real SDKs' stream parsers and helpers through an in-memory transport, rebuild the very result
they were made from. No network: each client's HTTP transport answers every request with the
synthesised body.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
import openai
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
from anthropic.types.beta import BetaMessage, BetaMessageParam
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.responses import Response

from llmfleet._sse import (
    anthropic_error_event,
    anthropic_message_events,
    openai_chat_chunks,
    openai_response_events,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

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


def openai_client(events: Iterable[bytes]) -> openai.AsyncOpenAI:
    transport = sse_handler(events)
    return openai.AsyncOpenAI(
        api_key="x", base_url="http://test/v1", http_client=httpx2.AsyncClient(transport=transport)
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


async def test_beta_messages_stream_rebuilds_the_message() -> None:
    client = anthropic_client(anthropic_message_events(MESSAGE, chunk_chars=5))
    beta_user: list[BetaMessageParam] = [{"role": "user", "content": "hi"}]
    async with client.beta.messages.stream(
        model="m", max_tokens=1024, messages=beta_user
    ) as stream:
        final = await stream.get_final_message()
    assert final.model_dump() == BetaMessage.model_validate(MESSAGE).model_dump()


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
    # Blocks start empty, as the API starts them; whole blocks start whole.
    starts = [e.content_block for e in events if isinstance(e, RawContentBlockStartEvent)]
    assert [block.to_dict() for block in starts] == [
        {"type": "thinking", "thinking": "", "signature": ""},
        MESSAGE["content"][1],
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}},
        {"type": "tool_use", "id": "toolu_02", "name": "no_arguments", "input": {}},
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


def test_fields_left_out_stream_as_their_empty_values() -> None:
    message = {
        **MESSAGE,
        "content": [{"type": "text"}, {"type": "thinking"}],
        "usage": {"input_tokens": 5},
    }
    events = [
        json.loads(data) for _, data in parse_sse(b"".join(anthropic_message_events(message)))
    ]
    assert events[0]["message"]["usage"] == {"input_tokens": 5, "output_tokens": 0}
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == [
        {"type": "text_delta", "text": ""},
        {"type": "thinking_delta", "thinking": ""},
        {"type": "signature_delta", "signature": ""},
    ]
    assert events[-2]["usage"] == {"output_tokens": 0, "input_tokens": 5}


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
        st.builds(
            lambda query: {
                "type": "server_tool_use",
                "id": "srvtoolu_01",
                "name": "web_search",
                "input": {"query": query},
            },
            st.text(),
        ),
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


# --------------------------------------------------------------------------------------------
# OpenAI Chat Completions
# --------------------------------------------------------------------------------------------

# The openai SDK stops reading a chat stream at ``data: [DONE]`` (which the API sends, and so do
# we) without closing its chain of async generators (its SSE decoder's, the HTTP response's);
# trio's finalizer warns about each when it is collected. The same happens with the real API.
SDK_ABANDONS_ITS_SSE_GENERATORS = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object :pytest.PytestUnraisableExceptionWarning"
)
CHAT_USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
WEATHER_ARGUMENTS = json.dumps({"city": "Zürich", "days": [1, {"unit": None}], "q": 'a "b"'})

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-01",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "service_tier": "default",
    "system_fingerprint": "fp_01",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "logprobs": None,
            "message": {
                "role": "assistant",
                "content": "Let me check the weather in Zürich for you 😀. " * 2,
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {
                        "id": "call_01",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": WEATHER_ARGUMENTS},
                    },
                    {
                        "id": "call_02",
                        "type": "function",
                        "function": {"name": "no_arguments", "arguments": "{}"},
                    },
                ],
            },
        },
        {
            "index": 1,
            "finish_reason": "stop",
            "logprobs": {
                "content": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []},
                    {"token": "!", "logprob": -0.2, "bytes": [33], "top_logprobs": []},
                ],
                "refusal": None,
            },
            "message": {"role": "assistant", "content": "Hi!", "refusal": None},
        },
        {
            "index": 2,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
        },
    ],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 34,
        "total_tokens": 46,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}


def without_parsed(value: object) -> object:
    """A helper's dump without what only the helpers add: ``parsed``, ``parsed_arguments``, and
    the ``index`` a streamed chat tool call keeps."""
    if isinstance(value, dict):
        return {
            key: without_parsed(item)
            for key, item in value.items()
            if key not in ("parsed", "parsed_arguments")
            and not (key == "index" and "function" in value)
        }
    if isinstance(value, list):
        return [without_parsed(item) for item in value]
    return value


@SDK_ABANDONS_ITS_SSE_GENERATORS
async def test_chat_stream_helper_rebuilds_the_completion() -> None:
    client = openai_client(openai_chat_chunks(COMPLETION, include_usage=True, chunk_chars=6))
    content: list[str] = []
    arguments_done: list[tuple[str, str]] = []
    async with client.chat.completions.stream(
        model="m", messages=CHAT_USER, stream_options={"include_usage": True}
    ) as stream:
        async for event in stream:
            if event.type == "content.delta" and event.snapshot.startswith("Let"):
                content.append(event.delta)
            elif event.type == "tool_calls.function.arguments.done":
                arguments_done.append((event.name, event.arguments))
        final = await stream.get_final_completion()
    expected = ChatCompletion.model_validate(COMPLETION).model_dump()
    assert without_parsed(final.model_dump()) == expected
    message = COMPLETION["choices"][0]["message"]
    assert len(content) > 1
    assert "".join(content) == message["content"]
    assert arguments_done == [("get_weather", WEATHER_ARGUMENTS), ("no_arguments", "{}")]


def test_sync_chat_stream_helper_reads_the_same_bytes() -> None:
    transport = sse_handler(openai_chat_chunks(COMPLETION, include_usage=True))
    client = openai.OpenAI(
        api_key="x", base_url="http://test/v1", http_client=httpx2.Client(transport=transport)
    )
    with client.chat.completions.stream(
        model="m", messages=CHAT_USER, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    expected = ChatCompletion.model_validate(COMPLETION).model_dump()
    assert without_parsed(final.model_dump()) == expected


@SDK_ABANDONS_ITS_SSE_GENERATORS
async def test_chat_without_include_usage_has_no_usage_as_the_api() -> None:
    body = b"".join(openai_chat_chunks(COMPLETION))
    assert b'"usage"' not in body
    client = openai_client([body])
    async with client.chat.completions.stream(model="m", messages=CHAT_USER) as stream:
        final = await stream.get_final_completion()
    assert final.usage is None
    expected = {**ChatCompletion.model_validate(COMPLETION).model_dump(), "usage": None}
    assert without_parsed(final.model_dump()) == expected


@SDK_ABANDONS_ITS_SSE_GENERATORS
async def test_chat_create_stream_true_yields_the_raw_chunks() -> None:
    client = openai_client(openai_chat_chunks(COMPLETION, include_usage=True, chunk_chars=5))
    stream = await client.chat.completions.create(
        model="m", messages=CHAT_USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    assert {(c.id, c.created, c.model, c.system_fingerprint) for c in chunks} == {
        ("chatcmpl-01", 1_700_000_000, "gpt-4o-mini-2024-07-18", "fp_01")
    }
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.total_tokens == 46
    assert all(chunk.usage is None for chunk in body)
    first = [c.choices[0] for c in body if c.choices[0].index == 0]
    assert first[0].delta.role == "assistant"
    assert first[0].delta.content == ""
    text = "".join(choice.delta.content or "" for choice in first)
    assert text == COMPLETION["choices"][0]["message"]["content"]
    assert [choice.finish_reason for choice in first][-1] == "tool_calls"
    assert all(choice.finish_reason is None for choice in first[:-1])
    calls = [call for choice in first for call in choice.delta.tool_calls or []]
    assert [(c.index, c.id, c.function.name if c.function else None) for c in calls if c.id] == [
        (0, "call_01", "get_weather"),
        (1, "call_02", "no_arguments"),
    ]
    arguments = "".join(c.function.arguments or "" for c in calls if c.index == 0 and c.function)
    assert arguments == WEATHER_ARGUMENTS
    assert len([c for c in calls if c.index == 0]) > 2
    refusal = [c.choices[0] for c in body if c.choices[0].index == 2]
    assert refusal[0].delta.content is None
    assert "".join(choice.delta.refusal or "" for choice in refusal) == "I can't help with that."


def test_chat_stream_ends_with_done() -> None:
    events = parse_sse(b"".join(openai_chat_chunks(COMPLETION)))
    assert events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in events)
    for _, data in events[:-1]:
        assert json.loads(data)["object"] == "chat.completion.chunk"


@SDK_ABANDONS_ITS_SSE_GENERATORS
async def test_chat_function_call_and_audio_round_trip() -> None:
    completion = {
        **COMPLETION,
        "choices": [
            {
                "index": 0,
                "finish_reason": "function_call",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "function_call": {"name": "get_weather", "arguments": WEATHER_ARGUMENTS},
                    "audio": {
                        "id": "audio_01",
                        "data": "UklGRg==",
                        "expires_at": 1_700_003_600,
                        "transcript": "Hello",
                    },
                },
            }
        ],
    }
    client = openai_client(openai_chat_chunks(completion, include_usage=True, chunk_chars=4))
    async with client.chat.completions.stream(
        model="m", messages=CHAT_USER, stream_options={"include_usage": True}
    ) as stream:
        final = await stream.get_final_completion()
    expected = ChatCompletion.model_validate(completion).model_dump()
    assert without_parsed(final.model_dump()) == expected


@SDK_ABANDONS_ITS_SSE_GENERATORS
async def test_chat_length_finish_is_what_the_helper_refuses_as_for_the_api() -> None:
    choice = {**COMPLETION["choices"][1], "index": 0, "finish_reason": "length"}
    completion = {**COMPLETION, "choices": [choice]}
    client = openai_client(openai_chat_chunks(completion))
    stream = await client.chat.completions.create(model="m", messages=CHAT_USER, stream=True)
    finishes = [c.choices[0].finish_reason async for c in stream]
    assert finishes[-1] == "length"
    client = openai_client(openai_chat_chunks(completion))
    async with client.chat.completions.stream(model="m", messages=CHAT_USER) as helper:
        with pytest.raises(openai.LengthFinishReasonError):
            await helper.get_final_completion()


@SDK_ABANDONS_ITS_SSE_GENERATORS
async def test_chat_custom_tool_call_arrives_whole() -> None:
    call = {"id": "call_09", "type": "custom", "custom": {"name": "grammar", "input": "x = 1"}}
    completion = {
        **COMPLETION,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "logprobs": None,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
    }
    client = openai_client(openai_chat_chunks(completion))
    stream = await client.chat.completions.create(model="m", messages=CHAT_USER, stream=True)
    deltas = [c.choices[0].delta async for c in stream]
    calls = [call.to_dict() for delta in deltas for call in delta.tool_calls or []]
    assert calls == [{"index": 0, **call}]


# --------------------------------------------------------------------------------------------
# OpenAI Responses
# --------------------------------------------------------------------------------------------

RESPONSE: dict[str, Any] = {
    "id": "resp_01",
    "object": "response",
    "created_at": 1_700_000_000,
    "completed_at": 1_700_000_005,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": "gpt-4o-mini-2024-07-18",
    "output": [
        {
            "id": "rs_01",
            "type": "reasoning",
            "summary": [
                {"type": "summary_text", "text": "The user asks about Zürich."},
                {"type": "summary_text", "text": "I should call the tool."},
            ],
            "encrypted_content": None,
        },
        {
            "id": "msg_01",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": "It is sunny in Zürich 😀 today, says the forecast.",
                    "annotations": [
                        {
                            "type": "url_citation",
                            "start_index": 0,
                            "end_index": 8,
                            "title": "Forecast",
                            "url": "https://example.com/forecast",
                        }
                    ],
                    "logprobs": [],
                },
                {"type": "refusal", "refusal": "I won't say more."},
            ],
        },
        {
            "id": "fc_01",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_01",
            "name": "get_weather",
            "arguments": WEATHER_ARGUMENTS,
        },
        {
            "id": "ws_01",
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search", "query": "weather Zürich"},
        },
    ],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": "low", "summary": "auto"},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 30,
    },
    "user": None,
    "metadata": {},
}


async def test_responses_stream_helper_rebuilds_the_response() -> None:
    client = openai_client(openai_response_events(RESPONSE, chunk_chars=6))
    text: list[str] = []
    snapshots: list[str] = []
    async with client.responses.stream(model="m", input="hi") as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                text.append(event.delta)
            elif event.type == "response.function_call_arguments.delta":
                snapshots.append(event.snapshot)
        final = await stream.get_final_response()
    assert without_parsed(final.model_dump()) == Response.model_validate(RESPONSE).model_dump()
    assert final.output_text == RESPONSE["output"][1]["content"][0]["text"]
    assert "".join(text) == final.output_text
    assert len(text) > 1
    assert snapshots[-1] == WEATHER_ARGUMENTS
    assert len(snapshots) > 1
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_01", "get_weather", json.loads(WEATHER_ARGUMENTS))
    ]


async def test_responses_create_stream_true_yields_the_raw_events() -> None:
    client = openai_client(openai_response_events(RESPONSE, chunk_chars=10))
    stream = await client.responses.create(model="m", input="hi", stream=True)
    events = [event async for event in stream]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    created = events[0]
    assert created.type == "response.created"
    assert created.response.status == "in_progress"
    assert created.response.output == []
    assert created.response.usage is None
    # Per item: added, ..., done, in output order; the done item is the whole item.
    items = [
        (e.type, e.output_index, e.item.to_dict())
        for e in events
        if e.type in ("response.output_item.added", "response.output_item.done")
    ]
    assert [(kind, i) for kind, i, _ in items] == [
        (kind, i)
        for i in range(len(RESPONSE["output"]))
        for kind in ("response.output_item.added", "response.output_item.done")
    ]
    assert [item for kind, _, item in items if kind.endswith("done")] == RESPONSE["output"]
    added_message = items[2][2]
    assert added_message["content"] == []
    assert added_message["status"] == "in_progress"
    summaries = [e.text for e in events if e.type == "response.reasoning_summary_text.done"]
    assert summaries == [s["text"] for s in RESPONSE["output"][0]["summary"]]
    refusal = "".join(e.delta for e in events if e.type == "response.refusal.delta")
    assert refusal == "I won't say more."
    annotations = [e for e in events if e.type == "response.output_text.annotation.added"]
    assert [a.annotation_index for a in annotations] == [0]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [(d.item_id, d.output_index, d.arguments) for d in done] == [
        ("fc_01", 2, WEATHER_ARGUMENTS)
    ]


def test_responses_events_are_named_by_their_type() -> None:
    for name, data in parse_sse(b"".join(openai_response_events(RESPONSE))):
        assert json.loads(data)["type"] == name


async def test_an_incomplete_response_ends_with_response_incomplete() -> None:
    response = {
        **RESPONSE,
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": RESPONSE["output"][1:2],
    }
    client = openai_client(openai_response_events(response))
    stream = await client.responses.create(model="m", input="hi", stream=True)
    events = [event async for event in stream]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.model_dump() == Response.model_validate(response).model_dump()
    assert "response.completed" not in [event.type for event in events]
    # As with the API's own stream, the helper has no final response for it.
    client = openai_client(openai_response_events(response))
    async with client.responses.stream(model="m", input="hi") as helper:
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await helper.get_final_response()


# --------------------------------------------------------------------------------------------
# Generated texts and arguments, through the OpenAI helpers
# --------------------------------------------------------------------------------------------


@SDK_ABANDONS_ITS_SSE_GENERATORS
@settings(max_examples=30, deadline=None)
@given(
    st.text(),
    st.dictionaries(st.text(), json_values(), max_size=5),
    st.integers(1, 30),
)
async def test_any_text_and_arguments_round_trip_through_the_openai_helpers(
    text: str, arguments: dict[str, object], chunk_chars: int
) -> None:
    encoded = json.dumps(arguments, ensure_ascii=False)
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": encoded}}
    message = {"role": "assistant", "content": text, "refusal": None, "tool_calls": [call]}
    completion = {
        **COMPLETION,
        "choices": [
            {"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": message}
        ],
    }
    client = openai_client(
        openai_chat_chunks(completion, include_usage=True, chunk_chars=chunk_chars)
    )
    async with client.chat.completions.stream(
        model="m", messages=CHAT_USER, stream_options={"include_usage": True}
    ) as chat:
        final = await chat.get_final_completion()
    expected = ChatCompletion.model_validate(completion).model_dump()
    assert without_parsed(final.model_dump()) == expected

    output = [
        {
            "id": "msg_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "f",
            "arguments": encoded,
        },
    ]
    response = {**RESPONSE, "output": output}
    client = openai_client(openai_response_events(response, chunk_chars=chunk_chars))
    async with client.responses.stream(model="m", input="hi") as responses:
        rebuilt = await responses.get_final_response()
    assert without_parsed(rebuilt.model_dump()) == Response.model_validate(response).model_dump()
    assert rebuilt.output_text == text


# --------------------------------------------------------------------------------------------
# All three
# --------------------------------------------------------------------------------------------

STREAMS: list[tuple[Callable[..., Iterator[bytes]], dict[str, Any]]] = [
    (anthropic_message_events, MESSAGE),
    (openai_chat_chunks, COMPLETION),
    (openai_response_events, RESPONSE),
]


@pytest.mark.parametrize(("events", "result"), STREAMS)
def test_a_bad_chunk_size_is_refused_when_the_stream_is_asked_for(
    events: Callable[..., Iterator[bytes]], result: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="chunk_chars must be at least 1, got 0"):
        events(result, chunk_chars=0)
    with pytest.raises(TypeError, match="chunk_chars must be an int, got float"):
        events(result, chunk_chars=1.5)
    with pytest.raises(TypeError, match="chunk_chars must be an int, got bool"):
        events(result, chunk_chars=True)


@pytest.mark.parametrize(("events", "result"), STREAMS)
def test_the_result_is_read_once_when_the_stream_is_asked_for(
    events: Callable[..., Iterator[bytes]], result: dict[str, Any]
) -> None:
    mine = copy.deepcopy(result)
    before = json.dumps(mine)
    stream = events(mine, chunk_chars=3)
    # The caller may reuse its dict while the stream is being written.
    mine["model"] = "changed"
    mine["id"] = "changed"
    body = b"".join(stream)
    assert b"changed" not in body
    mine["model"], mine["id"] = result["model"], result["id"]
    assert json.dumps(mine) == before
    assert body == b"".join(events(result, chunk_chars=3))
