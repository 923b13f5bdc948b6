"""The emulator on the wire, for every vendor: reading bodies, error bodies, the injected faults,
streamed JSONL, closing a connection without answering, and the one endpoint wrapper.

A vendor describes how its API differs on the wire in a :class:`Dialect` (its error body, its
request-id header, its error types) and wraps each of its handlers with :func:`endpoint`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

import anyio
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from ._config import draw
from ._core import ApiError

if TYPE_CHECKING:
    import asyncio

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from ._config import EmulatorConfig, Fault
    from ._core import Core

__all__ = [
    "CLIENT_GONE",
    "TRANSPORTS",
    "Call",
    "Dialect",
    "JSONLResponse",
    "api_key_or_bearer",
    "created",
    "drop",
    "endpoint",
    "jsonl",
]

#: The open connections of every running emulator, keyed by (server, client) address: uvicorn
#: puts the same tuples in each request's scope. The ASGI interface has no way to close a
#: connection without answering (an app that raises makes uvicorn answer 500), so the "drop"
#: faults look the transport up here and close it. Filled by ``_server._Protocol``.
TRANSPORTS: Final[dict[tuple[object, object], asyncio.Transport]] = {}

#: What a request whose client went away is answered with (nobody reads it).
CLIENT_GONE: Final = 499

# How long a dropped request waits for uvicorn to notice its connection is gone.
_DISCONNECT_WAIT_S: Final = 5.0

_UNAUTHENTICATED: Final = "missing API key: send an x-api-key header or Authorization: Bearer <key>"
_TOO_LARGE: Final = "Request exceeds the maximum allowed number of bytes."


def api_key_or_bearer(request: Request) -> bool:
    """An ``x-api-key`` header or ``Authorization: Bearer <key>`` (any key will do)."""
    key = request.headers.get("x-api-key", "")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return bool(key) or (scheme.lower() == "bearer" and bool(token.strip()))


@final
@dataclass(frozen=True, slots=True)
class Dialect:
    """How one vendor's API differs on the wire."""

    #: The error body of an :class:`ApiError`.
    error_body: Callable[[ApiError], dict[str, Any]]
    #: The header every answer carries its request id in.
    request_id_header: str
    #: The ``error.type`` a ``"status"`` fault answers with.
    fault_type: Callable[[Fault], str]
    #: The error of a request without credentials: its type and code.
    unauthenticated: tuple[str, str | None]
    #: The ``error.type`` of a body over the endpoint's limit (413).
    too_large_type: str
    #: The message of a body that is not JSON where JSON is needed (400).
    bad_json: str
    #: Whether a request carries credentials (the emulator checks no more than that).
    authenticated: Callable[[Request], bool] = api_key_or_bearer
    unauthenticated_message: str = _UNAUTHENTICATED
    #: The status of a request without credentials (AWS: 403).
    unauthenticated_status: int = 401
    #: Headers every error answer carries besides the error's own (AWS: the error code in
    #: ``x-amzn-ErrorType``); ``None``: none.
    error_headers: Callable[[ApiError], dict[str, str]] | None = None

    def respond(self, error: ApiError) -> Response:
        """The answer to ``error``, in this dialect."""
        headers = error.headers
        if self.error_headers is not None:
            headers = {**headers, **self.error_headers(error)}
        return JSONResponse(self.error_body(error), status_code=error.status, headers=headers)


@final
@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets besides the request: the body, raw and decoded, and the fault the
    request triggered (``None``: none)."""

    raw: bytes
    #: The decoded JSON body; ``None`` when there was none or it was not JSON.
    body: Any
    fault: Fault | None

    def hit(self, kind: str) -> bool:
        """The request triggered a fault of this kind."""
        return self.fault is not None and self.fault.kind == kind


Handler = Callable[["Request", Call], Awaitable[Response]]


def _fault_error(fault: Fault, dialect: Dialect) -> ApiError:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        value = fault.retry_after
        headers["retry-after"] = str(int(value)) if float(value).is_integer() else str(value)
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.should_retry is not None:
        headers["x-should-retry"] = "true" if fault.should_retry else "false"
    message = fault.message or f"{fault.resolved_error_type} (injected by the llmfleet emulator)."
    return ApiError(fault.status, dialect.fault_type(fault), message, headers)


async def _read_body(request: Request, limit: int) -> tuple[bytes, bool] | None:
    """The body, and whether it exceeded ``limit`` (then it is not read, or not all of it);
    ``None`` when the client went away mid-upload (a timeout, a cancelled caller): nobody is
    left to answer, and it is no server error worth a traceback."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return b"", True
            chunks.append(chunk)
    except ClientDisconnect:
        return None
    return b"".join(chunks), False


def _decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


async def _close_connection(scope: Scope, receive: Receive) -> None:
    """Close the request's connection with no (further) response, and wait until uvicorn has
    seen it go: a response sent after that is discarded, and nothing is logged as an error."""
    transport = TRANSPORTS.get((scope.get("server"), scope.get("client")))
    if transport is None:  # pragma: no cover - the protocol registers every connection
        raise RuntimeError("the emulator cannot find this request's connection to close it")
    # close(), not abort(): data already written (a cut stream's first half) is still flushed.
    transport.close()
    with anyio.move_on_after(_DISCONNECT_WAIT_S):
        while (await receive())["type"] != "http.disconnect":
            pass


