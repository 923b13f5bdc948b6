"""The emulator's model of the API: validation, replies, usage, and the life of a batch.

Everything here is plain synchronous code behind one lock: the HTTP handlers (on the server's
thread) and the test's control calls (on the test's thread) both go through it. A batch ends
lazily: each read compares the wall clock with the batch's deadlines, so no timers run and a
given seed always gives the same ids, turnarounds, outcomes and result order.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, Literal, final

from llmfleet.pricing import TokenUsage

from ._config import ENDPOINTS, EmulatorConfig, Fault, draw
from ._ledger import Ledger, LedgerEntry, ResultType

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["ApiError", "BatchInfo", "RecordedRequest", "State"]

_CUSTOM_ID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ERRORED_MARKER: Final = re.compile(r"\[\[errored(?::([a-z_]+))?\]\]")
_EXPIRED_MARKER: Final = "[[expired]]"
_BASE62: Final = string.digits + string.ascii_letters
_DAY: Final = 24 * 3600.0
_CHARS_PER_TOKEN: Final = 4
_REDACTED: Final = "[redacted]"
_SECRET_HEADERS: Final = frozenset({"x-api-key", "authorization"})

_ERROR_MESSAGES: Final[dict[str, str]] = {
    "api_error": "Internal server error (injected by the llmfleet emulator).",
    "overloaded_error": "Overloaded (injected by the llmfleet emulator).",
}


class ApiError(Exception):
    """An error the API answers with: status, ``error.type`` and message."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = dict(headers or {})


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


@final
@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request the emulator received, with secrets redacted.

    ``headers`` are lower-cased; ``x-api-key`` and ``authorization`` read ``[redacted]``.
    ``body`` is the decoded JSON body, or ``None`` when there was none (or it was not JSON).
    ``endpoint`` is the endpoint name (see :data:`Endpoint`), ``None`` for an unknown route.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    #: Wall-clock arrival time (``time.time()``).
    time: float
    endpoint: str | None


