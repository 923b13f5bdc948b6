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
"""

from __future__ import annotations

# -- the Bedrock stand-in (providers/bedrock.py's counterpart) --
from ._bedrock import BedrockConfig as BedrockConfig
from ._bedrock import BedrockEmulator as BedrockEmulator
from ._bedrock import BedrockFault as BedrockFault
from ._bedrock import JobInfo as JobInfo
from ._bedrock import run_bedrock_emulator as run_bedrock_emulator

# -- the Anthropic and OpenAI emulator --
from ._config import EXTRA_LINE_CUSTOM_ID as EXTRA_LINE_CUSTOM_ID
from ._config import Duration as Duration
from ._config import EmulatorConfig as EmulatorConfig
from ._config import Endpoint as Endpoint
from ._config import Fault as Fault
from ._config import FaultKind as FaultKind
from ._ledger import Ledger as Ledger
from ._ledger import LedgerEntry as LedgerEntry
from ._ledger import ResultType as ResultType
from ._ledger import Route as Route
from ._server import Emulator as Emulator
from ._server import run_emulator as run_emulator
from ._server import start_emulator as start_emulator
from ._state import BatchInfo as BatchInfo
from ._state import RecordedRequest as RecordedRequest

__all__ = [
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
