"""Provider adapters: one per vendor, behind one protocol (:class:`Provider`).

:func:`adapter_for` picks the adapter from the client's type; an object that already
implements :class:`Provider` is used as it is (a fake in tests, a vendor we don't ship).
"""

from __future__ import annotations

import sys
from typing import Any

from ._base import BATCH_TAG as BATCH_TAG
from ._base import BatchStatus as BatchStatus
from ._base import ErrorInfo as ErrorInfo
from ._base import ErrorKind as ErrorKind
from ._base import ItemResult as ItemResult
from ._base import Provider as Provider

__all__ = [
    "BATCH_TAG",
    "BatchStatus",
    "ErrorInfo",
    "ErrorKind",
    "ItemResult",
    "Provider",
    "adapter_for",
]


def adapter_for(client: Any) -> Provider:
    """The adapter for ``client``.

    :param client: an ``anthropic.AsyncAnthropic``, an ``openai.AsyncOpenAI``, a
        ``google.genai.Client`` (or its ``.aio``), a
        :class:`~llmfleet.providers.bedrock.BedrockClient`, or any :class:`Provider`.
    :raises TypeError: no adapter knows this client (the message lists what is accepted).
    """
    if isinstance(client, Provider):
        return client
    # A client's SDK is imported already, since the client exists: look it up rather than
    # import it, so a fleet over one vendor never imports another's SDK (and works when the
    # other is not installed).
    anthropic = sys.modules.get("anthropic")
    if anthropic is not None:
        if isinstance(client, anthropic.AsyncAnthropic):
            from .anthropic import AnthropicProvider

            return AnthropicProvider(client)
        if isinstance(client, anthropic.Anthropic):
            raise TypeError(
                "open_fleet needs an async client: pass anthropic.AsyncAnthropic(), not Anthropic()"
            )
    openai = sys.modules.get("openai")
    if openai is not None:
        if isinstance(client, openai.AsyncOpenAI):
            from .openai import OpenAIProvider

            return OpenAIProvider(client)
        if isinstance(client, openai.OpenAI):
            raise TypeError(
                "open_fleet needs an async client: pass openai.AsyncOpenAI(), not OpenAI()"
            )
    genai = sys.modules.get("google.genai")
    if genai is not None and isinstance(client, genai.Client | genai.client.AsyncClient):
        from .gemini import GeminiProvider

        return GeminiProvider(client)
    bedrock = sys.modules.get("llmfleet.providers.bedrock")
    if bedrock is not None and isinstance(client, bedrock.BedrockClient):
        # A BedrockClient is the adapter's own config object: its module is loaded already.
        provider: Provider = bedrock.BedrockProvider(client)
        return provider
    raise TypeError(
        f"open_fleet cannot drive a {type(client).__name__}: pass anthropic.AsyncAnthropic(), "
        "openai.AsyncOpenAI(), google.genai.Client(), "
        "llmfleet.providers.bedrock.BedrockClient(...) or an object "
        "implementing llmfleet.providers.Provider"
    )
