"""The Gemini adapter: ``generateContent``, direct or through the Batch API (inlined
requests), over ``google-genai`` (docs/design.md §9.5).

``submit(**params)`` takes the keyword arguments of ``client.aio.models.generate_content``
(``model``, ``contents``, ``config``) and returns what it returns, a
``google.genai.types.GenerateContentResponse``, on both routes.

**The client.** ``open_fleet`` takes a ``google.genai.Client`` (the adapter uses its async
side, ``client.aio``) or that ``client.aio`` itself. google-genai's default async HTTP client
keeps a connection pool per asyncio loop and so runs on asyncio only; under trio, give it a
transport of its own, which it then uses on any backend::

    genai.Client(api_key=..., http_options={"async_client_args": {"transport":
        httpx2.AsyncHTTPTransport()}})

**Batches.** One batch, one model (:meth:`GeminiProvider.batch_key`). A batch is created
with its requests inlined (``client.aio.batches.create(model=..., src=[...])``), each carrying
its custom_id as ``metadata={"key": custom_id}``, and with a ``display_name`` that is a tag
of 128 random bits (``lf_`` + 32 hex digits): after a create that got no answer, the batch
is found by that tag (``batches.list``), exactly. The results are the batch's
``inlinedResponses``, matched to their requests by that ``metadata`` (by position, in request
order, when a response carries none). The API's own retries are off on every batch call
(a retried create could create, and bill, a second batch): the fleet retries by itself.

Wire facts it relies on are in docs/design.md §D.
"""

from __future__ import annotations

import contextvars
import json
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

import httpx2
import sniffio

try:
    from google.genai import batches as genai_batches
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types
except ModuleNotFoundError as exc:  # pragma: no cover - tested in a subprocess
    raise ModuleNotFoundError(
        "the Gemini adapter (llmfleet.providers.gemini) needs google-genai: "
        "pip install 'llmfleet[gemini]'",
        name=exc.name,
    ) from exc

from ..errors import InvalidRequestError, UnbatchableRequestError, excerpt
from ._base import BATCH_TAG, BatchStatus, ErrorInfo, ErrorKind, ItemResult
from ._http import never_connected, retry_after

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable, Mapping, Sequence

    from google.genai.client import AsyncClient, Client
    from google.genai.types import BatchJob, GenerateContentResponse

__all__ = ["GeminiProvider"]

#: The Gemini API's limit on a batch's inlined requests: 20 MB (larger batches need an
#: input file, which this adapter does not use).
MAX_BYTES: Final = 20 * 1024 * 1024
#: Most requests the adapter puts in one batch by default (the fleet's own ceiling; the API
#: states a byte limit for inlined requests, not a count).
MAX_REQUESTS: Final = 100_000
#: The key of the custom_id in each inlined request's ``metadata``.
KEY: Final = "key"
_PARAMS: Final = frozenset({"model", "contents", "config"})
_ENDED: Final = frozenset(
    {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
)
# The API's retries off, on every batch-endpoint call (see the module docstring).
_ONCE: Final = {"retry_options": {"attempts": 1}}
# The ", " between two requests of the create's body.
_ENTRY_OVERHEAD: Final = 2
# The create's body around its requests: `{"batch": {"displayName": "lf_…", "inputConfig":
# {"requests": {"requests": […]}}}}`, with room to spare.
_FRAME: Final = 1024
_CLOCK_SLACK_S: Final = 5.0
# The google.rpc codes a request's error carries, by the names Google's APIs give them.
_RPC_CODES: Final = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_LIST_PAGE: Final = 100
# A prepared request: its model and its encoded InlinedRequest (custom_id in its metadata).
_Prepared: TypeAlias = tuple[str, str]


@dataclass(slots=True)
class _Attempt:
    ids: tuple[str, ...]
    tag: str


# The tag of the create a batch task sent last, from create_batch to find_batch in that task
# (as the OpenAI adapter does): a retry of the same requests reuses it.
_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "llmfleet_gemini_attempt", default=None
)


