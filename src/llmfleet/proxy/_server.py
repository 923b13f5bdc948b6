"""Serving the proxy: the fleet and uvicorn on one asyncio loop (docs/design.md §13).

uvicorn runs on asyncio only, so the proxy's loop is asyncio: the fleet runs on it too, and
every request handler calls the fleet directly. :func:`run_proxy` (tests, embedding) serves from
a thread of its own, so its caller may run asyncio or trio; :func:`serve_proxy` (the CLI) serves
on the main thread and drains on ``SIGTERM``/``SIGINT``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import httpx2
import uvicorn

from ._app import ProxyState, build_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from anyio.abc import TaskStatus
    from anyio.lowlevel import EventLoopToken

    from .._policy import RoutingPolicy

__all__ = ["Proxy", "ProxyConfig", "run_proxy", "serve_proxy"]

_DEFAULT_UPSTREAM: Final = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
}
_START_TIMEOUT_S: Final = 10.0


@final
@dataclass(frozen=True)
class ProxyConfig:
    """How a proxy serves.

    :ivar provider: ``anthropic`` or ``openai``.
    :ivar api_key: the upstream's key (never logged, echoed, nor sent to a client).
    :ivar tokens: the proxy's own tokens; a client sends one as its API key.
    :ivar upstream: the provider's origin, without ``/v1`` (default: the provider's own).
    :ivar default_budget_ms: the budget of a call whose request names none (``None``: the
        direct route).
    """

    provider: str
    api_key: str = field(repr=False)
    tokens: tuple[str, ...] = field(repr=False)
    upstream: str | None = None
    host: str = "127.0.0.1"
    port: int = 8788
    default_budget_ms: float | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    policy: RoutingPolicy | None = None
    journal: str | None = None
    broker: str | None = None

    def __post_init__(self) -> None:
        if self.provider not in _DEFAULT_UPSTREAM:
            raise ValueError(f"the proxy serves anthropic or openai, not {self.provider!r}")
        if not self.tokens or not all(self.tokens):
            raise ValueError(
                "the proxy needs at least one client token (--auth-token or "
                "LLMFLEET_PROXY_TOKENS): clients send it as their API key"
            )
        if not self.api_key:
            raise ValueError("the proxy needs the upstream API key")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.default_budget_ms is not None and not 0 <= self.default_budget_ms < float("inf"):
            raise ValueError(
                f"default_budget_ms must be >= 0 or None, got {self.default_budget_ms}"
            )

    @property
    def origin(self) -> str:
        return (self.upstream or _DEFAULT_UPSTREAM[self.provider]).rstrip("/")


def _sdk_client(config: ProxyConfig) -> Any:
    if config.provider == "openai":
        import openai

        return openai.AsyncOpenAI(api_key=config.api_key, base_url=config.origin + "/v1")
    import anthropic

    return anthropic.AsyncAnthropic(api_key=config.api_key, base_url=config.origin)


class _Server(uvicorn.Server):
    """uvicorn's server, with the proxy's own signal handling (drain, then exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # serve_proxy handles SIGTERM and SIGINT itself


@dataclass(frozen=True)
class _Handle:
    server: _Server
    drain: Callable[[], None]
    token: EventLoopToken


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


async def _serve(
    config: ProxyConfig,
    sock: socket.socket,
    server_box: list[_Handle],
    *,
    signals: bool,
    task_status: TaskStatus[ProxyState] = anyio.TASK_STATUS_IGNORED,
) -> None:
    from .._open import open_fleet

    client = _sdk_client(config)
    options: dict[str, Any] = {}
    if config.journal is not None:
        options["journal"] = config.journal
    if config.broker is not None:
        options["broker"] = config.broker
    async with client, httpx2.AsyncClient(timeout=None) as http:
        async with open_fleet(client, policy=config.policy, **options) as fleet:
            state = ProxyState(
                provider=config.provider,
                fleet=fleet,
                upstream=config.origin,
                api_key=config.api_key,
                tokens=config.tokens,
                default_budget_ms=config.default_budget_ms,
                max_body_bytes=config.max_body_bytes,
                http=http,
            )
            server = _Server(
                uvicorn.Config(
                    build_app(state),
                    ws="none",
                    loop="asyncio",
                    lifespan="off",
                    log_config=None,
                    access_log=False,  # its lines never show headers; still, no noise
                    timeout_graceful_shutdown=None,  # drain: every waiting client is answered
                )
            )

            def drain() -> None:
                # Refuse new calls (503), flush the queue now, answer everyone waiting, exit.
                state.draining = True
                close = getattr(fleet, "_close", None)
                if close is not None:
                    close()
                server.should_exit = True

            server_box.append(_Handle(server, drain, anyio.lowlevel.current_token()))
            async with anyio.create_task_group() as tg:
                if signals:

                    async def on_signal() -> None:
                        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as got:
                            async for _ in got:
                                drain()
                                return

                    tg.start_soon(on_signal)
                task_status.started(state)
                await server.serve(sockets=[sock])
                if not state.draining:
                    drain()
                tg.cancel_scope.cancel()


def serve_proxy(config: ProxyConfig, *, ready: Any = None) -> None:
    """Serve on the calling (main) thread until ``SIGTERM`` or ``SIGINT``, then drain and
    return.

    :param ready: called with the bound URL once the server accepts requests.
    """
    sock = _bind(config.host, config.port)

    async def main() -> None:
        box: list[_Handle] = []
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: _serve(config, sock, box, signals=True, task_status=task_status)
            )
            # uvicorn offers no start-up event to wait on; its `started` flag is what it sets.
            while not box[0].server.started:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            if ready is not None:
                ready(_url(sock))

    try:
        anyio.run(main, backend="asyncio")
    finally:
        sock.close()


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


@final
class Proxy:
    """A proxy serving from a background thread (see :func:`run_proxy`)."""

    def __init__(self, config: ProxyConfig) -> None:
        self._sock = _bind(config.host, config.port)
        #: The proxy's origin: Anthropic clients use it as their base URL, OpenAI clients
        #: add ``/v1``.
        self.url = _url(self._sock)
        self._config = config
        self._box: list[_Handle] = []
        self._state: ProxyState | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="llmfleet-proxy", daemon=True)
        self._thread.start()

    @property
    def state(self) -> ProxyState:
        assert self._state is not None
        return self._state

    def _run(self) -> None:
        async def main() -> None:
            async with anyio.create_task_group() as tg:
                self._state = await tg.start(
                    lambda task_status: _serve(
                        self._config, self._sock, self._box, signals=False, task_status=task_status
                    )
                )

        try:
            anyio.run(main, backend="asyncio")
        except BaseException as exc:
            self._error = exc

    def wait_started(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not (self._box and self._box[0].server.started):
            if not self._thread.is_alive():
                raise RuntimeError("the proxy failed to start") from self._error
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start in time")
            time.sleep(0.002)

    def close(self) -> None:
        """Drain (answer every waiting client) and stop."""
        if self._box and self._thread.is_alive():
            handle = self._box[0]
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                anyio.from_thread.run_sync(handle.drain, token=handle.token)
        self._thread.join(60)
        self._sock.close()
        if self._error is not None:
            raise self._error


@asynccontextmanager
async def run_proxy(config: ProxyConfig) -> AsyncIterator[Proxy]:
    """Serve a proxy for the duration of the block (its own thread and asyncio loop, so the
    caller may run asyncio or trio); on exit it drains and stops."""
    proxy = Proxy(config)
    try:
        await anyio.to_thread.run_sync(proxy.wait_started)
        yield proxy
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(proxy.close)
