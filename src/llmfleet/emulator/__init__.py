"""A local HTTP server that emulates Anthropic's Messages and Message Batches APIs.

The official SDK works against it unchanged (``AsyncAnthropic(base_url=emu.url)``). Replies
are deterministic echoes of the last user text with plausible ``usage``; requests are validated
with the real API's error shapes; batches end after a configurable turnaround or when a test
ends them; faults (error statuses with ``retry-after``, dropped connections, cut result
streams, transient 404s, slow answers) can be injected per endpoint; every request is recorded
(credentials redacted) and every billable item entered in a ledger priced with
:class:`llmfleet.pricing.PriceTable`.

::

    async with run_emulator(EmulatorConfig(turnaround_s=None)) as emu:
        async with AsyncAnthropic(api_key="test", base_url=emu.url) as client:
            batch = await client.messages.batches.create(requests=[...])
            emu.end_batch(batch.id)

From a shell: ``python -m llmfleet.emulator --port 8787``.

Amazon Bedrock has a stand-in of its own (:func:`run_bedrock_emulator`): its batch inference
job API and InvokeModel, over S3 served by moto, on a server of its own (it needs botocore
and moto, the ``bedrock-emulator`` extra).

Serving needs the ``emulator`` extra (starlette, uvicorn): :func:`run_emulator`,
:func:`start_emulator` and :class:`Emulator` are imported on first use, and without the extra
that use raises :class:`ImportError` saying what to install. The configuration, the ledger and
the snapshot types import without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._anthropic import BatchInfo as BatchInfo
from ._bedrock_params import BedrockConfig as BedrockConfig
from ._bedrock_params import BedrockFault as BedrockFault
from ._bedrock_params import JobInfo as JobInfo
from ._config import DEFAULT_MODELS as DEFAULT_MODELS
from ._config import EXTRA_LINE_CUSTOM_ID as EXTRA_LINE_CUSTOM_ID
from ._config import Duration as Duration
from ._config import EmulatorConfig as EmulatorConfig
from ._config import Endpoint as Endpoint
from ._config import Fault as Fault
from ._config import FaultKind as FaultKind
from ._core import RecordedRequest as RecordedRequest
from ._ledger import Ledger as Ledger
from ._ledger import LedgerEntry as LedgerEntry
from ._ledger import ResultType as ResultType
from ._ledger import Route as Route

if TYPE_CHECKING:
    from types import ModuleType

    from ._bedrock_server import BedrockEmulator as BedrockEmulator
    from ._bedrock_server import run_bedrock_emulator as run_bedrock_emulator
    from ._server import Emulator as Emulator
    from ._server import run_emulator as run_emulator
    from ._server import start_emulator as start_emulator

__all__ = [
    "DEFAULT_MODELS",
    "EXTRA_LINE_CUSTOM_ID",
    "BatchInfo",
    "BedrockConfig",
    "BedrockEmulator",
    "BedrockFault",
    "Duration",
    "Emulator",
    "EmulatorConfig",
    "Endpoint",
    "Fault",
    "FaultKind",
    "JobInfo",
    "Ledger",
    "LedgerEntry",
    "RecordedRequest",
    "ResultType",
    "Route",
    "run_bedrock_emulator",
    "run_emulator",
    "start_emulator",
]

#: What to install to serve the emulator.
INSTALL_HINT: Final = "pip install 'llmfleet[emulator]'"
_SERVED: Final = frozenset({"Emulator", "run_emulator", "start_emulator"})
#: The Bedrock stand-in's server (it needs botocore and moto too: the ``bedrock-emulator`` extra).
_BEDROCK_SERVED: Final = frozenset({"BedrockEmulator", "run_bedrock_emulator"})
_EXTRA: Final = ("starlette", "uvicorn")


def _serving() -> ModuleType:
    """The serving module.

    :raises ImportError: the ``emulator`` extra is not installed (the message says what to
        install).
    """
    try:
        from . import _server
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _EXTRA:
            raise
        raise ImportError(
            f"serving the llmfleet emulator needs {exc.name}: {INSTALL_HINT}", name=exc.name
        ) from exc
    return _server


def __getattr__(name: str) -> Any:
    if name in _SERVED:
        return getattr(_serving(), name)
    if name in _BEDROCK_SERVED:
        _serving()  # the same hint without the emulator extra
        from . import _bedrock_server

        return getattr(_bedrock_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
