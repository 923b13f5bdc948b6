"""Helpers of the broker tests: real redis-server processes on free ports, and worker
processes that each open the fleet on one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import coredis
import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

WORKER: Final = Path(__file__).with_name("broker_worker.py")
SRC: Final = Path(__file__).parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of our own, on a free port of 127.0.0.1, that a test may kill and
    start again (with or without persistence)."""

    def __init__(self, binary: str, workdir: Path, *, persistent: bool = False) -> None:
        self.binary = binary
        self.workdir = workdir
        self.persistent = persistent
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.workdir),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        limit = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if self.process.poll() is not None or time.monotonic() > limit:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def run(self, step: Callable[[coredis.Redis[str]], Awaitable[Any]]) -> Any:
        """Run one step with a client of this server (from sync test code)."""

        async def main() -> Any:
            client: coredis.Redis[str] = coredis.Redis.from_url(self.url, decode_responses=True)
            async with client:
                return await step(client)

        return anyio.run(main)


def redis_binary() -> str:
    """The redis-server binary; in CI its absence fails the test, locally it skips it."""
    found = shutil.which("redis-server")
    if found is None:
        message = (
            "redis-server is not installed: the broker tests start their own. Install it "
            "(Debian: apt-get install -y redis-server; `nox -s tests` does this as root)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextlib.contextmanager
def redis_server(tmp_path: Path, *, persistent: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), tmp_path, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class Worker:
    """One OS process that opens the fleet and submits calls (``broker_worker.py``)."""

    def __init__(self, tag: str, config: dict[str, Any]) -> None:
        self.tag = tag
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps({"tag": tag, **config})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)

    def finish(self, timeout: float) -> int:
        """Wait for the process to end; read what it reported."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            self.stderr = err.decode(errors="replace")
            tail = self.stderr[-3000:]
            raise AssertionError(f"worker {self.tag} hung; its stderr:\n{tail}") from None
        self.stderr = err.decode(errors="replace")
        self.lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        return self.process.returncode

    @property
    def outcomes(self) -> dict[int, dict[str, Any]]:
        return {line["i"]: line for line in self.lines if "i" in line}

    @property
    def summary(self) -> dict[str, Any]:
        return next((line for line in self.lines if line.get("done")), {})
