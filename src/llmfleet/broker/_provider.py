"""The leader's provider: the real adapter, with every batch request fenced, budgeted
fleet-wide and recorded in Redis around the fleet's own batch lifecycle.

The leader runs an ordinary local fleet (the flusher, the batch tasks, the board: the same
machinery and G1–G7 rules as one process) over this wrapper, so the only new code on the batch
path is what makes it durable: a flush's record is written before its create is sent and gets
its batch id after (``_store.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from contextlib import aclosing
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast, final

import anyio

from ..providers import BATCH_TAG, ErrorInfo, ErrorKind
from ._store import LEADER_LOST, FlushRecord, NotLeadingError, StoredCall

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        AsyncIterator,
        Awaitable,
        Callable,
        Hashable,
        Mapping,
        Sequence,
    )

    from ..providers import BatchStatus, ItemResult, Provider
    from ._store import RedisBatchStore

__all__ = ["CURRENT", "LeaderProvider", "Served"]

logger = logging.getLogger("llmfleet.broker")


@final
class Served:
    """A call the leader serves for some process: where it came from and where it went."""

    __slots__ = ("call_id", "custom_id", "entry_id", "flush_id", "origin")

    def __init__(self, call_id: str, entry_id: str, origin: str) -> None:
        self.call_id = call_id
        self.entry_id = entry_id
        self.origin = origin
        self.custom_id: str | None = None
        self.flush_id: str | None = None


#: The call the current task submits into the leader's local fleet: ``prepare`` runs in the
#: submitting task, so it learns which custom_id the fleet gave which call.
CURRENT: ContextVar[Served | None] = ContextVar("llmfleet_broker_call", default=None)


@final
class LeaderProvider:
    """A :class:`~llmfleet.providers.Provider` that makes the leader's batches durable."""

    def __init__(self, inner: Provider, store: RedisBatchStore, per_minute: int | None) -> None:
        self.inner = inner
        self.store = store
        self._per_minute = per_minute
        self.name = inner.name
        self.max_batch_requests = inner.max_batch_requests
        self.max_batch_bytes = inner.max_batch_bytes
        self.results_requests = max(1, getattr(inner, "results_requests", 1))
        self.batch_key: Callable[[Mapping[str, Any]], Hashable] | None = getattr(
            inner, "batch_key", None
        )
        # The flex tier, passed through where the adapter has one (docs/design.md §2.3):
        # flex calls, like direct ones, are made by the process whose caller made them.
        self.supports_flex: Callable[[Mapping[str, Any]], bool] | None = getattr(
            inner, "supports_flex", None
        )
        self.call_flex: Callable[..., Awaitable[Any]] | None = getattr(inner, "call_flex", None)
        self.flex_unavailable: Callable[[BaseException], bool] | None = getattr(
            inner, "flex_unavailable", None
        )
        self._served: dict[str, Served] = {}
        # Flushes whose create got no answer, by their first custom_id: the fleet looks for
        # the batch (find_batch) and may send the create again (a new record).
        self._ambiguous: dict[str, FlushRecord] = {}
        # Calls of each flush this leader made whose outcome is not delivered yet.
        self._pending: dict[str, set[str]] = {}
        self.creating = 0
        self._creates_done: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<LeaderProvider {self.inner!r}>"

    # -- passed through ------------------------------------------------------------------

    def check(self, params: Mapping[str, Any]) -> None:
        self.inner.check(params)

    def model_of(self, params: Mapping[str, Any]) -> str:
        return self.inner.model_of(params)

    def tokens_of(self, value: Any) -> tuple[int, int, int, int] | None:
        return self.inner.tokens_of(value)

    async def call(self, params: Mapping[str, Any]) -> Any:
        return await self.inner.call(params)

    def classify(self, exc: BaseException) -> ErrorInfo | None:
        if isinstance(exc, LEADER_LOST):
            # Refused outright: no retry, and no create sent for a flush left unrecorded.
            return ErrorInfo(ErrorKind.FATAL)
        return self.inner.classify(exc)

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, Any]:
        prepared = self.inner.prepare(custom_id, params)
        served = CURRENT.get()
        if served is not None:
            served.custom_id = custom_id
            self._served[custom_id] = served
        return prepared

    # -- the bookkeeping of served calls -------------------------------------------------

    def new_term(self) -> None:
        """Forget a previous term's calls: their records are in Redis, for this term's
        takeover to pick up like any other leader's."""
        self._served.clear()
        self._ambiguous.clear()
        self._pending.clear()

    async def finished(self, served: Served) -> None:
        """The call's outcome was delivered (or dropped): its flush may be finished."""
        if served.custom_id is not None:
            self._served.pop(served.custom_id, None)
        flush_id = served.flush_id
        if flush_id is None:
            return
        pending = self._pending.get(flush_id)
        if pending is None:
            return
        pending.discard(served.call_id)
        if not pending:
            del self._pending[flush_id]
            await self.store.record_finished(flush_id)

    async def creates_done(self) -> None:
        """Wait until no create is in flight (so its batch id is recorded)."""
        while self.creating:
            self._creates_done = anyio.Event()
            await self._creates_done.wait()

    # -- the batch endpoints -------------------------------------------------------------

    async def create_batch(self, requests: Sequence[tuple[str, Any]]) -> str:
        store = self.store
        if not store.lease.active:
            # Stepping down: no new batch; the calls go back to the stream for the successor.
            raise NotLeadingError("this process no longer leads the fleet")
        first = requests[0][0]
        again = self._ambiguous.pop(first, None)
        if again is not None:
            # The fleet found no batch for the unanswered create and sends it again.
            self._pending.pop(again.flush_id, None)
            await store.record_void(again.flush_id)
        served = [s for custom_id, _ in requests if (s := self._served.get(custom_id))]
        flush = FlushRecord(
            flush_id=f"{time.time_ns():x}-{secrets.token_hex(4)}",
            created_after=time.time(),
            calls=[StoredCall(s.custom_id or "", s.call_id, s.entry_id, s.origin) for s in served],
            # Adapters that can tag a create (OpenAI metadata, Bedrock job names) carry it,
            # so a successor finds this flush's batch exactly (find_tagged), not by size.
            tag="lf_" + secrets.token_hex(16),
        )
        await store.take_slot(self._per_minute)
        # The record goes first: a successor that finds it without an id looks for the batch
        # (reconcile) before it sends anything, and never creates it a second time.
        await store.record_intent(flush)
        for s in served:
            s.flush_id = flush.flush_id
        self._pending[flush.flush_id] = {s.call_id for s in served}
        self.creating += 1
        tagged = BATCH_TAG.set(flush.tag)
        try:
            batch_id = await self.inner.create_batch(requests)
        except Exception as exc:
            info = self.inner.classify(exc)
            if info is not None and info.kind is ErrorKind.CONNECTION and not info.unreachable:
                self._ambiguous[first] = flush
            else:
                # Refused: nothing billed. The callers get BatchSubmitError, delivered by
                # the tasks serving them; the record goes.
                self._pending.pop(flush.flush_id, None)
                await self._quietly(store.record_void(flush.flush_id))
            raise
        finally:
            BATCH_TAG.reset(tagged)
            self.creating -= 1
            if not self.creating and self._creates_done is not None:
                self._creates_done.set()
        try:
            await store.record_created(flush, batch_id)
        except LEADER_LOST as exc:
            logger.warning(
                "batch %s created but not recorded (%s): a successor finds it by its size and time",
                batch_id,
                exc,
            )
        return batch_id

    async def find_batch(
        self, *, count: int, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        await self.store.take_slot(self._per_minute)
        found = await self.inner.find_batch(
            count=count, created_after=created_after, exclude=exclude
        )
        if found is not None:
            for first, flush in list(self._ambiguous.items()):
                if len(flush.calls) == count:
                    del self._ambiguous[first]
                    await self.store.record_created(flush, found)
                    break
        return found

    async def find_tagged(
        self, tag: str, *, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        """The batch whose create carried ``tag``, through the inner adapter (``None`` when
        it cannot tag its creates), in the fleet's budget."""
        find = getattr(self.inner, "find_tagged", None)
        if find is None:
            return None
        await self.store.take_slot(self._per_minute)
        found: str | None = await find(tag, created_after=created_after, exclude=exclude)
        return found

    async def poll(self, batch_id: str) -> BatchStatus:
        await self.store.take_slot(self._per_minute)
        return await self.inner.poll(batch_id)

    async def list_page(
        self, cursor: str | None
    ) -> tuple[list[tuple[str, BatchStatus]], str | None]:
        await self.store.take_slot(self._per_minute)
        return await self.inner.list_page(cursor)

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, ItemResult]]:
        for _ in range(self.results_requests):
            await self.store.take_slot(self._per_minute)
        lines = cast("AsyncGenerator[tuple[str, ItemResult]]", self.inner.results(batch_id))
        async with aclosing(lines):
            async for custom_id, result in lines:
                if result.unsent:
                    # The broker's records hold one batch per flush: a request the provider
                    # did not run (docs/design.md §5) is reported errored, with the provider's
                    # reason, rather than sent again in a batch no record knows of.
                    yield custom_id, dataclasses.replace(result, unsent=False)
                else:
                    yield custom_id, result

    async def cancel(self, batch_id: str) -> None:
        if not self.store.lease.active:
            # Stepping down: the batch is the successor's now, to re-attach, not to cancel.
            logger.debug("not cancelling batch %s: this process no longer leads", batch_id)
            return
        await self.store.check()
        await self.store.take_slot(self._per_minute)
        await self.inner.cancel(batch_id)

    @staticmethod
    async def _quietly(step: Any) -> None:
        try:
            await step
        except LEADER_LOST as exc:
            logger.warning("could not update the batch record: %s", exc)
