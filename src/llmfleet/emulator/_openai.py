"""The OpenAI half of the emulator: Chat Completions, Responses, Files and Batches.

The official ``openai`` SDK works against it unchanged
(``AsyncOpenAI(api_key=..., base_url=emu.url + "/v1")``). Replies echo the last user text with
plausible ``usage``; errors have OpenAI's shape (``{"error": {"message", "type", "param",
"code"}}``). A batch is validated like the real one, after its create: a malformed input file
(bad JSON, duplicate ``custom_id``, a ``url`` other than the batch's endpoint, several models,
more than 50,000 lines, a body with no ``model``) makes the batch ``failed`` with
``errors.data``; a request the endpoint would refuse ends in the error file with its 400. The
markers ``[[errored]]`` (``[[errored:code]]``) and ``[[expired]]`` in a request's last user text
decide its outcome; a batch with an expired request ends ``expired``. Faults, turnaround,
seed and prices come from the shared :class:`~llmfleet.emulator.EmulatorConfig`; billing goes
to the shared ledger (direct at list price, batch at half, failed and unprocessed requests
free).

State lives behind the emulator's one lock (see ``_state``); batches end lazily, when read.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, final

import anyio
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmfleet.pricing import TokenUsage

from ._app import (
    CLIENT_GONE,
    _authenticate,
    _decode,
    _drop,
    _fault_error,
    _JSONLResponse,
    _read_body,
)
from ._config import draw
from ._ledger import LedgerEntry, ResultType
from ._state import ApiError, first_end, make_id

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._config import Fault
    from ._state import State

__all__ = ["OpenAIBatchInfo", "OpenAIFileInfo", "OpenAIState", "openai_routes"]

#: The endpoints a batch may target here (the real API has more).
BATCH_ENDPOINTS: Final = ("/v1/chat/completions", "/v1/responses")
MAX_BATCH_REQUESTS: Final = 50_000
MAX_BATCH_FILE_BYTES: Final = 200 * 1024 * 1024
MAX_FILE_BYTES: Final = 512 * 1024 * 1024
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_DAY: Final = 24 * 3600.0
_CHARS_PER_TOKEN: Final = 4
_ERRORED_MARKER: Final = re.compile(r"\[\[errored(?::([a-z_]+))?\]\]")
_EXPIRED_MARKER: Final = "[[expired]]"
_RESULTS: Final[dict[str, ResultType]] = {
    "succeeded": "succeeded",
    "expired": "expired",
    "canceled": "canceled",
}
_FAULT_TYPES: Final = {429: "rate_limit_exceeded", 401: "invalid_api_key"}

OpenAIStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


class _OpenAIError(ApiError):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(status, type_, message)
        self.param = param
        self.code = code


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> _OpenAIError:
    return _OpenAIError(status, message, type_=type_, param=param, code=code)


def _invalid(message: str, param: str | None = None, code: str | None = None) -> _OpenAIError:
    return _error(400, message, param=param, code=code)


def _error_body(error: ApiError) -> dict[str, Any]:
    param = error.param if isinstance(error, _OpenAIError) else None
    code = error.code if isinstance(error, _OpenAIError) else None
    return {
        "error": {"message": error.message, "type": error.error_type, "param": param, "code": code}
    }


# -- replies ------------------------------------------------------------------------------


def _tokens(chars: int) -> int:
    return math.ceil(chars / _CHARS_PER_TOKEN)


def _texts(content: object) -> list[str]:
    """The text of a message's content: a string, or its text parts."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        out.extend(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return out


def _messages(params: dict[str, Any]) -> list[dict[str, Any]]:
    """A request's conversation as ``{"role", "content"}`` items, on either endpoint."""
    if "messages" in params:
        return [m for m in params.get("messages") or [] if isinstance(m, dict)]
    raw = params.get("input")
    items: list[dict[str, Any]] = []
    if isinstance(params.get("instructions"), str):
        items.append({"role": "developer", "content": params["instructions"]})
    if isinstance(raw, str):
        items.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        items.extend(m for m in raw if isinstance(m, dict) and "role" in m)
    return items


