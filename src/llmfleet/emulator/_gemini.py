"""The Gemini half of the emulator's state: ``generateContent`` calls and batches with inlined
requests (on the shared life of a batch, ``_jobs``). The routes are in ``_gemini_routes``.

The official ``google-genai`` SDK works against it unchanged
(``genai.Client(api_key=..., http_options={"base_url": emu.url})``). Replies echo the last user
text with plausible ``usageMetadata``; errors have Google's shape. A batch's inlined requests
are checked at its create (a bad one refuses the create with 400, naming it); the batch is
listed and read as the API shows it (``name``, ``metadata.state`` ``BATCH_STATE_*``,
``metadata.output.inlinedResponses``, one per request, in request order, each with the
request's ``metadata``). The markers ``[[errored]]`` (``[[errored:code]]``) and
``[[expired]]`` in a request's last user text decide its outcome: an errored request gets an
``error`` in place of its ``response``; a batch with an expired request ends
``BATCH_STATE_EXPIRED`` with the responses it finished. Billing goes to the shared ledger
(direct at list price, batch at half, failed and unprocessed requests free).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, final

from llmfleet.pricing import TokenUsage

from ._core import ApiError, EndKind, make_id, rfc3339
from ._gemini_params import error, invalid, last_user_text, model_id, reply, validate
from ._jobs import Job, JobBook

if TYPE_CHECKING:
    from ._core import Core
    from ._ledger import ResultType

__all__ = ["GeminiBatchInfo", "GeminiState", "GeminiStatus"]

#: The most bytes of inlined requests one batch create may carry (the API's 20 MB).
MAX_INLINE_BYTES: Final = 20 * 1024 * 1024

GeminiStatus = Literal[
    "BATCH_STATE_PENDING",
    "BATCH_STATE_RUNNING",
    "BATCH_STATE_SUCCEEDED",
    "BATCH_STATE_FAILED",
    "BATCH_STATE_CANCELLED",
    "BATCH_STATE_EXPIRED",
]
_BATCH_TYPE: Final = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"


@dataclass(slots=True)
class _Item:
    body: dict[str, Any]
    metadata: dict[str, str] | None
    #: The inlined response once the batch has ended (``None``: none, unprocessed).
    line: dict[str, Any] | None = None
    result: ResultType | None = None


@dataclass(slots=True, kw_only=True)
class _Batch(Job):
    model: str
    display_name: str
    items: list[_Item]
    final: GeminiStatus = "BATCH_STATE_SUCCEEDED"
    #: Why a failed batch failed.
    failure: str | None = None
    fail: bool = False
    updated_at: float = 0.0

    @property
    def state(self) -> GeminiStatus:
        if self.phase != "ended":
            # The API has no cancelling state: a batch being cancelled still runs.
            return "BATCH_STATE_RUNNING"
        return self.final


@final
@dataclass(frozen=True, slots=True)
class GeminiBatchInfo:
    """A snapshot of one Gemini batch (times are ``time.time()`` seconds)."""

    name: str
    state: GeminiStatus
    model: str
    display_name: str
    #: Each request's ``metadata``, in request order.
    metadata: tuple[dict[str, str] | None, ...]
    #: Each request's result type once the batch has ended, in request order.
    results: tuple[ResultType | None, ...]
    created_at: float
    ended_at: float | None
    deleted: bool = field(default=False)


@final
class GeminiState(JobBook[_Batch]):
    """The Gemini direct calls and batches of one emulator, behind the core's lock.

    Its public methods are the controls a test uses (``emu.gemini``).
    """

    def __init__(self, core: Core) -> None:
        super().__init__(core, scope="gemini/")
        self._direct_calls = 0

    # -- direct ---------------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        models = self.config.models
        if models is not None and model_id(model) not in models:
            raise error(
                404,
                f"models/{model_id(model)} is not found for API version v1beta, or is not "
                "supported for generateContent. Call ListModels to see the list of available "
                "models and their supported methods.",
            )

    def direct_latency(self) -> float:
        """Seconds the next direct call waits before answering."""
        with self._lock:
            n = self._direct_calls + 1
        return self.core.direct_latency("gemini/", n)

    def generate(self, model: str, body: object) -> dict[str, Any]:
        """Answer a ``generateContent`` call; enters it in the ledger.

        :raises ApiError: for an invalid body or an unknown model.
        """
        params = validate(body)
        self._check_model(model)
        with self._lock:
            self._direct_calls += 1
            response_id = self.new_id("", "direct", self._direct_calls)
            answer, usage = reply(model, params, response_id)
            self.core.bill(
                "direct",
                batch_id=None,
                custom_id=None,
                message_id=response_id,
                model=model_id(model),
                result="succeeded",
                usage=usage,
            )
        return answer

    # -- batches --------------------------------------------------------------------------

    def create_batch(self, model: str, body: object, size: int) -> dict[str, Any]:
        """Create a batch of inlined requests.

        :raises ApiError: for an invalid body, a bad request in it, an unknown model, or
            inlined requests over the API's 20 MB (no batch is created).
        """
        if not isinstance(body, dict) or not isinstance(body.get("batch"), dict):
            raise invalid("* BatchGenerateContentRequest.batch: batch is required")
        batch = body["batch"]
        display_name = batch.get("displayName")
        if not isinstance(display_name, str) or not display_name:
            raise invalid("* BatchGenerateContentRequest.batch.display_name: is required")
        source = batch.get("inputConfig")
        if not isinstance(source, dict):
            raise invalid("* BatchGenerateContentRequest.batch.input_config: is required")
        if "fileName" in source:
            raise invalid(
                "the llmfleet emulator takes inlined requests only "
                "(batch.input_config.requests), not an input file"
            )
        requests = (source.get("requests") or {}).get("requests")
        if not isinstance(requests, list) or not requests:
            raise invalid(
                "* BatchGenerateContentRequest.batch.input_config.requests.requests: "
                "at least one request is required"
            )
        if size > MAX_INLINE_BYTES:
            raise invalid(
                f"The inlined requests are {size} bytes, over the {MAX_INLINE_BYTES}-byte limit: "
                "use an input file for larger batches."
            )
        if len(requests) > self.config.max_batch_requests:
            raise invalid(
                f"A batch may hold at most {self.config.max_batch_requests} requests, "
                f"not {len(requests)}."
            )
        self._check_model(model)
        items: list[_Item] = []
        for i, entry in enumerate(requests):
            where = f"batch.input_config.requests.requests[{i}]."
            if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
                raise invalid(f"* BatchGenerateContentRequest.{where}request: is required")
            request = validate(entry["request"], where + "request.")
            named = request.get("model")
            if named is not None and model_id(str(named)) != model_id(model):
                raise invalid(
                    f"* BatchGenerateContentRequest.{where}request.model: {named} does not match "
                    f"the batch's model {model}"
                )
            metadata = entry.get("metadata")
            if metadata is not None and (
                not isinstance(metadata, dict)
                or not all(isinstance(v, str) for v in metadata.values())
            ):
                raise invalid(f"* BatchGenerateContentRequest.{where}metadata: string values only")
            items.append(_Item(request, metadata))
        with self._lock:
            now = time.time()
            seq = self.next_seq()
            name = "batches/" + self.new_id("", "batch", seq).lower()
            job = _Batch(
                id=name,
                seq=seq,
                model="models/" + model_id(model),
                display_name=display_name,
                items=items,
                updated_at=now,
                **self.clock(name, now),
            )
            self.add(job, now)
            answer = self._json(job)
            answer["metadata"]["state"] = "BATCH_STATE_PENDING"
            return answer

    def _batch(self, name: str) -> _Batch:
        job = self.find(name)
        if job is None:
            raise error(404, f"Requested entity was not found. ({name})")
        return job

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            job = self._batch(name)
            self.refresh(job, time.time())
            return self._json(job)

    def check_batch(self, name: str) -> None:
        with self._lock:
            self._batch(name)

    def list_batches(self, page_size: int, page_token: str | None) -> dict[str, Any]:
        """A page of batches, newest first (the page token is the last name shown)."""
        with self._lock:
            live = self.newest_first()
            if page_token:
                cursor = self.seq_of(page_token)
                if cursor is None:
                    raise invalid(f"Invalid page token: {page_token!r}")
                live = [b for b in live if b.seq < cursor]
            page = live[:page_size]
            answer: dict[str, Any] = {"operations": [self._json(b) for b in page]}
            if len(live) > page_size:
                answer["nextPageToken"] = page[-1].id
            return answer

    def cancel(self, name: str) -> dict[str, Any]:
        """Start cancelling; an ended batch is left as it is. Answers ``{}``."""
        with self._lock:
            job = self._batch(name)
            now = time.time()
            self.start_cancel(job, now)
            self.refresh(job, now)
            return {}

    def delete(self, name: str) -> dict[str, Any]:
        """Delete a batch (a running one is cancelled first). Answers ``{}``."""
        with self._lock:
            job = self._batch(name)
            now = time.time()
            self.start_cancel(job, now)
            self.refresh(job, now)
            job.deleted = True
            return {}

    # -- controls (from the test's thread) ------------------------------------------------

    def end_batch(self, name: str) -> GeminiBatchInfo:
        """End the batch now with the outcomes its requests would have had (a batch being
        cancelled ends ``BATCH_STATE_CANCELLED``). An ended batch is left as it is.

        :raises KeyError: no batch has that name.
        """
        with self._lock:
            return self._info(self.end_now(name))

    def expire_batch(self, name: str) -> GeminiBatchInfo:
        """End the batch now as its time running out would: ``BATCH_STATE_EXPIRED``, no
        responses.

        :raises KeyError: no batch has that name.
        """
        with self._lock:
            return self._info(self.end_now(name, "expire"))

    def fail_batch(self, name: str, reason: str = "internal error") -> GeminiBatchInfo:
        """End the batch now as a failed one: ``BATCH_STATE_FAILED``, no responses, billed
        nothing.

        :raises KeyError: no batch has that name.
        """
        with self._lock:
            job = self.control(name)
            if job.phase != "ended":
                job.fail, job.failure = True, reason
                self.end_now(name)
            return self._info(job)

    def end_all_batches(self) -> list[str]:
        """End every batch still running, as :meth:`end_batch`; their names."""
        return self.end_all_now()

    @property
    def batches(self) -> dict[str, GeminiBatchInfo]:
        """Every batch (deleted ones too, marked), by name, in creation order, as of now."""
        with self._lock:
            self._refresh_all()
            return {b.id: self._info(b) for b in self._jobs.values()}

    # -- the end of a batch ---------------------------------------------------------------

    def finish(self, job: _Batch, at: float, how: EndKind) -> None:
        job.updated_at = at
        any_expired = False
        for n, item in enumerate(job.items):
            result, line, response_id, usage = self._line(job, n, item, how)
            any_expired = any_expired or result == "expired"
            item.result, item.line = result, line
            self.core.bill(
                "batch",
                batch_id=job.id,
                custom_id=(item.metadata or {}).get("key") or str(n),
                message_id=response_id,
                model=model_id(job.model),
                result=result,
                usage=usage,
                at=at,
            )
        if job.fail:
            job.final = "BATCH_STATE_FAILED"
        elif how == "cancel":
            job.final = "BATCH_STATE_CANCELLED"
        elif how == "expire" or any_expired:
            job.final = "BATCH_STATE_EXPIRED"
        else:
            job.final = "BATCH_STATE_SUCCEEDED"

    def _line(
        self, job: _Batch, n: int, item: _Item, how: EndKind
    ) -> tuple[ResultType, dict[str, Any] | None, str | None, TokenUsage]:
        """One request's result, its inlined response (``None``: none), reply id, usage."""
        if job.fail:
            return "errored", None, None, TokenUsage()
        if how == "cancel":
            return "canceled", None, None, TokenUsage()
        if how == "expire":
            return "expired", None, None, TokenUsage()
        kind, code = self.outcome(job.id, str(n), last_user_text(item.body))
        if kind == "expired":
            return "expired", None, None, TokenUsage()
        line: dict[str, Any] = {}
        if item.metadata is not None:
            line["metadata"] = item.metadata
        if kind == "errored":
            failure = error(500, f"{code or 'internal'} (injected by the llmfleet emulator).")
            line["error"] = {"code": 13, "message": failure.message, "details": []}
            return "errored", line, None, TokenUsage()
        try:
            self._check_model(job.model)
        except ApiError as refused:
            line["error"] = {"code": 5, "message": refused.message, "details": []}
            return "errored", line, None, TokenUsage()
        response_id = make_id("", f"{self.config.seed}/{job.id}/{n}").lower()
        body, usage = reply(job.model, item.body, response_id)
        line["response"] = body
        return "succeeded", line, response_id, usage

    # -- what the API shows ---------------------------------------------------------------

    @staticmethod
    def _json(job: _Batch) -> dict[str, Any]:
        state = job.state
        done = job.phase == "ended"
        counts = {"requestCount": str(len(job.items))}
        if done:
            ok = sum(1 for i in job.items if i.result == "succeeded")
            failed = sum(1 for i in job.items if i.result == "errored")
            counts["successfulRequestCount"] = str(ok)
            counts["failedRequestCount"] = str(failed)
            counts["pendingRequestCount"] = str(len(job.items) - ok - failed)
        else:
            counts["pendingRequestCount"] = str(len(job.items))
        metadata: dict[str, Any] = {
            "@type": _BATCH_TYPE,
            "model": job.model,
            "displayName": job.display_name,
            "createTime": rfc3339(job.created_at),
            "updateTime": rfc3339(job.updated_at),
            "batchStats": counts,
            "state": state,
            "name": job.id,
        }
        if done:
            assert job.ended_at is not None
            metadata["endTime"] = rfc3339(job.ended_at)
            lines = [i.line for i in job.items if i.line is not None]
            if lines:
                metadata["output"] = {"inlinedResponses": {"inlinedResponses": lines}}
        answer: dict[str, Any] = {"name": job.id, "metadata": metadata}
        if done:
            answer["done"] = True
            if state == "BATCH_STATE_FAILED":
                answer["error"] = {"code": 13, "message": job.failure or "internal error"}
        return answer

    @staticmethod
    def _info(job: _Batch) -> GeminiBatchInfo:
        return GeminiBatchInfo(
            name=job.id,
            state=job.state,
            model=job.model,
            display_name=job.display_name,
            metadata=tuple(i.metadata for i in job.items),
            results=tuple(i.result for i in job.items),
            created_at=job.created_at,
            ended_at=job.ended_at,
            deleted=job.deleted,
        )
