"""The one protocol every provider adapter implements (docs/design.md §7).

The dispatcher speaks only this protocol: it knows no vendor, and an adapter knows no queue.
"""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, final, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence


__all__ = [
    "BATCH_TAG",
    "BatchStatus",
    "ErrorInfo",
    "ErrorKind",
    "ItemResult",
    "Provider",
]


#: The tag of the batch being created, set by the fleet (in the task that sends the create)
#: when it keeps a journal: an adapter that can tag a batch (OpenAI ``metadata``) puts it on
#: the create, so that a later process finds that batch by it (``find_tagged``).
BATCH_TAG: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "llmfleet_batch_tag", default=None
)


class ErrorKind(enum.Enum):
    """What an exception from a provider call means for the dispatcher."""

    #: No answer: connection failed, dropped or timed out. The provider may have acted on it,
    #: unless :attr:`ErrorInfo.unreachable` says the connection was never made.
    CONNECTION = "connection"
    #: 429: the provider is rate-limiting us; ``retry_after`` may say for how long.
    RATE_LIMITED = "rate_limited"
    #: 5xx, 529, 408, 409: the provider failed this attempt; another may succeed.
    SERVER = "server"
    #: 404: unknown object (transient right after a create, final later).
    NOT_FOUND = "not_found"
    #: Any other refusal (400, 401, 403, 413, ...): trying again will not help.
    FATAL = "fatal"


@final
@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """How the dispatcher should treat a provider exception."""

    kind: ErrorKind
    #: Seconds the provider asked us to wait, if it said.
    retry_after: float | None = None
    #: The HTTP status, if there was one.
    status: int | None = None
    #: For :attr:`ErrorKind.CONNECTION`: the connection was never made (refused, name not
    #: resolved), so nothing was sent and nothing can have been acted on. A create that
    #: failed so is not ambiguous (docs/design.md §5): there is no batch to look for.
    unreachable: bool = False


@final
@dataclass(frozen=True, slots=True)
class BatchStatus:
    """What a poll learned of a batch."""

    ended: bool
    #: The provider's own word for the state (for logs).
    state: str = ""
    #: When the provider says the batch ended (Unix time), if it ended and says so.
    ended_at: float | None = None
    #: The provider's own count of the batch's requests, if its status carries one (for
    #: progress displays; ``None`` before the provider has counted them).
    requests: int | None = None
    #: How many of those the provider has finished (answered, errored, expired or
    #: canceled), if it says.
    requests_done: int | None = None


@final
@dataclass(slots=True)
class ItemResult:
    """One line of a batch's results, in vendor-neutral form (read-only by convention: one
    is built per result line, and a frozen dataclass costs three times as much to build).
    Adapters build a succeeded line positionally, ``ItemResult("succeeded", value)``: a
    keyword argument costs a third more again, on the path of every result."""

    kind: Literal["succeeded", "errored", "expired", "canceled"]
    #: The SDK's own response object, for ``succeeded``.
    value: Any = None
    #: The provider's error type and message, for ``errored``.
    error_type: str = ""
    message: str = ""
    #: For ``errored``: the provider ran nothing of this batch and billed nothing for this
    #: request, because of *other* requests it refused (an OpenAI batch that failed
    #: validation), so it is safe to send again: the fleet does, in a new batch
    #: (docs/design.md §5). Whatever does not send it again reports it as errored.
    unsent: bool = False
    #: For ``succeeded``: ``value`` is the response as the provider's JSON (the form
    #: ``dump_value`` makes and ``load_value`` reads), from ``raw_results``, not the SDK's
    #: object.
    as_json: bool = False


