"""The Bedrock stand-in on the wire: its routes, and the server handle tests and the demo hold.

One HTTP server on 127.0.0.1 serves both the control plane (``bedrock``) and the runtime
(``bedrock-runtime``): their paths do not overlap, so both botocore clients get its URL as
their ``endpoint_url``. S3 is moto's server (``moto.server.ThreadedMotoServer``), started here
when no S3 URL is given.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._app import _drop
from .._server import _loopback, _Protocol, _Server
from ._config import AwsError, BedrockConfig, BedrockFault, JobInfo, invalid
from ._state import BedrockState

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from starlette.requests import Request

    from .._ledger import Ledger

__all__ = ["BedrockEmulator", "run_bedrock_emulator"]

#: Credentials the stand-in's own S3 client signs with (moto checks none).
_S3_KEY: Final = ("llmfleet-stand-in", "llmfleet-stand-in")
_START_TIMEOUT_S: Final = 10.0
# One botocore session for every stand-in of the process: it caches the service models it
# loads (the first client costs ~100 ms, the next ones a few). Its create_client is not
# thread-safe, hence the lock.
_SESSION: list[Any] = []
_SESSION_LOCK: Final = threading.Lock()


def _error(error: AwsError, request_id: str) -> Response:
    # rest-json errors: botocore reads the code from x-amzn-ErrorType, the message from the body.
    return JSONResponse(
        {"message": error.message},
        status_code=error.status,
        headers={"x-amzn-ErrorType": f"{error.code}:", "x-amzn-RequestId": request_id},
    )


def _authenticate(request: Request, region: str) -> None:
    auth = request.headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 Credential=") or "Signature=" not in auth:
        raise AwsError(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    # Credential=<key>/<date>/<region>/<service>/aws4_request
    scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
    if len(scope) != 5 or scope[2] != region or scope[3] != "bedrock":
        raise AwsError(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region ({region}) and service (bedrock).",
        )


def build_bedrock_app(state: BedrockState) -> Starlette:
    """The stand-in's ASGI app over ``state``."""
    serial = iter(range(1, 1 << 62))

    def endpoint(
        operation: str, handler: Callable[[Request, Any, BedrockFault | None], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            request_id = f"00000000-0000-4000-8000-{next(serial):012d}"
            try:
                raw = await request.body()
                fault = state.arrive(operation)
                if fault is not None and fault.kind == "drop":
                    return await _drop(request)
                if fault is not None and fault.kind == "status":
                    message = fault.message or f"{fault.code} (injected by the llmfleet stand-in)"
                    raise AwsError(fault.status, fault.code, message)
                if fault is not None and fault.kind == "slow":
                    await anyio.sleep(fault.delay_s)
                _authenticate(request, state.config.region)
                body: Any = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise invalid("The request body is not valid JSON.") from None
                response = await handler(request, body, fault)
            except AwsError as error:
                return _error(error, request_id)
            response.headers["x-amzn-RequestId"] = request_id
            return response

        return run

    async def create(request: Request, body: Any, fault: BedrockFault | None) -> Response:
        answer = state.create(body)
        if fault is not None and fault.kind == "accept_then_drop":
            return await _drop(request)
        return JSONResponse(answer)

    async def get(request: Request, body: Any, fault: BedrockFault | None) -> Response:
        return JSONResponse(state.get(request.path_params["job"]))

    async def list_jobs(request: Request, body: Any, fault: BedrockFault | None) -> Response:
        return JSONResponse(state.list(request.query_params))

    async def stop(request: Request, body: Any, fault: BedrockFault | None) -> Response:
        return JSONResponse(state.stop(request.path_params["job"]))

    async def invoke(request: Request, body: Any, fault: BedrockFault | None) -> Response:
        latency = state.direct_latency()
        if latency > 0:
            await anyio.sleep(latency)
        message, usage = state.invoke(request.path_params["model"], body)
        return JSONResponse(
            message,
            headers={
                "X-Amzn-Bedrock-Input-Token-Count": str(usage.input_tokens),
                "X-Amzn-Bedrock-Output-Token-Count": str(usage.output_tokens),
            },
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(
            AwsError(404, "UnknownOperationException", f"No operation at {request.url.path}"),
            "00000000-0000-4000-8000-000000000000",
        )

    # Job identifiers are ARNs, whose "/" botocore percent-encodes and the server decodes:
    # the path converter takes them whole.
    job = "/model-invocation-job/{job:path}"
    routes = [
        Route(
            "/model-invocation-job",
            endpoint("CreateModelInvocationJob", create),
            methods=["POST"],
        ),
        Route(f"{job}/stop", endpoint("StopModelInvocationJob", stop), methods=["POST"]),
        Route(job, endpoint("GetModelInvocationJob", get), methods=["GET"]),
        Route(
            "/model-invocation-jobs",
            endpoint("ListModelInvocationJobs", list_jobs),
            methods=["GET"],
        ),
        Route("/model/{model:path}/invoke", endpoint("InvokeModel", invoke), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


@final
class BedrockEmulator:
    """A running Bedrock stand-in: its URLs, its state and the controls tests use.

    Get one from :func:`run_bedrock_emulator`.
    """

    def __init__(
        self,
        config: BedrockConfig | None = None,
        *,
        s3_url: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self._config = config if config is not None else BedrockConfig()
        self._moto: Any = None
        if s3_url is None:
            from moto.server import ThreadedMotoServer

            # moto's werkzeug server logs every request at INFO: a line per S3 call.
            werkzeug = logging.getLogger("werkzeug")
            if werkzeug.level == logging.NOTSET:
                werkzeug.setLevel(logging.WARNING)
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._moto.start()
            moto_host, moto_port = self._moto.get_host_and_port()
            s3_url = f"http://{moto_host}:{moto_port}"
        #: The S3 endpoint URL (moto's).
        self.s3_url = s3_url
        with _SESSION_LOCK:
            if not _SESSION:
                import botocore.session

                _SESSION.append(botocore.session.Session())
            s3 = _SESSION[0].create_client(
                "s3",
                region_name=self._config.region,
                endpoint_url=s3_url,
                aws_access_key_id=_S3_KEY[0],
                aws_secret_access_key=_S3_KEY[1],
            )
        self._state = BedrockState(self._config, s3)
        address, family = _loopback(host)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, 0))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        #: The URL to give both botocore clients (``endpoint_url=``).
        self.url = f"http://{address}:{sock.getsockname()[1]}"
        self._server = _Server(
            uvicorn.Config(
                build_bedrock_app(self._state),
                http=_Protocol,
                ws="none",
                loop="asyncio",
                lifespan="off",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=2,
            )
        )
        self._thread = threading.Thread(
            target=lambda: self._server.run(sockets=[self._socket]),
            name="llmfleet-bedrock-stand-in",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    def wait_started(self) -> None:
        """Block until the server accepts requests."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the Bedrock stand-in did not start")
            time.sleep(0.002)

    def close(self) -> None:
        """Stop serving (and moto, if this started it); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.request_exit()
        self._thread.join(10)
        self._socket.close()
        if self._moto is not None:
            self._moto.stop()

    def client_config(self) -> dict[str, Any]:
        """The fields of a :class:`~llmfleet.providers.bedrock.BedrockClient` that reaches
        this stand-in: its endpoints, its region, and a botocore session holding made-up
        credentials (requests are signed; the stand-in checks the signature's form only)."""
        with _SESSION_LOCK:
            import botocore.session

            session = botocore.session.Session()
        session.set_credentials(*_S3_KEY)
        return {
            "endpoint_url": self.url,
            "runtime_endpoint_url": self.url,
            "s3_endpoint_url": self.s3_url,
            "region": self._config.region,
            "session": session,
        }

    def create_bucket(self, name: str) -> None:
        """Create an S3 bucket in the stand-in's S3."""
        self._state._s3.create_bucket(Bucket=name)

    @property
    def config(self) -> BedrockConfig:
        """The live configuration."""
        return self._config

    @property
    def jobs(self) -> dict[str, JobInfo]:
        """Every job by ARN, as of now."""
        return self._state.jobs()

    @property
    def counts(self) -> dict[str, int]:
        """Requests received per operation (faulted ones included)."""
        return self._state.counts

    @property
    def ledger(self) -> Ledger:
        """The bill: one entry per InvokeModel answered and per record of each ended job
        (processed records at the batch price, half the on-demand one)."""
        return self._state.ledger

    def add_fault(self, fault: BedrockFault) -> None:
        """Arm ``fault`` for the next calls of its operation."""
        self._state.add_fault(fault)

    def end_job(self, arn: str) -> JobInfo:
        """End the job now, by its records (Completed, or PartiallyCompleted)."""
        return self._state.end(arn)

    def expire_job(self, arn: str) -> JobInfo:
        """End the job now as ``Expired``: the first half of its records processed."""
        return self._state.end(arn, "expire")

    def fail_job(self, arn: str, message: str = "Internal failure (injected).") -> JobInfo:
        """End the job now as ``Failed``, with ``message``."""
        return self._state.end(arn, "fail", message)

    def stop_job_externally(self, arn: str) -> None:
        """Stop the job as the console would (not counted as a request)."""
        self._state.stop(arn)


@asynccontextmanager
async def run_bedrock_emulator(
    config: BedrockConfig | None = None, *, s3_url: str | None = None
) -> AsyncIterator[BedrockEmulator]:
    """Serve a Bedrock stand-in for the block (asyncio or trio); with no ``s3_url`` it runs
    its own moto S3 server too."""
    emulator = await anyio.to_thread.run_sync(lambda: BedrockEmulator(config, s3_url=s3_url))
    try:
        await anyio.to_thread.run_sync(emulator.wait_started)
        yield emulator
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(emulator.close)
