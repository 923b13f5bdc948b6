"""One batch's life, from its create to its last result (docs/design.md §5).

A :class:`Batch` is owned by one task of the fleet's task group, which runs :meth:`Batch.run`:
create (through the :class:`~llmfleet._create_gate.CreateGate`), wait on the status board
until it ends or every caller has left, fetch and deliver its results, and cancel it at the
provider when nobody waits for it any more. Every caller of the batch has an outcome when
:meth:`Batch.run` returns, whatever happened.

A batch can also start from a batch id the provider already has (``batch_id=``): it then
skips the create and picks its life up at the wait.

With a journal (llmfleet/journal, docs/journal.md), a batch is recorded before its create is
sent (its ``flush``), its id after, and each page of its results before their callers wake;
a journaled batch is never cancelled at the provider (its results are paid for and kept).
"""

from __future__ import annotations

import logging
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, Final, Literal, cast, final

import anyio

from ._board import _BACKOFF, NOT_FOUND_GRACE_S
from ._budget import Priority
from ._call import GONE, SENT
from .errors import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultError,
    BatchResultMissingError,
    BatchSubmitError,
    FleetClosedError,
    excerpt,
)
from .journal import FlushEntry
from .providers import BATCH_TAG, ErrorKind

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Sequence

    from ._board import StatusBoard, Watch
    from ._budget import RequestBudget
    from ._call import Call, Outcomes
    from ._create_gate import CreateGate
    from ._estimate import Estimator
    from ._flush import FlushReason
    from ._policy import RoutingPolicy
    from ._stats import FleetStats
    from .journal import FlushRecord
    from .journal._fleet import FleetJournal
    from .providers import ErrorInfo, ItemResult, Provider

__all__ = [
    "ABORT_GRACE_S",
    "CANCEL_ATTEMPTS",
    "CREATE_ATTEMPTS",
    "RESULT_ATTEMPTS",
    "Batch",
    "BatchContext",
    "back_off",
    "closed_error",
]

logger = logging.getLogger("llmfleet")

#: Seconds that awaited cleanup (a create in flight, cancels) may take once the fleet aborts.
ABORT_GRACE_S: Final = 5.0
#: Attempts at an ambiguous create (connection lost, no batch found) before giving up.
CREATE_ATTEMPTS: Final = 3
#: Attempts at a cancel that failed for a passing reason (5xx, 429, connection).
CANCEL_ATTEMPTS: Final = 5
#: Attempts at fetching one batch's results before its unresolved callers get an error.
RESULT_ATTEMPTS: Final = 8


