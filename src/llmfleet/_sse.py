"""Server-Sent-Event streams synthesised from a whole result (docs/design.md §2.2).

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
    "openai_chat_chunks",
    "openai_response_events",
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


def _check_chunk_chars(chunk_chars: int) -> None:
    # Checked when the stream is asked for, not when it is first read.
    if isinstance(chunk_chars, bool) or not isinstance(chunk_chars, int):
        raise TypeError(f"chunk_chars must be an int, got {type(chunk_chars).__name__}")
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")


def _pieces(text: str, size: int) -> Iterator[str]:
    """``text`` cut in runs of at most ``size`` characters; at least one (maybe empty) run."""
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
    :raises TypeError: if ``chunk_chars`` is not an int.
    :raises ValueError: if ``chunk_chars`` is below 1.
    :return: one ``b"event: <type>\\ndata: <json>\\n\\n"`` per event.
    """
    _check_chunk_chars(chunk_chars)
    return _anthropic_message_events(copy.deepcopy(message), chunk_chars)


def _anthropic_message_events(message: dict[str, Any], chunk_chars: int) -> Iterator[bytes]:
    # ``message`` is the stream's own copy: nothing here changes it.
    usage: dict[str, Any] = dict(message.get("usage") or {})
    final_output_tokens = usage.get("output_tokens") or 0
    start_usage = {key: value for key, value in usage.items() if key not in _END_USAGE}
    # The API counts the first output token at message_start and the total at message_delta.
    start_usage["output_tokens"] = min(1, final_output_tokens)
    start = {
        **message,
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
            delta[key] = message[key]
    delta_usage = {"output_tokens": final_output_tokens}
    delta_usage.update({key: usage[key] for key in _DELTA_USAGE if usage.get(key) is not None})
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
        deltas.extend(
            {"type": "text_delta", "text": t} for t in _pieces(block.get("text") or "", size)
        )
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
            {"type": "thinking_delta", "thinking": t}
            for t in _pieces(block.get("thinking") or "", size)
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


# --------------------------------------------------------------------------------------------
# OpenAI Chat Completions
# --------------------------------------------------------------------------------------------


def openai_chat_chunks(
    completion: dict[str, Any],
    *,
    include_usage: bool = False,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
) -> Iterator[bytes]:
    """The SSE events of a Chat Completions stream that ends in ``completion``.

    Per choice, in index order: a chunk with the role (and an empty ``content`` if the message
    has text), the ``content`` or ``refusal`` deltas, each tool call (its index, id, type and
    name, then its ``arguments`` in pieces), then a chunk with the ``finish_reason``. With
    ``include_usage`` every chunk carries ``"usage": null`` and a last chunk with no choices
    carries the usage, as the API does for ``stream_options={"include_usage": True}``; without
    it the stream has no usage, as the API's has none. Then ``data: [DONE]``.

    :param completion: a ChatCompletion as the API returns it (its JSON as a dict); not
        modified.
    :param include_usage: whether the request asked for ``stream_options.include_usage``.
    :param chunk_chars: at most this many characters per content, refusal or arguments delta.
    :raises TypeError: if ``chunk_chars`` is not an int.
    :raises ValueError: if ``chunk_chars`` is below 1.
    :return: one ``b"data: <json>\\n\\n"`` per chunk, then ``b"data: [DONE]\\n\\n"``.
    """
    _check_chunk_chars(chunk_chars)
    return _openai_chat_chunks(copy.deepcopy(completion), include_usage, chunk_chars)


def _openai_chat_chunks(
    completion: dict[str, Any], include_usage: bool, chunk_chars: int
) -> Iterator[bytes]:
    base: dict[str, Any] = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    # The API repeats these on every chunk; the SDK keeps the last chunk's fingerprint.
    for key in ("service_tier", "system_fingerprint"):
        if key in completion:
            base[key] = completion[key]

    def chunk(choices: list[dict[str, Any]], usage: object = None) -> bytes:
        data = {**base, "choices": choices}
        if include_usage:
            data["usage"] = usage
        return _data(data)

    for choice in completion.get("choices") or []:
        for delta, extra in _chat_choice_deltas(choice, chunk_chars):
            entry = {"index": choice.get("index", 0), "delta": delta}
            entry.update(extra)
            yield chunk([entry])
    if include_usage:
        yield chunk([], completion.get("usage"))
    yield b"data: [DONE]\n\n"


def _chat_choice_deltas(
    choice: dict[str, Any], size: int
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(delta, other fields of the chunk's choice) for each chunk of one choice."""
    message: dict[str, Any] = choice.get("message") or {}
    content = message.get("content")
    refusal = message.get("refusal")
    pending = {"logprobs": None, "finish_reason": None}
    first: dict[str, Any] = {
        "role": message.get("role", "assistant"),
        "content": None if content is None else "",
        "refusal": None,
    }
    yield first, pending
    if content:
        for piece in _pieces(content, size):
            yield {"content": piece}, pending
    if refusal is not None:
        for piece in _pieces(refusal, size):
            yield {"refusal": piece}, pending
    # Fields that arrive whole, in one delta of their own.
    for key in ("annotations", "audio"):
        if message.get(key) is not None:
            yield {key: message[key]}, pending
    function_call = message.get("function_call")
    if function_call is not None:
        yield {"function_call": {"name": function_call.get("name"), "arguments": ""}}, pending
        for piece in _pieces(function_call.get("arguments") or "", size):
            if piece:
                yield {"function_call": {"arguments": piece}}, pending
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function")
        if call.get("type", "function") != "function" or function is None:
            # A custom tool call has no delta form; it arrives whole.
            yield {"tool_calls": [{"index": index, **call}]}, pending
            continue
        head = {
            "index": index,
            "id": call.get("id"),
            "type": "function",
            "function": {"name": function.get("name"), "arguments": ""},
        }
        yield {"tool_calls": [head]}, pending
        for piece in _pieces(function.get("arguments") or "", size):
            if piece:
                yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, pending
    # Log probabilities go with the finish reason: the SDK appends every chunk's to the
    # choice's, and would count those of a later choice's first chunk twice (docs/design.md
    # §2.2).
    last = {
        "logprobs": choice.get("logprobs"),
        "finish_reason": choice.get("finish_reason"),
    }
    yield {}, last


# --------------------------------------------------------------------------------------------
# OpenAI Responses
# --------------------------------------------------------------------------------------------

# The event that ends a stream, by the response's status; any other status ends "completed".
_RESPONSE_END = {"incomplete": "response.incomplete", "failed": "response.failed"}


def openai_response_events(
    response: dict[str, Any], *, chunk_chars: int = DEFAULT_CHUNK_CHARS
) -> Iterator[bytes]:
    """The SSE events of a Responses API stream that ends in ``response``.

    ``response.created`` and ``response.in_progress`` (the response in progress, with no output
    and no usage); per output item ``response.output_item.added``, its parts and deltas, and
    ``response.output_item.done`` with the whole item; then ``response.completed``, or
    ``response.incomplete`` / ``response.failed`` for a response with that status, carrying the
    whole response. A message's text parts stream as ``response.content_part.added``,
    ``response.output_text.delta`` events, one ``response.output_text.annotation.added`` per
    annotation, ``response.output_text.done`` and ``response.content_part.done``; refusals as
    ``response.refusal.delta``/``.done``; a function call's arguments as
    ``response.function_call_arguments.delta``/``.done``; a reasoning item's summary and text
    as ``response.reasoning_summary_*`` and ``response.reasoning_text.*`` events. Other items
    arrive whole. Every event carries its ``type`` and a ``sequence_number`` counting from 0.

    :param response: a Response as the API returns it (its JSON as a dict); not modified.
    :param chunk_chars: at most this many characters per delta.
    :raises TypeError: if ``chunk_chars`` is not an int.
    :raises ValueError: if ``chunk_chars`` is below 1.
    :return: one ``b"event: <type>\\ndata: <json>\\n\\n"`` per event.
    """
    _check_chunk_chars(chunk_chars)
    return _openai_response_events(copy.deepcopy(response), chunk_chars)


def _openai_response_events(whole: dict[str, Any], chunk_chars: int) -> Iterator[bytes]:
    sequence = 0

    def event(kind: str, **fields: object) -> bytes:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return _event(kind, data)

    progress = {**whole, "status": "in_progress", "output": [], "usage": None}
    for key in ("completed_at", "incomplete_details", "error"):
        if key in progress:
            progress[key] = None
    yield event("response.created", response=progress)
    yield event("response.in_progress", response=progress)
    for index, item in enumerate(whole.get("output") or []):
        for kind, fields in _response_item_events(index, item, chunk_chars):
            yield event(kind, **fields)
    end = _RESPONSE_END.get(whole.get("status") or "", "response.completed")
    yield event(end, response=whole)


def _response_item_events(
    index: int, item: dict[str, Any], size: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = item.get("type")
    item_id = item.get("id") or ""
    where = {"item_id": item_id, "output_index": index}
    added = {**item}
    if "status" in item:
        added["status"] = "in_progress"
    if kind == "message":
        added["content"] = []
        yield "response.output_item.added", {"output_index": index, "item": added}
        for part_index, part in enumerate(item.get("content") or []):
            yield from _response_part_events({**where, "content_index": part_index}, part, size)
    elif kind == "function_call":
        added["arguments"] = ""
        yield "response.output_item.added", {"output_index": index, "item": added}
        arguments = item.get("arguments") or ""
        for piece in _pieces(arguments, size):
            if piece:
                yield "response.function_call_arguments.delta", {**where, "delta": piece}
        yield "response.function_call_arguments.done", {**where, "arguments": arguments}
    elif kind == "reasoning":
        added["summary"] = []
        if item.get("content") is not None:
            added["content"] = []
        yield "response.output_item.added", {"output_index": index, "item": added}
        for summary_index, summary in enumerate(item.get("summary") or []):
            at = {**where, "summary_index": summary_index}
            text = summary.get("text", "")
            yield "response.reasoning_summary_part.added", {**at, "part": {**summary, "text": ""}}
            for piece in _pieces(text, size):
                yield "response.reasoning_summary_text.delta", {**at, "delta": piece}
            yield "response.reasoning_summary_text.done", {**at, "text": text}
            yield "response.reasoning_summary_part.done", {**at, "part": summary}
        for content_index, content in enumerate(item.get("content") or []):
            at = {**where, "content_index": content_index}
            text = content.get("text", "")
            for piece in _pieces(text, size):
                yield "response.reasoning_text.delta", {**at, "delta": piece}
            yield "response.reasoning_text.done", {**at, "text": text}
    else:
        yield "response.output_item.added", {"output_index": index, "item": added}
    yield "response.output_item.done", {"output_index": index, "item": item}


def _response_part_events(
    where: dict[str, Any], part: dict[str, Any], size: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = part.get("type")
    if kind == "output_text":
        text = part.get("text", "")
        empty = {**part, "text": "", "annotations": []}
        if "logprobs" in part:
            empty["logprobs"] = []
        yield "response.content_part.added", {**where, "part": empty}
        for piece in _pieces(text, size):
            yield "response.output_text.delta", {**where, "delta": piece, "logprobs": []}
        for annotation_index, annotation in enumerate(part.get("annotations") or []):
            yield (
                "response.output_text.annotation.added",
                {**where, "annotation_index": annotation_index, "annotation": annotation},
            )
        done = {**where, "text": text, "logprobs": part.get("logprobs") or []}
        yield "response.output_text.done", done
    elif kind == "refusal":
        refusal = part.get("refusal", "")
        yield "response.content_part.added", {**where, "part": {**part, "refusal": ""}}
        for piece in _pieces(refusal, size):
            yield "response.refusal.delta", {**where, "delta": piece}
        yield "response.refusal.done", {**where, "refusal": refusal}
    else:
        yield "response.content_part.added", {**where, "part": part}
    yield "response.content_part.done", {**where, "part": part}