@runtime_checkable
class Provider(Protocol):
    """An adapter between the dispatcher and one vendor's SDK client."""

    #: Short vendor name, for logs and stats (``"anthropic"``).
    name: str
    #: Most requests one batch may hold.
    max_batch_requests: int
    #: Most bytes one batch body may hold.
    max_batch_bytes: int
    #: HTTP requests one :meth:`results` call makes (counted against the request budget).
    results_requests: int

    def check(self, params: Mapping[str, Any]) -> None:
        """Refuse, with :class:`~llmfleet.UnbatchableRequestError`, params no route can carry
        (the fleet returns whole responses, so ``stream=True`` is refused here)."""

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, Any]:
        """Make a request ready for the batch route, at submit.

        :return: the bytes it adds to a batch body (an upper bound is fine), and the prepared
            request :meth:`create_batch` takes: a snapshot (a deep copy, or its encoded JSON),
            so that what the caller changes later is not what gets sent. The fleet does not
            look inside it.
        :raises UnbatchableRequestError: the batch route cannot carry it.
        """

    # Optional: ``batch_key(params) -> Hashable``. Requests with different keys never share
    # a batch (the fleet keeps a queue per key); a provider without it has one queue.
    #
    # Optional, for the journal (llmfleet/journal): ``dump_value(value) -> JSON`` and
    # ``load_value(data) -> the SDK's own type`` (a response stored and read back), and
    # ``async find_tagged(tag, *, created_after, exclude) -> batch id | None`` for an adapter
    # that puts ``BATCH_TAG`` on its creates. Without them, values are stored as they are
    # and an interrupted create is found by count and time (``find_batch``).
    #
    # Optional: ``unsent_results: bool``, ``False`` for a provider whose results are never
    # ``unsent`` (it refuses a bad create whole): the fleet then lets go of each request
    # once its batch is created, rather than keep it to send again.
    #
    # Optional, for a consumer that only stores and writes responses (``llmfleet run``):
    # ``raw_results(batch_id)``, :meth:`results` with each succeeded value the response as
    # the provider sent it, a JSON dict (``ItemResult.as_json``), never built into the
    # SDK's object (which is most of the cost of reading a large batch's results), and
    # ``tokens_of`` reads that form too.
    #
    # Optional, for create errors (docs/design.md §5): ``refused(exc) -> (index, reason) |
    # None``: when the provider refused a whole create because of one of its requests and
    # says which (Anthropic's 400 naming ``requests.<i>``), that request's index in the
    # create's ``requests`` and the provider's reason; the fleet fails that caller alone and
    # sends the others again without it. ``base_url_hint: str``: what the client's base URL
    # should look like, told to the callers when the batch endpoint answers 404.
    #
    # Optional, for a flex tier (docs/design.md §2.3): ``supports_flex(params) -> bool``
    # (whether this request may go by the provider's flex tier: its model offers one and it
    # names no tier of its own), ``async call_flex(params, *, sdk_timeout) -> response`` (the
    # direct call on that tier, sent once, waiting up to ``sdk_timeout`` seconds) and
    # ``flex_unavailable(exc) -> bool`` (the flex tier refused for want of capacity, as
    # against a rate limit). A provider without them never routes there.

    def model_of(self, params: Mapping[str, Any]) -> str:
        """The model a request names (for prices and per-model stats)."""

    def tokens_of(self, value: Any) -> tuple[int, int, int, int] | None:
        """The tokens a response reports, if it reports them: ``(input, output, cache write,
        cache read)``, as in :class:`~llmfleet.pricing.TokenUsage` (input excludes cached
        tokens). A plain tuple: it is read once per call, on the hot path."""

    async def call(self, params: Mapping[str, Any]) -> Any:
        """The direct route: one create call, returning the SDK's own response."""

    async def create_batch(self, requests: Sequence[tuple[str, Any]]) -> str:
        """Send one batch create of ``(custom_id, prepared request)``, **once** (no SDK
        retry); return the batch id."""

    async def find_batch(
        self, *, count: int, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        """After an ambiguous create, the id of a batch of ``count`` requests created since
        ``created_after`` (Unix time) whose id is not in ``exclude``, or ``None``."""

    async def poll(self, batch_id: str) -> BatchStatus:
        """The batch's current state (one request)."""

    async def list_page(
        self, cursor: str | None
    ) -> tuple[list[tuple[str, BatchStatus]], str | None]:
        """One page of the provider's batch listing, newest first, as large as it allows
        (one request), and the cursor of the next page (``None`` after the last)."""

    def results(self, batch_id: str) -> AsyncIterator[tuple[str, ItemResult]]:
        """Stream an ended batch's results as ``(custom_id, result)``, in any order.

        Close the iterator (``aclosing``) when leaving it early.
        """

    async def cancel(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch (its unprocessed requests are not billed)."""

    def classify(self, exc: BaseException) -> ErrorInfo | None:
        """What a provider exception means, or ``None`` if it is not one (a bug: re-raise)."""