@final
class BatchContext:
    """What every batch of one fleet shares: the provider and the fleet's services.

    ``aborting`` is set by the fleet when it aborts: cleanup is then shielded and bounded.
    ``on_end`` is called with each batch once its last caller has an outcome. ``journal``:
    the fleet's durable record, if it keeps one.
    """

    __slots__ = (
        "aborting",
        "board",
        "budget",
        "clock",
        "gate",
        "journal",
        "on_end",
        "outcomes",
        "policy",
        "provider",
        "results_requests",
        "stats",
        "turnaround",
    )

    def __init__(
        self,
        *,
        provider: Provider,
        policy: RoutingPolicy,
        budget: RequestBudget,
        stats: FleetStats,
        outcomes: Outcomes,
        gate: CreateGate,
        board: StatusBoard,
        clock: Callable[[], float],
        turnaround: Estimator,
        on_end: Callable[[Batch], None],
        journal: FleetJournal | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.budget = budget
        self.stats = stats
        self.outcomes = outcomes
        self.gate = gate
        self.board = board
        self.clock = clock
        self.turnaround = turnaround
        self.on_end = on_end
        self.journal = journal
        self.results_requests = max(1, getattr(provider, "results_requests", 1))
        self.aborting = False

    def provider_error(self, info: ErrorInfo) -> None:
        back_off(self.stats, self.budget, info)


def back_off(stats: FleetStats, budget: RequestBudget, info: ErrorInfo) -> None:
    """Every requester backs off when the provider says it is rate-limiting us."""
    if info.kind is ErrorKind.RATE_LIMITED:
        stats._rate_limited()
        budget.pause(info.retry_after if info.retry_after is not None else 1.0)


def closed_error(why: str) -> FleetClosedError:
    """The error of a caller the fleet closed on."""
    return FleetClosedError(f"the fleet closed {why}; this call was not answered. Submit it again")


@final
class Batch:
    """A flushed batch, owned by one task from create to its last result."""

    __slots__ = (
        "_ctx",
        "calls",
        "cancel_sent",
        "create_scope",
        "created_at",
        "ended",
        "ended_at",
        "flush",
        "id",
        "live",
        "reason",
        "requests",
        "watch",
    )

    def __init__(
        self,
        ctx: BatchContext,
        calls: Sequence[Call],
        reason: FlushReason | Literal["reattach"],
        *,
        batch_id: str | None = None,
        flush: FlushRecord | None = None,
    ) -> None:
        self._ctx = ctx
        self.calls = {call.custom_id: call for call in calls}
        # Taken at the flush: what is sent cannot change after it, even if a caller leaves
        # (and its call lets go of its params) before the create goes out.
        self.requests = [(call.custom_id, call.request) for call in calls]
        self.reason = reason
        #: The provider's id, once created (or given: the create is then skipped).
        self.id = batch_id
        # Callers still waiting; when it drops to 0 the batch is cancelled at the provider.
        self.live = len(calls)
        self.create_scope: anyio.CancelScope | None = None
        self.created_at = 0.0
        self.cancel_sent = False
        self.ended = False
        self.ended_at: float | None = None
        self.watch: Watch | None = None
        #: Its record in the fleet's journal (given with a re-attached batch, else made
        #: right before the create).
        self.flush = flush
        if flush is not None:
            # The journal holds it: never cancelled for want of callers.
            self.live += 1
        if batch_id is not None:
            self.requests = []
            self.created_at = ctx.clock()
            ctx.gate.adopt(batch_id)

    def __repr__(self) -> str:
        return (
            f"<Batch {self.id or '(not created)'} reason={self.reason} calls={len(self.calls)}"
            f" live={self.live}>"
        )

    # -- the task -------------------------------------------------------------------------

    async def run(self) -> None:
        """The batch's task: create, wait, deliver, and always leave every caller an outcome."""
        ctx = self._ctx
        lag = None
        # A batch given its id was created before this fleet saw it: its turnaround is
        # unknown here.
        created_here = self.id is None
        try:
            if self.id is None:
                await self.create()
            if self.id is not None:
                models = {call.model for call in self.calls.values()} if created_here else ()
                if self.live and await self.wait_until_ended():
                    self.ended = True
                    took = ctx.clock() - self.created_at
                    for model in models:
                        ctx.turnaround.observe(model, took)
                    await self.fetch_results()
                    if self.ended_at is not None:
                        # Wall time: the provider's end stamp is wall time too.
                        lag = max(0.0, time.time() - self.ended_at)
                else:
                    # Every caller left before the batch ended: nobody pays for unwanted work.
                    await self.cancel_remote()
        except anyio.get_cancelled_exc_class():
            # The fleet is aborting (exception in the body, outer cancellation, drain
            # timeout): this batch may be cancelled before the fleet's abort runs, so cancel
            # it with the provider here too (shielded, bounded), and tell its callers why.
            if not self.ended:
                await self.cancel_remote(aborting=True)
            self.fail_all(lambda call: closed_error("before this call's batch ended"))
            raise
        except Exception as exc:
            # A bug or an error no rule above covers: the callers must still hear of it.
            logger.exception("batch %s failed", self.id)
            cause = exc
            self.fail_all(lambda call: self._result_error(call, cause))
        finally:
            self.fail_all(
                lambda call: BatchResultMissingError(
                    "the batch ended with no result for this call",
                    batch_id=self.id or "?",
                    custom_id=call.custom_id,
                )
            )
            if self.flush is not None and ctx.journal is not None:
                ctx.journal.settled(self.flush)  # its waiting keys go on
            ctx.stats._batch_done(lag)
            ctx.on_end(self)

    # -- create ---------------------------------------------------------------------------

    async def create(self) -> None:
        """Create the batch at the provider: afterwards either ``id`` is set, or every caller
        has its error (refused, or never answered)."""
        ctx = self._ctx
        provider = ctx.provider
        journal = ctx.journal
        requests, self.requests = self.requests, []
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            # While an ambiguous create is being reconciled, no other create may start: its
            # batch could be mistaken for the one being looked for.
            await ctx.gate.wait_open()
            await ctx.budget.acquire(Priority.CREATE)
            # Wall time, not the fleet's clock: it is compared with the provider's timestamps.
            since = time.time()
            if journal is not None and self.flush is None:
                await self._record_intent(journal, requests)
            # Shielded: once sent, a create is awaited even if the fleet aborts, so the batch
            # it makes can be cancelled instead of running on, billed (docs/design.md §5).
            # The fleet's abort bounds it by moving this scope's deadline.
            with anyio.CancelScope(shield=True) as scope:
                self.create_scope = scope
                try:
                    with ctx.gate.creating():
                        ctx.stats._api_request("create")
                        batch_id: str | None = await provider.create_batch(requests)
                except Exception as exc:
                    info = provider.classify(exc)
                    if info is None:
                        raise
                    ctx.provider_error(info)
                    if info.kind is not ErrorKind.CONNECTION:
                        await self._void()
                        self._refuse(exc, info)
                        return
                    logger.warning("batch create: no answer (%s); looking for the batch", exc)
                    batch_id = await ctx.gate.reconcile(len(requests), since)
                    if batch_id is None:
                        if attempt < CREATE_ATTEMPTS and not ctx.aborting:
                            continue
                        await self._void()
                        self._refuse(exc, info)
                        return
                    logger.info("adopted batch %s after an ambiguous create", batch_id)
                finally:
                    self.create_scope = None
            if scope.cancelled_caught:
                # The abort grace ran out mid-create: nobody can tell if the batch exists.
                self.fail_all(lambda call: closed_error("while its batch was being created"))
                return
            assert batch_id is not None
            if journal is not None and self.flush is not None:
                await journal.created(self.flush.flush_id, batch_id)
            self.created(batch_id)
            logger.debug("batch %s created with %d calls", batch_id, len(requests))
            return

    async def _record_intent(
        self, journal: FleetJournal, requests: list[tuple[str, object]]
    ) -> None:
        """Make the batch durable before its create is sent (after the budget's wait, so the
        intent's time is the create's); an adapter that can tag a batch puts the flush's
        tag on the create, so a later process finds the batch by it."""
        calls = self.calls
        self.flush = await journal.intent(
            [FlushEntry(cid, calls[cid].jkey or "", calls[cid].model) for cid, _ in requests]
        )
        BATCH_TAG.set(self.flush.tag)
        # The journal holds the batch: its results are kept (they are paid for), so it is
        # never cancelled for want of callers, and an aborting fleet leaves it running.
        self.live += 1

    async def _void(self) -> None:
        """The create made no batch: so the journal records, if the batch is in one."""
        journal = self._ctx.journal
        if journal is not None and self.flush is not None:
            await journal.void(self.flush.flush_id)

    def created(self, batch_id: str) -> None:
        """The provider made this batch as ``batch_id``."""
        ctx = self._ctx
        self.id = batch_id
        self.created_at = ctx.clock()
        ctx.gate.adopt(batch_id)
        ctx.stats._batch_submitted()

    def _refuse(self, exc: Exception, info: ErrorInfo) -> None:
        status = f"status {info.status}" if info.status else info.kind.value
        size = len(self.calls)
        # An excerpt: a provider's message may quote the request (docs/design.md §5); the
        # whole error stays available as __cause__.
        said = getattr(exc, "api_message", None) or getattr(exc, "message", None) or str(exc)
        message = (
            f"the provider refused the batch of {size} calls ({status}: "
            f"{excerpt(str(said), 60)}); nothing was billed for it. Submit again, or use "
            "submit_sync()"
        )

        def error(call: Call) -> BaseException:
            err = BatchSubmitError(message, batch_size=size)
            err.__cause__ = exc
            return err

        self.fail_all(error)

    # -- wait -----------------------------------------------------------------------------

    async def wait_until_ended(self) -> bool:
        """Wait, on the fleet's status board, until the batch ends (True) or every caller
        has left (False)."""
        assert self.id is not None
        board = self._ctx.board
        watch = self.watch = board.watch(self.id)
        try:
            await watch.event.wait()
        finally:
            board.unwatch(watch)
            self.watch = None
        if watch.error is not None:
            raise watch.error
        if watch.status is None or not watch.status.ended:
            return False  # every caller left first
        # Ended, even if its last caller just left: its results are billed, so they are
        # fetched (and dropped, and counted) rather than ignored.
        self.ended_at = watch.status.ended_at
        return True

    def caller_left(self) -> None:
        """One of its callers left (withdrawn or escalated); the last one stops the wait."""
        self.live -= 1
        if self.live == 0 and self.watch is not None:
            self.watch.event.set()

    # -- results --------------------------------------------------------------------------

    def _transient(self, info: ErrorInfo) -> bool:
        if info.kind is ErrorKind.NOT_FOUND:
            return self._ctx.clock() - self.created_at < NOT_FOUND_GRACE_S
        return info.kind is not ErrorKind.FATAL

    async def fetch_results(self) -> None:
        """Fetch the results and deliver each one; fetched again (for the calls still
        unresolved) when the stream breaks off for a passing reason."""
        assert self.id is not None
        ctx = self._ctx
        provider = ctx.provider
        policy = ctx.policy
        delay = policy.poll_interval_ms / 1000
        for attempt in range(1, RESULT_ATTEMPTS + 1):
            for _ in range(ctx.results_requests):
                await ctx.budget.acquire(Priority.RESULTS)
            ctx.stats._api_request("results")
            try:
                async with aclosing(
                    cast("AsyncGenerator[tuple[str, ItemResult]]", provider.results(self.id))
                ) as lines:
                    if self.flush is not None and ctx.journal is not None:
                        # Each page is stored before its callers wake.
                        await ctx.journal.stream(self.flush, self.id, lines, self.deliver)
                        await ctx.journal.finished(self.flush.flush_id)
                        return
                    # Read to the end even once every call is resolved: a stream left half-read
                    # leaves the SDK's decoder generators for the garbage collector, which
                    # trio reports (and it would be one more unexplained open response).
                    async for custom_id, result in lines:
                        self.deliver(custom_id, result)
                return
            except Exception as exc:
                info = provider.classify(exc)
                if info is None or attempt == RESULT_ATTEMPTS or not self._transient(info):
                    raise
                ctx.provider_error(info)
                logger.warning(
                    "results of %s broke off (%s); %d calls unresolved, fetching again",
                    self.id,
                    info.kind.value,
                    len(self.calls),
                )
                await anyio.sleep(max(delay, info.retry_after or 0))
                delay = min(delay * _BACKOFF, policy.poll_max_interval_ms / 1000)

    def deliver(self, custom_id: str, result: ItemResult) -> None:
        """Hand one result to its caller (O(1); the call leaves the batch, so a re-fetch
        skips it)."""
        call = self.calls.pop(custom_id, None)
        if call is None:
            logger.debug("ignoring a result for unknown or resolved custom_id %s", custom_id)
            return
        assert self.id is not None
        ctx = self._ctx
        if call.state != SENT:
            # Its caller left, or it was escalated and answered by the direct route; in that
            # case, if the batch had processed it, it is paid at batch price too.
            cost = None
            if call.state != GONE and result.kind == "succeeded":
                cost = ctx.outcomes.cost_of(call.model, result.value, batch=True)
            ctx.stats._result_dropped(cost)
            return
        if result.kind == "succeeded":
            ctx.outcomes.resolve(call, "succeeded", value=result.value)
            return
        error: BatchResultError
        if result.kind == "errored":
            error = BatchRequestError(
                result.error_type, result.message, batch_id=self.id, custom_id=custom_id
            )
        elif result.kind == "expired":
            error = BatchRequestExpiredError(
                "the batch expired before this call was processed; submit it again",
                batch_id=self.id,
                custom_id=custom_id,
            )
        else:
            error = BatchRequestCanceledError(
                "the batch was canceled before this call was processed",
                batch_id=self.id,
                custom_id=custom_id,
            )
        ctx.outcomes.resolve(call, result.kind, error=error)

    def fail_all(self, make_error: Callable[[Call], BaseException]) -> None:
        """Give every unresolved caller its own error (one object each)."""
        calls, self.calls = self.calls, {}
        resolve = self._ctx.outcomes.resolve
        for call in calls.values():
            if call.state == SENT:
                resolve(call, "failed", error=make_error(call))

    def _result_error(self, call: Call, exc: Exception) -> BaseException:
        err = BatchResultError(
            f"could not get this call's result ({type(exc).__name__}: {exc})",
            batch_id=self.id or "?",
            custom_id=call.custom_id,
        )
        err.__cause__ = exc
        return err

    # -- cancel ---------------------------------------------------------------------------

    async def cancel_remote(self, *, aborting: bool = False) -> None:
        """Cancel the batch with the provider: nobody pays for work nobody waits for.

        While the fleet runs, a cancel waits its turn in the request budget however long that
        takes (a cancel given up is a batch billed in full). When the fleet is aborting it is
        shielded and bounded by ``ABORT_GRACE_S``.
        """
        if self.id is None or self.cancel_sent:
            return
        if self.flush is not None:
            # The journal keeps every result of its batches: the batch runs on, and the next
            # fleet on the journal re-attaches to it.
            logger.info("batch %s left running: reopen its journal to collect it", self.id)
            return
        self.cancel_sent = True
        ctx = self._ctx
        aborting = aborting or ctx.aborting
        provider = ctx.provider
        with anyio.CancelScope(shield=aborting) as scope:
            if aborting:
                scope.deadline = ctx.clock() + ABORT_GRACE_S
            delay = ctx.policy.poll_interval_ms / 1000
            for attempt in range(1, CANCEL_ATTEMPTS + 1):
                try:
                    await ctx.budget.acquire(Priority.CANCEL)
                    ctx.stats._api_request("cancel")
                    await provider.cancel(self.id)
                except anyio.get_cancelled_exc_class():
                    # Interrupted while the fleet still ran: the abort path sends it again.
                    self.cancel_sent = False
                    raise
                except Exception as exc:
                    info = provider.classify(exc)
                    if info is None:
                        raise
                    ctx.provider_error(info)
                    if info.kind is ErrorKind.FATAL or attempt == CANCEL_ATTEMPTS:
                        logger.warning("could not cancel batch %s: %s", self.id, exc)
                        return
                    await anyio.sleep(max(delay, info.retry_after or 0))
                    delay *= _BACKOFF
                else:
                    logger.debug("batch %s cancelled at the provider", self.id)
                    return
        if scope.cancelled_caught:
            logger.warning(
                "could not cancel batch %s within %.0f s of the fleet aborting: it may run on",
                self.id,
                ABORT_GRACE_S,
            )

    def abort(self, why: str) -> bool:
        """The fleet aborts: fail the callers, and bound a create in flight. True if the
        batch exists at the provider and must be cancelled there."""
        self.fail_all(lambda call: closed_error(why))
        if self.create_scope is not None:
            self.create_scope.deadline = self._ctx.clock() + ABORT_GRACE_S
            return False
        return self.id is not None
