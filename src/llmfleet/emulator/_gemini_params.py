"""Google's Gemini API (``generateContent``) as the emulator reads it: the checks of a request
body, the reply and its usage, and the error body.

Pure functions of the request, with Google's error shape
(``{"error": {"code", "message", "status"}}``). Bodies are the REST API's own (camelCase:
``contents``, ``generationConfig``, ``systemInstruction``), as ``google-genai`` sends them.
"""

from __future__ import annotations

import math
from typing import Any, Final

from llmfleet.pricing import TokenUsage

from ._core import ApiError

__all__ = [
    "GOOGLE_STATUS",
    "error",
    "error_body",
    "invalid",
    "last_user_text",
    "model_id",
    "reply",
    "validate",
]

_CHARS_PER_TOKEN: Final = 4

#: The canonical status Google's APIs pair with each HTTP code (others: ``UNKNOWN``).
GOOGLE_STATUS: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# The fields of a GenerateContentRequest (the REST API's names); `model` appears inside a
# batch's inlined requests.
_KNOWN: Final = frozenset(
    {
        "model",
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "safetySettings",
        "generationConfig",
        "cachedContent",
        "labels",
        "serviceTier",
    }
)
_ROLES: Final = ("user", "model", "function", "tool")


def error(status: int, message: str) -> ApiError:
    """An error in Google's shape: the status names itself (``NOT_FOUND``)."""
    return ApiError(status, GOOGLE_STATUS.get(status, "UNKNOWN"), message)


def invalid(message: str) -> ApiError:
    """A 400 ``INVALID_ARGUMENT``."""
    return error(400, message)


def error_body(exc: ApiError) -> dict[str, Any]:
    """Google's error body: ``{"error": {"code", "message", "status"}}``. The shared wire
    code's errors (bad JSON, too large) carry another vendor's type: their status is the one
    Google pairs with the code."""
    status = exc.error_type
    if not status.isupper():
        status = GOOGLE_STATUS.get(exc.status, "UNKNOWN")
    return {"error": {"code": exc.status, "message": exc.message, "status": status}}


def model_id(name: str) -> str:
    """``models/gemini-2.5-flash`` → ``gemini-2.5-flash``."""
    return name.removeprefix("models/")


def _texts(content: object) -> list[str]:
    if not isinstance(content, dict):
        return []
    parts = content.get("parts")
    if not isinstance(parts, list):
        return []
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last ``user`` content: what the emulator echoes."""
    contents = body.get("contents")
    if not isinstance(contents, list):
        return ""
    for content in reversed(contents):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return "\n".join(_texts(content))
    return ""


def validate(body: object, where: str = "") -> dict[str, Any]:
    """Check one ``GenerateContentRequest`` body as the API would; return it.

    :param where: the path of the body inside a larger one (a batch's inlined request), put
        in front of the field a message names.
    :raises ApiError: 400 ``INVALID_ARGUMENT`` naming the first problem.
    """
    if not isinstance(body, dict):
        raise invalid(f"Invalid JSON payload received. {where or 'body'}: expected an object.")
    for key in body:
        if key not in _KNOWN:
            raise invalid(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                "Cannot find field."
            )
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid(f"* GenerateContentRequest.{where}contents: contents is not specified")
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise invalid(f"* GenerateContentRequest.{where}contents[{i}]: expected an object")
        role = content.get("role", "user")
        if role not in _ROLES:
            raise invalid(
                f"* GenerateContentRequest.{where}contents[{i}].role: Please use a valid role: "
                + ", ".join(_ROLES)
            )
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise invalid(
                f"* GenerateContentRequest.{where}contents[{i}].parts: contents.parts must not "
                "be empty."
            )
    config = body.get("generationConfig")
    if config is not None:
        if not isinstance(config, dict):
            raise invalid(f"* GenerateContentRequest.{where}generationConfig: expected an object")
        limit = config.get("maxOutputTokens")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise invalid(
                f"* GenerateContentRequest.{where}generationConfig.max_output_tokens: "
                "must be a positive integer"
            )
    return body


def _tokens(chars: int) -> int:
    return math.ceil(chars / _CHARS_PER_TOKEN)


def reply(model: str, body: dict[str, Any], response_id: str) -> tuple[dict[str, Any], TokenUsage]:
    """The ``GenerateContentResponse`` to a valid request, and its usage."""
    text = last_user_text(body)
    config = body.get("generationConfig") or {}
    limit = config.get("maxOutputTokens")
    truncated = isinstance(limit, int) and len(text) > limit * _CHARS_PER_TOKEN
    if truncated:
        assert isinstance(limit, int)
        text = text[: limit * _CHARS_PER_TOKEN]
    chars = sum(len(t) for c in body.get("contents") or [] for t in _texts(c))
    chars += sum(len(t) for t in _texts(body.get("systemInstruction")))
    prompt = max(1, _tokens(chars))
    output = max(1, _tokens(len(text)))
    answer = {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "MAX_TOKENS" if truncated else "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt + output,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        },
        "modelVersion": model_id(model),
        "responseId": response_id,
    }
    return answer, TokenUsage(input_tokens=prompt, output_tokens=output)
