"""Anthropic's Messages and Message Batches APIs: direct replies, the prompt cache, and batches
(on the shared life of a batch, ``_jobs``). The routes are in ``_anthropic_routes``.

Replies echo the last user text with plausible ``usage``; a request's outcome in a batch is
decided by the markers ``[[errored]]`` (``[[errored:type]]``) and ``[[expired]]`` in its last
user text, else drawn from the config's ratios.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, final

from llmfleet.pricing import TokenUsage

from ._anthropic_params import (
    CHARS_PER_TOKEN,
    Item,
    Usage,
    check_model,
    invalid,
    last_user_text,
    model_not_found,
    prompt_blocks,
    tokens,
    validate_batch_body,
    validate_params,
)
from ._core import ApiError, EndKind, make_id, rfc3339
from ._jobs import Job, JobBook

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._core import Core
    from ._ledger import ResultType

__all__ = ["AnthropicState", "BatchInfo", "not_found"]

_ERROR_MESSAGES: Final[dict[str, str]] = {
    "api_error": "Internal server error (injected by the llmfleet emulator).",
    "overloaded_error": "Overloaded (injected by the llmfleet emulator).",
}
_STATUS: Final = {"running": "in_progress", "canceling": "canceling", "ended": "ended"}

ProcessingStatus = Literal["in_progress", "canceling", "ended"]


@final
@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A snapshot of one batch as the emulator holds it (times are ``time.time()`` seconds).

    ``ends_at`` is when the batch will end on its own (``None``: never, or already ended);
    ``results`` maps each ``custom_id`` to its result type once the batch has ended.
    """

    id: str
    processing_status: ProcessingStatus
    request_counts: Mapping[str, int]
    custom_ids: tuple[str, ...]
    results: Mapping[str, ResultType]
    created_at: float
    ends_at: float | None
    cancel_initiated_at: float | None
    ended_at: float | None


@dataclass(slots=True, kw_only=True)
class _Batch(Job):
    items: list[Item]

    @property
    def status(self) -> ProcessingStatus:
        status: ProcessingStatus = _STATUS[self.phase]  # type: ignore[assignment]
        return status


def not_found(batch_id: str) -> ApiError:
    """The 404 of an unknown (or deleted) batch."""
    return ApiError(404, "not_found_error", f"No batch found with id {batch_id!r}.")


