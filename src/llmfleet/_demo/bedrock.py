"""The demo's Bedrock row: a :class:`~llmfleet.providers.bedrock.BedrockClient` to the Bedrock
stand-in over moto's S3 (``llmfleet demo --provider bedrock``), never a real account.

The stand-in and moto run for the demo in place of the emulator; the ``url`` the client gets
is the stand-in's URL, a space, and moto's. botocore and moto are imported when used.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AsyncExitStack

    from ..providers.bedrock import BedrockClient
    from .config import DemoConfig

__all__ = ["CHAT_MODEL", "GRADING_MODEL", "client", "errors", "start", "where"]

#: The models of the two paths (Bedrock model ids).
CHAT_MODEL: Final = "anthropic.claude-haiku-4-5-20251001-v1:0"
GRADING_MODEL: Final = "anthropic.claude-sonnet-4-5-20250929-v1:0"
#: The demo's stand-in account, role and bucket.
_ROLE: Final = "arn:aws:iam::123456789012:role/llmfleet-demo"
_BUCKET: Final = "llmfleet-demo"


@asynccontextmanager
async def client(key: str, url: str) -> AsyncIterator[BedrockClient]:
    """A client of the stand-in at ``url`` (its URL, a space, moto's), signing with ``key``."""
    import botocore.session

    from ..providers.bedrock import BedrockClient

    endpoint, _, s3_url = url.partition(" ")
    session = botocore.session.Session()
    session.set_credentials("llmfleet-demo", key)
    yield BedrockClient(
        role_arn=_ROLE,
        bucket=_BUCKET,
        endpoint_url=endpoint,
        runtime_endpoint_url=endpoint,
        s3_endpoint_url=s3_url,
        session=session,
    )


def errors() -> tuple[type[Exception], ...]:
    """What the direct route raises: botocore's errors."""
    import botocore.exceptions

    return (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)


async def start(stack: AsyncExitStack, config: DemoConfig) -> tuple[Any, str]:
    """Start the Bedrock stand-in (and moto's S3) for the demo, on ``stack``; return it and
    the ``url`` :func:`client` takes."""
    from ..emulator import BedrockConfig, run_bedrock_emulator

    low, high = config.direct_latency_s
    emulator = await stack.enter_async_context(
        run_bedrock_emulator(
            BedrockConfig(
                turnaround_s=config.turnaround(),
                direct_latency_s=lambda rng: rng.uniform(low, high),
                seed=config.seed,
            )
        )
    )
    emulator.create_bucket(_BUCKET)
    return emulator, f"{emulator.url} {emulator.s3_url}"


def where(url: str, turnaround: str) -> str:
    """What the demo's introduction says it runs against."""
    stand_in, _, s3 = url.partition(" ")
    return (
        f"the Bedrock stand-in at {stand_in}, S3 from moto at {s3} (jobs end after "
        f"{turnaround} s, 100 records at least)"
    )
