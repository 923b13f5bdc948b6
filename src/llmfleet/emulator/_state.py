"""The emulator's whole state: the shared core and one state per vendor, behind one lock.

A vendor plugs in here with one attribute (its :class:`~._jobs.JobBook` subclass, built over
the core), and in ``_app.build_app`` with its routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from ._anthropic import AnthropicState
from ._core import Core
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
