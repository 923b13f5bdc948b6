"""The adapters' journal codec: a response stored as JSON comes back as the SDK's own type."""

from __future__ import annotations

import json

import anthropic
import openai
from anthropic.types import Message, TextBlock
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from llmfleet.providers.anthropic import AnthropicProvider
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