def unmatched(core: Core, dialect: Dialect, request: Request, error: ApiError) -> Response:
    """An unknown path or a wrong method: recorded with no endpoint, answered with ``error``
    in the vendor's shape and with a request id, as the API does."""
    core.arrive(
        None,
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        headers=dict(request.headers),
        body=None,
    )
    response = dialect.respond(error)
    response.headers[dialect.request_id_header] = core.request_id()
    return response


async def drop(request: Request) -> Response:
    """Close the connection without answering (the return value is never sent)."""
    await _close_connection(request.scope, request.receive)
    return Response(status_code=500)


async def created(request: Request, call: Call, answer: dict[str, Any]) -> Response:
    """The answer to a create that was made: ``answer``, or none at all under an
    ``"accept_then_drop"`` fault (the case a client cannot tell from a dropped request); under
    an ``"accept_then_slow"`` fault, ``answer`` after the fault's delay (the batch exists
    while the create is still in flight)."""
    if call.hit("accept_then_drop"):
        return await drop(request)
    if call.fault is not None and call.fault.kind == "accept_then_slow":
        await anyio.sleep(call.fault.delay_s)
    return JSONResponse(answer)


class JSONLResponse(Response):
    """Streams JSONL in fixed-size chunks (which split lines wherever they fall); with ``cut``,
    closes the connection after the first ``cut`` bytes, in the middle of the chunked body.
    With ``line_delay``, drips instead: a line at a time, each after the pause it returns."""

    def __init__(
        self,
        lines: list[bytes],
        *,
        chunk_bytes: int,
        cut: int | None,
        line_delay: Callable[[], float] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.body = b"".join(lines)
        self._lines = lines
        self._line_delay = line_delay
        self._chunk_bytes = chunk_bytes
        self._cut = cut
        # No content-length: the body goes out chunked, as the real API streams it.
        self.init_headers({"content-type": "application/binary"})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        end = len(self.body) if self._cut is None else self._cut
        if self._line_delay is not None:
            # Dripping: a line at a time, each after its pause (config.results_line_delay_s).
            sent = 0
            for line in self._lines:
                if sent >= end:
                    break
                await anyio.sleep(self._line_delay())
                part = line[: end - sent]
                await send({"type": "http.response.body", "body": part, "more_body": True})
                sent += len(part)
            end = 0  # all sent
        for start in range(0, end, self._chunk_bytes):
            chunk = self.body[start : min(start + self._chunk_bytes, end)]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self._cut is not None:
            await _close_connection(scope, receive)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def jsonl(lines: list[bytes], config: EmulatorConfig, call: Call) -> JSONLResponse:
    """Stream ``lines``; a ``"cut_stream"`` fault cuts the connection after half of them, and
    ``config.results_line_delay_s`` makes them drip in a line at a time."""
    cut = sum(len(line) for line in lines[: len(lines) // 2]) if call.hit("cut_stream") else None
    return JSONLResponse(
        lines, chunk_bytes=config.results_chunk_bytes, cut=cut, line_delay=_line_delay(config)
    )


def _line_delay(config: EmulatorConfig) -> Callable[[], float] | None:
    """The pause before each line of a results stream, drawn per line (seeded), or ``None``
    when ``config.results_line_delay_s`` is 0 (the stream goes out in chunks)."""
    duration = config.results_line_delay_s
    if not callable(duration) and not duration:
        return None
    rng = random.Random(f"{config.seed}/line-delay")
    return lambda: draw(duration, rng) or 0.0


def endpoint(
    core: Core,
    dialect: Dialect,
    name: str,
    handler: Handler,
    *,
    limit: Callable[[EmulatorConfig], int],
    needs_json: bool = False,
    record_size_only: bool = False,
) -> Callable[[Request], Awaitable[Response]]:
    """The route function of endpoint ``name``: read the body (up to ``limit(config)`` bytes),
    record the request and draw its fault, play the fault, check the credentials, the size
    and (with ``needs_json``) the JSON, then run ``handler``; answer its :class:`ApiError`
    in ``dialect``, and put a request id on every answer, as the real APIs do.

    :param record_size_only: record ``{"bytes": n}`` instead of the body, and decode none
        (an upload).
    """

    async def run(request: Request) -> Response:
        read = await _read_body(request, limit(core.config))
        if read is None:
            return Response(status_code=CLIENT_GONE)
        raw, too_large = read
        body = None if record_size_only else _decode(raw)
        fault = core.arrive(
            name,
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=dict(request.headers),
            body={"bytes": len(raw)} if record_size_only else body,
        )
        call = Call(raw, body, fault)
        if call.hit("drop"):
            return await drop(request)
        if fault is not None and fault.kind == "status":
            raise _fault_error(fault, dialect)
        if fault is not None and fault.kind == "slow":
            await anyio.sleep(fault.delay_s)
        if not dialect.authenticated(request):
            error_type, code = dialect.unauthenticated
            raise ApiError(
                dialect.unauthenticated_status,
                error_type,
                dialect.unauthenticated_message,
                code=code,
            )
        if too_large:
            raise ApiError(413, dialect.too_large_type, _TOO_LARGE)
        if needs_json and body is None:
            raise ApiError(400, "invalid_request_error", dialect.bad_json)
        return await handler(request, call)

    async def wrapped(request: Request) -> Response:
        request_id = core.request_id()
        try:
            response = await run(request)
        except ApiError as error:
            response = dialect.respond(error)
        response.headers[dialect.request_id_header] = request_id
        return response

    return wrapped
