"""Gemini's routes: ``generateContent``, ``batchGenerateContent`` and ``batches`` under
``/v1beta`` and ``/v1`` (google-genai 3.x defaults to ``v1``), in Google's dialect
(``{"error": {"code", "message", "status"}}``).

``/v1/batches/...`` is OpenAI's path too: there the Gemini routes answer only requests that
carry Google's ``x-goog-api-key`` header (the SDK always sends it); ``/v1beta`` is Gemini's
alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from ._gemini_params import GOOGLE_STATUS, error, error_body, invalid
from ._wire import Dialect, created, endpoint

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import Scope

    from ._config import EmulatorConfig, Fault
    from ._state import State
    from ._wire import Call, Handler

__all__ = ["DIALECT", "gemini_routes"]

#: The most bytes one request body may hold here (the inlined requests' 20 MB, and room).
MAX_BODY_BYTES: Final = 32 * 1024 * 1024


class _GoogleRoute(Route):
    """A route that matches only requests carrying ``x-goog-api-key`` (see the module's
    docstring)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if not any(name == b"x-goog-api-key" for name, _ in scope.get("headers", ())):
            return Match.NONE, {}
        return super().matches(scope)


def _fault_type(fault: Fault) -> str:
    return fault.error_type or GOOGLE_STATUS.get(fault.status, "UNKNOWN")


def _authenticated(request: Request) -> bool:
    """An ``x-goog-api-key`` header (what google-genai sends), or a bearer token."""
    if request.headers.get("x-goog-api-key", "").strip():
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


DIALECT: Final = Dialect(
    error_body=error_body,
    request_id_header="x-request-id",
    fault_type=_fault_type,
    unauthenticated=("UNAUTHENTICATED", None),
    too_large_type="INVALID_ARGUMENT",
    bad_json="Invalid JSON payload received.",
    authenticated=_authenticated,
    unauthenticated_message=(
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API."
    ),
)


def _body_limit(config: EmulatorConfig) -> int:
    return MAX_BODY_BYTES


def gemini_routes(state: State) -> list[Route]:
    """The Gemini routes over ``state`` (mounted by ``_app.build_app``)."""
    gemini = state.gemini

    def route(
        path: str, method: str, name: str, handler: Handler, *, needs_json: bool = False
    ) -> list[Route]:
        wrapped = endpoint(state, DIALECT, name, handler, limit=_body_limit, needs_json=needs_json)
        return [
            Route("/v1beta" + path, wrapped, methods=[method]),
            _GoogleRoute("/v1" + path, wrapped, methods=[method]),
        ]

    async def generate(request: Request, call: Call) -> Response:
        model = request.path_params["model"]
        answer = gemini.generate(model, call.body)
        latency = gemini.direct_latency()
        if latency > 0:
            await anyio.sleep(latency)
        return JSONResponse(answer)

    async def batch_create(request: Request, call: Call) -> Response:
        model = request.path_params["model"]
        return await created(request, call, gemini.create_batch(model, call.body, len(call.raw)))

    def name_of(request: Request) -> str:
        return "batches/" + str(request.path_params["batch_id"])

    async def batch_get(request: Request, call: Call) -> Response:
        name = name_of(request)
        if call.hit("transient_404"):
            gemini.check_batch(name)
            raise error(404, f"Requested entity was not found. ({name})")
        return JSONResponse(gemini.get(name))

    async def batch_list(request: Request, call: Call) -> Response:
        params = request.query_params
        try:
            size = int(params.get("pageSize", "50"))
        except ValueError:
            raise invalid("pageSize: expected an integer") from None
        if not 1 <= size <= 1000:
            raise invalid("pageSize: must be between 1 and 1000")
        return JSONResponse(gemini.list_batches(size, params.get("pageToken")))

    async def batch_cancel(request: Request, call: Call) -> Response:
        return JSONResponse(gemini.cancel(name_of(request)))

    async def batch_delete(request: Request, call: Call) -> Response:
        return JSONResponse(gemini.delete(name_of(request)))

    batch = "/batches/{batch_id}"
    return [
        *route(
            "/models/{model}:generateContent", "POST", "gemini_generate", generate, needs_json=True
        ),
        *route(
            "/models/{model}:batchGenerateContent",
            "POST",
            "gemini_batch_create",
            batch_create,
            needs_json=True,
        ),
        *route("/batches", "GET", "gemini_batch_list", batch_list),
        *route(f"{batch}:cancel", "POST", "gemini_batch_cancel", batch_cancel),
        *route(batch, "GET", "gemini_batch_get", batch_get),
        *route(batch, "DELETE", "gemini_batch_delete", batch_delete),
    ]
