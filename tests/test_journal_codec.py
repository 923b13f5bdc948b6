"""The adapters' journal codec: a response stored as JSON comes back as the SDK's own type."""

from __future__ import annotations

import json
from types import SimpleNamespace

import anthropic
import openai
import pytest
from anthropic.types import Message, TextBlock
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from llmfleet.providers.anthropic import AnthropicProvider, raw_result
from llmfleet.providers.openai import OpenAIProvider

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "hello", "citations": None}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "hi"},
        }
    ],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
}
RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1.0,
    "model": "gpt-4o-mini",
    "status": "completed",
    "output": [
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "yo", "annotations": []}],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}


def test_anthropic_round_trip() -> None:
    provider = AnthropicProvider(anthropic.AsyncAnthropic(api_key="k"))
    message = Message.model_validate(MESSAGE)
    data = json.loads(json.dumps(provider.dump_value(message)))  # what the store keeps
    back = provider.load_value(data)
    assert type(back) is Message
    assert back == message
    assert isinstance(back.content[0], TextBlock)
    assert provider.tokens_of(back) == provider.tokens_of(message)


def test_openai_round_trip_of_both_endpoints() -> None:
    provider = OpenAIProvider(openai.AsyncOpenAI(api_key="k"))
    completion = ChatCompletion.model_validate(COMPLETION)
    back = provider.load_value(json.loads(json.dumps(provider.dump_value(completion))))
    assert type(back) is ChatCompletion
    assert back.choices[0].message.content == "hi"
    assert provider.tokens_of(back) == provider.tokens_of(completion)
    response = Response.model_validate(RESPONSE)
    again = provider.load_value(json.loads(json.dumps(provider.dump_value(response))))
    assert type(again) is Response
    assert again.output_text == "yo"


def test_anthropic_raw_result_lines_of_every_kind() -> None:
    """``raw_results``' decoding of one results line: the message as the API sent it, or
    the error's words, or the bare kind; a line that is not a result says so."""
    succeeded = {"custom_id": "a", "result": {"type": "succeeded", "message": MESSAGE}}
    custom_id, result = raw_result(json.dumps(succeeded).encode())
    assert (custom_id, result.kind, result.as_json) == ("a", "succeeded", True)
    assert result.value == MESSAGE
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    errored = {"custom_id": "b", "result": {"type": "errored", "error": error}}
    _, result = raw_result(json.dumps(errored).encode())
    assert (result.kind, result.error_type) == ("errored", "overloaded_error")
    assert result.message == "busy"
    for kind in ("expired", "canceled"):
        _, result = raw_result(json.dumps({"custom_id": "c", "result": {"type": kind}}).encode())
        assert (result.kind, result.value, result.as_json) == (kind, None, False)
    for bad in (b"{oops", b'{"custom_id": "d"}', b"[1]", b'{"custom_id": "e", "result": {}}'):
        with pytest.raises(ValueError, match="not a result"):
            raw_result(bad)
    with pytest.raises(ValueError, match="unknown type 'later'"):
        raw_result(json.dumps({"custom_id": "f", "result": {"type": "later"}}).encode())


def test_anthropic_tokens_of_a_message_and_of_its_json_agree() -> None:
    provider = AnthropicProvider(anthropic.AsyncAnthropic(api_key="k"))
    cached = MESSAGE | {
        "usage": {
            "input_tokens": 3,
            "output_tokens": 1,
            "cache_creation_input_tokens": 7,
            "cache_read_input_tokens": 11,
        }
    }
    for data in (MESSAGE, cached):
        assert provider.tokens_of(data) == provider.tokens_of(Message.model_validate(data))
    assert provider.tokens_of(cached) == (3, 1, 7, 11)
    assert provider.tokens_of({"id": "msg_2"}) is None


def test_anthropic_tokens_of_a_value_with_no_usage_or_no_cache_fields() -> None:
    # Anything but a Message: no usage at all, a usage of None, a usage without the cache
    # fields (an older SDK's, or a hand-built stand-in).
    provider = AnthropicProvider(anthropic.AsyncAnthropic(api_key="k"))
    assert provider.tokens_of(object()) is None
    assert provider.tokens_of(SimpleNamespace(usage=None)) is None
    bare = SimpleNamespace(usage=SimpleNamespace(input_tokens=3, output_tokens=None))
    assert provider.tokens_of(bare) == (3, 0, 0, 0)
