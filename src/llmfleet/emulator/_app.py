"""The ASGI app: routes, authentication, error bodies and the injected faults on the wire."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._config import EXTRA_LINE_CUSTOM_ID
from ._state import ApiError, State, validate_params

if TYPE_CHECKING:
    import asyncio

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

    from ._config import Fault

__all__ = ["TRANSPORTS", "build_app"]

#: The open connections of every running emulator, keyed by (server, client) address: uvicorn
#: puts the same tuples in each request's scope. The ASGI interface has no way to close a
#: connection without answering (an app that raises makes uvicorn answer 500), so the "drop"
#: faults look the transport up here and close it. Filled by ``_server._Protocol``.
TRANSPORTS: Final[dict[tuple[object, object], asyncio.Transport]] = {}

# How long a dropped request waits for uvicorn to notice its connection is gone.
_DISCONNECT_WAIT_S: Final = 5.0

_Handler = Callable[["Request", Any, "Fault | None"], Awaitable[Response]]


def _error_response(error: ApiError) -> Response:
    return JSONResponse(
        {"type": "error", "error": {"type": error.error_type, "message": error.message}},
        status_code=error.status,
        headers=error.headers,
    )


def _fault_error(fault: Fault) -> ApiError:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        value = fault.retry_after
        headers["retry-after"] = str(int(value)) if float(value).is_integer() else str(value)
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.should_retry is not None:
        headers["x-should-retry"] = "true" if fault.should_retry else "false"
    message = fault.message or f"{fault.resolved_error_type} (injected by the llmfleet emulator)."
    return ApiError(fault.status, fault.resolved_error_type, message, headers)


def _authenticate(request: Request) -> None:
    key = request.headers.get("x-api-key", "")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if key or (scheme.lower() == "bearer" and token.strip()):
        return
    raise ApiError(
        401,
        "authentication_error",
        "missing API key: send an x-api-key header or Authorization: Bearer <key>",
    )


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


#: What a request whose client went away is answered with (nobody reads it).
CLIENT_GONE: Final = 499


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


async def _drop(request: Request) -> Response:
    await _close_connection(request.scope, request.receive)
    return Response(status_code=500)  # Never sent: the connection is gone.


class _JSONLResponse(Response):
    """Streams JSONL in fixed-size chunks (which split lines wherever they fall); with ``cut``,
    closes the connection after the first ``cut`` bytes, in the middle of the chunked body."""

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


def build_app(state: State) -> Starlette:
    """The emulator's ASGI app over ``state``."""

    def endpoint(
        name: str, handler: _Handler, *, needs_body: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            limit = (
                state.config.max_batch_bytes
                if name == "batch_create"
                else state.config.max_message_bytes
            )
            read = await _read_body(request, limit)
            if read is None:
                return Response(status_code=CLIENT_GONE)
            raw, too_large = read
            body = _decode(raw)
            fault = state.arrive(
                name,
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers=dict(request.headers),
                body=body,
            )
            if fault is not None and fault.kind == "drop":
                return await _drop(request)
            if fault is not None and fault.kind == "status":
                raise _fault_error(fault)
            if fault is not None and fault.kind == "slow":
                await anyio.sleep(fault.delay_s)
            _authenticate(request)
            if too_large:
                raise ApiError(
                    413, "request_too_large", "Request exceeds the maximum allowed number of bytes."
                )
            if needs_body and body is None:
                raise ApiError(400, "invalid_request_error", "The request body is not valid JSON.")
            return await handler(request, body, fault)

        async def wrapped(request: Request) -> Response:
            request_id = state.request_id()
            try:
                response = await run(request)
            except ApiError as error:
                response = _error_response(error)
            # Every answer carries one, as the real API's do (the SDK reads it into errors).
            response.headers["request-id"] = request_id
            return response

        return wrapped

    async def messages(request: Request, body: Any, fault: Fault | None) -> Response:
        validate_params(body)
        latency = state.direct_latency()
        if latency > 0:
            await anyio.sleep(latency)
        return JSONResponse(state.create_message(body))

    async def batch_create(request: Request, body: Any, fault: Fault | None) -> Response:
        batch = state.create_batch(body)
        if fault is not None and fault.kind == "accept_then_drop":
            return await _drop(request)
        if fault is not None and fault.kind == "accept_then_slow":
            await anyio.sleep(fault.delay_s)
        return JSONResponse(batch)

    def _not_found(batch_id: str) -> ApiError:
        return ApiError(404, "not_found_error", f"No batch found with id {batch_id!r}.")

    async def batch_retrieve(request: Request, body: Any, fault: Fault | None) -> Response:
        batch_id = request.path_params["batch_id"]
        if fault is not None and fault.kind == "transient_404":
            raise _not_found(batch_id)
        return JSONResponse(state.retrieve(batch_id))

    async def batch_list(request: Request, body: Any, fault: Fault | None) -> Response:
        params = request.query_params
        raw_limit = params.get("limit", "20")
        try:
            limit = int(raw_limit)
        except ValueError:
            raise ApiError(
                400, "invalid_request_error", "limit: Input should be a valid integer"
            ) from None
        if not 1 <= limit <= 1000:
            raise ApiError(
                400,
                "invalid_request_error",
                "limit: Input should be greater than or equal to 1 and less than or equal to 1000",
            )
        after_id, before_id = params.get("after_id"), params.get("before_id")
        if after_id is not None and before_id is not None:
            raise ApiError(
                400, "invalid_request_error", "Only one of after_id and before_id may be given."
            )
        return JSONResponse(state.list_batches(limit, after_id, before_id))

    async def batch_cancel(request: Request, body: Any, fault: Fault | None) -> Response:
        return JSONResponse(state.cancel(request.path_params["batch_id"]))

    async def batch_delete(request: Request, body: Any, fault: Fault | None) -> Response:
        return JSONResponse(state.delete(request.path_params["batch_id"]))

    async def batch_results(request: Request, body: Any, fault: Fault | None) -> Response:
        batch_id = request.path_params["batch_id"]
        if fault is not None and fault.kind == "transient_404":
            state.check_exists(batch_id)
            raise _not_found(batch_id)
        lines = state.results(
            batch_id,
            drop_first=fault is not None and fault.kind == "drop_line",
            extra_id=EXTRA_LINE_CUSTOM_ID
            if fault is not None and fault.kind == "extra_line"
            else None,
        )
        cut = None
        if fault is not None and fault.kind == "cut_stream":
            cut = sum(len(line) for line in lines[: len(lines) // 2])
        return _JSONLResponse(
            lines,
            chunk_bytes=state.config.results_chunk_bytes,
            cut=cut,
            line_delay=state.line_delay(),
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown paths and wrong methods answer in the API's error shape too.
        assert isinstance(exc, HTTPException)
        state.arrive(
            None,
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=dict(request.headers),
            body=None,
        )
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        response = _error_response(ApiError(exc.status_code, error_type, str(exc.detail)))
        response.headers["request-id"] = state.request_id()
        return response

    batch = "/v1/messages/batches/{batch_id}"
    routes = [
        Route("/v1/messages", endpoint("messages", messages, needs_body=True), methods=["POST"]),
        Route(
            "/v1/messages/batches",
            endpoint("batch_create", batch_create, needs_body=True),
            methods=["POST"],
        ),
        Route("/v1/messages/batches", endpoint("batch_list", batch_list), methods=["GET"]),
        Route(batch, endpoint("batch_retrieve", batch_retrieve), methods=["GET"]),
        Route(batch, endpoint("batch_delete", batch_delete), methods=["DELETE"]),
        Route(f"{batch}/cancel", endpoint("batch_cancel", batch_cancel), methods=["POST"]),
        Route(f"{batch}/results", endpoint("batch_results", batch_results), methods=["GET"]),
    ]
    # The OpenAI routes (imported here: _openai imports this module's helpers).
    from ._openai import openai_routes

    routes.extend(openai_routes(state))
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
