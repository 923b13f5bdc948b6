"""The Anthropic adapter: Messages and Message Batches through ``anthropic.AsyncAnthropic``.

Wire facts it relies on are in docs/design.md §A.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Final, final

import anthropic
from anthropic.types import Message as _Message
from anthropic.types.messages import MessageBatch

from ..errors import UnbatchableRequestError, excerpt
from ._base import BatchStatus, ErrorInfo, ItemResult
from ._http import classify_http
from ._json import encode
from ._schema import anthropic_messages, check_leaked, check_messages, wire_body

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence

    import httpx2
    from anthropic.types import Message

__all__ = ["AnthropicProvider"]

#: Anthropic's limits per batch: 100,000 requests, 256 MB of body.
MAX_REQUESTS: Final = 100_000
MAX_BYTES: Final = 256 * 1024 * 1024
# `{"custom_id":"…","params":…},` around each request's params.
_ENTRY_OVERHEAD: Final = len('{"custom_id":"","params":},')
# A create's body: its head and tail, each entry's fixed part, and requests per chunk sent.
_HEAD: Final = '{"requests":['
_TAIL: Final = "]}"
_ENTRY: Final = len('{"custom_id":"","params":}')
_SLICE: Final = 1000
# How far back (seconds) a batch found after an ambiguous create may have been created:
# the provider's clock and ours differ a little.
_CLOCK_SLACK_S: Final = 5.0
_LIST_PAGE: Final = 100
# The largest page the list endpoint serves: fewest requests for a status refresh.
_STATUS_PAGE: Final = 1000
# A status refresh's first page: the batches in flight are among the newest, so it asks for
# twice as many plus this, not a full page (the SDK builds a model per row: a full page is
# ~1000 models to parse per refresh in an organisation with that many batches). Batches made
# by others in between push some of ours further down: the board then pages on, in full pages.
_STATUS_SLACK: Final = 20
# The SDK's markers of a parameter not given: dropped from the body, as the SDK drops them.
_UNSET: Final = (anthropic.NOT_GIVEN, anthropic.omit)


# A Messages API response's tokens, whichever route or vendor carried it (Anthropic's API,
# Bedrock's InvokeModel and batch output).
def message_tokens(value: Any) -> tuple[int, int, int, int] | None:
    """``(input, output, cache write, cache read)`` of a ``Message``'s usage, if it has one
    (a ``Message`` or its JSON)."""
    if type(value) is dict:
        used = value.get("usage")
        if not isinstance(used, dict):
            return None
        return (
            used.get("input_tokens") or 0,
            used.get("output_tokens") or 0,
            used.get("cache_creation_input_tokens") or 0,
            used.get("cache_read_input_tokens") or 0,
        )
    try:
        # A Message: its Usage has both cache fields (None when unused). Plain reads, on the
        # path of every result.
        usage = value.usage
        return (
            usage.input_tokens or 0,
            usage.output_tokens or 0,
            usage.cache_creation_input_tokens or 0,
            usage.cache_read_input_tokens or 0,
        )
    except AttributeError:
        return _loose_tokens(value)


def _loose_tokens(value: Any) -> tuple[int, int, int, int] | None:
    """:func:`message_tokens` of anything else: no usage, or a usage without cache fields."""
    usage = getattr(value, "usage", None)
    if usage is None:
        return None
    write = getattr(usage, "cache_creation_input_tokens", None)
    read = getattr(usage, "cache_read_input_tokens", None)
    return (usage.input_tokens or 0, usage.output_tokens or 0, write or 0, read or 0)


@final
class _Body:
    """A batch create's JSON body, ``{"requests":[{"custom_id":…,"params":…},…]}``, as an
    async iterable of byte chunks of :data:`_SLICE` requests each, with its exact length.

    The length is known without encoding when every request is ASCII (prepare() makes
    ASCII-only JSON; the fleet's custom_ids are ASCII): a chunked upload is avoided, and
    a body of anything else is sent whole (:meth:`whole`). Iterable again from the start
    (a client may send a request twice), and no async generator: one left unfinished by a
    failed send would be left for the garbage collector to close.
    """

    __slots__ = ("_requests", "length")

    def __init__(self, requests: Sequence[tuple[str, str]]) -> None:
        self._requests = requests
        length: int | None = len(_HEAD) + len(_TAIL) + max(0, len(requests) - 1)
        for custom_id, params in requests:
            if not (custom_id.isascii() and params.isascii()):
                length = None
                break
            assert length is not None
            length += _ENTRY + len(custom_id) + len(params)
        #: Bytes in the body, or None when it is not all ASCII (then sent whole).
        self.length = length

    def headers(self) -> dict[str, str]:
        return {} if self.length is None else {"Content-Length": str(self.length)}

    def whole(self) -> bytes:
        return b"".join(
            self._chunk(start) for start in range(0, max(1, len(self._requests)), _SLICE)
        )

    def _chunk(self, start: int) -> bytes:
        entries = ",".join(
            # custom_ids are the fleet's own lf_<hex>_<n> (the API allows
            # [a-zA-Z0-9_-]{1,64}): nothing in them to escape.
            f'{{"custom_id":"{cid}","params":{params}}}'
            for cid, params in self._requests[start : start + _SLICE]
        )
        head = _HEAD if start == 0 else ","
        tail = _TAIL if start + _SLICE >= len(self._requests) else ""
        return (head + entries + tail).encode()

    def __aiter__(self) -> _Chunks:
        return _Chunks(self)


@final
class _Chunks:
    """One pass over a :class:`_Body`."""

    __slots__ = ("_body", "_start")

    def __init__(self, body: _Body) -> None:
        self._body = body
        self._start = 0

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        body, start = self._body, self._start
        if start >= max(1, len(body._requests)):
            raise StopAsyncIteration
        self._start = start + _SLICE
        return body._chunk(start)


@final
class AnthropicProvider:
    """Adapter over ``anthropic.AsyncAnthropic`` (docs/design.md §7).

    Batch creates go out with ``max_retries=0``: the API has no idempotency key, so an SDK
    retry after a timeout could create, and bill, a second batch (docs/design.md §5). The dispatcher
    reconciles an ambiguous create with :meth:`find_batch` instead.
    """

    name = "anthropic"
    #: Told to the callers when the batch endpoint answers 404 (docs/design.md §5).
    base_url_hint = (
        "Anthropic's base URL has no /v1 (e.g. https://api.anthropic.com, or "
        "http://127.0.0.1:8787 for the emulator)"
    )
    max_batch_requests = MAX_REQUESTS
    max_batch_bytes = MAX_BYTES
    # The SDK's results() retrieves the batch before it downloads the results.
    results_requests = 2
    # A create with a bad request is refused whole (docs/design.md §A): no result is unsent.
    unsent_results = False

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self._client = client
        # Every batch-endpoint request goes out once: the fleet retries by itself, within its
        # shared request budget (an SDK retry would be a request the budget never saw), and
        # a retried create could create and bill a second batch.
        self._once = client.with_options(max_retries=0)
        # Batches created here whose results are not asked for yet: they size the first page
        # of a status refresh (see list_page).
        self._open: set[str] = set()

    def __repr__(self) -> str:
        # The client's repr could carry its key one day; name only the endpoint.
        return f"<AnthropicProvider base_url={str(self._client.base_url)!r}>"

    def check(self, params: Mapping[str, Any]) -> None:
        if params.get("stream"):
            raise UnbatchableRequestError(
                "stream=True is not supported: the fleet returns whole messages. "
                "Call client.messages.stream(...) or create(stream=True) on the client directly."
            )
        if "latency_budget_ms" in params or "idempotency_key" in params:
            check_leaked(params)

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, str]:
        # Checked against the API's schema first: the API refuses a whole batch create for
        # one bad request in it (docs/design.md §2.1).
        schema = anthropic_messages()
        request = wire_body(params, schema, _UNSET)
        check_messages(request, schema)
        try:
            body = encode(request)
        except (TypeError, ValueError) as exc:
            raise UnbatchableRequestError(
                f"the request params are not JSON-serializable ({exc}); a batch carries plain "
                "JSON: pass dicts, lists, strings and numbers, or use submit_sync()"
            ) from None
        size = len(body) + len(custom_id) + _ENTRY_OVERHEAD
        if size + 16 > MAX_BYTES:
            raise UnbatchableRequestError(
                f"the request is {size:,} bytes, over Anthropic's {MAX_BYTES:,}-byte limit per "
                f"batch (starts {excerpt(body)}); send it with submit_sync() or make it smaller"
            )
        # The encoded params are the snapshot: immutable, a fraction of the dict tree's
        # memory, and spliced as they are into the create's body (see create_batch).
        return size, body

    def model_of(self, params: Mapping[str, Any]) -> str:
        return str(params.get("model", ""))

    # Read for every result: the function itself, with no method frame around it.
    tokens_of = staticmethod(message_tokens)

    def dump_value(self, value: Message) -> dict[str, Any]:
        """A response as JSON, for the journal."""
        return dump_message(value)

    def load_value(self, data: dict[str, Any]) -> Message:
        """A response from the journal, as the SDK builds one (:meth:`dump_value`'s inverse)."""
        return load_message(data)

    def call(self, params: Mapping[str, Any]) -> Coroutine[Any, Any, Message]:
        # The SDK's own coroutine, not one wrapping it: a coroutine frame less to resume at
        # every suspension of the direct call (docs/design.md §2, the direct route's cost).
        create: Any = self._client.messages.create
        message: Coroutine[Any, Any, Message] = create(**params)
        return message

    async def create_batch(self, requests: Sequence[tuple[str, str]]) -> str:
        # The body is spliced from the JSON prepare() made, and posted through the SDK's own
        # client (its auth, headers, timeouts and errors) as it is: batches.create would
        # decode-and-check every request again (~18 µs each, measured: more than the fleet's
        # whole per-call cost) only to encode the same JSON. It is encoded a slice at a
        # time as the client sends it: a batch near the 256 MB limit, made whole, would
        # take that much memory three times over (the entries, their join, its bytes).
        body = _Body(requests)
        batch = await self._once.post(
            "/v1/messages/batches",
            cast_to=MessageBatch,
            content=body if body.length is not None else body.whole(),
            options={
                "headers": {"Content-Type": "application/json", **body.headers()},
            },
        )
        self._open.add(batch.id)
        return batch.id

    async def find_batch(
        self, *, count: int, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        since = created_after - _CLOCK_SLACK_S
        batches = self._once.messages.batches
        # Page by page rather than `async for` over the auto-paginator: leaving that loop
        # early leaves the SDK's paging generators to the garbage collector (trio warns).
        page = await batches.list(limit=_LIST_PAGE)
        while True:
            for batch in page.data:
                if batch.created_at.timestamp() < since:
                    # Listed newest first: nothing further down can match.
                    return None
                counts = batch.request_counts
                total = (
                    counts.processing
                    + counts.succeeded
                    + counts.errored
                    + counts.canceled
                    + counts.expired
                )
                if total == count and batch.id not in exclude:
                    return batch.id
            if not page.has_more or not page.last_id:
                return None
            page = await batches.list(limit=_LIST_PAGE, after_id=page.last_id)

    async def poll(self, batch_id: str) -> BatchStatus:
        return _status(await self._once.messages.batches.retrieve(batch_id))

    async def list_page(
        self, cursor: str | None
    ) -> tuple[list[tuple[str, BatchStatus]], str | None]:
        batches = self._once.messages.batches
        if cursor is None:
            page = await batches.list(limit=min(_STATUS_PAGE, 2 * len(self._open) + _STATUS_SLACK))
        else:
            page = await batches.list(limit=_STATUS_PAGE, after_id=cursor)
        rows = [(batch.id, _status(batch)) for batch in page.data]
        return rows, (page.last_id if page.has_more and page.last_id else None)

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, ItemResult]]:
        self._open.discard(batch_id)
        decoder = await self._once.messages.batches.results(batch_id)
        try:
            async for line in decoder:
                result = line.result
                if result.type == "succeeded":
                    yield line.custom_id, ItemResult("succeeded", result.message)
                elif result.type == "errored":
                    error = result.error.error
                    yield (
                        line.custom_id,
                        ItemResult("errored", error_type=error.type, message=error.message),
                    )
                else:
                    yield line.custom_id, ItemResult(result.type)
        finally:
            # A read or decode error leaves the response open (docs/design.md §A).
            await decoder.close()

    async def raw_results(self, batch_id: str) -> AsyncIterator[tuple[str, ItemResult]]:
        """:meth:`results` over the same SDK request, each line decoded as JSON only: a
        succeeded value is the ``message`` object as the API sent it (``as_json``)."""
        self._open.discard(batch_id)
        decoder = await self._once.messages.batches.results(batch_id)
        try:
            rest = b""
            async for chunk in decoder.http_response.aiter_bytes():
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.strip():
                        yield raw_result(line)
            if rest.strip():
                yield raw_result(rest)
        finally:
            await decoder.close()

    async def cancel(self, batch_id: str) -> None:
        self._open.discard(batch_id)
        await self._once.messages.batches.cancel(batch_id)

    def refused(self, exc: BaseException) -> tuple[int, str] | None:
        """The request a refused batch create names as its reason: its index in the create
        and the API's words (``params.max_tokens: Field required``), or ``None``.

        A 400 ``invalid_request_error`` on a create made no batch: the API checks the whole
        body first, and names the first bad request as ``requests.<i>.<where>: <why>``.
        """
        if not isinstance(exc, anthropic.BadRequestError) or not isinstance(exc.body, dict):
            return None
        error = exc.body.get("error")
        if not isinstance(error, dict) or error.get("type") != "invalid_request_error":
            return None
        found = _NAMED.match(str(error.get("message", "")))
        if found is None:
            return None
        where = found["where"]
        return int(found["index"]), (f"{where}: " if where else "") + found["why"]

    def classify(self, exc: BaseException) -> ErrorInfo | None:
        return classify_http(
            exc,
            connection=anthropic.APIConnectionError,
            status=anthropic.APIStatusError,
            base=anthropic.AnthropicError,
            status_of=_status_of,
        )


# How a create's 400 names the request it refuses: `requests.3.params.max_tokens: Field
# required` (the first problem the API found; docs/design.md §A).
_NAMED: Final = re.compile(r"requests\.(?P<index>\d+)(?:\.(?P<where>[^\s:]+))?: (?P<why>.+)")


def raw_result(line: bytes) -> tuple[str, ItemResult]:
    """One line of a batch's results file, as JSON: ``(custom_id, result)``.

    :raises ValueError: the line is not a result line (the stream is broken: the batch's
        callers get the error, as when the SDK's decoder fails).
    """
    try:
        data = json.loads(line)
        custom_id = data["custom_id"]
        result = data["result"]
        kind = result["type"]
        if kind == "succeeded":
            return custom_id, ItemResult("succeeded", value=result["message"], as_json=True)
        if kind == "errored":
            error = result["error"]["error"]
            return custom_id, ItemResult(
                "errored", error_type=error["type"], message=error["message"]
            )
    except (ValueError, LookupError, TypeError) as exc:
        raise ValueError(
            f"a line of the batch results is not a result ({type(exc).__name__}: {exc}; "
            f"starts {excerpt(line.decode(errors='replace'))})"
        ) from None
    if kind in ("expired", "canceled"):
        return custom_id, ItemResult(kind)
    raise ValueError(f"a batch result of unknown type {kind!r} for {custom_id}")


def _status(batch: MessageBatch) -> BatchStatus:
    ended = batch.processing_status == "ended"
    counts = batch.request_counts
    total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
    return BatchStatus(
        ended=ended,
        state=batch.processing_status,
        ended_at=batch.ended_at.timestamp() if ended and batch.ended_at else None,
        requests=total,
        requests_done=total - counts.processing,
    )


def _status_of(exc: BaseException) -> tuple[int, httpx2.Response]:
    assert isinstance(exc, anthropic.APIStatusError)
    return exc.status_code, exc.response


# A Messages API response, whichever route or vendor carried it (Anthropic's API, Bedrock's
# InvokeModel and batch output): its JSON form for the journal and the broker (its tokens:
# message_tokens, above AnthropicProvider).
def dump_message(value: Message) -> dict[str, Any]:
    """A ``Message`` as JSON."""
    data: dict[str, Any] = value.model_dump(mode="json")
    return data


def load_message(data: dict[str, Any]) -> Message:
    """A ``Message`` from :func:`dump_message`'s JSON, built as the SDK builds one."""
    return _Message.model_construct(**data)
