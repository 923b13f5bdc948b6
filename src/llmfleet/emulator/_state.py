"""The emulator's whole state: the shared core and one state per vendor, behind one lock.

How a vendor plugs in:

- ``_<vendor>.py``: its state, a :class:`~._jobs.JobBook` subclass over a
  :class:`~._jobs.Job` subclass (the shared life of a batch: ids, turnaround, cancel, expiry,
  outcome markers, the test's controls), writing only its results (``finish``) and JSON; it
  bills through :meth:`~._core.Core.bill`. Request checks and reply bodies beside it
  (``_<vendor>_params.py``), free of HTTP.
- ``_<vendor>_routes.py``: a :class:`~._wire.Dialect` (error body, request-id header, error
  types, credentials) and its handlers, each wrapped by :func:`~._wire.endpoint` (faults,
  recording, auth, size and JSON checks come with it).
- its endpoint names in ``_config.Endpoint`` (faults and counts are per endpoint), one
  attribute here, its routes in ``_app.build_app``, and a property on ``_server.Emulator``
  for the test's controls.

The Bedrock stand-in is the exception: its jobs read and write S3, so it serves on a server
of its own (``_bedrock_server``, beside moto's S3) over a :class:`~._core.Core` of its own,
with the same pieces otherwise (``_bedrock.py``, ``_bedrock_params.py``, ``_bedrock_routes.py``
with its :class:`~._wire.Dialect`, ``bedrock_*`` endpoints in ``_config.Endpoint``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from ._anthropic import AnthropicState
from ._core import Core
from ._gemini import GeminiState
from ._openai import OpenAIState

if TYPE_CHECKING:
    from ._config import EmulatorConfig

__all__ = ["State"]


@final
class State(Core):
    """All mutable emulator state: requests, faults, ledger (:class:`Core`), and each vendor's
    calls and batches."""

    def __init__(self, config: EmulatorConfig) -> None:
        super().__init__(config)
        #: Anthropic's Messages and Message Batches.
        self.anthropic = AnthropicState(self)
        #: OpenAI's Chat Completions, Responses, Files and Batches.
        self.openai = OpenAIState(self)
        #: Gemini's generateContent and batches of inlined requests.
        self.gemini = GeminiState(self)