@final
@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A snapshot of one batch as the emulator holds it (times are ``time.time()`` seconds).

    ``ends_at`` is when the batch will end on its own (``None``: never, or already ended);
    ``results`` maps each ``custom_id`` to its result type once the batch has ended.
    """

    id: str
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: Mapping[str, int]
    custom_ids: tuple[str, ...]
    results: Mapping[str, ResultType]
    created_at: float
    ends_at: float | None
    cancel_initiated_at: float | None
    ended_at: float | None


@dataclass(slots=True)
class _Item:
    custom_id: str
    params: dict[str, Any]
    result: dict[str, Any] | None = None


@dataclass(slots=True)
class _Batch:
    id: str
    seq: int
    created_at: float
    expires_at: float
    ends_at: float | None
    items: list[_Item]
    status: Literal["in_progress", "canceling", "ended"] = "in_progress"
    cancel_initiated_at: float | None = None
    cancel_ends_at: float | None = None
    ended_at: float | None = None
    deleted: bool = False


@dataclass(slots=True)
class _Armed:
    fault: Fault
    base: int
    fired: int = 0


@dataclass(slots=True)
class _Usage:
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int

    def tokens(self) -> TokenUsage:
        return TokenUsage(
            self.input_tokens,
            self.output_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        )


def rfc3339(t: float) -> str:
    """``time.time()`` seconds as RFC 3339 UTC with a ``Z``, like the API writes them."""
    stamp = datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def make_id(prefix: str, key: str) -> str:
    """An API-looking id (``msgbatch_01…``), a pure function of ``key``."""
    rng = random.Random(key)
    return prefix + "01" + "".join(rng.choice(_BASE62) for _ in range(22))


EndKind = Literal["process", "cancel", "expire"]


def first_end(
    expires_at: float, ends_at: float | None, cancel_ends_at: float | None
) -> tuple[float, EndKind]:
    """The earliest of a batch's coming ends, and how it would end then (shared by the
    Anthropic and OpenAI batch states)."""
    ends: list[tuple[float, EndKind]] = [(expires_at, "expire")]
    if ends_at is not None:
        ends.append((ends_at, "process"))
    if cancel_ends_at is not None:
        ends.append((cancel_ends_at, "cancel"))
    return min(ends, key=lambda end: end[0])


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased headers with the credentials replaced."""
    return {
        k.lower(): (_REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()
    }


def _tokens(chars: int) -> int:
    return math.ceil(chars / _CHARS_PER_TOKEN)


def _texts(content: object) -> list[str]:
    """The text of a message's content: a string, or its text blocks (tool results included)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            text = block.get("text")
            if isinstance(text, str):
                out.append(text)
            if block.get("type") == "tool_result":
                out.extend(_texts(block.get("content")))
    return out


def last_user_text(params: Mapping[str, Any]) -> str:
    """The text of the last ``user`` message: what the emulator echoes."""
    for message in reversed(params.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return "\n".join(_texts(message.get("content")))
    return ""


def _prompt_blocks(params: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """The prompt as (text, has cache_control) pieces, in the order the API caches them."""
    blocks: list[tuple[str, bool]] = []

    def add(content: object) -> None:
        if isinstance(content, str):
            blocks.append((content, False))
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict):
                    text = "".join(_texts([block]))
                    blocks.append((text, block.get("cache_control") is not None))

    add(params.get("system"))
    for message in params.get("messages") or []:
        if isinstance(message, dict):
            add(message.get("content"))
    return blocks


def validate_params(params: object, prefix: str = "", *, in_batch: bool = False) -> None:
    """Check one Messages request body like the API does.

    :param prefix: where the body sits in the request (``requests.3.params.``), for messages.
    :raises ApiError: 400 ``invalid_request_error`` naming the first problem.
    """
    if not isinstance(params, dict):
        raise _invalid(f"{prefix.rstrip('.') or 'body'}: Input should be a valid dictionary")
    model = params.get("model")
    if "model" not in params:
        raise _invalid(f"{prefix}model: Field required")
    if not isinstance(model, str) or not model:
        raise _invalid(f"{prefix}model: Input should be a valid string")
    if "max_tokens" not in params:
        raise _invalid(f"{prefix}max_tokens: Field required")
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _invalid(f"{prefix}max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _invalid(f"{prefix}max_tokens: Input should be greater than or equal to 1")
    if "messages" not in params:
        raise _invalid(f"{prefix}messages: Field required")
    messages = params["messages"]
    if not isinstance(messages, list):
        raise _invalid(f"{prefix}messages: Input should be a valid list")
    if not messages:
        raise _invalid(f"{prefix}messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"{prefix}messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise _invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _invalid(f"{where}.content: Field required")
        if not isinstance(message["content"], (str, list)):
            raise _invalid(f"{where}.content: Input should be a valid string or list")
    system = params.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise _invalid(f"{prefix}system: Input should be a valid string or list")
    if params.get("stream") is True:
        if in_batch:
            raise _invalid(f"{prefix}stream: Stream mode is not supported in Message Batches")
        raise _invalid("stream: the llmfleet emulator does not stream responses; send stream=false")


def validate_batch_body(body: object, max_requests: int) -> list[_Item]:
    """Check a batch-create body like the API does, and return its items.

    :raises ApiError: 400 ``invalid_request_error`` naming the first problem.
    """
    if not isinstance(body, dict):
        raise _invalid("body: Input should be a valid dictionary")
    if "requests" not in body:
        raise _invalid("requests: Field required")
    requests = body["requests"]
    if not isinstance(requests, list):
        raise _invalid("requests: Input should be a valid list")
    if not requests:
        raise _invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise _invalid(
            f"requests: List should have at most {max_requests} items after validation, "
            f"not {len(requests)}"
        )
    items: list[_Item] = []
    seen: set[str] = set()
    for i, request in enumerate(requests):
        where = f"requests.{i}"
        if not isinstance(request, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary")
        if "custom_id" not in request:
            raise _invalid(f"{where}.custom_id: Field required")
        custom_id = request["custom_id"]
        if not isinstance(custom_id, str):
            raise _invalid(f"{where}.custom_id: Input should be a valid string")
        if not custom_id:
            raise _invalid(f"{where}.custom_id: String should have at least 1 character")
        if len(custom_id) > 64:
            raise _invalid(f"{where}.custom_id: String should have at most 64 characters")
        if not _CUSTOM_ID.match(custom_id):
            raise _invalid(f"{where}.custom_id: String should match pattern '{_CUSTOM_ID.pattern}'")
        if custom_id in seen:
            raise _invalid(
                f"{where}.custom_id: Duplicate custom_id {custom_id!r}: "
                "custom_id values must be unique within a batch"
            )
        seen.add(custom_id)
        if "params" not in request:
            raise _invalid(f"{where}.params: Field required")
        validate_params(request["params"], f"{where}.params.", in_batch=True)
        items.append(_Item(custom_id, request["params"]))
    return items


@final
class State:
    """All mutable emulator state, behind one re-entrant lock."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.base_url = ""
        self._lock = threading.RLock()
        self._batches: dict[str, _Batch] = {}
        self._seq_by_id: dict[str, int] = {}
        self._counts: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        # Issue 7: requests per (endpoint, minute since start), and the batch-endpoint limit.
        self._started = time.time()
        self._per_minute: dict[tuple[str, int], int] = {}
        self._batch_window: list[float] = []
        self.rate_limited = 0
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Armed] = []
        self._cache_seen: set[tuple[str, tuple[str, ...]]] = set()
        self._direct_calls = 0
        self._request_ids = 0
        self.ledger = Ledger(refresh=self.refresh_all)
        # The OpenAI routes' files and batches (imported here: _openai imports this module).
        from ._openai import OpenAIState

        self.openai = OpenAIState(self)
        for fault in config.faults:
            self.add_fault(fault)

    # -- requests, counts and faults --------------------------------------------------------

    def arrive(
        self,
        endpoint: str | None,
        *,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: Any,
    ) -> Fault | None:
        """Record a request, count it, and return the fault it triggers, if any."""
        with self._lock:
            self._requests.append(
                RecordedRequest(method, path, query, redact(headers), body, time.time(), endpoint)
            )
            if endpoint is None:
                return None
            self._counts[endpoint] += 1
            call = self._counts[endpoint]
            now = time.time()
            minute = (endpoint, int((now - self._started) // 60))
            self._per_minute[minute] = self._per_minute.get(minute, 0) + 1
            limited = self._over_batch_limit(endpoint, now)
            if limited is not None:
                return limited
            for armed in self._faults:
                fault = armed.fault
                if fault.endpoint != endpoint:
                    continue
                if fault.nth is not None and not (
                    fault.nth <= call - armed.base < fault.nth + fault.times
                ):
                    continue
                armed.fired += 1
                if armed.fired >= fault.times:
                    self._faults.remove(armed)
                return fault
            return self.config.random_fault(endpoint, call)  # type: ignore[arg-type]

    def _over_batch_limit(self, endpoint: str, now: float) -> Fault | None:
        """A 429 for a batch-endpoint request beyond ``config.batch_rpm`` in 60 s, else None."""
        limit = self.config.batch_rpm
        if limit is None or not endpoint.startswith("batch_"):
            return None
        window = self._batch_window
        while window and window[0] <= now - 60:
            window.pop(0)
        if len(window) < limit:
            window.append(now)
            return None
        self.rate_limited += 1
        wait = max(1, math.ceil(window[0] + 60 - now))
        return Fault(
            endpoint,  # type: ignore[arg-type]
            "status",
            status=429,
            retry_after=wait,
            message=f"Number of batch API requests exceeds the rate limit of {limit} per minute.",
        )

    def per_minute(self) -> dict[tuple[str, int], int]:
        """Requests per ``(endpoint, minute since start)``."""
        with self._lock:
            return dict(self._per_minute)

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(_Armed(fault, self._counts[fault.endpoint]))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> tuple[Fault, ...]:
        with self._lock:
            return tuple(a.fault for a in self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def request_id(self) -> str:
        with self._lock:
            self._request_ids += 1
            n = self._request_ids
        return make_id("req_", f"{self.config.seed}/req/{n}")

    # -- messages ---------------------------------------------------------------------------

    def _usage(self, params: Mapping[str, Any], reply: str) -> _Usage:
        # Caller holds the lock (the prompt cache is shared by both routes).
        model = str(params["model"])
        blocks = _prompt_blocks(params)
        total = sum(len(text) for text, _ in blocks)
        output = max(1, _tokens(len(reply)))
        marks = [i for i, (_, cached) in enumerate(blocks) if cached]
        if not marks:
            return _Usage(max(1, _tokens(total)), output, 0, 0)
        # The prefix up to the last cache_control breakpoint is written the first time it is
        # seen and read after; the rest is plain input.
        prefix = tuple(text for text, _ in blocks[: marks[-1] + 1])
        prefix_tokens = _tokens(sum(len(t) for t in prefix))
        rest_tokens = max(1, _tokens(total - sum(len(t) for t in prefix)))
        key = (model, prefix)
        if key in self._cache_seen:
            return _Usage(rest_tokens, output, 0, prefix_tokens)
        self._cache_seen.add(key)
        return _Usage(rest_tokens, output, prefix_tokens, 0)

    def _message(
        self, params: Mapping[str, Any], message_id: str, tier: str
    ) -> tuple[dict[str, Any], _Usage]:
        text = last_user_text(params)
        limit = int(params["max_tokens"]) * _CHARS_PER_TOKEN
        stop_reason = "end_turn"
        if len(text) > limit:
            text, stop_reason = text[:limit], "max_tokens"
        usage = self._usage(params, text)
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.input_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "output_tokens": usage.output_tokens,
                "service_tier": tier,
            },
        }
        return message, usage

    def direct_latency(self) -> float:
        """Seconds the next direct call waits before answering."""
        with self._lock:
            n = self._direct_calls + 1
        rng = random.Random(f"{self.config.seed}/latency/{n}")
        return draw(self.config.direct_latency_s, rng) or 0.0

    def line_delay(self) -> Callable[[], float] | None:
        """The pause before each line of a results stream, drawn per line, or ``None`` when
        ``config.results_line_delay_s`` is 0 (the stream goes out in chunks)."""
        duration = self.config.results_line_delay_s
        if not callable(duration) and not duration:
            return None
        rng = random.Random(f"{self.config.seed}/line-delay")
        return lambda: draw(duration, rng) or 0.0

    def create_message(self, params: object) -> dict[str, Any]:
        """Answer ``POST /v1/messages``; enters the call in the ledger.

        :raises ApiError: for an invalid body.
        """
        validate_params(params)
        assert isinstance(params, dict)  # validate_params checked it
        with self._lock:
            self._direct_calls += 1
            message_id = make_id("msg_", f"{self.config.seed}/msg/{self._direct_calls}")
            message, usage = self._message(params, message_id, "standard")
            model = str(params["model"])
            tokens = usage.tokens()
            self.ledger._add(
                LedgerEntry(
                    route="direct",
                    batch_id=None,
                    custom_id=None,
                    message_id=message_id,
                    model=model,
                    result="succeeded",
                    usage=tokens,
                    cost=self.config.prices.cost(model, tokens, batch=False),
                    time=time.time(),
                )
            )
        return message

    # -- batches ----------------------------------------------------------------------------

    def create_batch(self, body: object) -> dict[str, Any]:
        """Create a batch from a create body.

        :raises ApiError: for an invalid body (no batch is created).
        """
        items = validate_batch_body(body, self.config.max_batch_requests)
        with self._lock:
            seq = len(self._seq_by_id) + 1
            batch_id = make_id("msgbatch_", f"{self.config.seed}/batch/{seq}")
            now = time.time()
            turnaround = draw(
                self.config.turnaround_s,
                random.Random(f"{self.config.seed}/{batch_id}/turnaround"),
            )
            batch = _Batch(
                id=batch_id,
                seq=seq,
                created_at=now,
                expires_at=now + _DAY,
                ends_at=None if turnaround is None else now + turnaround,
                items=items,
            )
            self._batches[batch_id] = batch
            self._seq_by_id[batch_id] = seq
            self.ledger._count_batch()
            self._refresh(batch, now)
            return self._batch_json(batch)

    def _get(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None or batch.deleted:
            raise ApiError(404, "not_found_error", f"No batch found with id {batch_id!r}.")
        return batch

    def check_exists(self, batch_id: str) -> None:
        """:raises ApiError: 404 when no such batch exists (or it was deleted)."""
        with self._lock:
            self._get(batch_id)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._get(batch_id)
            self._refresh(batch, time.time())
            return self._batch_json(batch)

    def list_batches(
        self, limit: int, after_id: str | None, before_id: str | None
    ) -> dict[str, Any]:
        """A page of batches, newest first, as the SDK's ``AsyncPage`` reads it."""
        with self._lock:
            now = time.time()
            live = sorted(
                (b for b in self._batches.values() if not b.deleted),
                key=lambda b: b.seq,
                reverse=True,
            )
            for batch in live:
                self._refresh(batch, now)
            if after_id is not None:
                older = [b for b in live if b.seq < self._cursor("after_id", after_id)]
                page, has_more = older[:limit], len(older) > limit
            elif before_id is not None:
                newer = [b for b in live if b.seq > self._cursor("before_id", before_id)]
                page, has_more = newer[-limit:], len(newer) > limit
            else:
                page, has_more = live[:limit], len(live) > limit
            return {
                "data": [self._batch_json(b) for b in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }

    def _cursor(self, name: str, batch_id: str) -> int:
        seq = self._seq_by_id.get(batch_id)
        if seq is None:
            raise _invalid(f"{name}: unknown batch id {batch_id!r}")
        return seq

    def cancel(self, batch_id: str, *, now: float | None = None) -> dict[str, Any]:
        """Start canceling a batch; an ended or canceling batch is returned unchanged."""
        with self._lock:
            batch = self._get(batch_id)
            now = time.time() if now is None else now
            self._refresh(batch, now)
            if batch.status == "in_progress":
                batch.status = "canceling"
                batch.cancel_initiated_at = now
                delay = draw(
                    self.config.cancel_delay_s,
                    random.Random(f"{self.config.seed}/{batch_id}/cancel"),
                )
                batch.cancel_ends_at = now + (delay or 0.0)
            return self._batch_json(batch)

    def delete(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._get(batch_id)
            self._refresh(batch, time.time())
            if batch.status != "ended":
                raise _invalid(
                    f"Batch {batch_id} cannot be deleted while it is {batch.status}: "
                    "cancel it and wait for it to end first."
                )
            batch.deleted = True
            return {"id": batch_id, "type": "message_batch_deleted"}

    def results(
        self, batch_id: str, *, drop_first: bool = False, extra_id: str | None = None
    ) -> list[bytes]:
        """The JSONL lines of an ended batch, in a shuffled but seed-determined order.

        :param drop_first: leave out the line of the batch's first request (a lost line).
        :param extra_id: add, in the middle, a line for this ``custom_id`` (which the batch
            does not hold) with a copy of the first request's result (a stray line).
        :raises ApiError: 404 for an unknown batch, 400 while it is still processing.
        """
        with self._lock:
            batch = self._get(batch_id)
            self._refresh(batch, time.time())
            if batch.status != "ended":
                raise _invalid(
                    f"Batch {batch_id} is still {batch.status}; results are available "
                    "once it has ended."
                )
            order = list(range(len(batch.items)))
            random.Random(f"{self.config.seed}/{batch_id}/order").shuffle(order)
            entries = [(batch.items[i].custom_id, batch.items[i].result) for i in order]
            if drop_first:
                first = batch.items[0].custom_id
                entries = [entry for entry in entries if entry[0] != first]
            if extra_id is not None:
                entries.insert(len(entries) // 2, (extra_id, batch.items[0].result))
            return [
                json.dumps({"custom_id": cid, "result": result}, separators=(",", ":")).encode()
                + b"\n"
                for cid, result in entries
            ]

    # -- control (from the test's thread) ---------------------------------------------------

    def end(self, batch_id: str, how: Literal["process", "expire"] = "process") -> BatchInfo:
        """End a batch now; ``how="expire"`` makes every item expire. Ended: unchanged."""
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                raise KeyError(batch_id)
            now = time.time()
            self._refresh(batch, now)
            if batch.status != "ended":
                if how == "expire":
                    self._finish(batch, now, "expire")
                else:
                    self._finish(batch, now, "cancel" if batch.status == "canceling" else "process")
            return self._info(batch)

    def end_all(self) -> list[str]:
        with self._lock:
            ended = [b.id for b in self._batches.values() if b.status != "ended"]
            for batch_id in ended:
                self.end(batch_id)
            return ended

    def cancel_externally(self, batch_id: str) -> BatchInfo:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None or batch.deleted:
                raise KeyError(batch_id)
            self.cancel(batch_id)
            return self._info(self._batches[batch_id])

    def snapshot(self) -> dict[str, BatchInfo]:
        with self._lock:
            self.refresh_all()
            return {b.id: self._info(b) for b in self._batches.values() if not b.deleted}

    # -- the life of a batch ----------------------------------------------------------------

    def refresh_all(self) -> None:
        """End every batch whose time has come."""
        with self._lock:
            now = time.time()
            for batch in self._batches.values():
                self._refresh(batch, now)
            self.openai.refresh_all()

    def _refresh(self, batch: _Batch, now: float) -> None:
        if batch.status == "ended":
            return
        # The earliest deadline that has passed decides how the batch ended.
        at, how = first_end(batch.expires_at, batch.ends_at, batch.cancel_ends_at)
        if now >= at:
            self._finish(batch, at, how)

    def _finish(
        self, batch: _Batch, at: float, how: Literal["process", "cancel", "expire"]
    ) -> None:
        for item in batch.items:
            usage = TokenUsage()
            message_id: str | None = None
            result: dict[str, Any]
            if how == "cancel":
                result = {"type": "canceled"}
            elif how == "expire":
                result = {"type": "expired"}
            else:
                result = self._outcome(batch.id, item)
            if result["type"] == "succeeded":
                message_id = make_id("msg_", f"{self.config.seed}/{batch.id}/{item.custom_id}")
                message, raw = self._message(item.params, message_id, "batch")
                result["message"] = message
                usage = raw.tokens()
            item.result = result
            model = str(item.params["model"])
            cost = self.config.prices.cost(model, usage, batch=True)
            self.ledger._add(
                LedgerEntry(
                    route="batch",
                    batch_id=batch.id,
                    custom_id=item.custom_id,
                    message_id=message_id,
                    model=model,
                    result=result["type"],
                    usage=usage,
                    cost=cost,
                    time=at,
                )
            )
        batch.status = "ended"
        batch.ended_at = at

    def _outcome(self, batch_id: str, item: _Item) -> dict[str, Any]:
        text = last_user_text(item.params)
        marker = _ERRORED_MARKER.search(text)
        if marker is not None:
            return self._errored(marker.group(1) or "api_error")
        if _EXPIRED_MARKER in text:
            return {"type": "expired"}
        draw_ = random.Random(f"{self.config.seed}/{batch_id}/{item.custom_id}/outcome").random()
        if draw_ < self.config.errored_ratio:
            return self._errored("api_error")
        if draw_ < self.config.errored_ratio + self.config.expired_ratio:
            return {"type": "expired"}
        return {"type": "succeeded"}

    @staticmethod
    def _errored(error_type: str) -> dict[str, Any]:
        message = _ERROR_MESSAGES.get(
            error_type, f"{error_type} (injected by the llmfleet emulator)."
        )
        return {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": error_type, "message": message},
                "request_id": None,
            },
        }

    def _counts_of(self, batch: _Batch) -> dict[str, int]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if batch.status != "ended":
            # No partial results: everything is "processing" until the whole batch ends.
            counts["processing"] = len(batch.items)
        else:
            for item in batch.items:
                assert item.result is not None
                counts[item.result["type"]] += 1
        return counts

    def _batch_json(self, batch: _Batch) -> dict[str, Any]:
        ended = batch.status == "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": self._counts_of(batch),
            "created_at": rfc3339(batch.created_at),
            "expires_at": rfc3339(batch.expires_at),
            "ended_at": rfc3339(batch.ended_at) if batch.ended_at is not None else None,
            "cancel_initiated_at": (
                rfc3339(batch.cancel_initiated_at)
                if batch.cancel_initiated_at is not None
                else None
            ),
            "archived_at": None,
            # Absolute, as the real API's is: the SDK GETs it as-is.
            "results_url": (
                f"{self.base_url}/v1/messages/batches/{batch.id}/results" if ended else None
            ),
        }

    def _info(self, batch: _Batch) -> BatchInfo:
        results: dict[str, ResultType] = {}
        for item in batch.items:
            if item.result is not None:
                results[item.custom_id] = item.result["type"]
        return BatchInfo(
            id=batch.id,
            processing_status=batch.status,
            request_counts=self._counts_of(batch),
            custom_ids=tuple(i.custom_id for i in batch.items),
            results=results,
            created_at=batch.created_at,
            ends_at=None if batch.status == "ended" else batch.ends_at,
            cancel_initiated_at=batch.cancel_initiated_at,
            ended_at=batch.ended_at,
        )
