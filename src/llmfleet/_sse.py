"""Server-Sent-Event streams synthesised from a whole result (docs/design.md, Synthesised streams).

A call that asked to stream but was batched gets its answer all at once. These functions turn
that answer (the JSON dict the API returns without streaming) into the bytes the API would
have streamed for it, so that the providers' SDKs parse them with their own stream helpers and
rebuild the same object: ``get_final_message()``, ``get_final_completion()`` and
``get_final_response()`` equal the batched result.

The module is pure: no I/O, no HTTP library. Each function yields one ``bytes`` per event, in
wire order, ready to be written to a ``text/event-stream`` body.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DEFAULT_CHUNK_CHARS",
    "anthropic_error_event",
    "anthropic_message_events",
]

#: How many characters of text, or of a tool's JSON arguments, go in one delta. The APIs send
#: about a token per delta; a synthesised stream has the whole text at once, so fewer, larger
#: deltas cost the reader less and still let a caller's ``text_stream`` loop run more than once.
DEFAULT_CHUNK_CHARS = 64


def _json(value: object) -> bytes:
    # Compact, UTF-8 as the APIs send it. JSON escapes CR and LF inside strings, so no event's
    # data spans two lines; the SDKs split the byte stream on CR/LF only.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _event(name: str, data: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _json(data) + b"\n\n"


def _data(data: object) -> bytes:
    return b"data: " + _json(data) + b"\n\n"


def _pieces(text: str, size: int) -> Iterator[str]:
    """``text`` cut in runs of at most ``size`` characters; at least one (maybe empty) run."""
    if size < 1:
        raise ValueError(f"chunk_chars must be at least 1, got {size}")
    if not text:
        yield ""
        return
    for start in range(0, len(text), size):
        yield text[start : start + size]


# --------------------------------------------------------------------------------------------
# Anthropic Messages
# --------------------------------------------------------------------------------------------

# Usage the API reports on message_delta: cumulative totals that overwrite those of
# message_start; the SDK keeps a message_start value that message_delta leaves out.
_DELTA_USAGE = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
    "output_tokens_details",
)
# Usage known only once the message is done: not in message_start.
_END_USAGE = frozenset({"server_tool_use", "output_tokens_details"})
# Blocks whose ``input`` streams as input_json_delta (the SDK rebuilds ``input`` from them).
_TOOL_INPUT_BLOCKS = frozenset({"tool_use", "server_tool_use"})


def anthropic_message_events(
    message: dict[str, Any], *, chunk_chars: int = DEFAULT_CHUNK_CHARS
) -> Iterator[bytes]:
    """The SSE events of an Anthropic Messages stream that ends in ``message``.

    ``message_start`` (no content, no stop reason, the usage known at the start), a ``ping``,
    then per content block ``content_block_start``, its deltas (``text_delta``,
    ``citations_delta``, ``input_json_delta``, ``thinking_delta`` and ``signature_delta``; none
    for a block that streams whole, such as ``redacted_thinking`` or a tool result) and
    ``content_block_stop``; then ``message_delta`` (stop reason, stop sequence, the final usage)
    and ``message_stop``.

    :param message: a Message as the API returns it (its JSON as a dict); not modified.
    :param chunk_chars: at most this many characters per text, thinking or JSON delta.
    :raises ValueError: if ``chunk_chars`` is below 1.
    :return: one ``b"event: <type>\\ndata: <json>\\n\\n"`` per event.
    """
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
    usage: dict[str, Any] = dict(message.get("usage") or {})
    final_output_tokens = usage.get("output_tokens", 0)
    start_usage = {key: value for key, value in usage.items() if key not in _END_USAGE}
    # The API counts the first output token at message_start and the total at message_delta.
    start_usage["output_tokens"] = min(1, final_output_tokens)
    start = {
        **copy.deepcopy(message),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    if "stop_details" in start:
        start["stop_details"] = None
    yield _event("message_start", {"type": "message_start", "message": start})
    yield _event("ping", {"type": "ping"})

    for index, block in enumerate(message.get("content") or []):
        yield from _anthropic_block_events(index, block, chunk_chars)

    delta: dict[str, Any] = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    for key in ("stop_details", "container"):
        if message.get(key) is not None:
            delta[key] = copy.deepcopy(message[key])
    delta_usage = {"output_tokens": final_output_tokens}
    delta_usage.update(
        {key: copy.deepcopy(usage[key]) for key in _DELTA_USAGE if usage.get(key) is not None}
    )
    yield _event("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage})
    yield _event("message_stop", {"type": "message_stop"})


def _anthropic_block_events(index: int, block: dict[str, Any], size: int) -> Iterator[bytes]:
    kind = block.get("type")
    deltas: list[dict[str, Any]] = []
    if kind == "text":
        start = {**block, "text": ""}
        citations = block.get("citations")
        if citations:
            start["citations"] = []
            deltas.extend({"type": "citations_delta", "citation": c} for c in citations)
        deltas.extend({"type": "text_delta", "text": t} for t in _pieces(block["text"], size))
    elif kind in _TOOL_INPUT_BLOCKS:
        start = {**block, "input": {}}
        # The API streams the JSON of ``input`` and the SDK parses the concatenation; an empty
        # input arrives as one empty delta.
        arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
        if arguments == "{}":
            arguments = ""
        deltas.extend(
            {"type": "input_json_delta", "partial_json": j} for j in _pieces(arguments, size)
        )
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        deltas.extend(
            {"type": "thinking_delta", "thinking": t} for t in _pieces(block["thinking"], size)
        )
        deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
    else:
        # redacted_thinking, server tool results and any later block type arrive whole.
        start = block
    yield _event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": start},
    )
    for delta in deltas:
        yield _event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )
    yield _event("content_block_stop", {"type": "content_block_stop", "index": index})


def anthropic_error_event(error_type: str, message: str) -> bytes:
    """The ``error`` event the Anthropic API sends when a stream fails after it began.

    The SDK raises it as an ``APIStatusError`` whose body is the event's data.

    :param error_type: the API's error type, e.g. ``"overloaded_error"``, ``"api_error"``.
    :param message: what went wrong, for the caller.
    """
    return _event("error", {"type": "error", "error": {"type": error_type, "message": message}})
