"""Anthropic's routes: ``/v1/messages`` and ``/v1/messages/batches``, in Anthropic's dialect
(``{"type": "error", "error": {"type", "message"}}``, ``request-id``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import anyio
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._anthropic import not_found
from ._anthropic_params import validate_params
from ._config import EXTRA_LINE_CUSTOM_ID
from ._core import ApiError
from ._wire import Dialect, created, endpoint, jsonl

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._config import EmulatorConfig
    from ._state import State
    from ._wire import Call, Handler

__all__ = ["DIALECT", "anthropic_routes"]


def error_body(error: ApiError) -> dict[str, Any]:
    """Anthropic's error body."""
    return {"type": "error", "error": {"type": error.error_type, "message": error.message}}


DIALECT: Final = Dialect(
    error_body=error_body,
    request_id_header="request-id",
    fault_type=lambda fault: fault.resolved_error_type,
    unauthenticated=("authentication_error", None),
    too_large_type="request_too_large",
    bad_json="The request body is not valid JSON.",
)


def _message_limit(config: EmulatorConfig) -> int:
    return config.max_message_bytes


def _batch_limit(config: EmulatorConfig) -> int:
    return config.max_batch_bytes


def anthropic_routes(state: State) -> list[Route]:
    """The Anthropic routes over ``state`` (mounted by ``_app.build_app``)."""
    anthropic = state.anthropic

    def route(
        path: str, method: str, name: str, handler: Handler, *, needs_json: bool = False
    ) -> Route:
        limit = _batch_limit if name == "batch_create" else _message_limit
        wrapped = endpoint(state, DIALECT, name, handler, limit=limit, needs_json=needs_json)
        return Route(path, wrapped, methods=[method])

    async def messages(request: Request, call: Call) -> Response:
        validate_params(call.body)
        latency = anthropic.direct_latency()
        if latency > 0:
            await anyio.sleep(latency)
        return JSONResponse(anthropic.create_message(call.body))

    async def batch_create(request: Request, call: Call) -> Response:
        return await created(request, call, anthropic.create_batch(call.body))

    async def batch_retrieve(request: Request, call: Call) -> Response:
        batch_id = request.path_params["batch_id"]
        if call.hit("transient_404"):
            raise not_found(batch_id)
        return JSONResponse(anthropic.retrieve(batch_id))

    async def batch_list(request: Request, call: Call) -> Response:
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
        return JSONResponse(anthropic.list_batches(limit, after_id, before_id))

    async def batch_cancel(request: Request, call: Call) -> Response:
        return JSONResponse(anthropic.cancel(request.path_params["batch_id"]))

    async def batch_delete(request: Request, call: Call) -> Response:
        return JSONResponse(anthropic.delete(request.path_params["batch_id"]))

    async def batch_results(request: Request, call: Call) -> Response:
        batch_id = request.path_params["batch_id"]
        if call.hit("transient_404"):
            anthropic.check_exists(batch_id)
            raise not_found(batch_id)
        lines = anthropic.results(
            batch_id,
            drop_first=call.hit("drop_line"),
            extra_id=EXTRA_LINE_CUSTOM_ID if call.hit("extra_line") else None,
        )
        return jsonl(lines, state.config, call)

    batches = "/v1/messages/batches"
    batch = f"{batches}/{{batch_id}}"
    return [
        route("/v1/messages", "POST", "messages", messages, needs_json=True),
        route(batches, "POST", "batch_create", batch_create, needs_json=True),
        route(batches, "GET", "batch_list", batch_list),
        route(batch, "GET", "batch_retrieve", batch_retrieve),
        route(batch, "DELETE", "batch_delete", batch_delete),
        route(f"{batch}/cancel", "POST", "batch_cancel", batch_cancel),
        route(f"{batch}/results", "GET", "batch_results", batch_results),
    ]
