"""The Bedrock stand-in's server: the handle tests and the demo hold, and its controls.

One HTTP server on 127.0.0.1 (uvicorn, as the emulator's) serves ``_bedrock_routes``' app over
a :class:`~._core.Core` of its own and the jobs' :class:`~._bedrock.BedrockState`. S3 is
moto's server (``moto.server.ThreadedMotoServer``), started here when no S3 URL is given: the
stand-in needs an S3 endpoint, which the emulator has not, hence a server of its own.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.to_thread
import uvicorn

from ._bedrock import BedrockState
from ._bedrock_params import ENDPOINT_OF, OPERATIONS, BedrockConfig, BedrockFault, JobInfo
from ._bedrock_routes import build_bedrock_app
from ._config import EmulatorConfig
from ._core import Core
from ._server import _loopback, _Protocol, _Server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._core import RecordedRequest
    from ._ledger import Ledger

__all__ = ["BedrockEmulator", "run_bedrock_emulator"]

#: Credentials the stand-in's own S3 client signs with (moto checks none).
_S3_KEY: Final = ("llmfleet-stand-in", "llmfleet-stand-in")
_START_TIMEOUT_S: Final = 10.0
# One botocore session for every stand-in of the process: it caches the service models it
# loads (the first client costs ~100 ms, the next ones a few). Its create_client is not
# thread-safe, hence the lock.
_SESSION: list[Any] = []
_SESSION_LOCK: Final = threading.Lock()


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
        # The core bills at the config's prices; its seed keeps request ids apart per seed.
        core = Core(EmulatorConfig(seed=self._config.seed, prices=self._config.prices))
        self._core = core
        self._state = BedrockState(core, self._config, s3)
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
        counts = self._core.counts
        return {operation: counts[ENDPOINT_OF[operation]] for operation in OPERATIONS}

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order (the signature redacted)."""
        return self._core.requests

    @property
    def ledger(self) -> Ledger:
        """The bill: one entry per InvokeModel answered and per record of each ended job
        (processed records at the batch price, half the on-demand one)."""
        return self._core.ledger

    def add_fault(self, fault: BedrockFault) -> None:
        """Arm ``fault`` for the next calls of its operation."""
        self._core.add_fault(fault.fault())

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
