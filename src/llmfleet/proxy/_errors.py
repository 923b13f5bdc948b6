"""Errors in the provider's own wire shape, and the mapping from llmfleet's typed errors
(docs/design.md §13)."""

from __future__ import annotations

import json
import secrets
from typing import Final

from starlette.responses import Response

from .._decode import encode_status_error
from ..errors import (
    BatchRequestError,
    DeadlineExceededError,
    FleetClosedError,
    FleetError,
    FleetUsageError,
    UnbatchableRequestError,
)

__all__ = ["error_response", "fleet_error_response", "request_id", "request_id_header"]

# Anthropic's error types and their statuses (reference: the Messages API's errors page).
_ANTHROPIC_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
# The OpenAI type each status maps to, as the API says it.
_OPENAI_TYPE: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    413: "invalid_request_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


def request_id(provider: str) -> str:
    """A fresh request id (both providers' start with ``req_``)."""
    return "req_" + secrets.token_hex(12)


def request_id_header(provider: str) -> str:
    """The response header that carries the request id."""
    return "request-id" if provider == "anthropic" else "x-request-id"


def error_response(
    provider: str,
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    code: str | None = None,
    retry: bool = True,
) -> Response:
    """The provider's error response: its JSON body, status and request-id header.

    :param retry: ``False`` adds ``x-should-retry: false`` (the SDKs then do not retry).
    """
    rid = request_id(provider)
    if provider == "anthropic":
        kind = error_type or next(
            (t for t, s in _ANTHROPIC_STATUS.items() if s == status), "api_error"
        )
        body: dict[str, object] = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": rid,
        }
    else:
        kind = error_type or _OPENAI_TYPE.get(status, "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    headers = {request_id_header(provider): rid}
    if not retry:
        headers["x-should-retry"] = "false"
    return Response(
        json.dumps(body).encode(),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def fleet_error_response(provider: str, exc: Exception) -> Response:
    """What an HTTP client sees for a fleet call that raised ``exc`` (docs/design.md §13)."""
    answer = encode_status_error(exc)
    if answer is not None:  # the provider's own answer on the direct route: as it came
        status, headers, content = answer
        return Response(content, status_code=status, headers=dict(headers))
    if isinstance(exc, BatchRequestError):
        # The provider answered this item with an error: its own type, its own status.
        status = _ANTHROPIC_STATUS.get(exc.error_type, 400)
        return error_response(
            provider, status, str(exc), error_type=exc.error_type, code=exc.error_type, retry=False
        )
    if isinstance(exc, FleetClosedError):
        return error_response(provider, 503, f"the proxy is shutting down: {exc}")
    if isinstance(exc, DeadlineExceededError):
        return error_response(provider, 504, str(exc), retry=False)
    if isinstance(exc, (UnbatchableRequestError, FleetUsageError, TypeError, ValueError)):
        return error_response(provider, 400, str(exc), retry=False)
    if isinstance(exc, FleetError):
        # A refused, expired, canceled or lost batch: a gateway's failure, not the caller's.
        # Not retried by the SDK: the proxy's fleet already retried what it could.
        return error_response(provider, 502, f"{type(exc).__name__}: {exc}", retry=False)
    # The direct route could not reach the provider (a connection error).
    return error_response(provider, 502, f"the upstream could not be reached: {type(exc).__name__}")