def last_user_text(params: dict[str, Any]) -> str:
    """The text of the last ``user`` message: what the emulator echoes."""
    for message in reversed(_messages(params)):
        if message.get("role") == "user":
            return "\n".join(_texts(message.get("content")))
    return ""


def _prompt_tokens(params: dict[str, Any]) -> int:
    chars = sum(len(t) for m in _messages(params) for t in _texts(m.get("content")))
    return max(1, _tokens(chars))


def _validate(endpoint: str, body: object, prefix: str = "") -> dict[str, Any]:
    """Check one request body as the endpoint would; return it.

    :raises ApiError: 400 naming the first problem.
    """
    if not isinstance(body, dict):
        raise _invalid(f"{prefix or 'body'}: expected an object", prefix or None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid(
            "you must provide a model parameter", f"{prefix}model", "missing_required_parameter"
        )
    if body.get("stream") is True:
        raise _invalid("the llmfleet emulator does not stream responses", f"{prefix}stream")
    if endpoint == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _invalid("messages: a non-empty array is required", f"{prefix}messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in (
                "system",
                "developer",
                "user",
                "assistant",
                "tool",
            ):
                raise _invalid(f"messages[{i}].role: invalid role", f"{prefix}messages[{i}].role")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
    else:
        raw = body.get("input")
        if not isinstance(raw, str | list) or not raw:
            raise _invalid("input: a string or a non-empty array is required", f"{prefix}input")
        limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _invalid("the token limit must be an integer >= 1", f"{prefix}max_tokens")
    return body


def _reply(
    endpoint: str, params: dict[str, Any], reply_id: str, now: float
) -> tuple[dict[str, Any], TokenUsage]:
    """The response to a valid request, and its usage."""
    text = last_user_text(params)
    model = str(params["model"])
    if endpoint == "/v1/chat/completions":
        limit = params.get("max_completion_tokens", params.get("max_tokens"))
    else:
        limit = params.get("max_output_tokens")
    truncated = isinstance(limit, int) and len(text) > limit * _CHARS_PER_TOKEN
    if truncated:
        assert isinstance(limit, int)
        text = text[: limit * _CHARS_PER_TOKEN]
    prompt = _prompt_tokens(params)
    output = max(1, _tokens(len(text)))
    usage = TokenUsage(input_tokens=prompt, output_tokens=output)
    if endpoint == "/v1/chat/completions":
        body: dict[str, Any] = {
            "id": reply_id,
            "object": "chat.completion",
            "created": int(now),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": output,
                "total_tokens": prompt + output,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": None,
        }
        return body, usage
    body = {
        "id": reply_id,
        "object": "response",
        "created_at": int(now),
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "error": None,
        "model": model,
        "instructions": params.get("instructions"),
        "max_output_tokens": params.get("max_output_tokens"),
        "metadata": params.get("metadata") or {},
        "output": [
            {
                "type": "message",
                "id": "msg_" + reply_id.removeprefix("resp_"),
                "status": "incomplete" if truncated else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": params.get("previous_response_id"),
        "temperature": params.get("temperature", 1.0),
        "top_p": params.get("top_p", 1.0),
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output,
        },
        "user": None,
        "store": True,
    }
    return body, usage


# -- state --------------------------------------------------------------------------------


@dataclass(slots=True)
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: float
    deleted: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass(slots=True)
class _Item:
    custom_id: str
    body: dict[str, Any]
    #: Set when the batch ends: the output or error line.
    line: dict[str, Any] | None = None
    result: ResultType | None = None


@dataclass(slots=True)
class _Batch:
    id: str
    seq: int
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created_at: float
    expires_at: float
    ends_at: float | None
    items: list[_Item]
    model: str | None
    errors: list[dict[str, Any]] = field(default_factory=list)
    status: OpenAIStatus = "in_progress"
    cancelling_at: float | None = None
    cancel_ends_at: float | None = None
    ended_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None


@final
@dataclass(frozen=True, slots=True)
class OpenAIFileInfo:
    """A snapshot of one stored file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    deleted: bool


@final
@dataclass(frozen=True, slots=True)
class OpenAIBatchInfo:
    """A snapshot of one OpenAI batch (times are ``time.time()`` seconds)."""

    id: str
    status: OpenAIStatus
    endpoint: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    metadata: dict[str, str] | None
    custom_ids: tuple[str, ...]
    #: Each request's result type once the batch has ended (none for a failed batch).
    results: dict[str, ResultType]
    errors: tuple[dict[str, Any], ...]
    created_at: float
    ended_at: float | None


@final
class OpenAIState:
    """The OpenAI files and batches of one emulator, behind the shared state's lock.

    Its public methods are the controls a test uses (``emu.openai``).
    """

    def __init__(self, state: State) -> None:
        self._state = state
        self._lock = state._lock
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._direct_calls = 0

    @property
    def _config(self) -> Any:
        return self._state.config

    def _id(self, prefix: str, kind: str, n: int) -> str:
        return make_id(prefix, f"{self._config.seed}/openai/{kind}/{n}")

    # -- direct ---------------------------------------------------------------------------

    def direct_latency(self) -> float:
        with self._lock:
            n = self._direct_calls + 1
        rng = random.Random(f"{self._config.seed}/openai/latency/{n}")
        return draw(self._config.direct_latency_s, rng) or 0.0

    def create(self, endpoint: str, body: object) -> dict[str, Any]:
        """Answer a direct call; enters it in the ledger.

        :raises ApiError: for an invalid body.
        """
        params = _validate(endpoint, body)
        with self._lock:
            self._direct_calls += 1
            prefix = "chatcmpl-" if endpoint == "/v1/chat/completions" else "resp_"
            reply_id = self._id(prefix, "direct", self._direct_calls)
            reply, usage = _reply(endpoint, params, reply_id, time.time())
            self._enter("direct", None, None, reply_id, str(params["model"]), "succeeded", usage)
        return reply

    def _enter(
        self,
        route: Literal["direct", "batch"],
        batch_id: str | None,
        custom_id: str | None,
        reply_id: str | None,
        model: str,
        result: ResultType,
        usage: TokenUsage,
        at: float | None = None,
    ) -> None:
        self._state.ledger._add(
            LedgerEntry(
                route=route,
                batch_id=batch_id,
                custom_id=custom_id,
                message_id=reply_id,
                model=model,
                result=result,
                usage=usage,
                cost=self._config.prices.cost(model, usage, batch=route == "batch"),
                time=time.time() if at is None else at,
            )
        )

    # -- files ----------------------------------------------------------------------------

    def upload(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
            raise _invalid(f"purpose: invalid value {purpose!r}", "purpose")
        if purpose == "batch":
            if not filename.endswith(".jsonl"):
                raise _invalid("files for the Batch API must be .jsonl", "file")
            if len(data) > MAX_BATCH_FILE_BYTES:
                raise _invalid(
                    f"a batch input file may hold at most {MAX_BATCH_FILE_BYTES} bytes", "file"
                )
        with self._lock:
            file = self._new_file(filename, purpose, data)
            return file.json()

    def _new_file(self, filename: str, purpose: str, data: bytes) -> _File:
        n = len(self._files) + 1
        file = _File(self._id("file-", "file", n), filename, purpose, data, time.time())
        self._files[file.id] = file
        return file

    def _file(self, file_id: str) -> _File:
        file = self._files.get(file_id)
        if file is None or file.deleted:
            raise _error(404, f"No such File object: {file_id}", param="id")
        return file

    def check_file(self, file_id: str) -> None:
        with self._lock:
            self._file(file_id)

    def content(self, file_id: str) -> bytes:
        with self._lock:
            self._refresh_all()
            return self._file(file_id).data

    def delete_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            self._file(file_id).deleted = True
            return {"id": file_id, "object": "file", "deleted": True}

    # -- batches --------------------------------------------------------------------------

    def create_batch(self, body: object) -> dict[str, Any]:
        """Create a batch (validation of its file happens after, as the real API's does).

        :raises ApiError: for an invalid create body (no batch is created).
        """
        if not isinstance(body, dict):
            raise _invalid("body: expected an object")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                raise _invalid(
                    f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
                )
        endpoint = body["endpoint"]
        if endpoint not in BATCH_ENDPOINTS:
            raise _invalid(
                f"endpoint: {endpoint!r} is not supported by the llmfleet emulator; "
                f"use one of {BATCH_ENDPOINTS}",
                "endpoint",
            )
        if body["completion_window"] != "24h":
            raise _invalid("completion_window: only '24h' is supported", "completion_window")
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict) or len(metadata) > 16:
                raise _invalid("metadata: at most 16 key-value pairs", "metadata")
            for key, value in metadata.items():
                if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
                    raise _invalid(
                        "metadata: keys are strings of at most 64 characters, values of 512",
                        "metadata",
                    )
        with self._lock:
            file = self._file(body["input_file_id"])
            if file.purpose != "batch":
                raise _invalid(
                    "the input file must be uploaded with purpose 'batch'", "input_file_id"
                )
            now = time.time()
            seq = len(self._batches) + 1
            batch_id = self._id("batch_", "batch", seq)
            items, errors, model = _parse_input(file.data, endpoint)
            turnaround = draw(
                self._config.turnaround_s,
                random.Random(f"{self._config.seed}/{batch_id}/turnaround"),
            )
            batch = _Batch(
                id=batch_id,
                seq=seq,
                endpoint=endpoint,
                input_file_id=file.id,
                metadata=dict(metadata) if metadata is not None else None,
                created_at=now,
                expires_at=now + _DAY,
                ends_at=None if turnaround is None else now + turnaround,
                items=items,
                model=model,
                errors=errors,
            )
            if errors:
                batch.status = "failed"
                batch.ended_at = now
            self._batches[batch_id] = batch
            self._state.ledger._count_batch()
            self._refresh(batch, now)
            answer = self._json(batch)
            # The real API validates the file after answering.
            answer["status"] = "validating"
            return answer

    def _batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise _error(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._refresh(batch, time.time())
            return self._json(batch)

    def check_batch(self, batch_id: str) -> None:
        with self._lock:
            self._batch(batch_id)

    def list_batches(self, limit: int, after: str | None) -> dict[str, Any]:
        """A page of batches, newest first."""
        with self._lock:
            self._refresh_all()
            live = sorted(self._batches.values(), key=lambda b: b.seq, reverse=True)
            if after is not None:
                cursor = self._batches.get(after)
                if cursor is None:
                    raise _invalid(f"after: unknown batch id {after!r}", "after")
                live = [b for b in live if b.seq < cursor.seq]
            page = live[:limit]
            return {
                "object": "list",
                "data": [self._json(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(live) > limit,
            }

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Start cancelling; an ended or cancelling batch is returned unchanged."""
        with self._lock:
            batch = self._batch(batch_id)
            now = time.time()
            self._refresh(batch, now)
            if batch.status == "in_progress":
                batch.status = "cancelling"
                batch.cancelling_at = now
                delay = draw(
                    self._config.cancel_delay_s,
                    random.Random(f"{self._config.seed}/{batch_id}/cancel"),
                )
                batch.cancel_ends_at = now + (delay or 0.0)
                self._refresh(batch, now)
            return self._json(batch)

    # -- controls (from the test's thread) ------------------------------------------------

    def end_batch(self, batch_id: str) -> OpenAIBatchInfo:
        """End the batch now with the outcomes its requests would have had (a cancelling
        batch ends ``cancelled``). An ended batch is left as it is.

        :raises KeyError: no batch has that id.
        """
        with self._lock:
            batch = self._control(batch_id)
            if batch.status in ("in_progress", "cancelling"):
                self._finish(
                    batch, time.time(), "cancel" if batch.status == "cancelling" else "process"
                )
            return self._info(batch)

    def expire_batch(self, batch_id: str) -> OpenAIBatchInfo:
        """End the batch now as its 24 hours running out would: ``expired``, every request
        in the error file with ``batch_expired``.

        :raises KeyError: no batch has that id.
        """
        with self._lock:
            batch = self._control(batch_id)
            if batch.status in ("in_progress", "cancelling"):
                self._finish(batch, time.time(), "expire")
            return self._info(batch)

    def end_all_batches(self) -> list[str]:
        with self._lock:
            ids = [
                b.id for b in self._batches.values() if b.status in ("in_progress", "cancelling")
            ]
            for batch_id in ids:
                self.end_batch(batch_id)
            return ids

    @property
    def batches(self) -> dict[str, OpenAIBatchInfo]:
        """Every batch, by id, in creation order, as of now."""
        with self._lock:
            self._refresh_all()
            return {b.id: self._info(b) for b in self._batches.values()}

    @property
    def files(self) -> dict[str, OpenAIFileInfo]:
        """Every file ever stored (deleted ones too, marked), by id."""
        with self._lock:
            self._refresh_all()
            return {
                f.id: OpenAIFileInfo(f.id, f.filename, f.purpose, f.data, f.deleted)
                for f in self._files.values()
            }

    def _control(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise KeyError(batch_id)
        self._refresh(batch, time.time())
        return batch

    # -- the life of a batch --------------------------------------------------------------

    def refresh_all(self) -> None:
        with self._lock:
            self._refresh_all()

    def _refresh_all(self) -> None:
        now = time.time()
        for batch in self._batches.values():
            self._refresh(batch, now)

    def _refresh(self, batch: _Batch, now: float) -> None:
        if batch.status not in ("in_progress", "cancelling"):
            return
        at, how = first_end(batch.expires_at, batch.ends_at, batch.cancel_ends_at)
        if now >= at:
            self._finish(batch, at, how)

    def _finish(
        self, batch: _Batch, at: float, how: Literal["process", "cancel", "expire"]
    ) -> None:
        output: list[bytes] = []
        errors: list[bytes] = []
        any_expired = False
        for n, item in enumerate(batch.items):
            request_id = make_id("req_", f"{self._config.seed}/{batch.id}/{item.custom_id}")
            line: dict[str, Any] = {
                "id": make_id("batch_req_", f"{self._config.seed}/{batch.id}/{n}"),
                "custom_id": item.custom_id,
                "response": None,
                "error": None,
            }
            usage = TokenUsage()
            reply_id: str | None = None
            outcome = (
                "canceled"
                if how == "cancel"
                else "expired"
                if how == "expire"
                else self._outcome(batch, item)
            )
            if outcome == "succeeded":
                try:
                    params = _validate(batch.endpoint, item.body)
                except ApiError as error:
                    outcome = "errored"
                    line["response"] = {
                        "status_code": error.status,
                        "request_id": request_id,
                        "body": _error_body(error),
                    }
                else:
                    prefix = "chatcmpl-" if batch.endpoint == "/v1/chat/completions" else "resp_"
                    reply_id = make_id(prefix, f"{self._config.seed}/{batch.id}/{item.custom_id}")
                    body, usage = _reply(batch.endpoint, params, reply_id, at)
                    line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
            elif outcome.startswith("errored"):
                code = outcome.partition(":")[2] or "server_error"
                line["response"] = {
                    "status_code": 500,
                    "request_id": request_id,
                    "body": {
                        "error": {
                            "message": f"{code} (injected by the llmfleet emulator).",
                            "type": "server_error",
                            "param": None,
                            "code": code,
                        }
                    },
                }
            elif outcome == "expired":
                any_expired = True
                line["error"] = {
                    "code": "batch_expired",
                    "message": (
                        "This request could not be executed before the completion window expired."
                    ),
                }
            result: ResultType = "errored" if outcome.startswith("errored") else _RESULTS[outcome]
            item.result = result
            if outcome != "canceled":
                # Unprocessed requests of a cancelled batch get no line at all.
                item.line = line
                encoded = json.dumps(line, separators=(",", ":")).encode() + b"\n"
                (output if result == "succeeded" else errors).append(encoded)
            self._enter(
                "batch",
                batch.id,
                item.custom_id,
                reply_id,
                str(item.body.get("model", "")),
                result,
                usage,
                at,
            )
        if output:
            batch.output_file_id = self._new_file(
                f"{batch.id}_output.jsonl", "batch_output", b"".join(output)
            ).id
        if errors:
            batch.error_file_id = self._new_file(
                f"{batch.id}_error.jsonl", "batch_output", b"".join(errors)
            ).id
        if how == "cancel":
            batch.status = "cancelled"
        elif how == "expire" or any_expired:
            batch.status = "expired"
        else:
            batch.status = "completed"
        batch.ended_at = at

    def _outcome(self, batch: _Batch, item: _Item) -> str:
        text = last_user_text(item.body)
        marker = _ERRORED_MARKER.search(text)
        if marker is not None:
            return "errored:" + (marker.group(1) or "server_error")
        if _EXPIRED_MARKER in text:
            return "expired"
        draw_ = random.Random(f"{self._config.seed}/{batch.id}/{item.custom_id}/outcome").random()
        if draw_ < self._config.errored_ratio:
            return "errored"
        if draw_ < self._config.errored_ratio + self._config.expired_ratio:
            return "expired"
        return "succeeded"

    def _json(self, batch: _Batch) -> dict[str, Any]:
        def stamp(t: float | None) -> int | None:
            return None if t is None else int(t)

        ended = batch.ended_at
        counts = {"total": len(batch.items), "completed": 0, "failed": 0}
        for item in batch.items:
            if item.result == "succeeded":
                counts["completed"] += 1
            elif item.result in ("errored", "expired"):
                counts["failed"] += 1
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": stamp(batch.created_at),
            "in_progress_at": None if batch.status == "failed" else stamp(batch.created_at),
            "expires_at": stamp(batch.expires_at),
            "finalizing_at": stamp(ended) if batch.status in ("completed", "expired") else None,
            "completed_at": stamp(ended) if batch.status == "completed" else None,
            "failed_at": stamp(ended) if batch.status == "failed" else None,
            "expired_at": stamp(ended) if batch.status == "expired" else None,
            "cancelling_at": stamp(batch.cancelling_at),
            "cancelled_at": stamp(ended) if batch.status == "cancelled" else None,
            "request_counts": counts,
            "metadata": batch.metadata,
            "usage": None,
        }

    def _info(self, batch: _Batch) -> OpenAIBatchInfo:
        return OpenAIBatchInfo(
            id=batch.id,
            status=batch.status,
            endpoint=batch.endpoint,
            input_file_id=batch.input_file_id,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            metadata=dict(batch.metadata) if batch.metadata is not None else None,
            custom_ids=tuple(i.custom_id for i in batch.items),
            results={i.custom_id: i.result for i in batch.items if i.result is not None},
            errors=tuple(batch.errors),
            created_at=batch.created_at,
            ended_at=batch.ended_at,
        )


def _parse_input(
    data: bytes, endpoint: str
) -> tuple[list[_Item], list[dict[str, Any]], str | None]:
    """The requests of an input file, the validation errors that fail the batch, its model."""
    items: list[_Item] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()

    def fail(line: int | None, code: str, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "line": line, "message": message, "param": param})

    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        fail(None, "empty_file", "The input file is empty.")
    if len(lines) > MAX_BATCH_REQUESTS:
        fail(
            None,
            "too_many_requests",
            f"A batch may hold at most {MAX_BATCH_REQUESTS} requests, not {len(lines)}.",
        )
    for number, raw in enumerate(lines, start=1):
        try:
            request = json.loads(raw)
        except ValueError:
            fail(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            continue
        if not isinstance(request, dict):
            fail(number, "invalid_json_line", "This line is not a JSON object.")
            continue
        missing = [k for k in ("custom_id", "method", "url", "body") if k not in request]
        if missing:
            fail(
                number,
                "missing_required_parameter",
                f"Missing required parameter: {missing[0]!r}.",
                missing[0],
            )
            continue
        custom_id, body = request["custom_id"], request["body"]
        if not isinstance(custom_id, str) or not custom_id:
            fail(number, "invalid_custom_id", "custom_id must be a non-empty string.", "custom_id")
            continue
        if custom_id in seen:
            fail(
                number,
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is used more than once.",
                "custom_id",
            )
            continue
        seen.add(custom_id)
        if request["method"] != "POST":
            fail(number, "invalid_method", "Only POST is supported.", "method")
        if request["url"] != endpoint:
            fail(
                number,
                "mismatched_endpoint",
                f"The url {request['url']!r} does not match the batch's endpoint {endpoint!r}.",
                "url",
            )
        if not isinstance(body, dict):
            fail(number, "invalid_body", "body must be a JSON object.", "body")
            continue
        model = body.get("model")
        if not isinstance(model, str) or not model:
            fail(
                number,
                "missing_required_parameter",
                "Missing required parameter: 'body.model'.",
                "body.model",
            )
        else:
            models.add(model)
        items.append(_Item(custom_id, body))
    if len(models) > 1:
        fail(
            None,
            "mismatched_model",
            f"All requests in a batch must use the same model, found {sorted(models)}.",
            "body.model",
        )
    return items, errors, (next(iter(models)) if len(models) == 1 else None)


# -- routes -------------------------------------------------------------------------------

_Handler = Callable[["Request", bytes, "Fault | None"], Awaitable[Response]]


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a ``multipart/form-data`` body: ``{name: (filename, content)}``."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise _invalid("the upload must be multipart/form-data")
    delimiter = b"--" + match.group(1).encode()
    parts: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        disposition = next(
            (
                line
                for line in head.decode("latin-1").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name is not None:
            parts[name.group(1)] = (filename.group(1) if filename else None, content)
    return parts


def openai_routes(state: State) -> list[Route]:
    """The OpenAI routes over ``state`` (mounted by ``_app.build_app``)."""
    openai = state.openai

    def endpoint(
        name: str, handler: _Handler, *, limit: int = MAX_BODY_BYTES
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            read = await _read_body(request, limit)
            if read is None:
                return Response(status_code=CLIENT_GONE)
            raw, too_large = read
            recorded: Any
            if name == "openai_file_upload":
                recorded = {"bytes": len(raw)}
            else:
                recorded = _decode(raw)
            fault = state.arrive(
                name,
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers=dict(request.headers),
                body=recorded,
            )
            if fault is not None and fault.kind == "drop":
                return await _drop(request)
            if fault is not None and fault.kind == "status":
                error = _fault_error(fault)
                type_ = (
                    fault.error_type
                    or _FAULT_TYPES.get(fault.status)
                    or ("server_error" if fault.status >= 500 else "invalid_request_error")
                )
                shaped = _error(fault.status, error.message, type_=type_)
                shaped.headers = error.headers
                raise shaped
            if fault is not None and fault.kind == "slow":
                await anyio.sleep(fault.delay_s)
            try:
                _authenticate(request)
            except ApiError as error:
                raise _error(
                    401, error.message, type_="invalid_request_error", code="invalid_api_key"
                ) from None
            if too_large:
                raise _error(413, "Request exceeds the maximum allowed number of bytes.")
            return await handler(request, raw, fault)

        async def wrapped(request: Request) -> Response:
            request_id = state.request_id()
            try:
                response = await run(request)
            except ApiError as error:
                response = JSONResponse(
                    _error_body(error), status_code=error.status, headers=error.headers
                )
            response.headers["x-request-id"] = request_id
            return response

        return wrapped

    def _json_body(raw: bytes) -> Any:
        body = _decode(raw)
        if body is None:
            raise _invalid("We could not parse the JSON body of your request.")
        return body

    def direct(path: str) -> _Handler:
        async def handler(request: Request, raw: bytes, fault: Fault | None) -> Response:
            body = _json_body(raw)
            _validate(path, body)
            latency = openai.direct_latency()
            if latency > 0:
                await anyio.sleep(latency)
            return JSONResponse(openai.create(path, body))

        return handler

    async def upload(request: Request, raw: bytes, fault: Fault | None) -> Response:
        parts = _multipart(request.headers.get("content-type", ""), raw)
        if "file" not in parts:
            raise _invalid("Missing required parameter: 'file'.", "file")
        if "purpose" not in parts:
            raise _invalid("Missing required parameter: 'purpose'.", "purpose")
        filename, data = parts["file"]
        purpose = parts["purpose"][1].decode()
        return JSONResponse(openai.upload(filename or "upload", purpose, data))

    async def content(request: Request, raw: bytes, fault: Fault | None) -> Response:
        file_id = request.path_params["file_id"]
        if fault is not None and fault.kind == "transient_404":
            openai.check_file(file_id)
            raise _error(404, f"No such File object: {file_id}", param="id")
        data = openai.content(file_id)
        lines = data.splitlines(keepends=True)
        cut = None
        if fault is not None and fault.kind == "cut_stream":
            cut = sum(len(line) for line in lines[: len(lines) // 2])
        return _JSONLResponse(
            lines,
            chunk_bytes=state.config.results_chunk_bytes,
            cut=cut,
            line_delay=state.line_delay(),
        )

    async def delete(request: Request, raw: bytes, fault: Fault | None) -> Response:
        return JSONResponse(openai.delete_file(request.path_params["file_id"]))

    async def batch_create(request: Request, raw: bytes, fault: Fault | None) -> Response:
        batch = openai.create_batch(_json_body(raw))
        if fault is not None and fault.kind == "accept_then_drop":
            return await _drop(request)
        if fault is not None and fault.kind == "accept_then_slow":
            await anyio.sleep(fault.delay_s)
        return JSONResponse(batch)

    async def batch_retrieve(request: Request, raw: bytes, fault: Fault | None) -> Response:
        batch_id = request.path_params["batch_id"]
        if fault is not None and fault.kind == "transient_404":
            openai.check_batch(batch_id)
            raise _error(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return JSONResponse(openai.retrieve(batch_id))

    async def batch_list(request: Request, raw: bytes, fault: Fault | None) -> Response:
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            raise _invalid("limit: expected an integer", "limit") from None
        if not 1 <= limit <= 100:
            raise _invalid("limit: must be between 1 and 100", "limit")
        return JSONResponse(openai.list_batches(limit, params.get("after")))

    async def batch_cancel(request: Request, raw: bytes, fault: Fault | None) -> Response:
        return JSONResponse(openai.cancel(request.path_params["batch_id"]))

    file = "/v1/files/{file_id}"
    batch = "/v1/batches/{batch_id}"
    chat, responses = BATCH_ENDPOINTS
    return [
        Route(chat, endpoint("openai_chat", direct(chat)), methods=["POST"]),
        Route(responses, endpoint("openai_responses", direct(responses)), methods=["POST"]),
        Route(
            "/v1/files",
            endpoint("openai_file_upload", upload, limit=MAX_FILE_BYTES),
            methods=["POST"],
        ),
        Route(f"{file}/content", endpoint("openai_file_content", content), methods=["GET"]),
        Route(file, endpoint("openai_file_delete", delete), methods=["DELETE"]),
        Route("/v1/batches", endpoint("openai_batch_create", batch_create), methods=["POST"]),
        Route("/v1/batches", endpoint("openai_batch_list", batch_list), methods=["GET"]),
        Route(batch, endpoint("openai_batch_retrieve", batch_retrieve), methods=["GET"]),
        Route(f"{batch}/cancel", endpoint("openai_batch_cancel", batch_cancel), methods=["POST"]),
    ]
