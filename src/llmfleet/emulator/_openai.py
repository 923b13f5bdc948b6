"""The OpenAI half of the emulator's state: Chat Completions and Responses calls, Files, and
Batches (on the shared life of a batch, ``_jobs``). The routes are in ``_openai_routes``.

The official ``openai`` SDK works against it unchanged
(``AsyncOpenAI(api_key=..., base_url=emu.url + "/v1")``). Replies echo the last user text with
plausible ``usage``; errors have OpenAI's shape. A batch is validated like the real one, after
its create: a malformed input file (bad JSON, duplicate ``custom_id``, a ``url`` other than the
batch's endpoint, several models, more than 50,000 lines, a body with no ``model``) makes the
batch ``failed`` with ``errors.data``; a request the endpoint would refuse ends in the error
file with its 400. The markers ``[[errored]]`` (``[[errored:code]]``) and ``[[expired]]`` in a
request's last user text decide its outcome; a batch with an expired request ends ``expired``.
Faults, turnaround, seed and prices come from the shared
:class:`~llmfleet.emulator.EmulatorConfig`; billing goes to the shared ledger (direct at list
price, batch at half, failed and unprocessed requests free). A direct call with
``service_tier="flex"`` waits ``flex_latency_s``, is refused at ``flex_unavailable_ratio``
with a 429 ``resource_unavailable`` (free), and is billed at the batch rate on the ledger's
``flex`` route; its response says ``service_tier: "flex"``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, final

from llmfleet.pricing import TokenUsage

from ._core import ApiError, EndKind, make_id
from ._jobs import Job, JobBook
from ._openai_params import (
    BATCH_ENDPOINTS,
    Item,
    error,
    error_body,
    invalid,
    last_user_text,
    parse_input,
    reply,
    validate,
)

if TYPE_CHECKING:
    from ._core import Core
    from ._ledger import ResultType

__all__ = ["OpenAIBatchInfo", "OpenAIFileInfo", "OpenAIState", "OpenAIStatus"]

MAX_BATCH_FILE_BYTES: Final = 200 * 1024 * 1024
_RESULTS: Final[dict[str, ResultType]] = {
    "succeeded": "succeeded",
    "expired": "expired",
    "canceled": "canceled",
    "errored": "errored",
}

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


@dataclass(slots=True, kw_only=True)
class _Batch(Job):
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    items: list[Item]
    model: str | None
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: How it ended (``failed``: at its create, its input file refused).
    final: OpenAIStatus = "completed"
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def status(self) -> OpenAIStatus:
        if self.phase == "running":
            return "in_progress"
        if self.phase == "canceling":
            return "cancelling"
        return self.final


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
class OpenAIState(JobBook[_Batch]):
    """The OpenAI direct calls, files and batches of one emulator, behind the core's lock.

    Its public methods are the controls a test uses (``emu.openai``).
    """

    def __init__(self, core: Core) -> None:
        super().__init__(core, scope="openai/")
        self._files: dict[str, _File] = {}
        self._direct_calls = 0

    # -- direct ---------------------------------------------------------------------------

    def direct_latency(self, *, flex: bool = False) -> float:
        """Seconds the next direct call (a flex call: ``flex``) waits before answering."""
        with self._lock:
            n = self._direct_calls + 1
        return self.core.direct_latency("openai/", n, flex=flex)

    def create(self, endpoint: str, body: object) -> dict[str, Any]:
        """Answer a direct call; enters it in the ledger (a flex call on the ``flex`` route).

        :raises ApiError: for an invalid body, or 429 ``resource_unavailable`` for a flex call
            refused by ``flex_unavailable_ratio``.
        """
        params = validate(endpoint, body, models=self.config.models)
        flex = params.get("service_tier") == "flex"
        with self._lock:
            self._direct_calls += 1
            if flex and self.core.flex_unavailable("openai/", self._direct_calls):
                raise error(
                    429,
                    "Resource unavailable: flex processing has no capacity for this request "
                    "now. Retry later, or send it without service_tier='flex'.",
                    type_="rate_limit_error",
                    code="resource_unavailable",
                )
            prefix = "chatcmpl-" if endpoint == "/v1/chat/completions" else "resp_"
            reply_id = self.new_id(prefix, "direct", self._direct_calls)
            answer, usage = reply(endpoint, params, reply_id, time.time())
            answer["service_tier"] = "flex" if flex else "default"
            self.core.bill(
                "flex" if flex else "direct",
                batch_id=None,
                custom_id=None,
                message_id=reply_id,
                model=str(params["model"]),
                result="succeeded",
                usage=usage,
            )
        return answer

    # -- files ----------------------------------------------------------------------------

    def upload(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        if purpose not in ("batch", "assistants", "fine-tune", "vision", "user_data", "evals"):
            raise invalid(f"purpose: invalid value {purpose!r}", "purpose")
        if purpose == "batch":
            if not filename.endswith(".jsonl"):
                raise invalid("files for the Batch API must be .jsonl", "file")
            if len(data) > MAX_BATCH_FILE_BYTES:
                raise invalid(
                    f"a batch input file may hold at most {MAX_BATCH_FILE_BYTES} bytes", "file"
                )
        with self._lock:
            file = self._new_file(filename, purpose, data)
            return file.json()

    def _new_file(self, filename: str, purpose: str, data: bytes) -> _File:
        n = len(self._files) + 1
        file = _File(self.new_id("file-", "file", n), filename, purpose, data, time.time())
        self._files[file.id] = file
        return file

    def _file(self, file_id: str) -> _File:
        file = self._files.get(file_id)
        if file is None or file.deleted:
            raise error(404, f"No such File object: {file_id}", param="id")
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
            raise invalid("body: expected an object")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                raise invalid(
                    f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
                )
        endpoint = body["endpoint"]
        if endpoint not in BATCH_ENDPOINTS:
            raise invalid(
                f"endpoint: {endpoint!r} is not supported by the llmfleet emulator; "
                f"use one of {BATCH_ENDPOINTS}",
                "endpoint",
            )
        if body["completion_window"] != "24h":
            raise invalid("completion_window: only '24h' is supported", "completion_window")
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict) or len(metadata) > 16:
                raise invalid("metadata: at most 16 key-value pairs", "metadata")
            for key, value in metadata.items():
                if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
                    raise invalid(
                        "metadata: keys are strings of at most 64 characters, values of 512",
                        "metadata",
                    )
        with self._lock:
            file = self._file(body["input_file_id"])
            if file.purpose != "batch":
                raise invalid(
                    "the input file must be uploaded with purpose 'batch'", "input_file_id"
                )
            now = time.time()
            seq = self.next_seq()
            batch_id = self.new_id("batch_", "batch", seq)
            items, errors, model = parse_input(file.data, endpoint)
            batch = _Batch(
                id=batch_id,
                seq=seq,
                endpoint=endpoint,
                input_file_id=file.id,
                metadata=dict(metadata) if metadata is not None else None,
                items=items,
                model=model,
                errors=errors,
                **self.clock(batch_id, now),
            )
            if errors:
                batch.phase, batch.final, batch.ended_at = "ended", "failed", now
            self.add(batch, now)
            answer = self._json(batch)
            # The real API validates the file after answering.
            answer["status"] = "validating"
            return answer

    def _batch(self, batch_id: str) -> _Batch:
        batch = self.find(batch_id)
        if batch is None:
            raise error(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self.refresh(batch, time.time())
            return self._json(batch)

    def check_batch(self, batch_id: str) -> None:
        with self._lock:
            self._batch(batch_id)

    def list_batches(self, limit: int, after: str | None) -> dict[str, Any]:
        """A page of batches, newest first."""
        with self._lock:
            live = self.newest_first()
            if after is not None:
                cursor = self.seq_of(after)
                if cursor is None:
                    raise invalid(f"after: unknown batch id {after!r}", "after")
                live = [b for b in live if b.seq < cursor]
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
            self.start_cancel(batch, now)
            self.refresh(batch, now)
            return self._json(batch)

    # -- controls (from the test's thread) ------------------------------------------------

    def end_batch(self, batch_id: str) -> OpenAIBatchInfo:
        """End the batch now with the outcomes its requests would have had (a cancelling
        batch ends ``cancelled``). An ended batch is left as it is.

        :raises KeyError: no batch has that id.
        """
        with self._lock:
            return self._info(self.end_now(batch_id))

    def expire_batch(self, batch_id: str) -> OpenAIBatchInfo:
        """End the batch now as its 24 hours running out would: ``expired``, every request
        in the error file with ``batch_expired``.

        :raises KeyError: no batch has that id.
        """
        with self._lock:
            return self._info(self.end_now(batch_id, "expire"))

    def end_all_batches(self) -> list[str]:
        """End every batch still in progress or cancelling, as :meth:`end_batch`."""
        return self.end_all_now()

    @property
    def batches(self) -> dict[str, OpenAIBatchInfo]:
        """Every batch, by id, in creation order, as of now."""
        with self._lock:
            self._refresh_all()
            return {b.id: self._info(b) for b in self._jobs.values()}

    @property
    def files(self) -> dict[str, OpenAIFileInfo]:
        """Every file ever stored (deleted ones too, marked), by id."""
        with self._lock:
            self._refresh_all()
            return {
                f.id: OpenAIFileInfo(f.id, f.filename, f.purpose, f.data, f.deleted)
                for f in self._files.values()
            }

    # -- the end of a batch ---------------------------------------------------------------

    def finish(self, job: _Batch, at: float, how: EndKind) -> None:
        output: list[bytes] = []
        errors: list[bytes] = []
        any_expired = False
        for n, item in enumerate(job.items):
            line, result, reply_id, usage = self._line(job, n, item, how, at)
            any_expired = any_expired or result == "expired"
            item.result = result
            if how != "cancel":
                # Unprocessed requests of a cancelled batch get no line at all.
                item.line = line
                encoded = json.dumps(line, separators=(",", ":")).encode() + b"\n"
                (output if result == "succeeded" else errors).append(encoded)
            self.core.bill(
                "batch",
                batch_id=job.id,
                custom_id=item.custom_id,
                message_id=reply_id,
                model=str(item.body.get("model", "")),
                result=result,
                usage=usage,
                at=at,
            )
        if output:
            job.output_file_id = self._new_file(
                f"{job.id}_output.jsonl", "batch_output", b"".join(output)
            ).id
        if errors:
            job.error_file_id = self._new_file(
                f"{job.id}_error.jsonl", "batch_output", b"".join(errors)
            ).id
        if how == "cancel":
            job.final = "cancelled"
        elif how == "expire" or any_expired:
            job.final = "expired"
        else:
            job.final = "completed"

    def _line(
        self, job: _Batch, n: int, item: Item, how: EndKind, at: float
    ) -> tuple[dict[str, Any], ResultType, str | None, TokenUsage]:
        """One request's output or error line, its result, reply id and usage."""
        seed = self.config.seed
        request_id = make_id("req_", f"{seed}/{job.id}/{item.custom_id}")
        line: dict[str, Any] = {
            "id": make_id("batch_req_", f"{seed}/{job.id}/{n}"),
            "custom_id": item.custom_id,
            "response": None,
            "error": None,
        }
        if how == "cancel":
            return line, "canceled", None, TokenUsage()
        kind, code = (
            ("expired", None)
            if how == "expire"
            else self.outcome(job.id, item.custom_id, last_user_text(item.body))
        )
        if kind == "expired":
            line["error"] = {
                "code": "batch_expired",
                "message": (
                    "This request could not be executed before the completion window expired."
                ),
            }
            return line, "expired", None, TokenUsage()
        if kind == "errored":
            code = code or "server_error"
            message = f"{code} (injected by the llmfleet emulator)."
            injected = error(500, message, type_="server_error", code=code)
            line["response"] = {
                "status_code": 500,
                "request_id": request_id,
                "body": error_body(injected),
            }
            return line, "errored", None, TokenUsage()
        try:
            params = validate(job.endpoint, item.body, models=self.config.models)
        except ApiError as refused:
            line["response"] = {
                "status_code": refused.status,
                "request_id": request_id,
                "body": error_body(refused),
            }
            return line, "errored", None, TokenUsage()
        prefix = "chatcmpl-" if job.endpoint == "/v1/chat/completions" else "resp_"
        reply_id = make_id(prefix, f"{seed}/{job.id}/{item.custom_id}")
        body, usage = reply(job.endpoint, params, reply_id, at)
        line["response"] = {"status_code": 200, "request_id": request_id, "body": body}
        return line, "succeeded", reply_id, usage

    # -- what the API shows ---------------------------------------------------------------

    @staticmethod
    def _json(batch: _Batch) -> dict[str, Any]:
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
            "cancelling_at": stamp(batch.cancel_initiated_at),
            "cancelled_at": stamp(ended) if batch.status == "cancelled" else None,
            "request_counts": counts,
            "metadata": batch.metadata,
            "usage": None,
        }

    @staticmethod
    def _info(batch: _Batch) -> OpenAIBatchInfo:
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
