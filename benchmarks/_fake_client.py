"""An in-process stand-in for ``anthropic.AsyncAnthropic``, shared by llmfleet and llmfleet 0.1.0.

Standard library only: ``legacy_runner.py`` imports it from the legacy venv, where the current
llmfleet (and anyio) are not installed. It implements just the surface both libraries touch:
``messages.create`` and ``messages.batches.create/retrieve/results/cancel/list``, plus
``with_options`` (the current adapter turns SDK retries off with it).

- Every create returns the same prebuilt message, so what is timed is the library, not the fake.
- ``results(id)`` returns an object that is both awaitable (the real SDK's shape: it returns a
  coroutine resolving to a decoder) and async-iterable (what llmfleet 0.1.0 iterates directly).
  Lines are made lazily, one per request, like a decoder reading a stream.
- A real results stream gives the event loop a turn each time it reads a chunk from the socket
  (anyio's ``receive`` checkpoints); the fake does the same every ``checkpoint_every`` lines
  (default 100: about one 64 KB chunk of result lines) with the ``checkpoint`` it is given.
- Batches end ``turnaround_s`` after their create on ``clock`` (0: at once). Pass a virtual
  clock (``anyio.current_time`` under trio's ``MockClock``) to run turnarounds in virtual time.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator

__all__ = ["MESSAGE", "REQUEST", "FakeClient"]

#: A minimal request in the SDK's shape (what every benchmark caller sends).
REQUEST: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


class _Usage:
    __slots__ = (
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "input_tokens",
        "output_tokens",
    )

    def __init__(self) -> None:
        self.input_tokens = 10
        self.output_tokens = 5
        self.cache_creation_input_tokens = 0
        self.cache_read_input_tokens = 0


class _Message:
    __slots__ = ("content", "id", "model", "role", "stop_reason", "type", "usage")

    def __init__(self) -> None:
        self.id = "msg_fake"
        self.type = "message"
        self.role = "assistant"
        self.model = "claude-haiku-4-5"
        self.content = [{"type": "text", "text": "hi"}]
        self.stop_reason = "end_turn"
        self.usage = _Usage()


#: The one response every create (direct or in a batch) returns.
MESSAGE = _Message()


class _Succeeded:
    __slots__ = ("message",)
    type = "succeeded"

    def __init__(self, message: _Message) -> None:
        self.message = message


_SUCCEEDED = _Succeeded(MESSAGE)


class _Line:
    """One results line: ``custom_id`` and ``result`` (no ``error`` attribute, as 0.1.0 checks)."""

    __slots__ = ("custom_id", "result")

    def __init__(self, custom_id: str, result: _Succeeded) -> None:
        self.custom_id = custom_id
        self.result = result


class _Counts:
    __slots__ = ("canceled", "errored", "expired", "processing", "succeeded")

    def __init__(self, processing: int, succeeded: int) -> None:
        self.processing = processing
        self.succeeded = succeeded
        self.errored = self.canceled = self.expired = 0


class _Time:
    """A timestamp with the one method the adapter calls on the SDK's datetimes."""

    __slots__ = ("t",)

    def __init__(self, t: float) -> None:
        self.t = t

    def timestamp(self) -> float:
        return self.t


class _Batch:
    """A batch as ``retrieve``/``list`` return it (the fields the adapters read)."""

    __slots__ = ("_client", "custom_ids", "end", "id", "start")

    type = "message_batch"

    def __init__(self, client: FakeClient, batch_id: str, custom_ids: list[str]) -> None:
        self._client = client
        self.id = batch_id
        self.custom_ids = custom_ids
        self.start = client.clock()
        self.end = self.start + client.turnaround_s

    @property
    def processing_status(self) -> str:
        return "ended" if self._client.clock() >= self.end else "in_progress"

    @property
    def created_at(self) -> _Time:
        return _Time(self._client.epoch + self.start)

    @property
    def ended_at(self) -> _Time | None:
        if self.processing_status != "ended":
            return None
        return _Time(self._client.epoch + self.end)

    @property
    def request_counts(self) -> _Counts:
        n = len(self.custom_ids)
        ended = self.processing_status == "ended"
        return _Counts(0 if ended else n, n if ended else 0)


class _Results:
    """Awaitable (resolves to itself, like the SDK's decoder) and async-iterable."""

    __slots__ = ("_batch", "_client")

    def __init__(self, client: FakeClient, batch: _Batch) -> None:
        self._client = client
        self._batch = batch

    def __await__(self) -> Generator[Any, None, _Results]:
        return self._ready().__await__()

    async def _ready(self) -> _Results:
        return self

    def __aiter__(self) -> AsyncIterator[_Line]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[_Line]:
        every = self._client.checkpoint_every
        checkpoint = self._client.checkpoint
        n = 0
        for custom_id in self._batch.custom_ids:
            yield _Line(custom_id, _SUCCEEDED)
            n += 1
            if checkpoint is not None and n == every:
                n = 0
                await checkpoint()

    async def close(self) -> None:
        pass


