"""The Bedrock stand-in's routes, in AWS's rest-json dialect: the error code in
``x-amzn-ErrorType``, ``{"message": ...}`` as the body, ``x-amzn-RequestId``, and requests
signed with SigV4 (the stand-in checks the signature's form and scope, not its value).

One app serves the control plane (``bedrock``: the four job operations) and the runtime
(``bedrock-runtime``: ``InvokeModel``): their paths do not overlap, so both botocore clients
get the same ``endpoint_url``. Paths and shapes are those of botocore's service models
(``bedrock/2023-04-20``, ``bedrock-runtime/2023-09-30``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._bedrock_params import ENDPOINT_OF, invalid
from ._core import ApiError
from ._wire import Dialect, created, endpoint, unmatched

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._bedrock import BedrockState
    from ._config import EmulatorConfig
    from ._wire import Call, Handler

__all__ = ["DIALECT", "build_bedrock_app"]

#: The largest request body the stand-in reads (an InvokeModel body; jobs' inputs are in S3).
_MAX_BODY: Final = 25 * 2**20
# The error code AWS pairs with an injected fault's status when the fault names none.
_STATUS_CODES: Final = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    503: "ServiceUnavailableException",
}


def _signed(request: Request, region: str = "us-east-1") -> bool:
    """A SigV4 ``Authorization`` header scoped to ``region`` and the bedrock service."""
    auth = request.headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 Credential=") or "Signature=" not in auth:
        return False
    # Credential=<key>/<date>/<region>/<service>/aws4_request
    scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
    return len(scope) == 5 and scope[2] == region and scope[3] == "bedrock"


#: AWS's rest-json dialect, for the default region (:func:`build_bedrock_app` scopes the
#: signature check to the stand-in's).
DIALECT: Final = Dialect(
    error_body=lambda error: {"message": error.message},
    # botocore reads the code from this header (what follows a ":" is ignored).
    error_headers=lambda error: {"x-amzn-ErrorType": f"{error.error_type}:"},
    request_id_header="x-amzn-RequestId",
    fault_type=lambda fault: (
        fault.error_type or _STATUS_CODES.get(fault.status, "InternalServerException")
    ),
    unauthenticated=("UnrecognizedClientException", None),
    unauthenticated_status=403,
    unauthenticated_message=(
        "The security token included in the request is invalid, or not scoped to this "
        "region and the bedrock service."
    ),
    too_large_type="ValidationException",
    bad_json="The request body is not valid JSON.",
    authenticated=_signed,
)


def _limit(config: EmulatorConfig) -> int:
    return _MAX_BODY


def _json(call: Call) -> Any:
    """The decoded body; a body that is there but is not JSON is a ``ValidationException``."""
    if call.raw and call.body is None:
        raise invalid("The request body is not valid JSON.")
    return call.body


def build_bedrock_app(state: BedrockState) -> Starlette:
    """The stand-in's ASGI app over ``state``."""
    core = state.core
    dialect = dataclasses.replace(
        DIALECT, authenticated=lambda request: _signed(request, state.config.region)
    )

    def route(path: str, method: str, operation: str, handler: Handler) -> Route:
        wrapped = endpoint(core, dialect, ENDPOINT_OF[operation], handler, limit=_limit)
        return Route(path, wrapped, methods=[method])

    async def create(request: Request, call: Call) -> Response:
        # Under an "accept_then_drop" fault the job is made, then the connection closed.
        return await created(request, call, state.create(_json(call)))

    async def get(request: Request, call: Call) -> Response:
        return JSONResponse(state.get(request.path_params["job"]))

    async def list_jobs(request: Request, call: Call) -> Response:
        return JSONResponse(state.list(request.query_params))

    async def stop(request: Request, call: Call) -> Response:
        return JSONResponse(state.stop(request.path_params["job"]))

    async def invoke(request: Request, call: Call) -> Response:
        latency = state.direct_latency()
        if latency > 0:
            await anyio.sleep(latency)
        message, usage = state.invoke(request.path_params["model"], _json(call))
        return JSONResponse(
            message,
            headers={
                "X-Amzn-Bedrock-Input-Token-Count": str(usage.input_tokens),
                "X-Amzn-Bedrock-Output-Token-Count": str(usage.output_tokens),
            },
        )

    async def unknown(request: Request, exc: Exception) -> Response:
        # Unknown paths and wrong methods: recorded with no endpoint, answered in AWS's shape.
        assert isinstance(exc, HTTPException)
        error = ApiError(404, "UnknownOperationException", f"No operation at {request.url.path}")
        return unmatched(core, dialect, request, error)

    # Job identifiers are ARNs, whose "/" botocore percent-encodes and the server decodes:
    # the path converter takes them whole.
    job = "/model-invocation-job/{job:path}"
    routes = [
        route("/model-invocation-job", "POST", "CreateModelInvocationJob", create),
        route(f"{job}/stop", "POST", "StopModelInvocationJob", stop),
        route(job, "GET", "GetModelInvocationJob", get),
        route("/model-invocation-jobs", "GET", "ListModelInvocationJobs", list_jobs),
        route("/model/{model:path}/invoke", "POST", "InvokeModel", invoke),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: unknown})
