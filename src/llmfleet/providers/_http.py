"""What the SDKs' HTTP errors mean to the dispatcher: shared by the adapters, whose SDKs
(anthropic, openai) raise the same shapes of error over the same HTTP library."""

from __future__ import annotations

import email.utils
import json
import time
from typing import TYPE_CHECKING

import httpx2

from ._base import ErrorInfo, ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["classify_http", "never_connected", "retry_after"]


def classify_http(
    exc: BaseException,
    *,
    connection: type[BaseException],
    status: type[BaseException],
    base: type[BaseException],
    status_of: Callable[[BaseException], tuple[int, httpx2.Response]],
) -> ErrorInfo | None:
    """Classify an SDK exception.

    :param connection: the SDK's connection error class (its timeout error derives from it).
    :param status: the SDK's HTTP status error class.
    :param base: the SDK's base error class (anything else of it is fatal).
    :param status_of: the status code and response of a ``status`` error.
    """
    if isinstance(exc, connection | httpx2.TransportError):
        return ErrorInfo(ErrorKind.CONNECTION, unreachable=never_connected(exc))
    if isinstance(exc, json.JSONDecodeError):
        # A results stream or file cut in the middle of a line.
        return ErrorInfo(ErrorKind.CONNECTION)
    if isinstance(exc, status):
        code, response = status_of(exc)
        if code == 429:
            return ErrorInfo(ErrorKind.RATE_LIMITED, retry_after(response), code)
        if code == 404:
            return ErrorInfo(ErrorKind.NOT_FOUND, status=code)
        if code >= 500 or code in (408, 409):
            return ErrorInfo(ErrorKind.SERVER, retry_after(response), code)
        return ErrorInfo(ErrorKind.FATAL, status=code)
    if isinstance(exc, base):
        return ErrorInfo(ErrorKind.FATAL)
    return None


def never_connected(exc: BaseException) -> bool:
    """Whether ``exc`` (an SDK's connection error, or the HTTP library's own) comes of a
    connection that was never made: refused, or its host name not resolved. Such a request
    was not sent, so nothing can have acted on it (a connect *timeout* is not counted: the
    server may be slow rather than absent)."""
    seen: set[int] = set()
    error: BaseException | None = exc
    # The SDKs raise their APIConnectionError `from` the HTTP library's error.
    while error is not None and id(error) not in seen:
        if isinstance(error, httpx2.ConnectError):
            return True
        seen.add(id(error))
        error = error.__cause__
    return False


def retry_after(response: httpx2.Response) -> float | None:
    """Seconds the provider asked us to wait (``retry-after-ms``, then ``retry-after`` in
    seconds or as an HTTP date), or ``None``."""
    headers = response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return float(value)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                return None
            return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None
