"""The OpenAI adapter: Chat Completions and Responses, direct or through the Batch API, over
``openai.AsyncOpenAI`` (docs/design.md §9).

**Endpoint choice.** ``submit(**params)`` takes the keyword arguments of
``client.chat.completions.create`` or of ``client.responses.create``, and the adapter tells
them apart by their params: ``messages`` means ``/v1/chat/completions`` (the result is a
``ChatCompletion``), ``input`` (or ``prompt``, ``previous_response_id``, ``conversation``,
without ``messages``) means ``/v1/responses`` (the result is a ``Response``), on both routes.
Params that name both, or neither, are refused with :class:`~llmfleet.UnbatchableRequestError`.
``OpenAIProvider(client, endpoint=...)`` fixes the endpoint instead.

One OpenAI batch holds requests to one endpoint and one model, so :meth:`batch_key` says which
requests may share a batch.

Wire facts it relies on are in docs/design.md §B.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import secrets
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final

import anyio
import openai
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from ..errors import UnbatchableRequestError, excerpt
from ._base import BATCH_TAG, BatchStatus, ErrorInfo, ItemResult
from ._http import classify_http
from ._json import encode
from ._schema import (
    check_chat,
    check_leaked,
    check_responses,
    openai_chat,
    openai_responses,
    wire_body,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Hashable, Mapping, Sequence

    import httpx2
    from openai.types import Batch

__all__ = [
    "CHAT_COMPLETIONS",
    "DEFAULT_FLEX_MODELS",
    "RESPONSES",
    "OpenAIEndpoint",
    "OpenAIProvider",
]

logger = logging.getLogger("llmfleet")

OpenAIEndpoint: TypeAlias = Literal["/v1/chat/completions", "/v1/responses"]
CHAT_COMPLETIONS: Final = "/v1/chat/completions"
RESPONSES: Final = "/v1/responses"
_ENDPOINTS: Final[tuple[str, ...]] = (CHAT_COMPLETIONS, RESPONSES)

#: OpenAI's limits per batch input file: 50,000 requests, 200 MB.
MAX_REQUESTS: Final = 50_000
MAX_BYTES: Final = 200 * 1024 * 1024
#: The metadata key of the tag that identifies a batch this adapter created.
TAG_KEY: Final = "llmfleet_tag"
# Responses params that mark a request for /v1/responses when it has no `input`.
_RESPONSES_ONLY: Final = ("input", "prompt", "previous_response_id", "conversation")
# The SDK's markers of a parameter not given: dropped from the body, as the SDK drops them.
_UNSET: Final = (openai.NOT_GIVEN, openai.omit)
_ENDED: Final = frozenset({"completed", "failed", "expired", "cancelled"})
# `{"custom_id":"…","method":"POST","url":"…","body":…}\n` around each request's body.
_LINE_OVERHEAD: Final = len('{"custom_id":"","method":"POST","url":"","body":}\n')
# A prepared request: its (endpoint, model) and its encoded body.
_Prepared: TypeAlias = tuple[tuple[OpenAIEndpoint, str], str]
# How far back (seconds) a batch found after an ambiguous create may have been created: the
# provider's clock and ours differ a little, and its timestamps are whole seconds.
_CLOCK_SLACK_S: Final = 5.0
_LIST_PAGE: Final = 100
# Best-effort cleanup (file deletes) never holds the fleet longer than this.
_CLEANUP_S: Final = 5.0
# How many validation errors of a failed batch each caller is told about.
_ERRORS_SHOWN: Final = 3
#: The models OpenAI's docs name for flex processing (docs/design.md §B): the first release
#: (o3, o4-mini) and the current guide's examples (gpt-5.4, gpt-5.5, gpt-5.6). The pricing
#: page holds the full list; pass ``OpenAIProvider(client, flex_models=...)`` for others.
#: A dated snapshot of a listed id (``o3-2025-04-16``) counts as the id.
DEFAULT_FLEX_MODELS: Final = frozenset({"o3", "o4-mini", "gpt-5.4", "gpt-5.5", "gpt-5.6"})
# `-YYYY-MM-DD` at the end of a model id: a dated snapshot.
_SNAPSHOT: Final = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(slots=True)
class _Attempt:
    """The last create of one batch task: its requests, its tag, its uploaded file."""

    ids: tuple[str, ...]
    tag: str
    file_id: str | None = None


# Each flushed batch is created by its own task, and that task both sends the creates and
# looks for the batch after an ambiguous one (docs/design.md §5). A context variable carries the tag
# from create_batch to find_batch within that task, which the protocol's find_batch(count=…)
# cannot: a retry of the same requests reuses the tag and the uploaded file.
_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "llmfleet_openai_attempt", default=None
)


@final
class OpenAIProvider:
    """Adapter over ``openai.AsyncOpenAI`` (docs/design.md §7, §9).

    A batch is a JSONL file uploaded with ``purpose="batch"`` and a batch created over it with
    an opaque ``metadata`` tag. Every batch-endpoint request goes out once (``max_retries=0``):
    the API has no idempotency key, so an SDK retry after a timeout could create, and bill, a
    second batch; the fleet reconciles an ambiguous create with :meth:`find_batch`, which
    matches the tag exactly. Uploaded, output and error files are deleted (best effort) once
    a batch's results have been read.

    :param client: the SDK client (its base URL, key and retries serve the direct route).
    :param endpoint: send every request to this endpoint instead of choosing by params.
    :param flex_models: the model ids that offer flex processing (default
        :data:`DEFAULT_FLEX_MODELS`; an empty set never uses flex). Calls whose budget falls
        in the policy's flex band go there (docs/design.md §2.3).
    """

    name = "openai"
    max_batch_requests = MAX_REQUESTS
    max_batch_bytes = MAX_BYTES
    # retrieve(), then the output file and the error file.
    results_requests = 3

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        endpoint: OpenAIEndpoint | None = None,
        flex_models: frozenset[str] | set[str] = DEFAULT_FLEX_MODELS,
    ) -> None:
        if endpoint is not None and endpoint not in _ENDPOINTS:
            raise ValueError(f"endpoint must be one of {_ENDPOINTS}, got {endpoint!r}")
        names: object = flex_models  # a bare string is a common slip; mypy cannot see it
        if isinstance(names, str) or not all(isinstance(m, str) for m in flex_models):
            raise TypeError(f"flex_models must be a set of model ids, got {flex_models!r:.80}")
        self._client = client
        self._endpoint = endpoint
        self.flex_models = frozenset(flex_models)
        # Whether each model seen offers flex: read on every flex-band submit.
        self._flex_of: dict[str, bool] = {}
        self._once = client.with_options(max_retries=0)
        # Tags of creates that got no answer, with their request counts: the fallback for a
        # find_batch() called outside the task that sent the create.
        self._unanswered: dict[str, int] = {}

    #: Told to the callers when the batch endpoint answers 404 (docs/design.md §5).
    base_url_hint = (
        "OpenAI's base URL ends in /v1 (e.g. https://api.openai.com/v1, or "
        "http://127.0.0.1:8787/v1 for the emulator)"
    )

    def __repr__(self) -> str:
        # The client's repr could carry its key one day; name only the endpoint.
        return f"<OpenAIProvider base_url={str(self._client.base_url)!r}>"

    # -- requests -------------------------------------------------------------------------

    def endpoint_of(self, params: Mapping[str, Any]) -> OpenAIEndpoint:
        """The endpoint a request goes to (see the module docstring).

        :raises UnbatchableRequestError: the params do not say which.
        """
        if self._endpoint is not None:
            return self._endpoint
        chat = _given(params, "messages")
        responses = any(_given(params, key) for key in _RESPONSES_ONLY)
        if chat and not responses:
            return "/v1/chat/completions"
        if responses and not chat:
            return "/v1/responses"
        which = "both `messages` and `input`" if chat else "neither `messages` nor `input`"
        raise UnbatchableRequestError(
            f"cannot tell the endpoint: the params have {which}. Pass `messages=` for "
            "chat.completions.create, or `input=` for responses.create "
            "(or fix it with OpenAIProvider(client, endpoint=...))"
        )

    def check(self, params: Mapping[str, Any]) -> None:
        if params.get("stream"):
            raise UnbatchableRequestError(
                "stream=True is not supported: the fleet returns whole responses. "
                "Call create(stream=True) or the stream helpers on the client directly."
            )
        if "latency_budget_ms" in params or "idempotency_key" in params:
            check_leaked(params)
        self.endpoint_of(params)

    def batch_key(self, params: Mapping[str, Any]) -> Hashable:
        """Requests with equal keys may share a batch: one batch, one endpoint and one model."""
        return self._key(params)

    def _key(self, params: Mapping[str, Any]) -> tuple[str, str]:
        return (self.endpoint_of(params), self.model_of(params))

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, _Prepared]:
        endpoint = self.endpoint_of(params)
        # Checked against the API's schema first: OpenAI fails a whole batch for one bad
        # line in it (docs/design.md §2.1).
        if endpoint == CHAT_COMPLETIONS:
            schema = openai_chat()
            body = wire_body(params, schema, _UNSET)
            check_chat(body, schema)
        else:
            schema = openai_responses()
            body = wire_body(params, schema, _UNSET)
            check_responses(body, schema)
        try:
            # ensure_ascii gives the longest encoding the file could hold: a safe upper bound.
            encoded = encode(body)
        except (TypeError, ValueError) as exc:
            raise UnbatchableRequestError(
                f"the request params are not JSON-serializable ({exc}); a batch carries plain "
                "JSON: pass dicts, lists, strings and numbers, or use submit_sync()"
            ) from None
        size = len(encoded) + len(custom_id) + len(endpoint) + _LINE_OVERHEAD
        if size > MAX_BYTES:
            raise UnbatchableRequestError(
                f"the request is {size:,} bytes, over OpenAI's {MAX_BYTES:,}-byte limit per "
                f"batch file (starts {excerpt(encoded)}); send it with submit_sync() or make "
                "it smaller"
            )
        # The encoded body is the snapshot, spliced as it is into its line of the batch file;
        # the key says which endpoint and model it needs (one of each per batch).
        return size, ((endpoint, self.model_of(params)), encoded)

    def model_of(self, params: Mapping[str, Any]) -> str:
        return str(params.get("model", ""))

    def tokens_of(self, value: Any) -> tuple[int, int, int, int] | None:
        usage = getattr(value, "usage", None)
        if usage is None:
            return None
        if hasattr(usage, "prompt_tokens"):  # ChatCompletion
            prompt = usage.prompt_tokens or 0
            output = usage.completion_tokens or 0
            details = getattr(usage, "prompt_tokens_details", None)
        else:  # Response
            prompt = getattr(usage, "input_tokens", 0) or 0
            output = getattr(usage, "output_tokens", 0) or 0
            details = getattr(usage, "input_tokens_details", None)
        read = (getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        write = (getattr(details, "cache_write_tokens", 0) or 0) if details is not None else 0
        # OpenAI counts cached tokens inside the prompt; our input count excludes them.
        read = min(read, prompt)
        write = min(write, prompt - read)
        return (prompt - read - write, output, write, read)

    # -- the direct route -----------------------------------------------------------------

    async def call(self, params: Mapping[str, Any]) -> ChatCompletion | Response:
        create: Any
        if self.endpoint_of(params) == CHAT_COMPLETIONS:
            create = self._client.chat.completions.create
        else:
            create = self._client.responses.create
        value: ChatCompletion | Response = await create(**params)
        return value

    # -- the flex tier (docs/design.md §2.3, §B) -------------------------------------------

    def supports_flex(self, params: Mapping[str, Any]) -> bool:
        """Whether this request may go by the flex tier: its model offers flex, and it names
        no ``service_tier`` of its own (a caller who chose a tier keeps it)."""
        if _given(params, "service_tier"):
            return False
        model = params.get("model")
        if not isinstance(model, str):
            return False
        known = self._flex_of.get(model)
        if known is None:
            flex = self.flex_models
            known = self._flex_of[model] = model in flex or _SNAPSHOT.sub("", model) in flex
        return known

    async def call_flex(
        self, params: Mapping[str, Any], *, sdk_timeout: float
    ) -> ChatCompletion | Response:
        """The direct call on the flex tier: ``service_tier="flex"``, sent once (no SDK retry:
        a 429 goes on to the standard tier at once, which the fleet does), waiting up to
        ``sdk_timeout`` seconds (flex answers are slow: OpenAI suggests 15 minutes)."""
        once: Any = self._once
        if self.endpoint_of(params) == CHAT_COMPLETIONS:
            create = once.chat.completions.create
        else:
            create = once.responses.create
        value: ChatCompletion | Response = await create(
            **{**params, "service_tier": "flex", "timeout": sdk_timeout}
        )
        return value

    def flex_unavailable(self, exc: BaseException) -> bool:
        """Whether a flex call's error is OpenAI's 429 "resource unavailable" (flex has no
        capacity now; not billed) rather than a rate limit."""
        if not isinstance(exc, openai.APIStatusError) or exc.status_code != 429:
            return False
        body = exc.body
        detail = body.get("error", body) if isinstance(body, dict) else None
        words = ""
        if isinstance(detail, dict):
            words = " ".join(str(detail.get(k) or "") for k in ("code", "type", "message"))
        else:
            words = str(exc)
        words = words.lower().replace("_", " ")
        return "resource unavailable" in words or "unavailable" in words.split()

    # -- the batch route ------------------------------------------------------------------

    async def create_batch(self, requests: Sequence[tuple[str, _Prepared]]) -> str:
        if not requests:
            raise ValueError("a batch needs at least one request")
        keys = {key for _, (key, _) in requests}
        if len(keys) > 1:
            # OpenAI fails a batch whose lines name several endpoints or models; refuse it
            # before anything is uploaded. (The fleet keeps one queue per batch_key.)
            raise UnbatchableRequestError(
                "one OpenAI batch holds one endpoint and one model; this one mixes "
                + ", ".join(sorted(f"{e} {m!r}" for e, m in keys))
            )
        ((endpoint, _),) = keys
        ids = tuple(cid for cid, _ in requests)
        attempt = _ATTEMPT.get()
        if attempt is None or attempt.ids != ids:
            # A fleet with a journal gave this batch its tag before the create (and recorded
            # it): a later process finds the batch by it (find_tagged).
            attempt = _Attempt(ids, BATCH_TAG.get() or "lf_" + secrets.token_hex(16))
            _ATTEMPT.set(attempt)
        if attempt.file_id is None:
            # custom_ids are the fleet's own lf_<hex>_<n>: nothing in them to escape.
            data = "".join(
                f'{{"custom_id":"{cid}","method":"POST","url":"{endpoint}","body":{body}}}\n'
                for cid, (_, body) in requests
            ).encode()
            uploaded = await self._once.files.create(
                file=("llmfleet-batch.jsonl", data, "application/jsonl"), purpose="batch"
            )
            attempt.file_id = uploaded.id
        try:
            batch = await self._once.batches.create(
                input_file_id=attempt.file_id,
                endpoint=endpoint,
                completion_window="24h",
                metadata={TAG_KEY: attempt.tag},
            )
        except openai.APIStatusError:
            # Refused: no batch uses the file. A later attempt uploads afresh.
            await self._delete_files(attempt.file_id)
            attempt.file_id = None
            raise
        except Exception:
            # No answer: the batch may exist; find_batch() looks for this tag.
            self._unanswered[attempt.tag] = len(ids)
            raise
        self._unanswered.pop(attempt.tag, None)
        return batch.id

    async def find_batch(
        self, *, count: int, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        attempt = _ATTEMPT.get()
        if attempt is not None:
            tags = {attempt.tag}
        else:
            tags = {tag for tag, n in self._unanswered.items() if n == count}
        if not tags:
            return None
        since = created_after - _CLOCK_SLACK_S
        # Page by page, not `async for` over the paginator: leaving that early would abandon
        # the SDK's generators half-way.
        page = await self._once.batches.list(limit=_LIST_PAGE)
        while True:
            for batch in page.data:
                if batch.created_at < since:
                    # Listed newest first: nothing further down can match.
                    return None
                tag = (batch.metadata or {}).get(TAG_KEY)
                if tag in tags and batch.id not in exclude:
                    self._unanswered.pop(tag, None)
                    return batch.id
            if not page.has_next_page():
                return None
            page = await page.get_next_page()

    async def find_tagged(
        self, tag: str, *, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        """The batch created with ``tag`` in its metadata since ``created_after`` (Unix time),
        if there is one and its id is not in ``exclude``: exact, whatever else is running."""
        since = created_after - _CLOCK_SLACK_S
        page = await self._once.batches.list(limit=_LIST_PAGE)
        while True:
            for batch in page.data:
                if batch.created_at < since:
                    return None
                if (batch.metadata or {}).get(TAG_KEY) == tag and batch.id not in exclude:
                    return batch.id
            if not page.has_next_page():
                return None
            page = await page.get_next_page()

    def dump_value(self, value: ChatCompletion | Response) -> dict[str, Any]:
        """A response as JSON, for the journal."""
        data: dict[str, Any] = value.model_dump(mode="json")
        return data

    def load_value(self, data: dict[str, Any]) -> ChatCompletion | Response:
        """A response from the journal (:meth:`dump_value`'s inverse): a ``Response`` or a
        ``ChatCompletion``, as its ``object`` field says."""
        return self._construct(RESPONSES if data.get("object") == "response" else "", data)

    async def poll(self, batch_id: str) -> BatchStatus:
        return _status(await self._once.batches.retrieve(batch_id))

    async def list_page(
        self, cursor: str | None
    ) -> tuple[list[tuple[str, BatchStatus]], str | None]:
        batches = self._once.batches
        if cursor is None:
            page = await batches.list(limit=_LIST_PAGE)
        else:
            page = await batches.list(limit=_LIST_PAGE, after=cursor)
        rows = [(batch.id, _status(batch)) for batch in page.data]
        return rows, (page.data[-1].id if page.has_more and page.data else None)

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, ItemResult]]:
        batch = await self._once.batches.retrieve(batch_id)
        seen: set[str] = set()
        done = False
        try:
            if batch.status == "failed":
                async with aclosing(self._failed(batch)) as failed:
                    async for custom_id, result in failed:
                        yield custom_id, result
            for file_id in (batch.output_file_id, batch.error_file_id):
                if not file_id:
                    continue
                async with self._lines(file_id) as lines:
                    async for line in lines:
                        if not line.strip():
                            continue
                        custom_id, result = self._parse_line(line, batch.endpoint)
                        seen.add(custom_id)
                        yield custom_id, result
            if batch.status in ("cancelled", "expired"):
                # Requests never processed may have no line at all: they share the batch's fate.
                kind: Literal["canceled", "expired"] = (
                    "canceled" if batch.status == "cancelled" else "expired"
                )
                async with aclosing(self._input_ids(batch.input_file_id)) as ids:
                    async for _, custom_id in ids:
                        if custom_id not in seen:
                            yield custom_id, ItemResult(kind)
            done = True
        except GeneratorExit:
            # Closed by the fleet: it has every result it needs.
            done = True
            raise
        finally:
            # A download that broke keeps the files: the fleet fetches again for the rest.
            if done:
                await self._delete_files(
                    batch.input_file_id, batch.output_file_id, batch.error_file_id
                )

    async def cancel(self, batch_id: str) -> None:
        await self._once.batches.cancel(batch_id)

    def classify(self, exc: BaseException) -> ErrorInfo | None:
        return classify_http(
            exc,
            connection=openai.APIConnectionError,
            status=openai.APIStatusError,
            base=openai.OpenAIError,
            status_of=_status_of,
        )

    # -- helpers --------------------------------------------------------------------------

    @asynccontextmanager
    async def _lines(self, file_id: str) -> AsyncIterator[AsyncIterator[str]]:
        """The lines of a file, streamed (never the whole file in memory); blank lines too."""
        content = self._once.files.with_streaming_response.content
        async with content(file_id) as response:
            lines = response.iter_lines()
            try:
                yield lines
            finally:
                # The SDK's line iterator sits on a chain of the HTTP client's generators
                # that closing it would leave suspended (and trio warns of each when it is
                # collected): read what is left instead, shielded and bounded.
                with anyio.move_on_after(_CLEANUP_S, shield=True):
                    with contextlib.suppress(Exception):
                        async for _ in lines:
                            pass

    async def _input_ids(self, file_id: str) -> AsyncGenerator[tuple[int, str]]:
        """``(line number, custom_id)`` of each request of an input file (1-based lines)."""
        number = 0
        async with self._lines(file_id) as lines:
            async for line in lines:
                if not line.strip():
                    continue
                number += 1
                custom_id = json.loads(line).get("custom_id")
                if isinstance(custom_id, str):
                    yield number, custom_id

    async def _failed(self, batch: Batch) -> AsyncGenerator[tuple[str, ItemResult]]:
        """A batch that failed validation ran nothing and billed nothing.

        When every error names a line, the requests on those lines are errored (told why)
        and the others are ``unsent``: the fleet sends them again without the bad ones
        (docs/design.md §5). An error of the whole batch (no line) fails every request,
        told why (its own line's errors first).
        """
        errors = list(batch.errors.data or []) if batch.errors is not None else []
        by_line: dict[int, list[str]] = {}
        for error in errors:
            if error.line is not None:
                where = f"{error.param}: " if error.param else ""
                by_line.setdefault(error.line, []).append(
                    where + _describe(error.code, error.message)
                )
        # Only the lines named were refused: the rest may go again.
        split = bool(by_line) and all(error.line is not None for error in errors)
        summary = "; ".join(
            (f"line {e.line}: " if e.line is not None else "") + _describe(e.code, e.message)
            for e in errors[:_ERRORS_SHOWN]
        )
        if len(errors) > _ERRORS_SHOWN:
            summary += f"; and {len(errors) - _ERRORS_SHOWN} more"
        code = (errors[0].code if errors else None) or "batch_failed"
        general = f"the batch failed validation and ran nothing ({summary or 'no reason given'})"
        async with aclosing(self._input_ids(batch.input_file_id)) as ids:
            async for number, custom_id in ids:
                own = by_line.get(number)
                if own:
                    message = (
                        f"this request failed the batch's validation (custom_id {custom_id}: "
                        f"{'; '.join(own)}); it was not run and nothing was billed for it. Fix "
                        "the request: sent again as it is, it would fail again"
                    )
                elif split:
                    # Refused for the others' sake only: the fleet sends it again.
                    yield (
                        custom_id,
                        ItemResult("errored", error_type=code, message=general, unsent=True),
                    )
                    continue
                else:
                    message = general
                yield custom_id, ItemResult("errored", error_type=code, message=message)

    def _parse_line(self, line: str, endpoint: str) -> tuple[str, ItemResult]:
        data = json.loads(line)
        custom_id = str(data.get("custom_id", ""))
        error = data.get("error")
        response = data.get("response")
        if error:
            code = str(error.get("code") or "error")
            if code == "batch_expired":
                return custom_id, ItemResult("expired")
            if code == "batch_cancelled":
                return custom_id, ItemResult("canceled")
            return custom_id, ItemResult(
                "errored", error_type=code, message=str(error.get("message") or "")
            )
        if not isinstance(response, dict):
            return custom_id, ItemResult(
                "errored", error_type="no_response", message="the result line has no response"
            )
        status = response.get("status_code")
        body = response.get("body")
        if status == 200 and isinstance(body, dict):
            return custom_id, ItemResult("succeeded", self._construct(endpoint, body))
        detail = body.get("error") if isinstance(body, dict) else None
        if not isinstance(detail, dict):
            detail = {}
        return custom_id, ItemResult(
            "errored",
            error_type=str(detail.get("code") or detail.get("type") or f"http_{status}"),
            message=str(detail.get("message") or f"the request failed with status {status}"),
        )

    def _construct(self, endpoint: str, body: dict[str, Any]) -> ChatCompletion | Response:
        # As the SDK itself builds a response: validated only if the client asks for it.
        cls: type[ChatCompletion | Response] = Response if endpoint == RESPONSES else ChatCompletion
        if getattr(self._client, "_strict_response_validation", False):
            return cls.model_validate(body)
        return cls.model_construct(**body)

    async def _delete_files(self, *file_ids: str | None) -> None:
        """Delete files nobody needs any more (best effort, shielded, bounded)."""
        with anyio.move_on_after(_CLEANUP_S, shield=True):
            for file_id in file_ids:
                if not file_id:
                    continue
                try:
                    await self._once.files.delete(file_id)
                except openai.OpenAIError as exc:
                    logger.debug("could not delete file %s: %s", file_id, exc)


def _given(params: Mapping[str, Any], key: str) -> bool:
    return key in params and not isinstance(params[key], openai.NotGiven | openai.Omit)


def _status(batch: Batch) -> BatchStatus:
    ended = batch.status in _ENDED
    at = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    counts = batch.request_counts
    # No counts (or a total of 0) while the input file is being validated: not counted yet.
    total = counts.total if counts is not None and counts.total else None
    return BatchStatus(
        ended=ended,
        state=batch.status,
        ended_at=float(at) if ended and at else None,
        requests=total,
        requests_done=None if counts is None or total is None else counts.completed + counts.failed,
    )


def _describe(code: str | None, message: str | None) -> str:
    return f"{message or 'invalid'}" + (f" ({code})" if code else "")


def _status_of(exc: BaseException) -> tuple[int, httpx2.Response]:
    assert isinstance(exc, openai.APIStatusError)
    return exc.status_code, exc.response
