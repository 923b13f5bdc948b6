"""OpenAI's routes: Chat Completions, Responses, Files and Batches under ``/v1``, in OpenAI's
dialect (``{"error": {"message", "type", "param", "code"}}``, ``x-request-id``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import anyio
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._openai_params import BATCH_ENDPOINTS, error, error_body, invalid, validate
from ._wire import Dialect, created, endpoint, jsonl

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._config import EmulatorConfig, Fault
    from ._state import State
    from ._wire import Call, Handler

__all__ = ["DIALECT", "openai_routes"]

MAX_FILE_BYTES: Final = 512 * 1024 * 1024
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_FAULT_TYPES: Final = {429: "rate_limit_exceeded", 401: "invalid_api_key"}


async def _client_left(request: Request, seconds: float) -> bool:
    """Wait ``seconds``, or until the client closes its connection (then true)."""
    with anyio.move_on_after(seconds):
        while not await request.is_disconnected():  # noqa: ASYNC110 (told only when asked)
            await anyio.sleep(0.02)
        return True
    return False


def _fault_type(fault: Fault) -> str:
    return (
        fault.error_type
        or _FAULT_TYPES.get(fault.status)
        or ("server_error" if fault.status >= 500 else "invalid_request_error")
    )


DIALECT: Final = Dialect(
    error_body=error_body,
    request_id_header="x-request-id",
    fault_type=_fault_type,
    unauthenticated=("invalid_request_error", "invalid_api_key"),
    too_large_type="invalid_request_error",
    bad_json="We could not parse the JSON body of your request.",
)


def _body_limit(config: EmulatorConfig) -> int:
    return MAX_BODY_BYTES


def _file_limit(config: EmulatorConfig) -> int:
    return MAX_FILE_BYTES


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a ``multipart/form-data`` body: ``{name: (filename, content)}``."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise invalid("the upload must be multipart/form-data")
    delimiter = b"--" + match.group(1).encode()
    parts: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        disposition = next(
            (
                line
                for line in head.decode("latin-1").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name is not None:
            parts[name.group(1)] = (filename.group(1) if filename else None, content)
    return parts


def openai_routes(state: State) -> list[Route]:
    """The OpenAI routes over ``state`` (mounted by ``_app.build_app``)."""
    openai = state.openai

    def route(
        path: str,
        method: str,
        name: str,
        handler: Handler,
        *,
        needs_json: bool = False,
        upload: bool = False,
    ) -> Route:
        wrapped = endpoint(
            state,
            DIALECT,
            name,
            handler,
            limit=_file_limit if upload else _body_limit,
            needs_json=needs_json,
            record_size_only=upload,
        )
        return Route(path, wrapped, methods=[method])

    def direct(path: str) -> Handler:
        async def handler(request: Request, call: Call) -> Response:
            validate(path, call.body)
            body = call.body
            flex = isinstance(body, dict) and body.get("service_tier") == "flex"
            latency = openai.direct_latency(flex=flex)
            if flex and latency > 0:
                # A flex call is slow; one its client gave up on is not answered, nor
                # billed (the fleet cuts late flex calls off, docs/design.md §2.3).
                if await _client_left(request, latency):
                    return Response(status_code=499)
            elif latency > 0:
                await anyio.sleep(latency)
            return JSONResponse(openai.create(path, call.body))

        return handler

    async def upload_file(request: Request, call: Call) -> Response:
        parts = _multipart(request.headers.get("content-type", ""), call.raw)
        if "file" not in parts:
            raise invalid("Missing required parameter: 'file'.", "file")
        if "purpose" not in parts:
            raise invalid("Missing required parameter: 'purpose'.", "purpose")
        filename, data = parts["file"]
        purpose = parts["purpose"][1].decode()
        return JSONResponse(openai.upload(filename or "upload", purpose, data))

    async def content(request: Request, call: Call) -> Response:
        file_id = request.path_params["file_id"]
        if call.hit("transient_404"):
            openai.check_file(file_id)
            raise error(404, f"No such File object: {file_id}", param="id")
        return jsonl(openai.content(file_id).splitlines(keepends=True), state.config, call)

    async def delete(request: Request, call: Call) -> Response:
        return JSONResponse(openai.delete_file(request.path_params["file_id"]))

    async def batch_create(request: Request, call: Call) -> Response:
        return await created(request, call, openai.create_batch(call.body))

    async def batch_retrieve(request: Request, call: Call) -> Response:
        batch_id = request.path_params["batch_id"]
        if call.hit("transient_404"):
            openai.check_batch(batch_id)
            raise error(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return JSONResponse(openai.retrieve(batch_id))

    async def batch_list(request: Request, call: Call) -> Response:
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            raise invalid("limit: expected an integer", "limit") from None
        if not 1 <= limit <= 100:
            raise invalid("limit: must be between 1 and 100", "limit")
        return JSONResponse(openai.list_batches(limit, params.get("after")))

    async def batch_cancel(request: Request, call: Call) -> Response:
        return JSONResponse(openai.cancel(request.path_params["batch_id"]))

    file = "/v1/files/{file_id}"
    batch = "/v1/batches/{batch_id}"
    chat, responses = BATCH_ENDPOINTS
    return [
        route(chat, "POST", "openai_chat", direct(chat), needs_json=True),
        route(responses, "POST", "openai_responses", direct(responses), needs_json=True),
        route("/v1/files", "POST", "openai_file_upload", upload_file, upload=True),
        route(f"{file}/content", "GET", "openai_file_content", content),
        route(file, "DELETE", "openai_file_delete", delete),
        route("/v1/batches", "POST", "openai_batch_create", batch_create, needs_json=True),
        route("/v1/batches", "GET", "openai_batch_list", batch_list),
        route(batch, "GET", "openai_batch_retrieve", batch_retrieve),
        route(f"{batch}/cancel", "POST", "openai_batch_cancel", batch_cancel),
    ]
