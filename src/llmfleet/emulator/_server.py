"""Serving the app: uvicorn on its own thread and event loop, and the handle tests hold."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, final

import anyio
import anyio.to_thread
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._app import build_app
from ._config import EmulatorConfig, Fault
from ._state import State
from ._wire import TRANSPORTS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from ._anthropic import BatchInfo
    from ._core import RecordedRequest
    from ._gemini import GeminiState
    from ._ledger import Ledger
    from ._openai import OpenAIState

__all__ = ["Emulator", "run_emulator", "start_emulator"]

_START_TIMEOUT_S: Final = 10.0
_STOP_TIMEOUT_S: Final = 10.0
# How long shutdown waits for requests still in flight (a "slow" fault's sleep, say).
_GRACEFUL_S: Final = 2


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, registering each connection's transport so that the app can
    close it without answering (see ``_wire.TRANSPORTS``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        TRANSPORTS[(self.server, self.client)] = transport

    def connection_lost(self, exc: Exception | None) -> None:
        TRANSPORTS.pop((self.server, self.client), None)
        super().connection_lost(exc)


class _Server(uvicorn.Server):
    """uvicorn's server, whose main loop wakes as soon as it is told to exit.

    Stock uvicorn polls ``should_exit`` every 0.1 s; tests start and stop an emulator per test,
    so the poll alone would add seconds to a suite.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            # on_tick keeps the Date header fresh: call it at least as often as uvicorn does.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def request_exit(self) -> None:
        """Ask the server to stop (from any thread)."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(wake.set)


def _loopback(host: str) -> tuple[str, socket.AddressFamily]:
    if host == "localhost":
        return "127.0.0.1", socket.AF_INET
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"the emulator binds to a loopback address only, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"the emulator binds to a loopback address only, not {host!r}")
    return str(address), socket.AF_INET6 if address.version == 6 else socket.AF_INET


@final
class Emulator:
    """A running emulator: its address, its state, and the controls tests use.

    Get one from :func:`run_emulator` (async) or :func:`start_emulator` (sync); both serve
    from a background thread with its own asyncio loop, so the caller may run any event loop
    (or none). Every property returns a snapshot, safe to read from any thread.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: bool = False,
    ) -> None:
        """Bind the socket and start serving in the background (see :meth:`wait_started`).

        Prefer :func:`run_emulator` / :func:`start_emulator`, which also wait for start-up.

        :raises ValueError: ``host`` is not a loopback address.
        :raises OSError: the port cannot be bound.
        """
        self._config = config if config is not None else EmulatorConfig()
        address, family = _loopback(host)
        self._state = State(self._config)
        app = build_app(self._state)
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it uvicorn's two writes per response (head, body) meet the client's delayed
        # ACK, costing 40 ms per request on a kept-alive connection.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self.host = address
        #: The bound port (the real one when 0 was asked for).
        self.port: int = sock.getsockname()[1]
        netloc = f"[{address}]" if family == socket.AF_INET6 else address
        #: The base URL to give the SDK (``base_url=emu.url``), without a trailing slash.
        self.url = f"http://{netloc}:{self.port}"
        self._state.base_url = self.url
        self._server = _Server(
            uvicorn.Config(
                app,
                http=_Protocol,
                ws="none",
                loop="asyncio",
                lifespan="off",
                # Leave the process's logging alone; and the access log stays off unless asked
                # (it never shows headers, so never the API key, but tests need no noise).
                log_config=None,
                access_log=access_log,
                timeout_graceful_shutdown=_GRACEFUL_S,
            )
        )
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="llmfleet-emulator", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # uvicorn exits with SystemExit when start-up fails
            self._error = exc

    def wait_started(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Block until the server accepts requests.

        :raises RuntimeError: it failed to start, or did not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        # uvicorn offers no start-up event to wait on; its `started` flag is what it sets.
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the emulator's server failed to start") from self._error
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the emulator's server did not start within {timeout} s")
            time.sleep(0.002)

    def close(self) -> None:
        """Stop serving and join the server thread (idempotent; blocks up to a few seconds
        while requests in flight finish)."""
        if self._closed:
            return
        self._closed = True
        self._server.request_exit()
        self._thread.join(_STOP_TIMEOUT_S)
        if self._thread.is_alive():  # pragma: no cover - a request that never finishes
            self._server.force_exit = True
            self._thread.join(_STOP_TIMEOUT_S)
        self._socket.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def config(self) -> EmulatorConfig:
        """The live configuration: assign its fields to change behaviour from now on."""
        return self._config

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first, credentials redacted."""
        return self._state.requests

    @property
    def counts(self) -> dict[str, int]:
        """Requests received per endpoint name (faulted and rejected ones included)."""
        return self._state.counts

    @property
    def per_minute(self) -> dict[tuple[str, int], int]:
        """Requests per ``(endpoint, minute since start)``."""
        return self._state.per_minute()

    @property
    def rate_limited(self) -> int:
        """429s answered because of ``config.batch_rpm``."""
        return self._state.rate_limited

    @property
    def ledger(self) -> Ledger:
        """The bill: an entry per answered direct call and per item of each ended batch."""
        return self._state.ledger

    @property
    def batches(self) -> dict[str, BatchInfo]:
        """Every batch not deleted, by id, in creation order, as of now."""
        return self._state.anthropic.snapshot()

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults armed and not yet consumed."""
        return self._state.faults

    @property
    def openai(self) -> OpenAIState:
        """The OpenAI files and batches, and their controls (``end_batch``, ``expire_batch``,
        ``batches``, ``files``)."""
        return self._state.openai

    @property
    def gemini(self) -> GeminiState:
        """The Gemini batches, and their controls (``end_batch``, ``expire_batch``,
        ``fail_batch``, ``batches``)."""
        return self._state.gemini

    def add_fault(self, fault: Fault) -> None:
        """Arm ``fault``; its ``nth`` counts calls to its endpoint from now."""
        self._state.add_fault(fault)

    def clear_faults(self) -> None:
        """Disarm every fault not yet consumed."""
        self._state.clear_faults()

    def end_batch(self, batch_id: str) -> BatchInfo:
        """End the batch now, with the outcomes its items would have had (a ``canceling``
        batch ends with its items canceled). An ended batch is left as it is.

        :raises KeyError: no batch has that id.
        """
        return self._state.anthropic.end(batch_id)

    def end_all_batches(self) -> list[str]:
        """End every batch still processing, as :meth:`end_batch`; return their ids."""
        return self._state.anthropic.end_all_now()

    def expire_batch(self, batch_id: str) -> BatchInfo:
        """End the batch now with every item ``expired`` (its 24 hours ran out).

        :raises KeyError: no batch has that id.
        """
        return self._state.anthropic.end(batch_id, "expire")

    def cancel_batch_externally(self, batch_id: str) -> BatchInfo:
        """Cancel the batch as someone else (the console, another process) would: it turns
        ``canceling`` and ends after ``cancel_delay_s``. Not counted as a request.

        :raises KeyError: no batch has that id.
        """
        return self._state.anthropic.cancel_externally(batch_id)


def start_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    access_log: bool = False,
) -> Emulator:
    """Start an emulator in a background thread and return once it serves.

    Call :meth:`Emulator.close` (or use it as a ``with`` block) to stop it.

    :param host: a loopback address (``127.0.0.1``, ``::1``, ``localhost``).
    :param port: the port, 0 for a free one (read it back from :attr:`Emulator.url`).
    :raises ValueError: ``host`` is not a loopback address.
    :raises OSError: the port cannot be bound.
    """
    emulator = Emulator(config, host=host, port=port, access_log=access_log)
    emulator.wait_started()
    return emulator


@asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    access_log: bool = False,
) -> AsyncIterator[Emulator]:
    """Serve an emulator for the duration of the block; works under asyncio and trio.

    The server runs on its own thread and loop; start-up and shutdown are awaited in a worker
    thread, so the caller's loop never blocks. Shutdown runs even if the block is cancelled.

    :param host: a loopback address (``127.0.0.1``, ``::1``, ``localhost``).
    :param port: the port, 0 for a free one (read it back from :attr:`Emulator.url`).
    :raises ValueError: ``host`` is not a loopback address.
    :raises OSError: the port cannot be bound.
    """
    emulator = Emulator(config, host=host, port=port, access_log=access_log)
    try:
        await anyio.to_thread.run_sync(emulator.wait_started)
        yield emulator
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(emulator.close)
