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
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from dataclasses import replace
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
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

    from ._board import StatusBoard, Watch
    from ._budget import RequestBudget
    from ._call import Call, Outcomes
    from ._create_gate import CreateGate
    from ._estimate import Estimator
    from ._flush import FlushReason
    from ._policy import RoutingPolicy
    from ._stats import FleetStats
    from ._turns import ReadTurns
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
        "made",
        "making",
        "on_end",
        "outcomes",
        "policy",
        "provider",
        "raw_results",
        "read_turns",
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
        # Results as the provider's JSON, not SDK objects, where the adapter can (its
        # ``raw_results``): set by FleetDispatcher._results_as_json, for llmfleet run.
        self.raw_results = False
        # Calls in batches being made (flushed, their create not answered yet), and the
        # event set when that count falls (FleetDispatcher._unsent_below waits on it).
        self.making = 0
        self.made: anyio.Event | None = None
        # Turns at reading results, when one batch is read at a time: set by
        # FleetDispatcher._one_results_stream, for llmfleet run.
        self.read_turns: ReadTurns | None = None
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
        "keys",
        "live",
        "reason",
        "requests",
        "unsent",
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
        # Calls the ended batch ran nothing for (``unsent`` results): sent again by run().
        self.unsent: list[Call] = []
        #: Its record in the fleet's journal (given with a re-attached batch, else made
        #: right before the create).
        self.flush = flush
        # The journal key of each request it carries with no call here (a re-attached
        # batch's) whose result is not stored yet, by custom_id: taken from its record
        # (which then lets go of them), each let go of once its result is stored, so an
        # answered line of a large batch still streaming holds nothing. A call's own key
        # serves for the others (see key_of).
        self.keys: dict[str, str] = {}
        if flush is not None:
            # The journal holds it: never cancelled for want of callers.
            self.live += 1
            self._take_keys()
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
            while True:
                if self.id is None:
                    await self.create()
                if self.id is not None:
                    models = {call.model for call in self.calls.values()} if created_here else ()
                    if ctx.read_turns is not None:
                        ctx.read_turns.waiting(self)
                    if self.live and await self.wait_until_ended():
                        self.ended = True
                        took = ctx.clock() - self.created_at
                        await self.fetch_results()
                        if not self.unsent:
                            # (A batch that ran nothing says nothing of the turnaround.)
                            for model in models:
                                ctx.turnaround.observe(model, took)
                        if self.ended_at is not None:
                            # Wall time: the provider's end stamp is wall time too.
                            lag = max(0.0, time.time() - self.ended_at)
                    else:
                        # Every caller left before the batch ended: nobody pays for unwanted
                        # work.
                        await self.cancel_remote()
                if not self._again():
                    break
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
            if ctx.read_turns is not None:
                ctx.read_turns.left(self)
            self._fail_missing()
            if self.flush is not None and ctx.journal is not None:
                ctx.journal.settled(self.flush)  # its waiting keys go on
            ctx.stats._batch_done(lag)
            ctx.on_end(self)

    def _fail_missing(self) -> None:
        self.fail_all(
            lambda call: BatchResultMissingError(
                "the batch ended with no result for this call",
                batch_id=self.id or "?",
                custom_id=call.custom_id,
            )
        )

    def _again(self) -> bool:
        """After the batch ended: whether calls it ran nothing for (``unsent`` results, the
        provider having refused others of the batch) go out again, as a new batch of this
        task (True), their requests ready for :meth:`create`.

        The batch that refused them has ended and billed nothing for them, so no call is
        ever in two live batches (docs/design.md §4 G1); each round leaves at least one
        refused call out, so the rounds are bounded by the batch's size.
        """
        again = [c for c in self.unsent if c.state == SENT and c.request is not None]
        self.unsent = []
        if not again:
            return False
        if self._ctx.aborting:
            self.calls.update((call.custom_id, call) for call in again)
            self.fail_all(lambda call: closed_error("before this call was sent again"))
            return False
        logger.info(
            "batch %s ran nothing of %d calls it did not refuse; sending them again",
            self.id,
            len(again),
        )
        ctx = self._ctx
        self._fail_missing()  # whatever the ended batch left without a line
        if self.flush is not None:
            if ctx.journal is not None:
                ctx.journal.settled(self.flush)
            # The next create gets a record of its own.
            self.flush = None
            self.live -= 1
        self.calls = {call.custom_id: call for call in again}
        self.requests = [(call.custom_id, call.request) for call in again]
        self.id = None
        self.created_at = 0.0
        self.cancel_sent = False
        self.ended = False
        self.ended_at = None
        return True

    # -- create ---------------------------------------------------------------------------

    async def create(self) -> None:
        """Create the batch at the provider: afterwards either ``id`` is set, or every caller
        has its error (refused, or never answered). Its calls count as being made meanwhile.
        """
        ctx = self._ctx
        count = len(self.requests)
        ctx.making += count
        try:
            await self._create()
        finally:
            ctx.making -= count
            made, ctx.made = ctx.made, None
            if made is not None:
                made.set()

    async def _create(self) -> None:
        """:meth:`create`'s work.

        When the provider refuses the create because of one request and names it (the
        adapter's optional ``refused``), only that caller fails; the others go out again in
        a new create, as often as the provider names another one (docs/design.md §5).
        """
        ctx = self._ctx
        provider = ctx.provider
        journal = ctx.journal
        refused = getattr(provider, "refused", None)
        requests, self.requests = self.requests, []
        ambiguous = 0
        # Each split takes one request out: bounded by the batch's size.
        splits_left = len(requests)
        while True:
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
                    if info.kind is not ErrorKind.CONNECTION or info.unreachable:
                        # Refused, or never sent: no batch was made, nothing was billed.
                        await self._void()
                        named = refused(exc) if refused is not None and splits_left else None
                        if named is not None and 0 <= named[0] < len(requests):
                            requests = self._split(exc, requests, *named)
                            splits_left -= 1
                            if requests and self.live and not ctx.aborting:
                                continue
                            return
                        self._refuse(exc, info, len(requests))
                        return
                    ambiguous += 1
                    logger.warning("batch create: no answer (%s); looking for the batch", exc)
                    batch_id = await ctx.gate.reconcile(len(requests), since)
                    if batch_id is None:
                        if ambiguous < CREATE_ATTEMPTS and not ctx.aborting:
                            continue
                        await self._void()
                        self._refuse(exc, info, len(requests))
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
            if not getattr(provider, "unsent_results", True):
                # Nothing sends these requests again now the batch exists: let go of them
                # (a large batch's calls wait for it holding nothing else that large).
                for call in self.calls.values():
                    call.request = None
            logger.debug("batch %s created with %d calls", batch_id, len(requests))
            return

    def _split(
        self, exc: Exception, requests: list[tuple[str, object]], index: int, reason: str
    ) -> list[tuple[str, object]]:
        """The provider refused the create because of ``requests[index]``: fail its caller
        alone, and return the requests to send again without it (the refusal made no batch,
        so nothing of them was billed)."""
        custom_id = requests[index][0]
        rest = requests[:index] + requests[index + 1 :]
        logger.info(
            "batch create refused because of %s (%s); sending the other %d again",
            custom_id,
            reason,
            len(rest),
        )
        if self.flush is not None:
            # Its record is void; the requests sent again get a record of their own.
            self.flush = None
            self.live -= 1
        call = self.calls.pop(custom_id, None)
        if call is not None:
            rest_went = " (the rest of its batch goes without it)" if rest else ""
            error = BatchSubmitError(
                f"the provider refused this request (custom_id {custom_id}, "
                f"{excerpt(reason, 120)}); it was not sent and nothing was billed for "
                f"it{rest_went}. Fix the request: sent again as it is, it would be refused "
                "again",
                batch_size=len(requests),
            )
            error.__cause__ = exc
            self._ctx.outcomes.resolve(call, "failed", error=error)
        return rest

    def _take_keys(self) -> None:
        """Move the journal keys out of the batch's record: into :attr:`keys`, those of
        requests with no call here."""
        flush = self.flush
        assert flush is not None
        # A call's own key (its jkey) serves while it is in the batch: only the keys of
        # requests with no call here (a re-attached batch's) are kept again.
        calls = self.calls
        self.keys = {e.custom_id: e.key for e in flush.entries if e.custom_id not in calls}
        self.flush = replace(flush, entries=())

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
        self._take_keys()
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

    def _refuse(self, exc: Exception, info: ErrorInfo, size: int) -> None:
        """Fail every caller: the provider did not take the batch of ``size`` requests."""
        message = self._refusal(exc, info, size)

        def error(call: Call) -> BaseException:
            err = BatchSubmitError(message, batch_size=size)
            err.__cause__ = exc
            return err

        self.fail_all(error)

    def _refusal(self, exc: Exception, info: ErrorInfo, size: int) -> str:
        """What the callers of a refused create are told: what happened, and what to do
        (submit_sync() only where the direct route can help)."""
        # An excerpt: a provider's message may quote the request (docs/design.md §5); the
        # whole error stays available as __cause__.
        said = str(getattr(exc, "api_message", None) or getattr(exc, "message", None) or exc)
        # A connection error quotes no request: it may be read whole (host, errno, reason).
        said = excerpt(said, 160 if info.kind is ErrorKind.CONNECTION else 60)
        origin, path = _url_of(exc)
        url = origin + path
        if info.kind is ErrorKind.CONNECTION:
            if info.unreachable:
                where = f"at {origin}" if origin else "at the client's base_url"
                return (
                    f"could not connect to the provider {where} ({said}): nothing listens "
                    f"there, or its name does not resolve. The batch of {size} calls was not "
                    "sent and nothing was billed. Check the client's base_url (and that the "
                    "server is up), then submit again"
                )
            return (
                f"the provider did not answer the batch create of {size} calls ({said}), and "
                "no batch was found for it: nothing was billed. Check the connection to the "
                "provider, then submit again"
            )
        if info.status == 404:
            hint = getattr(self._ctx.provider, "base_url_hint", "")
            return (
                f"no batch endpoint at {url or 'the client base_url'} (status 404: {said}): "
                f"the batch of {size} calls was not sent and nothing was billed. Check the "
                "client's base_url" + (f": {hint}" if hint else "")
            )
        status = f"status {info.status}" if info.status else info.kind.value
        head = f"the provider refused the batch of {size} calls ({status}: {said}); "
        if info.kind in (ErrorKind.RATE_LIMITED, ErrorKind.SERVER):
            return head + "nothing was billed for it. Submit again later, or use submit_sync()"
        if info.status in (401, 403):
            return (
                head + "nothing was billed for it. Check the client's API key and that it "
                "may use the Batch API"
            )
        return (
            head + "nothing was billed for it. Fix what it names, or use submit_sync() if "
            "only the batch route refuses it"
        )

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
        source = provider.results
        if ctx.raw_results:
            source = getattr(provider, "raw_results", source)
        # One batch read at a time when the fleet says so (a run's output in input order),
        # the turn taken before the budget's wait, and given up for a retry's back-off.
        turns = ctx.read_turns
        for attempt in range(1, RESULT_ATTEMPTS + 1):
            turn: AbstractAsyncContextManager[object] = (
                nullcontext() if turns is None else turns.turn(self)
            )
            try:
                async with turn:
                    for _ in range(ctx.results_requests):
                        await ctx.budget.acquire(Priority.RESULTS)
                    ctx.stats._api_request("results")
                    await self._read_results(source)
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

    async def _read_results(
        self, source: Callable[[str], AsyncIterator[tuple[str, ItemResult]]]
    ) -> None:
        """One read of the results from ``source``, to its end."""
        assert self.id is not None
        ctx = self._ctx
        async with aclosing(
            cast("AsyncGenerator[tuple[str, ItemResult]]", source(self.id))
        ) as lines:
            if self.flush is not None and ctx.journal is not None:
                # Each page is stored before its callers wake.
                await ctx.journal.stream(
                    self.flush, self.id, self._held(lines), self.deliver, self.key_of, self.forget
                )
                await ctx.journal.finished(self.flush.flush_id)
                return
            # Read to the end even once every call is resolved: a stream left half-read
            # leaves the SDK's decoder generators for the garbage collector, which trio
            # reports (and it would be one more unexplained open response).
            async for custom_id, result in lines:
                self.deliver(custom_id, result)

    async def _held(
        self, lines: AsyncIterator[tuple[str, ItemResult]]
    ) -> AsyncGenerator[tuple[str, ItemResult]]:
        """``lines`` without the ``unsent`` ones, which go straight to :meth:`deliver`: the
        journal keeps what a batch answered, and a call sent again is answered by the next."""
        async for custom_id, result in lines:
            if result.unsent:
                self.deliver(custom_id, result)
            else:
                yield custom_id, result

    def key_of(self, custom_id: str) -> str | None:
        """The journal key of this batch's request ``custom_id``, if its result is not stored
        yet: its call's, while the call is in the batch (a stored result's call leaves it as
        the result is delivered), else the one kept from the batch's record."""
        call = self.calls.get(custom_id)
        if call is not None:
            return call.jkey
        return self.keys.get(custom_id)

    def forget(self, custom_id: str) -> None:
        """``custom_id``'s result is stored: its kept key is let go of."""
        self.keys.pop(custom_id, None)

    def deliver(self, custom_id: str, result: ItemResult) -> None:
        """Hand one result to its caller (O(1); the call leaves the batch, so a re-fetch
        skips it)."""
        call = self.calls.pop(custom_id, None)
        if call is None:
            logger.debug("ignoring a result for unknown or resolved custom_id %s", custom_id)
            return
        assert self.id is not None
        ctx = self._ctx
        if result.unsent:
            # Sent again in a new batch, unless its caller has left (see _again).
            self.unsent.append(call)
            return
        if call.state is not SENT:
            # Its caller left, or it was escalated and answered by the direct route; in that
            # case, if the batch had processed it, it is paid at batch price too.
            cost = None
            if call.state != GONE and result.kind == "succeeded":
                cost = ctx.outcomes.cost_of(call.model, result.value, batch=True)
            ctx.stats._result_dropped(cost)
            return
        if result.kind == "succeeded":
            ctx.outcomes.resolve(call, "succeeded", result.value)
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


def _url_of(exc: BaseException) -> tuple[str, str]:
    """The origin (``scheme://host:port``) and path of the request an SDK error is about
    (never its query), or ``("", "")``."""
    url = getattr(getattr(exc, "request", None), "url", None)
    scheme, host = getattr(url, "scheme", None), getattr(url, "host", None)
    if not isinstance(scheme, str) or not isinstance(host, str) or not host:
        return "", ""
    port = getattr(url, "port", None)
    path = getattr(url, "path", "")
    origin = f"{scheme}://{host}" + (f":{port}" if isinstance(port, int) else "")
    return origin, path if isinstance(path, str) else ""
