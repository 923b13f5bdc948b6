"""The ASGI app: every vendor's routes over one state, and the answer to unknown routes.

A vendor plugs in here with its routes (``<vendor>_routes(state)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from ._anthropic_routes import DIALECT, anthropic_routes
from ._core import ApiError
from ._gemini_routes import gemini_routes
from ._openai_routes import openai_routes
from ._wire import unmatched

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._state import State

__all__ = ["build_app"]


def build_app(state: State) -> Starlette:
    """The emulator's ASGI app over ``state``."""

    async def http_error(request: Request, exc: Exception) -> Response:
        # Unknown paths and wrong methods answer in an API's error shape too (Anthropic's,
        # the first vendor's), recorded with no endpoint.
        assert isinstance(exc, HTTPException)
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return unmatched(
            state, DIALECT, request, ApiError(exc.status_code, error_type, str(exc.detail))
        )

    # Gemini's first: its /v1 routes take only requests with Google's key header, which
    # OpenAI's routes on the same paths would otherwise take.
    routes = [*gemini_routes(state), *anthropic_routes(state), *openai_routes(state)]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
