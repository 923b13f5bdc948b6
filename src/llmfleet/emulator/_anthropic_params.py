"""Anthropic's Messages API as the emulator reads it: the checks of a request body (alone or
in a batch), the text it echoes, and the token usage of a prompt.

Pure functions of the request, with the real API's error messages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from llmfleet.pricing import TokenUsage
from llmfleet.providers._schema import anthropic_messages

from ._core import ApiError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CHARS_PER_TOKEN",
    "Item",
    "Usage",
    "check_model",
    "invalid",
    "last_user_text",
    "model_not_found",
    "prompt_blocks",
    "tokens",
    "validate_batch_body",
    "validate_params",
]

_CUSTOM_ID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: How many characters make a token, for every figure the emulator reports.
CHARS_PER_TOKEN: Final = 4


def invalid(message: str) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, "invalid_request_error", message)


@dataclass(slots=True)
class Item:
    """One request of a batch: its id, its params, and its result once the batch ended."""

    custom_id: str
    params: dict[str, Any]
    result: dict[str, Any] | None = None


@dataclass(slots=True)
class Usage:
    """A reply's usage as the API reports it."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int

    def tokens(self) -> TokenUsage:
        return TokenUsage(
            self.input_tokens,
            self.output_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        )


def tokens(chars: int) -> int:
    """The tokens of ``chars`` characters."""
    return math.ceil(chars / CHARS_PER_TOKEN)


def _texts(content: object) -> list[str]:
    """The text of a message's content: a string, or its text blocks (tool results included)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            text = block.get("text")
            if isinstance(text, str):
                out.append(text)
            if block.get("type") == "tool_result":
                out.extend(_texts(block.get("content")))
    return out


def last_user_text(params: Mapping[str, Any]) -> str:
    """The text of the last ``user`` message: what the emulator echoes."""
    for message in reversed(params.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return "\n".join(_texts(message.get("content")))
    return ""


def prompt_blocks(params: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The prompt as (text, has cache_control) pieces, in the order the API caches them."""
    blocks: list[tuple[str, bool]] = []

    def add(content: object) -> None:
        if isinstance(content, str):
            blocks.append((content, False))
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict):
                    text = "".join(_texts([block]))
                    blocks.append((text, block.get("cache_control") is not None))

    add(params.get("system"))
    for message in params.get("messages") or []:
        if isinstance(message, dict):
            add(message.get("content"))
    return blocks


def check_model(model: str, models: frozenset[str] | None) -> None:
    """Refuse a model the API does not serve, as it does.

    :param models: the served ids (``None``: any).
    :raises ApiError: 404 ``not_found_error`` (``model: <id>``).
    """
    if models is not None and model not in models:
        raise model_not_found(model)


def model_not_found(model: str) -> ApiError:
    """The API's answer to a model it does not serve."""
    return ApiError(404, "not_found_error", f"model: {model}")


def validate_params(params: object, prefix: str = "", *, in_batch: bool = False) -> None:
    """Check one Messages request body like the API does.

    :param prefix: where the body sits in the request (``requests.3.params.``), for messages.
    :raises ApiError: 400 ``invalid_request_error`` naming the first problem.
    """
    if not isinstance(params, dict):
        raise invalid(f"{prefix.rstrip('.') or 'body'}: Input should be a valid dictionary")
    model = params.get("model")
    if "model" not in params:
        raise invalid(f"{prefix}model: Field required")
    if not isinstance(model, str) or not model:
        raise invalid(f"{prefix}model: Input should be a valid string")
    if "max_tokens" not in params:
        raise invalid(f"{prefix}max_tokens: Field required")
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise invalid(f"{prefix}max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise invalid(f"{prefix}max_tokens: Input should be greater than or equal to 1")
    if "messages" not in params:
        raise invalid(f"{prefix}messages: Field required")
    messages = params["messages"]
    if not isinstance(messages, list):
        raise invalid(f"{prefix}messages: Input should be a valid list")
    if not messages:
        raise invalid(f"{prefix}messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"{prefix}messages.{i}"
        if not isinstance(message, dict):
            raise invalid(f"{where}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise invalid(f"{where}.content: Field required")
        if not isinstance(message["content"], (str, list)):
            raise invalid(f"{where}.content: Input should be a valid string or list")
    system = params.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise invalid(f"{prefix}system: Input should be a valid string or list")
    if params.get("stream") is True:
        if in_batch:
            raise invalid(f"{prefix}stream: Stream mode is not supported in Message Batches")
        raise invalid("stream: the llmfleet emulator does not stream responses; send stream=false")
    # Last, as the API lists them after the fields' own errors. The names are the installed
    # SDK's (llmfleet/providers/_schema.py): the SDK is generated from the API's schema.
    known = anthropic_messages().known
    for key in params:
        if key not in known:
            raise invalid(f"{prefix}{key}: Extra inputs are not permitted")


def validate_batch_body(body: object, max_requests: int) -> list[Item]:
    """Check a batch-create body like the API does, and return its items.

    :raises ApiError: 400 ``invalid_request_error`` naming the first problem.
    """
    if not isinstance(body, dict):
        raise invalid("body: Input should be a valid dictionary")
    if "requests" not in body:
        raise invalid("requests: Field required")
    requests = body["requests"]
    if not isinstance(requests, list):
        raise invalid("requests: Input should be a valid list")
    if not requests:
        raise invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise invalid(
            f"requests: List should have at most {max_requests} items after validation, "
            f"not {len(requests)}"
        )
    items: list[Item] = []
    seen: set[str] = set()
    for i, request in enumerate(requests):
        where = f"requests.{i}"
        if not isinstance(request, dict):
            raise invalid(f"{where}: Input should be a valid dictionary")
        if "custom_id" not in request:
            raise invalid(f"{where}.custom_id: Field required")
        custom_id = request["custom_id"]
        if not isinstance(custom_id, str):
            raise invalid(f"{where}.custom_id: Input should be a valid string")
        if not custom_id:
            raise invalid(f"{where}.custom_id: String should have at least 1 character")
        if len(custom_id) > 64:
            raise invalid(f"{where}.custom_id: String should have at most 64 characters")
        if not _CUSTOM_ID.match(custom_id):
            raise invalid(f"{where}.custom_id: String should match pattern '{_CUSTOM_ID.pattern}'")
        if custom_id in seen:
            raise invalid(
                f"{where}.custom_id: Duplicate custom_id {custom_id!r}: "
                "custom_id values must be unique within a batch"
            )
        seen.add(custom_id)
        if "params" not in request:
            raise invalid(f"{where}.params: Field required")
        validate_params(request["params"], f"{where}.params.", in_batch=True)
        items.append(Item(custom_id, request["params"]))
    return items
