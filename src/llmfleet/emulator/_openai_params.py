"""OpenAI's Chat Completions and Responses APIs as the emulator reads them: the checks of a
request body, the reply and its usage, the error body, and the parsing of a batch input file.

Pure functions of the request, with OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from llmfleet.pricing import TokenUsage
from llmfleet.providers import _schema

from ._core import ApiError

if TYPE_CHECKING:
    from ._ledger import ResultType

__all__ = [
    "BATCH_ENDPOINTS",
    "Item",
    "error",
    "error_body",
    "invalid",
    "known_params",
    "last_user_text",
    "model_not_found",
    "parse_input",
    "reply",
    "validate",
]

#: The endpoints a batch may target here (the real API has more).
BATCH_ENDPOINTS: Final = ("/v1/chat/completions", "/v1/responses")
MAX_BATCH_REQUESTS: Final = 50_000
_CHARS_PER_TOKEN: Final = 4


def error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> ApiError:
    """An error in OpenAI's shape."""
    return ApiError(status, type_, message, param=param, code=code)


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return error(400, message, param=param, code=code)


def error_body(exc: ApiError) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": exc.message,
            "type": exc.error_type,
            "param": exc.param,
            "code": exc.code,
        }
    }


@dataclass(slots=True)
class Item:
    """One request of a batch's input file; its output or error line once the batch ended."""

    custom_id: str
    body: dict[str, Any]
    line: dict[str, Any] | None = None
    result: ResultType | None = None


def _tokens(chars: int) -> int:
    return math.ceil(chars / _CHARS_PER_TOKEN)


def _texts(content: object) -> list[str]:
    """The text of a message's content: a string, or its text parts."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        out.extend(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return out


def _messages(params: dict[str, Any]) -> list[dict[str, Any]]:
    """A request's conversation as ``{"role", "content"}`` items, on either endpoint."""
    if "messages" in params:
        return [m for m in params.get("messages") or [] if isinstance(m, dict)]
    raw = params.get("input")
    items: list[dict[str, Any]] = []
    if isinstance(params.get("instructions"), str):
        items.append({"role": "developer", "content": params["instructions"]})
    if isinstance(raw, str):
        items.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        items.extend(m for m in raw if isinstance(m, dict) and "role" in m)
    return items


def last_user_text(params: dict[str, Any]) -> str:
    """The text of the last ``user`` message: what the emulator echoes."""
    for message in reversed(_messages(params)):
        if message.get("role") == "user":
            return "\n".join(_texts(message.get("content")))
    return ""


def _prompt_tokens(params: dict[str, Any]) -> int:
    chars = sum(len(t) for m in _messages(params) for t in _texts(m.get("content")))
    return max(1, _tokens(chars))


_CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")


@functools.cache
def known_params(endpoint: str) -> frozenset[str] | None:
    """The body parameters an endpoint takes, as the installed ``openai`` SDK types them (it is
    generated from the API's schema; llmfleet/providers/_schema.py), or ``None`` (any) when
    that SDK is not installed."""
    try:
        schema = (
            _schema.openai_chat()
            if endpoint == "/v1/chat/completions"
            else _schema.openai_responses()
        )
    except ImportError:
        return None
    return schema.known