@final
class GeminiProvider:
    """Adapter over ``google.genai.Client`` (docs/design.md §7, §9.5).

    :param client: a ``google.genai.Client`` or its ``.aio``.
    :param max_batch_requests: most requests in one batch.
    :param max_batch_bytes: most bytes of inlined requests in one batch (the API's 20 MB less
        room for the create's frame).
    :raises ValueError: a limit below 1 or ``max_batch_bytes`` above the API's 20 MB.
    """

    name = "gemini"
    #: Told to the callers when the batch endpoint answers 404 (docs/design.md §5).
    base_url_hint = (
        "google-genai's base_url has no API version (e.g. "
        "https://generativelanguage.googleapis.com, or http://127.0.0.1:8787 for the emulator)"
    )
    # The results come with the batch itself: one get.
    results_requests = 1

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        max_batch_requests: int = MAX_REQUESTS,
        max_batch_bytes: int = MAX_BYTES - _FRAME,
    ) -> None:
        if max_batch_requests < 1:
            raise ValueError(f"max_batch_requests must be >= 1, got {max_batch_requests}")
        if not 1 <= max_batch_bytes <= MAX_BYTES:
            raise ValueError(
                f"max_batch_bytes must be between 1 and the API's {MAX_BYTES:,}, "
                f"got {max_batch_bytes}"
            )
        aio: Any = getattr(client, "aio", client)
        self._aio: AsyncClient = aio
        # google-genai's default async HTTP client pools per asyncio loop: it fails under trio
        # (module docstring). Known here, said at submit rather than as a bare RuntimeError.
        http = getattr(getattr(aio, "_api_client", None), "_async_httpx_client", None)
        self._asyncio_only = bool(getattr(http, "_per_loop", False))
        self.max_batch_requests = max_batch_requests
        self.max_batch_bytes = max_batch_bytes
        # Each batch's custom_ids in request order, for responses that carry no metadata.
        self._ids: dict[str, tuple[str, ...]] = {}
        self._unanswered: dict[str, int] = {}

    def __repr__(self) -> str:
        return "<GeminiProvider>"

    # -- requests -------------------------------------------------------------------------

    def check(self, params: Mapping[str, Any]) -> None:
        if self._asyncio_only and _under_trio():
            raise RuntimeError(
                "this google-genai client runs on asyncio only (its default HTTP client keeps "
                "a pool per asyncio loop); under trio, give it a transport of its own: "
                "genai.Client(..., http_options={'async_client_args': {'transport': "
                "httpx2.AsyncHTTPTransport()}})"
            )
        for key in params:
            if key not in _PARAMS:
                raise InvalidRequestError(
                    key,
                    f"generate_content() takes model=, contents= and config=, not {key}="
                    + (
                        " (stream with client.aio.models.generate_content_stream() directly)"
                        if key == "stream"
                        else ""
                    ),
                )
        if not isinstance(params.get("model"), str) or not params["model"]:
            raise InvalidRequestError("model", "required: the Gemini model id (a string)")

    def batch_key(self, params: Mapping[str, Any]) -> Hashable:
        """Requests with equal keys may share a batch: one batch, one model."""
        return self.model_of(params)

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, _Prepared]:
        self.check(params)
        if "contents" not in params:
            raise InvalidRequestError("contents", "required: the prompt (a string or contents)")
        config = params.get("config")
        options = (
            config.get("http_options")
            if isinstance(config, dict)
            else getattr(config, "http_options", None)
        )
        if options is not None:
            raise UnbatchableRequestError(
                "config.http_options are per-call SDK options a batch cannot carry; drop them "
                "or use submit_sync()"
            )
        try:
            request = genai_types.InlinedRequest(
                model=params["model"],
                contents=params["contents"],
                config=config,
                metadata={KEY: custom_id},
            )
            encoded = json.dumps(request.model_dump(mode="json", exclude_none=True))
        except (TypeError, ValueError) as exc:
            # pydantic's ValidationError is a ValueError: names the field and the problem.
            raise InvalidRequestError(
                _field_of(exc), f"the request does not fit generate_content()'s types: {exc}"
            ) from None
        size = self._wire_size(request, encoded) + _ENTRY_OVERHEAD
        if size > self.max_batch_bytes:
            raise UnbatchableRequestError(
                f"the request is {size:,} bytes, over the {self.max_batch_bytes:,}-byte "
                f"limit of a Gemini batch's inlined requests (starts {excerpt(encoded)}); send "
                "it with submit_sync() or make it smaller"
            )
        return size, (self.model_of(params), encoded)

    def _wire_size(self, request: genai_types.InlinedRequest, encoded: str) -> int:
        """The bytes ``request`` takes in the create's body, as the SDK writes it (camelCase,
        a string content made a part; ``json.dumps``' default separators): measured with the
        SDK's own converter, or bounded at twice the encoded request if that converter has
        moved (it is private)."""
        try:
            api_client = self._aio._api_client
            wire = genai_batches._InlinedRequest_to_mldev(api_client, request)
            return len(json.dumps(wire))
        except (AttributeError, TypeError, ValueError):
            return 2 * len(encoded) + 64

    def model_of(self, params: Mapping[str, Any]) -> str:
        return str(params.get("model", "")).removeprefix("models/")

    def tokens_of(self, value: Any) -> tuple[int, int, int, int] | None:
        usage = getattr(value, "usage_metadata", None)
        if usage is None:
            return None
        prompt = usage.prompt_token_count or 0
        cached = min(usage.cached_content_token_count or 0, prompt)
        # Thinking tokens are billed as output.
        output = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        return (prompt - cached, output, 0, cached)

    def dump_value(self, value: GenerateContentResponse) -> dict[str, Any]:
        """A response as JSON, for the journal."""
        data: dict[str, Any] = value.model_dump(mode="json", exclude_none=True)
        return data

    def load_value(self, data: dict[str, Any]) -> GenerateContentResponse:
        """A response from the journal (:meth:`dump_value`'s inverse)."""
        return genai_types.GenerateContentResponse.model_validate(data)

    # -- the direct route -----------------------------------------------------------------

    async def call(self, params: Mapping[str, Any]) -> GenerateContentResponse:
        return await self._aio.models.generate_content(**params)

    # -- the batch route ------------------------------------------------------------------

    async def create_batch(self, requests: Sequence[tuple[str, _Prepared]]) -> str:
        if not requests:
            raise ValueError("a batch needs at least one request")
        models = {model for _, (model, _) in requests}
        if len(models) > 1:
            raise UnbatchableRequestError(
                "one Gemini batch holds one model; this one mixes " + ", ".join(sorted(models))
            )
        (model,) = models
        ids = tuple(cid for cid, _ in requests)
        attempt = _ATTEMPT.get()
        if attempt is None or attempt.ids != ids:
            attempt = _Attempt(ids, BATCH_TAG.get() or "lf_" + secrets.token_hex(16))
            _ATTEMPT.set(attempt)
        src: Any = [json.loads(body) for _, (_, body) in requests]
        try:
            config: Any = {"display_name": attempt.tag, "http_options": _ONCE}
            job = await self._aio.batches.create(model=model, src=src, config=config)
        except genai_errors.APIError:
            raise
        except Exception:
            # No answer: the batch may exist; find_batch() looks for this tag.
            self._unanswered[attempt.tag] = len(ids)
            raise
        self._unanswered.pop(attempt.tag, None)
        name = str(job.name)
        self._ids[name] = ids
        return name

    async def _find(
        self, tags: set[str], since: float, exclude: frozenset[str] | set[str]
    ) -> BatchJob | None:
        token: str | None = None
        while True:
            jobs, token = await self._page(token)
            for job in jobs:
                created = job.create_time.timestamp() if job.create_time else None
                if created is not None and created < since:
                    # Listed newest first: nothing further down can match.
                    return None
                if job.display_name in tags and job.name not in exclude:
                    return job
            if token is None:
                return None

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
        job = await self._find(tags, created_after - _CLOCK_SLACK_S, exclude)
        if job is None:
            return None
        self._unanswered.pop(str(job.display_name), None)
        name = str(job.name)
        if attempt is not None:
            self._ids[name] = attempt.ids
        return name

    async def find_tagged(
        self, tag: str, *, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        """The batch whose display name is ``tag``, created since ``created_after`` (Unix
        time), if there is one and its name is not in ``exclude``."""
        job = await self._find({tag}, created_after - _CLOCK_SLACK_S, exclude)
        return None if job is None else str(job.name)

    async def _page(self, token: str | None) -> tuple[list[BatchJob], str | None]:
        config: dict[str, Any] = {"page_size": _LIST_PAGE, "http_options": _ONCE}
        if token:
            config["page_token"] = token
        pager = await self._aio.batches.list(config=config)  # type: ignore[arg-type]
        return list(pager.page), pager.config.get("page_token") or None

    async def poll(self, batch_id: str) -> BatchStatus:
        return _status(await self._get(batch_id))

    async def _get(self, batch_id: str) -> BatchJob:
        return await self._aio.batches.get(name=batch_id, config={"http_options": _ONCE})  # type: ignore[arg-type]

    async def list_page(
        self, cursor: str | None
    ) -> tuple[list[tuple[str, BatchStatus]], str | None]:
        jobs, token = await self._page(cursor)
        return [(str(job.name), _status(job)) for job in jobs], token

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, ItemResult]]:
        job = await self._get(batch_id)
        ids = self._ids.get(batch_id, ())
        seen: set[str] = set()
        responses = (job.dest.inlined_responses if job.dest is not None else None) or []
        for n, inlined in enumerate(responses):
            custom_id = (inlined.metadata or {}).get(KEY)
            if custom_id is None:
                if n >= len(ids):
                    continue
                custom_id = ids[n]
            seen.add(custom_id)
            if inlined.error is not None:
                yield (
                    custom_id,
                    ItemResult(
                        "errored",
                        error_type=_rpc_name(inlined.error.code),
                        message=inlined.error.message or "the request failed",
                    ),
                )
            elif inlined.response is not None:
                yield custom_id, ItemResult("succeeded", inlined.response)
        state = _state(job)
        # Requests with no response share the batch's fate (a succeeded batch answered all
        # of them: any left out are the fleet's to report missing).
        for custom_id in ids if state != "JOB_STATE_SUCCEEDED" else ():
            if custom_id in seen:
                continue
            if state == "JOB_STATE_CANCELLED":
                yield custom_id, ItemResult("canceled")
            elif state == "JOB_STATE_EXPIRED":
                yield custom_id, ItemResult("expired")
            else:
                yield (
                    custom_id,
                    ItemResult(
                        "errored",
                        error_type=state.lower(),
                        message=f"the batch ended {state} before this request was answered",
                    ),
                )
        # Read whole: the create's order is no longer needed.
        self._ids.pop(batch_id, None)

    async def cancel(self, batch_id: str) -> None:
        await self._aio.batches.cancel(name=batch_id, config={"http_options": _ONCE})  # type: ignore[arg-type]

    def refused(self, exc: BaseException) -> tuple[int, str] | None:
        """The request a refused batch create names as its reason: its index in the create
        and the API's words (``request.contents[0].role: Please use a valid role``), or
        ``None``.

        A 400 on a create made no batch; it names the first bad inlined request as
        ``batch.input_config.requests.requests[<i>].<where>: <why>`` (docs/design.md §D).
        """
        if not isinstance(exc, genai_errors.ClientError) or exc.code != 400:
            return None
        found = _NAMED.search(exc.message or "")
        if found is None:
            return None
        return int(found["index"]), f"{found['where']}: {found['why']}"

    def classify(self, exc: BaseException) -> ErrorInfo | None:
        if isinstance(exc, httpx2.TransportError):
            return ErrorInfo(ErrorKind.CONNECTION, unreachable=never_connected(exc))
        if isinstance(exc, json.JSONDecodeError):
            return ErrorInfo(ErrorKind.CONNECTION)
        if isinstance(exc, genai_errors.APIError):
            code = exc.code
            response = exc.response
            after = retry_after(response) if isinstance(response, httpx2.Response) else None
            if code == 429:
                return ErrorInfo(ErrorKind.RATE_LIMITED, after, code)
            if code == 404:
                return ErrorInfo(ErrorKind.NOT_FOUND, status=code)
            if code >= 500 or code in (408, 409):
                return ErrorInfo(ErrorKind.SERVER, after, code)
            return ErrorInfo(ErrorKind.FATAL, status=code)
        return None


# How a create's 400 names the inlined request it refuses (docs/design.md §D).
_NAMED: Final = re.compile(
    r"requests\.requests\[(?P<index>\d+)\]\.(?P<where>[^\s:]+): (?P<why>.+)", re.DOTALL
)


def _field_of(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return ".".join(str(part) for part in first.get("loc", ())) or "params"
        except (IndexError, TypeError, AttributeError):
            pass
    return "params"


def _under_trio() -> bool:
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:  # called outside any event loop
        return False


def _rpc_name(code: int | None) -> str:
    """``INTERNAL`` for 13: a request error's google.rpc code by its name."""
    if code is None:
        return "UNKNOWN"
    return _RPC_CODES.get(code, str(code))


def _state(job: BatchJob) -> str:
    state = job.state
    return str(getattr(state, "value", state) or "")


def _status(job: BatchJob) -> BatchStatus:
    state = _state(job)
    ended = state in _ENDED
    return BatchStatus(
        ended=ended,
        state=state,
        ended_at=job.end_time.timestamp() if ended and job.end_time else None,
    )
