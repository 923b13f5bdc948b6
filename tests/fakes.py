"""A fake provider for unit tests of the dispatcher: a vendor-free stand-in whose batches live
in the test's virtual time, recording ``anyio.current_time()`` of every call it gets."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from llmfleet.errors import UnbatchableRequestError
from llmfleet.pricing import TokenUsage
from llmfleet.providers import BatchStatus, ErrorInfo, ErrorKind, ItemResult


class FakeError(Exception):
    """What the fake raises when told to fail; its kind says how the dispatcher sees it."""

    def __init__(self, kind: ErrorKind, message: str = "", retry_after: float | None = None):
        super().__init__(message or kind.value)
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True)
class FakeMessage:
    """Stands in for an SDK response: an echo of the request, with usage."""

    custom_id: str | None
    text: str
    route: Literal["direct", "batch", "flex"]
    usage: TokenUsage = field(default_factory=lambda: TokenUsage(10, 5))


@dataclass
class FakeBatch:
    id: str
    requests: list[tuple[str, dict[str, Any]]]
    created_at: float
    turnaround: float
    cancelled_at: float | None = None
    polls: int = 0

    def ended(self, now: float) -> bool:
        return self.cancelled_at is not None or now >= self.created_at + self.turnaround


def text_of(params: Mapping[str, Any]) -> str:
    messages = params.get("messages") or [{}]
    return str(messages[-1].get("content", ""))


Hook = Callable[..., Any]


@dataclass
class FakeProvider:
    """A :class:`llmfleet.providers.Provider` in memory.

    :param turnaround: virtual seconds from create to end, or a function of the batch.
    :param outcome: the result of each request (default: succeeded, echoing its text).
    :param on_create: called with the requests before a create; raise to make it fail.
    :param on_poll: called with the batch before a poll; raise to make it fail.
    :param on_results: called with the batch before results stream; raise to fail.
    :param on_call: called with the params of a direct call; may return a value or raise.
    """

    turnaround: float | Callable[[FakeBatch], float] = 1.0
    outcome: Callable[[str, dict[str, Any]], ItemResult] | None = None
    on_create: Hook | None = None
    on_poll: Hook | None = None
    on_results: Hook | None = None
    on_call: Hook | None = None
    direct_latency: float = 0.0
    name: str = "fake"
    results_requests: int = 1
    list_page_size: int = 1000
    max_batch_requests: int = 100_000
    max_batch_bytes: int = 10**9
    #: The fewest requests a batch may hold (Bedrock's min_batch_requests); 1: no minimum.
    min_batch_requests: int = 1
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    creates: list[tuple[float, str, list[str]]] = field(default_factory=list)
    direct_calls: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    cancels: list[tuple[float, str]] = field(default_factory=list)
    polls: list[tuple[float, str]] = field(default_factory=list)
    result_fetches: list[tuple[float, str]] = field(default_factory=list)
    list_pages: list[tuple[float, str | None]] = field(default_factory=list)

    # -- the protocol ---------------------------------------------------------------------

    def check(self, params: Mapping[str, Any]) -> None:
        if params.get("stream"):
            raise UnbatchableRequestError("stream=True is not supported")

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(params)
        size = len(body) + len(custom_id) + 30
        if size + 16 > self.max_batch_bytes:
            raise UnbatchableRequestError(f"request of {size} bytes is over the batch limit")
        copy: dict[str, Any] = json.loads(body)
        return size, copy

    def model_of(self, params: Mapping[str, Any]) -> str:
        return str(params.get("model", ""))

    def tokens_of(self, value: Any) -> tuple[int, int, int, int] | None:
        if not isinstance(value, FakeMessage):
            return None
        u = value.usage
        return (u.input_tokens, u.output_tokens, u.cache_write_tokens, u.cache_read_tokens)

    async def call(self, params: Mapping[str, Any]) -> Any:
        self.direct_calls.append((anyio.current_time(), dict(params)))
        if self.direct_latency:
            await anyio.sleep(self.direct_latency)
        if self.on_call is not None:
            value = self.on_call(params)
            if value is not None:
                return value
        return FakeMessage(None, text_of(params), "direct")

    async def create_batch(self, requests: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
        await anyio.lowlevel.checkpoint()
        reqs = [(cid, dict(p)) for cid, p in requests]
        if self.on_create is not None:
            await _maybe_await(self.on_create(reqs))
        batch_id = f"fakebatch_{len(self.batches) + 1}"
        now = anyio.current_time()
        batch = FakeBatch(batch_id, reqs, now, 0.0)
        batch.turnaround = (
            self.turnaround(batch) if callable(self.turnaround) else float(self.turnaround)
        )
        self.batches[batch_id] = batch
        self.creates.append((now, batch_id, [cid for cid, _ in reqs]))
        return batch_id

    async def find_batch(
        self, *, count: int, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        for batch in reversed(list(self.batches.values())):
            if len(batch.requests) == count and batch.id not in exclude:
                return batch.id
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        await anyio.lowlevel.checkpoint()
        batch = self.batches[batch_id]
        self.polls.append((anyio.current_time(), batch_id))
        batch.polls += 1
        if self.on_poll is not None:
            await _maybe_await(self.on_poll(batch))
        return self._status(batch)

    def _status(self, batch: FakeBatch) -> BatchStatus:
        now = anyio.current_time()
        ended = batch.ended(now)
        end = (
            batch.cancelled_at
            if batch.cancelled_at is not None
            else (batch.created_at + batch.turnaround)
        )
        return BatchStatus(
            ended=ended, state="ended" if ended else "in_progress", ended_at=end if ended else None
        )

    async def list_page(
        self, cursor: str | None
    ) -> tuple[list[tuple[str, BatchStatus]], str | None]:
        await anyio.lowlevel.checkpoint()
        self.list_pages.append((anyio.current_time(), cursor))
        newest_first = list(reversed(self.batches.values()))
        start = 0
        if cursor is not None:
            start = next(i for i, b in enumerate(newest_first) if b.id == cursor) + 1
        page = newest_first[start : start + self.list_page_size]
        more = start + self.list_page_size < len(newest_first)
        return [(b.id, self._status(b)) for b in page], (page[-1].id if more else None)

    async def results(self, batch_id: str) -> AsyncGenerator[tuple[str, ItemResult]]:
        batch = self.batches[batch_id]
        self.result_fetches.append((anyio.current_time(), batch_id))
        if self.on_results is not None:
            await _maybe_await(self.on_results(batch))
        for custom_id, params in batch.requests:
            await anyio.lowlevel.checkpoint()
            if batch.cancelled_at is not None:
                yield custom_id, ItemResult("canceled")
            elif self.outcome is not None:
                yield custom_id, self.outcome(custom_id, params)
            else:
                yield (
                    custom_id,
                    ItemResult("succeeded", value=FakeMessage(custom_id, text_of(params), "batch")),
                )

    async def cancel(self, batch_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        now = anyio.current_time()
        self.cancels.append((now, batch_id))
        batch = self.batches[batch_id]
        if batch.cancelled_at is None and not batch.ended(now):
            batch.cancelled_at = now

    def classify(self, exc: BaseException) -> ErrorInfo | None:
        if isinstance(exc, FakeError):
            return ErrorInfo(exc.kind, exc.retry_after)
        return None

    # -- for tests ------------------------------------------------------------------------

    @property
    def sent_ids(self) -> list[str]:
        """Every custom_id sent in a batch, in order."""
        return [cid for _, _, ids in self.creates for cid in ids]


async def _maybe_await(value: Any) -> None:
    if hasattr(value, "__await__"):
        await value


def request(text: str = "hi", **extra: Any) -> dict[str, Any]:
    """A minimal request in the SDK's shape."""
    return {
        "model": "claude-haiku-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


@dataclass
class FlexFakeProvider(FakeProvider):
    """A :class:`FakeProvider` with a flex tier (docs/design.md §2.3), for the models in
    ``flex_models``: a flex call waits ``flex_latency`` virtual seconds, then asks ``on_flex``
    (which may return a value or raise), and answers with route ``"flex"``."""

    flex_models: frozenset[str] = frozenset({"claude-haiku-4-5"})
    flex_latency: float = 0.0
    on_flex: Hook | None = None
    flex_calls: list[tuple[float, dict[str, Any], float]] = field(default_factory=list)

    def supports_flex(self, params: Mapping[str, Any]) -> bool:
        return "service_tier" not in params and self.model_of(params) in self.flex_models

    async def call_flex(self, params: Mapping[str, Any], *, sdk_timeout: float) -> Any:
        assert self.model_of(params) in self.flex_models, "flex used for a model without it"
        self.flex_calls.append((anyio.current_time(), dict(params), sdk_timeout))
        if self.flex_latency:
            await anyio.sleep(self.flex_latency)
        if self.on_flex is not None:
            value = self.on_flex(params)
            if value is not None:
                return value
        return FakeMessage(None, text_of(params), "flex")

    def flex_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, FakeError) and "resource unavailable" in str(exc)


class BreakingProvider(FakeProvider):
    """A fake whose first results stream breaks off (connection lost) after two lines (a
    base to put before another fake's, for that fake's stream to break so)."""

    broke = False

    async def results(self, batch_id: str) -> AsyncGenerator[tuple[str, ItemResult]]:
        sent = 0
        async with aclosing(super().results(batch_id)) as lines:
            async for line in lines:
                if not self.broke and sent == 2:
                    self.broke = True
                    raise FakeError(ErrorKind.CONNECTION, "connection reset")
                sent += 1
                yield line