@final
class AnthropicState(JobBook[_Batch]):
    """Anthropic's direct calls and batches of one emulator, behind the core's lock."""

    def __init__(self, core: Core) -> None:
        super().__init__(core, scope="")
        self._cache_seen: set[tuple[str, tuple[str, ...]]] = set()
        self._direct_calls = 0

    # -- messages ---------------------------------------------------------------------------

    def _usage(self, params: Mapping[str, Any], reply: str) -> Usage:
        # Caller holds the lock (the prompt cache is shared by both routes).
        model = str(params["model"])
        blocks = prompt_blocks(params)
        total = sum(len(text) for text, _ in blocks)
        output = max(1, tokens(len(reply)))
        marks = [i for i, (_, cached) in enumerate(blocks) if cached]
        if not marks:
            return Usage(max(1, tokens(total)), output, 0, 0)
        # The prefix up to the last cache_control breakpoint is written the first time it is
        # seen and read after; the rest is plain input.
        prefix = tuple(text for text, _ in blocks[: marks[-1] + 1])
        prefix_tokens = tokens(sum(len(t) for t in prefix))
        rest_tokens = max(1, tokens(total - sum(len(t) for t in prefix)))
        key = (model, prefix)
        if key in self._cache_seen:
            return Usage(rest_tokens, output, 0, prefix_tokens)
        self._cache_seen.add(key)
        return Usage(rest_tokens, output, prefix_tokens, 0)

    def _message(
        self, params: Mapping[str, Any], message_id: str, tier: str
    ) -> tuple[dict[str, Any], Usage]:
        text = last_user_text(params)
        limit = int(params["max_tokens"]) * CHARS_PER_TOKEN
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
        return self.core.direct_latency("", n)

    def create_message(self, params: object) -> dict[str, Any]:
        """Answer ``POST /v1/messages``; enters the call in the ledger.

        :raises ApiError: for an invalid body.
        """
        validate_params(params)
        assert isinstance(params, dict)  # validate_params checked it
        check_model(params["model"], self.config.models)
        with self._lock:
            self._direct_calls += 1
            message_id = make_id("msg_", f"{self.config.seed}/msg/{self._direct_calls}")
            message, usage = self._message(params, message_id, "standard")
            self.core.bill(
                "direct",
                batch_id=None,
                custom_id=None,
                message_id=message_id,
                model=str(params["model"]),
                result="succeeded",
                usage=usage.tokens(),
            )
        return message

    # -- batches ----------------------------------------------------------------------------

    def create_batch(self, body: object) -> dict[str, Any]:
        """Create a batch from a create body.

        :raises ApiError: for an invalid body (no batch is created).
        """
        items = validate_batch_body(body, self.config.max_batch_requests)
        with self._lock:
            seq = self.next_seq()
            batch_id = make_id("msgbatch_", f"{self.config.seed}/batch/{seq}")
            now = time.time()
            batch = _Batch(id=batch_id, seq=seq, items=items, **self.clock(batch_id, now))
            self.add(batch, now)
            return self._batch_json(batch)

    def _get(self, batch_id: str) -> _Batch:
        batch = self.find(batch_id)
        if batch is None:
            raise not_found(batch_id)
        return batch

    def check_exists(self, batch_id: str) -> None:
        """:raises ApiError: 404 when no such batch exists (or it was deleted)."""
        with self._lock:
            self._get(batch_id)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._get(batch_id)
            self.refresh(batch, time.time())
            return self._batch_json(batch)

    def list_batches(
        self, limit: int, after_id: str | None, before_id: str | None
    ) -> dict[str, Any]:
        """A page of batches, newest first, as the SDK's ``AsyncPage`` reads it."""
        with self._lock:
            live = self.newest_first()
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
        seq = self.seq_of(batch_id)
        if seq is None:
            raise invalid(f"{name}: unknown batch id {batch_id!r}")
        return seq

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Start canceling a batch; an ended or canceling batch is returned unchanged."""
        with self._lock:
            batch = self._get(batch_id)
            self.start_cancel(batch, time.time())
            return self._batch_json(batch)

    def delete(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._get(batch_id)
            self.refresh(batch, time.time())
            if batch.status != "ended":
                raise invalid(
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
            self.refresh(batch, time.time())
            if batch.status != "ended":
                raise invalid(
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
        """End a batch now; ``how="expire"`` makes every item expire. Ended: unchanged.

        :raises KeyError: no batch has that id.
        """
        with self._lock:
            return self._info(self.end_now(batch_id, how))

    def cancel_externally(self, batch_id: str) -> BatchInfo:
        """Cancel as someone else would (not a request).

        :raises KeyError: no batch has that id (or it was deleted).
        """
        with self._lock:
            batch = self.find(batch_id)
            if batch is None:
                raise KeyError(batch_id)
            self.start_cancel(batch, time.time())
            return self._info(batch)

    def snapshot(self) -> dict[str, BatchInfo]:
        """Every batch not deleted, by id, in creation order, as of now."""
        with self._lock:
            self.core.refresh_all()
            return {b.id: self._info(b) for b in self._jobs.values() if not b.deleted}

    # -- the end of a batch -----------------------------------------------------------------

    def finish(self, job: _Batch, at: float, how: EndKind) -> None:
        for item in job.items:
            usage = TokenUsage()
            message_id: str | None = None
            result: dict[str, Any]
            if how == "cancel":
                result = {"type": "canceled"}
            elif how == "expire":
                result = {"type": "expired"}
            else:
                result = self._outcome(job.id, item)
            if result["type"] == "succeeded":
                message_id = make_id("msg_", f"{self.config.seed}/{job.id}/{item.custom_id}")
                message, raw = self._message(item.params, message_id, "batch")
                result["message"] = message
                usage = raw.tokens()
            item.result = result
            self.core.bill(
                "batch",
                batch_id=job.id,
                custom_id=item.custom_id,
                message_id=message_id,
                model=str(item.params["model"]),
                result=result["type"],
                usage=usage,
                at=at,
            )

    def _outcome(self, batch_id: str, item: Item) -> dict[str, Any]:
        models = self.config.models
        model = item.params["model"]
        if models is not None and model not in models:
            # The create checks the body's shape only: a model is looked up as each request
            # runs, and one the API does not serve errors that request alone.
            return self._errored("not_found_error", model_not_found(model).message)
        kind, code = self.outcome(batch_id, item.custom_id, last_user_text(item.params))
        if kind == "errored":
            return self._errored(code or "api_error")
        return {"type": kind}

    @staticmethod
    def _errored(error_type: str, message: str | None = None) -> dict[str, Any]:
        if message is None:
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

    # -- what the API shows -----------------------------------------------------------------

    @staticmethod
    def _counts_of(batch: _Batch) -> dict[str, int]:
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
                f"{self.core.base_url}/v1/messages/batches/{batch.id}/results" if ended else None
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