def model_not_found(model: str) -> ApiError:
    """OpenAI's answer to a model it does not serve."""
    return error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def validate(
    endpoint: str, body: object, prefix: str = "", *, models: frozenset[str] | None = None
) -> dict[str, Any]:
    """Check one request body as the endpoint would; return it.

    :param models: the model ids served (``None``: any).
    :raises ApiError: 400 naming the first problem; 404 ``model_not_found`` for a model not
        in ``models``.
    """
    if not isinstance(body, dict):
        raise invalid(f"{prefix or 'body'}: expected an object", prefix or None)
    known = known_params(endpoint)
    if known is not None:
        for key in body:
            if key not in known:
                raise invalid(f"Unrecognized request argument supplied: {key}", f"{prefix}{key}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid(
            "you must provide a model parameter", f"{prefix}model", "missing_required_parameter"
        )
    if body.get("stream") is True:
        raise invalid("the llmfleet emulator does not stream responses", f"{prefix}stream")
    if endpoint == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise invalid("messages: a non-empty array is required", f"{prefix}messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _CHAT_ROLES:
                raise invalid(f"messages[{i}].role: invalid role", f"{prefix}messages[{i}].role")
        limits: tuple[str, ...] = ("max_completion_tokens", "max_tokens")
    else:
        raw = body.get("input")
        if not isinstance(raw, str | list) or not raw:
            raise invalid("input: a string or a non-empty array is required", f"{prefix}input")
        limits = ("max_output_tokens",)
    for name in limits:
        limit = body.get(name)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise invalid(f"{name}: must be an integer >= 1", f"{prefix}{name}")
    if models is not None and model not in models:
        raise model_not_found(model)
    return body


def reply(
    endpoint: str, params: dict[str, Any], reply_id: str, now: float
) -> tuple[dict[str, Any], TokenUsage]:
    """The response to a valid request, and its usage."""
    text = last_user_text(params)
    model = str(params["model"])
    if endpoint == "/v1/chat/completions":
        limit = params.get("max_completion_tokens", params.get("max_tokens"))
    else:
        limit = params.get("max_output_tokens")
    truncated = isinstance(limit, int) and len(text) > limit * _CHARS_PER_TOKEN
    if truncated:
        assert isinstance(limit, int)
        text = text[: limit * _CHARS_PER_TOKEN]
    prompt = _prompt_tokens(params)
    output = max(1, _tokens(len(text)))
    usage = TokenUsage(input_tokens=prompt, output_tokens=output)
    if endpoint == "/v1/chat/completions":
        body: dict[str, Any] = {
            "id": reply_id,
            "object": "chat.completion",
            "created": int(now),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": output,
                "total_tokens": prompt + output,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": None,
        }
        return body, usage
    body = {
        "id": reply_id,
        "object": "response",
        "created_at": int(now),
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "error": None,
        "model": model,
        "instructions": params.get("instructions"),
        "max_output_tokens": params.get("max_output_tokens"),
        "metadata": params.get("metadata") or {},
        "output": [
            {
                "type": "message",
                "id": "msg_" + reply_id.removeprefix("resp_"),
                "status": "incomplete" if truncated else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": params.get("previous_response_id"),
        "temperature": params.get("temperature", 1.0),
        "top_p": params.get("top_p", 1.0),
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output,
        },
        "user": None,
        "store": True,
    }
    return body, usage


def parse_input(data: bytes, endpoint: str) -> tuple[list[Item], list[dict[str, Any]], str | None]:
    """The requests of an input file, the validation errors that fail the batch, its model."""
    items: list[Item] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()

    def fail(line: int | None, code: str, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "line": line, "message": message, "param": param})

    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        fail(None, "empty_file", "The input file is empty.")
    if len(lines) > MAX_BATCH_REQUESTS:
        fail(
            None,
            "too_many_requests",
            f"A batch may hold at most {MAX_BATCH_REQUESTS} requests, not {len(lines)}.",
        )
    for number, raw in enumerate(lines, start=1):
        try:
            request = json.loads(raw)
        except ValueError:
            fail(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            continue
        if not isinstance(request, dict):
            fail(number, "invalid_json_line", "This line is not a JSON object.")
            continue
        missing = [k for k in ("custom_id", "method", "url", "body") if k not in request]
        if missing:
            fail(
                number,
                "missing_required_parameter",
                f"Missing required parameter: {missing[0]!r}.",
                missing[0],
            )
            continue
        custom_id, body = request["custom_id"], request["body"]
        if not isinstance(custom_id, str) or not custom_id:
            fail(number, "invalid_custom_id", "custom_id must be a non-empty string.", "custom_id")
            continue
        if custom_id in seen:
            fail(
                number,
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is used more than once.",
                "custom_id",
            )
            continue
        seen.add(custom_id)
        if request["method"] != "POST":
            fail(number, "invalid_method", "Only POST is supported.", "method")
        if request["url"] != endpoint:
            fail(
                number,
                "mismatched_endpoint",
                f"The url {request['url']!r} does not match the batch's endpoint {endpoint!r}.",
                "url",
            )
        if not isinstance(body, dict):
            fail(number, "invalid_body", "body must be a JSON object.", "body")
            continue
        model = body.get("model")
        if not isinstance(model, str) or not model:
            fail(
                number,
                "missing_required_parameter",
                "Missing required parameter: 'body.model'.",
                "body.model",
            )
        else:
            models.add(model)
        items.append(Item(custom_id, body))
    if len(models) > 1:
        fail(
            None,
            "mismatched_model",
            f"All requests in a batch must use the same model, found {sorted(models)}.",
            "body.model",
        )
    return items, errors, (next(iter(models)) if len(models) == 1 else None)