class _Page:
    """What ``batches.list`` returns: awaitable (one page: ``data``, ``has_more``,
    ``last_id``) and async-iterable (every batch), newest first, like the SDK's paginator."""

    def __init__(self, batches: list[_Batch], limit: int, after_id: str | None) -> None:
        start = 0
        if after_id is not None:
            ids = [b.id for b in batches]
            start = ids.index(after_id) + 1 if after_id in ids else len(ids)
        self._all = batches[start:]
        self.data = self._all[:limit]
        self.has_more = len(self._all) > limit
        self.last_id = self.data[-1].id if self.data else None

    def __await__(self) -> Generator[Any, None, _Page]:
        return self._ready().__await__()

    async def _ready(self) -> _Page:
        return self

    def __aiter__(self) -> AsyncIterator[_Batch]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[_Batch]:
        for batch in self._all:
            yield batch


class _Batches:
    def __init__(self, client: FakeClient) -> None:
        self._c = client

    async def create(self, *, requests: list[dict[str, Any]], **_: Any) -> _Batch:
        c = self._c
        c.hit("create")
        batch = _Batch(c, f"msgbatch_{len(c.batches) + 1:08d}", [r["custom_id"] for r in requests])
        c.batches[batch.id] = batch
        if c.on_create is not None:
            c.on_create(batch)
        return batch

    async def retrieve(self, batch_id: str, **_: Any) -> _Batch:
        self._c.hit("retrieve")
        return self._c.batches[batch_id]

    def results(self, batch_id: str, **_: Any) -> _Results:
        c = self._c
        c.hit("results")
        if c.on_results is not None:
            c.on_results(c.batches[batch_id])
        return _Results(c, c.batches[batch_id])

    async def cancel(self, batch_id: str, **_: Any) -> _Batch:
        self._c.hit("cancel")
        batch = self._c.batches[batch_id]
        batch.end = min(batch.end, self._c.clock())
        return batch

    def list(self, *, limit: int = 20, after_id: str | None = None, **_: Any) -> _Page:
        self._c.hit("list")
        return _Page(list(reversed(self._c.batches.values())), limit, after_id)


class _Messages:
    def __init__(self, client: FakeClient) -> None:
        self._c = client
        self.batches = _Batches(client)

    async def create(self, **params: Any) -> _Message:
        return MESSAGE


class FakeClient:
    """The fake ``AsyncAnthropic``.

    :param turnaround_s: seconds on ``clock`` from a batch's create to its end (0: at once).
    :param clock: the clock turnarounds are measured on (default ``time.monotonic``).
    :param checkpoint: an async callable that yields to the event loop, awaited every
        ``checkpoint_every`` result lines (``None``: never yield).
    :param on_create: called with each batch as it is created (for timestamps).
    :param on_results: called with the batch when its results are requested.
    :param log_requests: keep ``(clock(), endpoint)`` for every batch-endpoint request in
        ``requests`` (for per-minute rates).
    """

    def __init__(
        self,
        *,
        turnaround_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        checkpoint: Callable[[], Awaitable[Any]] | None = None,
        checkpoint_every: int = 100,
        on_create: Callable[[_Batch], Any] | None = None,
        on_results: Callable[[_Batch], Any] | None = None,
        log_requests: bool = False,
    ) -> None:
        self.turnaround_s = turnaround_s
        self.clock = clock
        # Unix time of clock() == 0, so created_at/ended_at agree with the clock.
        self.epoch = time.time() - clock()
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.on_create = on_create
        self.on_results = on_results
        self.batches: dict[str, _Batch] = {}
        self.counts = dict.fromkeys(("create", "retrieve", "results", "cancel", "list"), 0)
        self.requests: list[tuple[float, str]] | None = [] if log_requests else None
        self.messages = _Messages(self)
        self.base_url = "fake://in-process"

    def with_options(self, **_: Any) -> FakeClient:
        return self

    async def post(self, path: str, *, content: Any, **_: Any) -> _Batch:
        """A raw-body batch create (what llmfleet's adapter sends: bytes, or an async
        iterable of byte chunks as an HTTP client reads it), decoded like a server."""
        assert path == "/v1/messages/batches", path
        if not isinstance(content, (bytes, bytearray)):
            content = b"".join([chunk async for chunk in content])
        return await self.messages.batches.create(requests=json.loads(content)["requests"])

    def hit(self, endpoint: str) -> None:
        """Count one batch-endpoint request (and log it, with ``log_requests``)."""
        self.counts[endpoint] += 1
        if self.requests is not None:
            self.requests.append((self.clock(), endpoint))
