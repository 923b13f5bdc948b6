"""The Bedrock adapter's test bench: moto's S3 server and the Bedrock stand-in, both real HTTP
servers on 127.0.0.1 started here, and the botocore credentials the adapter signs with.

One moto server serves the whole test process (started on first use, stopped at exit); each
test gets its own stand-in and its own bucket.
"""

from __future__ import annotations

import atexit
import itertools
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.lowlevel
import botocore.session

from llmfleet.emulator import BedrockConfig, BedrockEmulator, run_bedrock_emulator
from llmfleet.providers.bedrock import BedrockClient, BedrockProvider, RunSync

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = [
    "MODEL",
    "ROLE",
    "bedrock_client",
    "inline",
    "moto_url",
    "params",
    "provider",
    "shared_stand_in",
    "stand_in",
]

ROLE = "arn:aws:iam::123456789012:role/llmfleet-batch"
MODEL = "anthropic.claude-haiku-4-5-20251001-v1:0"

_lock = threading.Lock()
_moto: list[Any] = []
_shared: list[BedrockEmulator] = []
_buckets = itertools.count(1)
# One botocore session for every client: it caches the service models it loads (a client
# costs ~50 ms the first time, ~5 ms after). Clients are made on one thread at a time.
_SESSION = botocore.session.Session()
_SESSION.set_credentials("AKIDLLMFLEETTEST", "llmfleet-test-secret")


def moto_url() -> str:
    """The URL of this process's moto S3 server (started on the first call)."""
    with _lock:
        if not _moto:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            atexit.register(server.stop)
            _moto.append(server)
        host, port = _moto[0].get_host_and_port()
    return f"http://{host}:{port}"


async def inline(fn: Callable[[], Any]) -> Any:
    """Run a botocore call on the event loop's own thread (it blocks the loop for its few
    milliseconds): with a virtual clock, a worker thread's wait would let the clock jump."""
    await anyio.lowlevel.checkpoint()
    return fn()


def shared_stand_in() -> tuple[BedrockEmulator, str]:
    """This process's stand-in for jobs of any size (``min_records=1``), started on first use
    and never reconfigured, and a fresh bucket in its S3: for tests that run many short
    fleets (the properties), each on its own bucket and job names."""
    s3_url = moto_url()
    with _lock:
        if not _shared:
            emu = BedrockEmulator(BedrockConfig(min_records=1), s3_url=s3_url)
            _shared.append(emu)
            atexit.register(emu.close)
    emu = _shared[0]
    emu.wait_started()
    bucket = f"llmfleet-test-{next(_buckets)}"
    emu.create_bucket(bucket)
    return emu, bucket


def bedrock_client(emu: BedrockEmulator, bucket: str, **overrides: Any) -> BedrockClient:
    """A :class:`BedrockClient` that reaches ``emu`` and its S3."""
    fields: dict[str, Any] = {
        "role_arn": ROLE,
        "bucket": bucket,
        "min_batch_requests": emu.config.min_records,
        "session": _SESSION,
        "read_timeout": 5.0,
        **emu.client_config(),
        **overrides,
    }
    return BedrockClient(**fields)


@asynccontextmanager
async def stand_in(
    config: BedrockConfig | None = None,
) -> AsyncIterator[tuple[BedrockEmulator, str]]:
    """A fresh stand-in over the shared moto server, and a fresh bucket in it."""
    async with run_bedrock_emulator(config, s3_url=moto_url()) as emu:
        bucket = f"llmfleet-test-{next(_buckets)}"
        emu.create_bucket(bucket)
        yield emu, bucket


def provider(
    emu: BedrockEmulator, bucket: str, *, run_sync: RunSync | None = None, **overrides: Any
) -> BedrockProvider:
    return BedrockProvider(bedrock_client(emu, bucket, **overrides), run_sync=run_sync)


def params(text: str, *, max_tokens: int = 64, model: str = MODEL) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    }
