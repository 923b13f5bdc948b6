"""The proxy's ASGI app: the provider's own API in front of one fleet (docs/design.md §13).

Create calls are decoded by the same function as :class:`~llmfleet.FleetTransport`'s
(``llmfleet._decode``) and made through the fleet; every other request goes to the upstream
unchanged but for its credentials.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx2
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .._decode import BUDGET_HEADER, NO_BUDGET, decode_request, encode_value, endpoint_of
from .._transport import _stream_body
from ._errors import error_response, fleet_error_response, request_id, request_id_header
from ._metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.requests import Request

    from .._dispatcher import FleetDispatcher
    from ..broker import BrokeredFleet

__all__ = ["ProxyState", "build_app"]

# Request headers never sent upstream: the client's credentials (the upstream key replaces
# them), the budget, and those that describe this hop.
_DROP_REQUEST: Final = frozenset(
    {"authorization", "x-api-key", "host", "content-length", "connection", BUDGET_HEADER}
)
_DROP_RESPONSE: Final = frozenset({"transfer-encoding", "connection", "keep-alive"})


@dataclass
class ProxyState:
    """What the app serves from: the fleet, the upstream, and the proxy's own settings."""

    provider: str
    fleet: FleetDispatcher[Any] | BrokeredFleet[Any]
    upstream: str
    api_key: str
    tokens: Sequence[str]
    default_budget_ms: float | None
    max_body_bytes: int
    http: httpx2.AsyncClient
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _token_of(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key is not None:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _authorised(state: ProxyState, token: str | None) -> bool:
    if token is None:
        return False
    given = token.encode()
    # Every token compared, in constant time each: the answer's timing says nothing.
    return any([hmac.compare_digest(given, t.encode()) for t in state.tokens])  # noqa: C419 - no short circuit


def build_app(state: ProxyState) -> Starlette:
    """The proxy's app over ``state``."""

    async def healthz(request: Request) -> Response:
        if state.draining:
            return PlainTextResponse("draining\n", status_code=503)
        return PlainTextResponse("ok\n")

    async def metrics(request: Request) -> Response:
        return state.metrics.render(state.fleet.stats)

    async def handle(request: Request) -> Response:
        provider = state.provider
        path = request.url.path
        route = endpoint_of(provider, path) or "passthrough"
        if not _authorised(state, _token_of(request)):
            state.metrics.call(route, "unauthorised")
            message = (
                "invalid proxy token: send one of the proxy's --auth-token values as the API key"
            )
            return error_response(
                provider,
                401,
                message,
                error_type="authentication_error" if provider == "anthropic" else None,
                code="invalid_api_key",
            )
        try:
            body = await _read_body(request, state.max_body_bytes)
        except _TooLarge:
            state.metrics.call(route, "too_large")
            return error_response(
                provider,
                413,
                f"request body larger than the proxy's limit of {state.max_body_bytes} bytes",
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = request.url.query.encode()
        if request.method == "POST" and endpoint_of(provider, path) is not None:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                state.metrics.call(route, "bad_request")
                return error_response(provider, 400, "the request body is not a JSON object")
        try:
            routed = decode_request(provider, request.method, path, query, headers, body)
        except ValueError as exc:
            state.metrics.call(route, "bad_request")
            return error_response(provider, 400, str(exc))
        if routed is None:
            return await _pass(state, request, body, route)
        budget = routed.budget
        if budget is NO_BUDGET:
            budget = state.default_budget_ms
        assert not isinstance(budget, type(NO_BUDGET))
        if routed.stream and (budget is None or budget <= state.fleet.policy.sync_max_latency_ms):
            return await _pass(state, request, body, route)  # streams from the provider itself
        if state.draining:
            state.metrics.call(route, "draining")
            return error_response(
                provider, 503, "the proxy is shutting down: send the call to another replica"
            )
        start = anyio.current_time()
        value: Any = None
        error: Exception | None = None
        left = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                # A client that leaves withdraws its call (docs/design.md §13): the fleet
                # drops a queued call, and a batch whose callers all left is canceled.
                nonlocal left
                while True:
                    message = await request.receive()
                    if message["type"] == "http.disconnect":
                        left = True
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            try:
                value = await state.fleet.submit(latency_budget_ms=budget, **routed.params)
            except Exception as exc:
                error = exc
            tg.cancel_scope.cancel()
        waited = anyio.current_time() - start
        if left:
            state.metrics.call(route, "withdrawn")
            return Response(status_code=499)  # nobody reads it
        if error is not None:
            state.metrics.call(route, "error", waited)
            return fleet_error_response(provider, error)
        state.metrics.call(route, "ok", waited)
        rid = {request_id_header(provider): request_id(provider)}
        if routed.stream:
            return Response(
                _stream_body(routed, value), headers=rid, media_type="text/event-stream"
            )
        return Response(encode_value(value), headers=rid, media_type="application/json")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    )


async def _pass(state: ProxyState, request: Request, body: bytes, route: str) -> Response:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
    if state.provider == "anthropic":
        headers.append(("x-api-key", state.api_key))
    else:
        headers.append(("authorization", f"Bearer {state.api_key}"))
    url = state.upstream + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    upstream = state.http.build_request(request.method, url, headers=headers, content=body)
    try:
        answer = await state.http.send(upstream, stream=True)
    except httpx2.HTTPError as exc:
        state.metrics.call(route, "error")
        return error_response(
            state.provider, 502, f"the upstream could not be reached: {type(exc).__name__}"
        )
    state.metrics.call(route, f"passed_{answer.status_code // 100}xx")
    out = [(k, v) for k, v in answer.headers.items() if k.lower() not in _DROP_RESPONSE]
    response = StreamingResponse(
        answer.aiter_raw(), status_code=answer.status_code, background=BackgroundTask(answer.aclose)
    )
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out]
    return response
