"""The fleet: :func:`open_fleet` and :class:`FleetDispatcher` (DESIGN §1, §2, §4, §5).

One task group holds the flusher and one task per in-flight batch. Calls for the batch route
travel to the flusher through a memory object stream; each caller waits on its own
:class:`_Call` slot (an ``anyio.Event`` plus the outcome) and nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import secrets
import sys
import time
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast, final, overload

import anyio

from ._board import StatusBoard, Watch
from ._budget import Priority, RequestBudget
from ._estimate import Estimator
from ._flush import FlushQueue, FlushReason
from ._policy import RoutingPolicy
from ._stats import FleetStats, OnResult, Outcome, ResultEvent, Route
from ._timers import Timers
from .errors import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultError,
    BatchResultMissingError,
    BatchSubmitError,
    DeadlineExceededError,
    FleetClosedError,
    excerpt,
)
from .pricing import Cost, PriceTable, TokenUsage
from .providers import ErrorInfo, ErrorKind, ItemResult, Provider, adapter_for

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Mapping
    from types import TracebackType

    from anyio.abc import TaskGroup, TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .broker import BrokeredFleet

__all__ = ["FleetDispatcher", "open_fleet"]

logger = logging.getLogger("llmfleet")

# A call's life. NEW: sent to the flusher, not yet in its queue. QUEUED: in the queue.
# SENT: in a batch. DONE: its caller has an outcome. GONE: its caller left (cancelled).
# ESCALATED: near its deadline it left the queue or its batch for the direct route (§8).
_NEW, _QUEUED, _SENT, _DONE, _GONE, _ESCALATED = range(6)

#: Seconds that awaited cleanup (a create in flight, cancels) may take once the fleet aborts.
ABORT_GRACE_S: Final = 5.0
#: Attempts at an ambiguous create (connection lost, no batch found) before giving up.
CREATE_ATTEMPTS: Final = 3
# What a finished call's params are replaced with, so that nothing keeps them alive.
_RELEASED: Final[dict[str, Any]] = {}
#: After an unanswered create, how long the fleet keeps looking for the batch it may have
#: made before it sends the create again, and its first pause between looks.
RECONCILE_WINDOW_S: Final = 5.0
RECONCILE_FIRST_S: Final = 0.25
#: Attempts at a cancel that failed for a passing reason (5xx, 429, connection).
CANCEL_ATTEMPTS: Final = 5
#: Attempts at fetching one batch's results before its unresolved callers get an error.
RESULT_ATTEMPTS: Final = 8
#: A 404 this soon after create is the provider's lag, not a deleted batch (wire reference).
NOT_FOUND_GRACE_S: Final = 60.0
_BACKOFF: Final = 1.5
_NUMBER: Final = (int, float)


@final
class _Call:
    """One batch-route call: its request, where it is, and its outcome slot."""

    __slots__ = (
        "arrival",
        "batch",
        "custom_id",
        "deadline",
        "done",
        "error",
        "escalation",
        "flush_by",
        "key",
        "model",
        "params",
        "request",
        "size",
        "state",
        "value",
    )

    def __init__(
        self,
        custom_id: str,
        params: dict[str, Any],
        request: Any,
        size: int,
        model: str,
        done: anyio.Event,
    ) -> None:
        self.custom_id = custom_id
        # The caller's params, for the direct route if the call escalates (sent as they are
        # then, like any direct call), and the provider's prepared snapshot for the batch.
        self.params = params
        self.request = request
        self.size = size
        self.model = model
        self.arrival = 0.0
        self.state = _NEW
        self.batch: _Batch | None = None
        self.done = done
        self.value: Any = None
        self.error: BaseException | None = None
        # DESIGN §8: the caller's deadline, the latest flush that can still meet it, and
        # the scope of its escalated direct call.
        self.deadline = math.inf
        self.flush_by = math.inf
        self.escalation: anyio.CancelScope | None = None
        self.key: Hashable = None


@final
class _Batch:
    """A flushed batch, owned by one task from create to its last result."""

    __slots__ = (
        "abandoned",
        "calls",
        "cancel_sent",
        "create_scope",
        "created_at",
        "ended",
        "ended_at",
        "id",
        "live",
        "reason",
        "requests",
        "watch",
    )

    def __init__(self, calls: list[_Call], reason: FlushReason) -> None:
        self.calls = {call.custom_id: call for call in calls}
        # Taken at the flush: what is sent cannot change after it, even if a caller leaves
        # (and its call lets go of its params) before the create goes out.
        self.requests = [(call.custom_id, call.request) for call in calls]
        self.reason = reason
        self.id: str | None = None
        # Callers still waiting; when it drops to 0 the batch is cancelled at the provider.
        self.live = len(calls)
        self.abandoned = anyio.Event()
        self.create_scope: anyio.CancelScope | None = None
        self.created_at = 0.0
        self.cancel_sent = False
        self.ended = False
        self.ended_at: float | None = None
        self.watch: Watch | None = None


@final
class FleetDispatcher:
    """Routes each call direct or into a pooled batch, and hands every caller its own outcome.

    Use it as ``async with FleetDispatcher(client, policy=...) as fleet:``, which is
    :func:`open_fleet` in class form. See :func:`open_fleet` for the parameters.
    """

    def __init__(
        self,
        client: Any,
        *,
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
    ) -> None:
        if policy is None:
            policy = RoutingPolicy()
        elif not isinstance(policy, RoutingPolicy):
            raise TypeError(f"policy must be a RoutingPolicy, got {type(policy).__name__}")
        if drain_timeout_ms is not None and drain_timeout_ms < 0:
            raise ValueError(f"drain_timeout_ms must be >= 0 or None, got {drain_timeout_ms}")
        self.policy = policy
        self.provider: Provider = adapter_for(client)
        self._drain_timeout = None if drain_timeout_ms is None else drain_timeout_ms / 1000
        self._prices = prices if prices is not None else PriceTable()
        self._on_result = on_result
        self._budget = RequestBudget(policy.batch_api_rpm)
        self._stats = FleetStats(self._budget, self._prices)
        # The running backend's clock, looked up once in _run() (anyio.current_time() finds
        # the backend on every read, which costs more than the rest of a direct call).
        self._clock: Callable[[], float] = anyio.current_time
        # Likewise anyio.Event() finds the backend on every call; _run() keeps its class.
        self._new_event: Callable[[], anyio.Event] = anyio.Event
        self._c = self._stats._c
        self._max_size = min(policy.batch_max_size, self.provider.max_batch_requests)
        # One queue per batch key: a provider whose batches must not mix some requests (an
        # OpenAI batch file holds one endpoint and model) gives each kind its own queue, each
        # under the §4 rule. Most providers have one key.
        self._queues: dict[Hashable, FlushQueue[_Call]] = {}
        self._batch_key: Callable[[Mapping[str, Any]], Hashable] | None = getattr(
            self.provider, "batch_key", None
        )
        self._send: MemoryObjectSendStream[_Call] | None = None
        self._receive: MemoryObjectReceiveStream[_Call] | None = None
        self._flusher_done = False
        self._tg: TaskGroup | None = None
        self._state = "new"  # new -> open -> closed (-> aborted)
        self._entered = False
        self._batches: set[_Batch] = set()
        self._owned_ids: set[str] = set()
        self._room: anyio.Event | None = None
        self._idle: anyio.Event | None = None  # made in _run(): an Event needs a running loop
        # custom_ids are opaque: a random fleet tag and a counter, never the request content.
        self._tag = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._stack: AsyncExitStack | None = None
        self._board: StatusBoard | None = None  # made in _run(): it needs a running loop
        self._results_requests = max(1, getattr(self.provider, "results_requests", 1))
        # DESIGN §8: what batches and direct calls take, per model, as the fleet sees them.
        prior = policy.expected_turnaround_ms
        self._turnaround = Estimator(0.9, prior=None if prior is None else prior / 1000)
        self._direct_latency = Estimator(0.95)
        self._timers: Timers[_Call] = Timers(
            self._deadline_reached, alive=lambda call: call.state in (_NEW, _QUEUED, _SENT)
        )
        # Ambiguous-create reconciliation (see _reconcile); the lock is made in _run().
        self._creating = 0
        self._creates_done: anyio.Event | None = None
        self._reconciling: anyio.Event | None = None
        self._reconcile_lock: anyio.Lock | None = None

    def __repr__(self) -> str:
        return f"<FleetDispatcher {self.provider.name} state={self._state} {self._stats!r}>"

    # -- public API ---------------------------------------------------------------------

    @property
    def stats(self) -> FleetStats:
        """A live, read-only view of what the fleet has done (:class:`~llmfleet.FleetStats`)."""
        return self._stats

    @property
    def closed(self) -> bool:
        """True once the fleet accepts no more calls."""
        return self._state != "open"

    async def submit(self, *, latency_budget_ms: float | None = None, **params: Any) -> Any:
        """Make one create call, by whichever route its budget allows (DESIGN §2).

        Takes exactly the keyword arguments of the SDK's create call and returns exactly what
        it returns (``anthropic.types.Message``), whichever route ran.

        :param latency_budget_ms: how long the caller can wait. ``None`` or at most
            ``policy.sync_max_latency_ms``: the direct route; longer: the batch route.
        :raises ValueError: a negative budget.
        :raises UnbatchableRequestError: ``stream=True``, or a request the batch route
            cannot carry.
        :raises FleetClosedError: the fleet is closed.
        :raises BatchSubmitError: the provider refused the batch this call was in.
        :raises BatchResultError: the batch ran but this call has no message (a subclass
            says why).
        :raises anthropic.APIError: on the direct route, what ``messages.create`` raises.
        """
        if latency_budget_ms is None:
            return await self._direct(params)
        if isinstance(latency_budget_ms, bool) or not isinstance(latency_budget_ms, _NUMBER):
            raise TypeError(f"latency_budget_ms must be a number of ms, got {latency_budget_ms!r}")
        if not latency_budget_ms >= 0:  # also refuses NaN
            raise ValueError(
                f"latency_budget_ms must be >= 0 (how long you can wait), got {latency_budget_ms}"
            )
        if latency_budget_ms <= self.policy.sync_max_latency_ms:
            return await self._direct(params)
        budget = latency_budget_ms / 1000
        if self.policy.deadline_action == "wait":
            # The seed's behaviour: the budget only chooses the route (and is kept for the
            # hit-rate figures).
            return await self._submit_batch(params, budget, None)
        turnaround = self._turnaround.estimate(self.provider.model_of(params))
        if turnaround is not None and budget < turnaround:
            # Even a batch flushed now would likely end after the deadline (DESIGN §8).
            self._c.routed_by_deadline += 1
            return await self._direct(params)
        return await self._submit_batch(params, budget, turnaround)

    async def submit_sync(self, **params: Any) -> Any:
        """Make the call on the direct route, now. Same arguments and result as the SDK's."""
        return await self._direct(params)

    async def _direct(self, params: dict[str, Any]) -> Any:
        # The hot path of the direct route: one clock read before and after, and the
        # bookkeeping of _record without its generality. Keep it lean (issue 4: ≤ 2 µs).
        if self._state != "open":
            self._check_open()
        provider = self.provider
        provider.check(params)
        self._c.sync_calls += 1
        model = provider.model_of(params)
        clock = self._clock
        start = clock()
        try:
            value = await provider.call(params)
        except Exception as exc:
            info = provider.classify(exc)
            errored = info is not None and info.kind is not ErrorKind.CONNECTION
            self._record(Route.DIRECT, "errored" if errored else "failed", model, start, None)
            raise
        except BaseException:
            # Cancelled, possibly wrapped: trio's connect raises a group of Cancelled when
            # cancelled mid-connect, and the HTTP stack passes it on as it is.
            self._record(Route.DIRECT, "withdrawn", model, start, None)
            raise
        if self._on_result is not None:
            self._direct_latency.observe(model, clock() - start)
            self._record(Route.DIRECT, "succeeded", model, start, value)
            return value
        took = clock() - start
        self._direct_latency.observe(model, took)
        c = self._c
        c.succeeded += 1
        tally = c.direct
        tally.waits.add(took * 1000)
        tokens = provider.tokens_of(value)
        if tokens is not None:
            tally.add_tokens(model, tokens)
        return value

    async def submit_batch(self, **params: Any) -> Any:
        """Put the call in the next batch and wait for its result, however long it takes.
        Same arguments and result as the SDK's create call."""
        return await self._submit_batch(params, None, None)

    async def _submit_batch(
        self, params: dict[str, Any], budget: float | None, turnaround: float | None
    ) -> Any:
        self._check_open()
        provider = self.provider
        provider.check(params)
        custom_id = f"lf_{self._tag}_{next(self._ids)}"
        size, request = provider.prepare(custom_id, params)
        call = _Call(custom_id, params, request, size, provider.model_of(params), self._new_event())
        if self._batch_key is not None:
            call.key = self._batch_key(params)
        c = self._c
        while c.queued >= self.policy.max_queued:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
            self._check_open()
        assert self._send is not None
        call.arrival = now = self._clock()
        if budget is not None:
            self._promise(call, now + budget, turnaround)
        self._send.send_nowait(call)
        c.queued += 1
        c.batched_calls += 1
        try:
            await call.done.wait()
        except BaseException:
            self._abandon(call)
            raise
        # The call may outlive its caller in a batch or the deadline timers: keep no result
        # or request alive through it.
        value, error = call.value, call.error
        call.value = call.error = call.request = None
        call.params = _RELEASED
        if error is not None:
            raise error
        return value

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> FleetDispatcher:
        stack = AsyncExitStack()
        await stack.enter_async_context(_run(self))
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None
        return await stack.__aexit__(exc_type, exc, tb)

    def _check_open(self) -> None:
        if self._state != "open":
            raise FleetClosedError(
                "the fleet is not open yet: use it as `async with open_fleet(...) as fleet:`"
                if self._state == "new"
                else "the fleet is closed: submit calls inside `async with open_fleet(...)`"
            )

    # -- the flusher --------------------------------------------------------------------

    async def _flusher(
        self, receive: MemoryObjectReceiveStream[_Call], *, task_status: TaskStatus[None]
    ) -> None:
        queues = self._queues
        task_status.started()
        async with receive:
            while True:
                # Wake on an arrival or on the earliest deadline, never on a timer.
                deadline = min(
                    (d for q in queues.values() if (d := q.deadline()) is not None),
                    default=None,
                )
                try:
                    with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
                        self._accept(await receive.receive())
                except anyio.EndOfStream:
                    break
                # Take every call already sent before deciding, so a burst submitted in one
                # tick lands in as few batches as the limits allow (G6).
                while True:
                    try:
                        self._accept(receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                    except anyio.EndOfStream:
                        break
                self._flush(self._clock())
        # Every send clone is closed: the fleet is closing. Flush what is left (DESIGN §5).
        self._flush(self._clock(), drain=True)
        self._flusher_done = True
        self._check_idle()

    def _accept(self, call: _Call) -> None:
        if call.state == _NEW:
            call.state = _QUEUED
            queue = self._queues.get(call.key)
            if queue is None:
                policy = self.policy
                queue = self._queues[call.key] = FlushQueue(
                    min_size=min(policy.batch_min_size, self._max_size),
                    max_size=self._max_size,
                    window=policy.batch_window_ms / 1000,
                    max_bytes=self.provider.max_batch_bytes,
                )
            queue.push(call)

    def _flush(self, now: float, *, drain: bool = False) -> None:
        for queue in self._queues.values():
            for calls, reason in queue.take(now, drain=drain):
                self._start_batch(calls, reason)

    def _start_batch(self, calls: list[_Call], reason: FlushReason) -> None:
        batch = _Batch(calls, reason)
        for call in calls:
            call.state = _SENT
            call.batch = batch
        c = self._c
        c.queued -= len(calls)
        c.in_flight_batches += 1
        self._stats._flushed(reason, len(calls))
        self._batches.add(batch)
        logger.debug("flush: %d calls (reason %s)", len(calls), reason)
        self._make_room()
        assert self._tg is not None
        self._tg.start_soon(self._run_batch, batch, name=f"llmfleet batch ({len(calls)} calls)")

    def _make_room(self) -> None:
        room = self._room
        if room is not None and self._c.queued < self.policy.max_queued:
            self._room = None
            room.set()

    # -- callers leaving ----------------------------------------------------------------

    def _abandon(self, call: _Call) -> None:
        """The caller of ``call`` was cancelled: withdraw it, or drop its coming result."""
        if call.state == _ESCALATED:
            call.state = _GONE
            if call.escalation is not None:
                call.escalation.cancel()
            self._record(Route.DIRECT, "withdrawn", call.model, call.arrival, None, call=call)
        elif self._detach(call, _GONE):
            self._record(Route.BATCH, "withdrawn", call.model, call.arrival, None, call=call)
        call.params = _RELEASED  # nothing will send it now
        call.request = None

    def _detach(self, call: _Call, state: int) -> bool:
        """Take a pending call out of the queue or its batch (whose result it will then
        drop); a batch left with no live caller is cancelled. False if it was not pending."""
        if call.state in (_NEW, _QUEUED):
            if call.state == _QUEUED:
                self._queues[call.key].withdraw(call)
            call.state = state
            self._c.queued -= 1
            self._make_room()
            return True
        if call.state == _SENT:
            call.state = state
            batch = call.batch
            assert batch is not None
            batch.live -= 1
            if batch.live == 0:
                batch.abandoned.set()
                if batch.watch is not None:
                    batch.watch.event.set()
            return True
        return False

    # -- deadlines (DESIGN §8) ------------------------------------------------------------

    def _promise(self, call: _Call, deadline: float, turnaround: float | None) -> None:
        """Make the call's budget a promise: flush it in time, and act at its deadline."""
        call.deadline = deadline
        if turnaround is not None:
            # Flushed no later than this, the batch should end by the deadline (p90).
            call.flush_by = deadline - turnaround
        action = self.policy.deadline_action
        if action == "escalate":
            direct = self._direct_latency.estimate(call.model) or 0.0
            margin = self.policy.escalation_margin_ms / 1000
            self._timers.schedule(max(call.arrival, deadline - direct - margin), call)
        elif action == "fail":
            self._timers.schedule(deadline, call)

    def _deadline_reached(self, call: _Call) -> None:
        if call.state not in (_NEW, _QUEUED, _SENT):
            return  # resolved, withdrawn or escalated already
        if self.policy.deadline_action == "fail":
            self._detach(call, _DONE)
            call.error = DeadlineExceededError(
                f"no result within the latency budget ({(call.deadline - call.arrival) * 1000:.0f}"
                " ms); use a longer budget, deadline_action='escalate', or submit_sync()"
            )
            self._record(Route.BATCH, "failed", call.model, call.arrival, None, call=call)
            call.done.set()
            return
        if self._tg is None or self._state == "aborted":
            return
        self._detach(call, _ESCALATED)
        self._c.escalations += 1
        logger.debug("escalating %s to the direct route", call.custom_id)
        self._tg.start_soon(self._escalate, call, name=f"llmfleet escalation {call.custom_id}")

    async def _escalate(self, call: _Call) -> None:
        """Send a call down the direct route for its caller; its batch result is dropped."""
        start = self._clock()
        with anyio.CancelScope() as scope:
            call.escalation = scope
            try:
                value = await self.provider.call(call.params)
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    raise  # cancelled (maybe in a group): the scope or the fleet handles it
                if call.state == _ESCALATED:
                    info = self.provider.classify(exc)
                    errored = info is not None and info.kind is not ErrorKind.CONNECTION
                    call.state = _DONE
                    call.error = exc
                    outcome: Outcome = "errored" if errored else "failed"
                    self._record(Route.DIRECT, outcome, call.model, call.arrival, None, call=call)
                    call.done.set()
                return
            finally:
                call.escalation = None
        if scope.cancelled_caught or call.state != _ESCALATED:
            return
        self._direct_latency.observe(call.model, self._clock() - start)
        call.state = _DONE
        call.value = value
        self._record(Route.DIRECT, "succeeded", call.model, call.arrival, value, call=call)
        cost = self._cost_of(call.model, value, batch=False)
        if cost is not None:
            self._c.escalation_cost = self._c.escalation_cost + cost
        call.done.set()

    # -- one batch, from create to its last result ----------------------------------------

    async def _run_batch(self, batch: _Batch) -> None:
        try:
            await self._create(batch)
            if batch.id is not None:
                models = {call.model for call in batch.calls.values()}
                if batch.live and await self._wait_until_ended(batch):
                    batch.ended = True
                    took = self._clock() - batch.created_at
                    for model in models:
                        self._turnaround.observe(model, took)
                    await self._fetch_results(batch)
                    if batch.ended_at is not None:
                        # Wall time: the provider's end stamp is wall time too.
                        self._c.end_lag.add(max(0.0, time.time() - batch.ended_at) * 1000)
                else:
                    # Every caller left before the batch ended: nobody pays for unwanted work.
                    await self._cancel_remote(batch)
        except anyio.get_cancelled_exc_class():
            # The fleet is aborting (exception in the body, outer cancellation, drain
            # timeout): this batch may be cancelled before _abort() runs, so cancel it with
            # the provider here too (shielded, bounded), and tell its callers why.
            if not batch.ended:
                await self._cancel_remote(batch, aborting=True)
            self._fail_all(batch, lambda call: _closed("before this call's batch ended"))
            raise
        except Exception as exc:
            # A bug or an error no rule above covers: the callers must still hear of it.
            logger.exception("batch %s failed", batch.id)
            cause = exc
            self._fail_all(batch, lambda call: _result_error(batch, call, cause))
        finally:
            self._fail_all(
                batch,
                lambda call: BatchResultMissingError(
                    "the batch ended with no result for this call",
                    batch_id=batch.id or "?",
                    custom_id=call.custom_id,
                ),
            )
            self._batches.discard(batch)
            self._c.in_flight_batches -= 1
            self._check_idle()

    async def _create(self, batch: _Batch) -> None:
        provider = self.provider
        requests, batch.requests = batch.requests, []
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            # While an ambiguous create is being reconciled, no other create may start: its
            # batch could be mistaken for the one being looked for.
            while self._reconciling is not None:
                await self._reconciling.wait()
            await self._budget.acquire(Priority.CREATE)
            # Wall time, not the fleet's clock: it is compared with the provider's timestamps.
            since = time.time()
            # Shielded: once sent, a create is awaited even if the fleet aborts, so the batch
            # it makes can be cancelled instead of running on, billed (DESIGN §5). _abort()
            # bounds it by moving this scope's deadline.
            with anyio.CancelScope(shield=True) as scope:
                batch.create_scope = scope
                self._creating += 1
                try:
                    try:
                        self._count("create")
                        batch_id: str | None = await provider.create_batch(requests)
                    finally:
                        self._creating -= 1
                        if not self._creating and self._creates_done is not None:
                            self._creates_done.set()
                except Exception as exc:
                    info = provider.classify(exc)
                    if info is None:
                        raise
                    self._provider_error(info)
                    if info.kind is not ErrorKind.CONNECTION:
                        self._refuse(batch, exc, info)
                        return
                    logger.warning("batch create: no answer (%s); looking for the batch", exc)
                    batch_id = await self._reconcile(len(requests), since)
                    if batch_id is None:
                        if attempt < CREATE_ATTEMPTS and self._state != "aborted":
                            continue
                        self._refuse(batch, exc, info)
                        return
                    logger.info("adopted batch %s after an ambiguous create", batch_id)
                finally:
                    batch.create_scope = None
            if scope.cancelled_caught:
                # The abort grace ran out mid-create: nobody can tell if the batch exists.
                self._fail_all(batch, lambda call: _closed("while its batch was being created"))
                return
            assert batch_id is not None
            batch.id = batch_id
            batch.created_at = self._clock()
            self._owned_ids.add(batch_id)
            self._c.batches_submitted += 1
            logger.debug("batch %s created with %d calls", batch_id, len(requests))
            return

    async def _reconcile(self, count: int, since: float) -> str | None:
        """Find the batch an unanswered create may have made (DESIGN §5).

        One at a time, with no other create in flight: every batch this fleet made is then
        in ``_owned_ids``, so none of them is taken for the one looked for.
        """
        assert self._reconcile_lock is not None
        async with self._reconcile_lock:
            gate = self._reconciling = anyio.Event()
            try:
                while self._creating:
                    self._creates_done = anyio.Event()
                    await self._creates_done.wait()
                self._creates_done = None
                # A create the provider carries out after the client gave up on it shows up
                # late: keep looking for a while before concluding it made nothing (a second
                # create sent too early would be a second batch billed).
                give_up = self._clock() + RECONCILE_WINDOW_S
                delay = RECONCILE_FIRST_S
                while True:
                    await self._budget.acquire(Priority.CREATE)
                    self._count("list")
                    try:
                        found = await self.provider.find_batch(
                            count=count, created_after=since, exclude=self._owned_ids
                        )
                    except Exception as exc:
                        info = self.provider.classify(exc)
                        if info is None:
                            raise
                        self._provider_error(info)
                        found = None
                    if found is not None or self._clock() >= give_up:
                        return found
                    await anyio.sleep(delay)
                    delay = min(delay * 2, RECONCILE_WINDOW_S / 4)
            finally:
                self._reconciling = None
                gate.set()

    def _refuse(self, batch: _Batch, exc: Exception, info: ErrorInfo) -> None:
        status = f"status {info.status}" if info.status else info.kind.value
        size = len(batch.calls)
        # An excerpt: a provider's message may quote the request (DESIGN §5); the whole
        # error stays available as __cause__.
        said = getattr(exc, "api_message", None) or getattr(exc, "message", None) or str(exc)
        message = (
            f"the provider refused the batch of {size} calls ({status}: "
            f"{excerpt(str(said), 60)}); nothing was billed for it. Submit again, or use "
            "submit_sync()"
        )

        def error(call: _Call) -> BaseException:
            err = BatchSubmitError(message, batch_size=size)
            err.__cause__ = exc
            return err

        self._fail_all(batch, error)

    async def _wait_until_ended(self, batch: _Batch) -> bool:
        """Wait, on the fleet's status board, until the batch ends (True) or every caller
        has left (False)."""
        assert batch.id is not None
        assert self._board is not None
        watch = batch.watch = self._board.watch(batch.id)
        try:
            await watch.event.wait()
        finally:
            self._board.unwatch(watch)
            batch.watch = None
        if watch.error is not None:
            raise watch.error
        if watch.status is None or not watch.status.ended:
            return False  # every caller left first
        # Ended, even if its last caller just left: its results are billed, so they are
        # fetched (and dropped, and counted) rather than ignored.
        batch.ended_at = watch.status.ended_at
        return True

    def _transient(self, info: ErrorInfo, batch: _Batch) -> bool:
        if info.kind is ErrorKind.NOT_FOUND:
            return self._clock() - batch.created_at < NOT_FOUND_GRACE_S
        return info.kind is not ErrorKind.FATAL

    async def _fetch_results(self, batch: _Batch) -> None:
        assert batch.id is not None
        provider = self.provider
        delay = self.policy.poll_interval_ms / 1000
        for attempt in range(1, RESULT_ATTEMPTS + 1):
            for _ in range(self._results_requests):
                await self._budget.acquire(Priority.RESULTS)
            self._count("results")
            try:
                async with aclosing(
                    cast("AsyncGenerator[tuple[str, ItemResult]]", provider.results(batch.id))
                ) as lines:
                    # Read to the end even once every call is resolved: a stream left half-read
                    # leaves the SDK's decoder generators for the garbage collector, which
                    # trio reports (and it would be one more unexplained open response).
                    async for custom_id, result in lines:
                        self._deliver(batch, custom_id, result)
                return
            except Exception as exc:
                info = provider.classify(exc)
                if info is None or attempt == RESULT_ATTEMPTS or not self._transient(info, batch):
                    raise
                self._provider_error(info)
                # Fetched again below for the calls still unresolved (DESIGN §5).
                logger.warning(
                    "results of %s broke off (%s); %d calls unresolved, fetching again",
                    batch.id,
                    info.kind.value,
                    len(batch.calls),
                )
                await anyio.sleep(max(delay, info.retry_after or 0))
                delay = min(delay * _BACKOFF, self.policy.poll_max_interval_ms / 1000)

    def _deliver(self, batch: _Batch, custom_id: str, result: ItemResult) -> None:
        # O(1) per result, and the call leaves the batch, so a re-fetch skips it.
        call = batch.calls.pop(custom_id, None)
        if call is None:
            logger.debug("ignoring a result for unknown or resolved custom_id %s", custom_id)
            return
        assert batch.id is not None
        if call.state != _SENT:
            # Its caller left, or it was escalated and answered by the direct route.
            self._c.results_dropped += 1
            if call.state != _GONE and result.kind == "succeeded":
                # Escalated after the batch had processed it: paid at batch price too.
                cost = self._cost_of(call.model, result.value, batch=True)
                if cost is not None:
                    self._c.escalation_cost = self._c.escalation_cost + cost
            return
        if result.kind == "succeeded":
            self._resolve(call, "succeeded", value=result.value)
            return
        error: BatchResultError
        if result.kind == "errored":
            error = BatchRequestError(
                result.error_type, result.message, batch_id=batch.id, custom_id=custom_id
            )
        elif result.kind == "expired":
            error = BatchRequestExpiredError(
                "the batch expired before this call was processed; submit it again",
                batch_id=batch.id,
                custom_id=custom_id,
            )
        else:
            error = BatchRequestCanceledError(
                "the batch was canceled before this call was processed",
                batch_id=batch.id,
                custom_id=custom_id,
            )
        self._resolve(call, result.kind, error=error)

    def _resolve(
        self,
        call: _Call,
        outcome: Outcome,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        if call.state != _SENT:
            return
        call.state = _DONE
        call.value = value
        call.error = error
        batch = call.batch
        if batch is not None:
            batch.live -= 1
        self._record(Route.BATCH, outcome, call.model, call.arrival, value, call=call)
        call.done.set()

    def _fail_all(self, batch: _Batch, make_error: Callable[[_Call], BaseException]) -> None:
        """Give every unresolved caller of ``batch`` its own error (one object each)."""
        calls, batch.calls = batch.calls, {}
        for call in calls.values():
            if call.state == _SENT:
                self._resolve(call, "failed", error=make_error(call))

    async def _cancel_remote(self, batch: _Batch, *, aborting: bool = False) -> None:
        """Cancel the batch with the provider: nobody pays for work nobody waits for.

        While the fleet runs, a cancel waits its turn in the request budget however long that
        takes (a cancel given up is a batch billed in full). When the fleet is aborting it is
        shielded and bounded by ``ABORT_GRACE_S``.
        """
        if batch.id is None or batch.cancel_sent:
            return
        batch.cancel_sent = True
        aborting = aborting or self._state == "aborted"
        with anyio.CancelScope(shield=aborting) as scope:
            if aborting:
                scope.deadline = self._clock() + ABORT_GRACE_S
            delay = self.policy.poll_interval_ms / 1000
            for attempt in range(1, CANCEL_ATTEMPTS + 1):
                try:
                    await self._budget.acquire(Priority.CANCEL)
                    self._count("cancel")
                    await self.provider.cancel(batch.id)
                except anyio.get_cancelled_exc_class():
                    # Interrupted while the fleet still ran: the abort path sends it again.
                    batch.cancel_sent = False
                    raise
                except Exception as exc:
                    info = self.provider.classify(exc)
                    if info is None:
                        raise
                    self._provider_error(info)
                    if info.kind is ErrorKind.FATAL or attempt == CANCEL_ATTEMPTS:
                        logger.warning("could not cancel batch %s: %s", batch.id, exc)
                        return
                    await anyio.sleep(max(delay, info.retry_after or 0))
                    delay *= _BACKOFF
                else:
                    logger.debug("batch %s cancelled at the provider", batch.id)
                    return
        if scope.cancelled_caught:
            logger.warning(
                "could not cancel batch %s within %.0f s of the fleet aborting: it may run on",
                batch.id,
                ABORT_GRACE_S,
            )

    # -- bookkeeping --------------------------------------------------------------------

    def _record(
        self,
        route: Route,
        outcome: Outcome,
        model: str,
        start: float,
        value: Any,
        *,
        call: _Call | None = None,
    ) -> None:
        """Count one call's outcome in the stats, and tell the hook if there is one.

        O(1) and cheap: tokens are summed per model and priced only when the stats are read.
        """
        c = self._c
        now = self._clock()
        wait = now - start
        tally = c.direct if route is Route.DIRECT else c.batch
        if outcome == "succeeded":
            c.succeeded += 1
        else:
            setattr(c, outcome, getattr(c, outcome) + 1)
        tally.waits.add(wait * 1000)
        tokens = None
        if value is not None:
            tokens = self.provider.tokens_of(value)
            if tokens is not None:
                tally.add_tokens(model, tokens)
        if call is not None and call.deadline != math.inf and outcome != "withdrawn":
            # Budget hit rate per route (DESIGN §8): answered by the deadline or not.
            if now <= call.deadline:
                tally.hits += 1
            else:
                tally.misses += 1
        if self._on_result is not None:
            batch = call.batch if call is not None else None
            usage = None if tokens is None else TokenUsage(*tokens)
            event = ResultEvent(
                route=route,
                outcome=outcome,
                model=model,
                wait_s=wait,
                batch_id=batch.id if batch is not None else None,
                custom_id=call.custom_id if call is not None else None,
                usage=usage,
                cost=None
                if usage is None
                else self._prices.cost(model, usage, batch=route is Route.BATCH),
            )
            try:
                self._on_result(event)
            except Exception:
                # A metrics hook must not break the fleet; say so loudly, once per failure.
                logger.exception("on_result hook raised")

    def _cost_of(self, model: str, value: Any, *, batch: bool) -> Cost | None:
        """What one response cost (``None``: no usage, or no price for its model)."""
        tokens = self.provider.tokens_of(value)
        if tokens is None:
            return None
        return self._prices.cost(model, TokenUsage(*tokens), batch=batch)

    def _count(self, endpoint: str) -> None:
        requests = self._c.api_requests
        requests[endpoint] = requests.get(endpoint, 0) + 1

    def _provider_error(self, info: ErrorInfo) -> None:
        """Every requester backs off when the provider says it is rate-limiting us."""
        if info.kind is ErrorKind.RATE_LIMITED:
            self._c.rate_limited += 1
            self._budget.pause(info.retry_after if info.retry_after is not None else 1.0)

    def _check_idle(self) -> None:
        if self._flusher_done and not self._batches and self._idle is not None:
            self._idle.set()

    # -- shutdown -----------------------------------------------------------------------

    def _close(self) -> None:
        """Refuse new calls; the flusher drains the queue and exits (DESIGN §5, normal exit)."""
        self._state = "closed"
        send, self._send = self._send, None
        if send is not None:
            send.close()
        room, self._room = self._room, None
        if room is not None:
            room.set()

    async def _abort(self, why: str) -> None:
        """Fail every caller, cancel in-flight batches with the provider (shielded, bounded)."""
        self._close()
        self._state = "aborted"
        # Calls sent to the flusher but not yet taken into its queue count as queued too.
        if self._receive is not None:
            while True:
                try:
                    self._accept(self._receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
        for call in [call for queue in self._queues.values() for call in queue]:
            call.state = _SENT  # so _resolve() takes it
            self._queues[call.key].withdraw(call)
            self._c.queued -= 1
            self._resolve(call, "failed", error=_closed(why))
        with anyio.move_on_after(ABORT_GRACE_S, shield=True):
            async with anyio.create_task_group() as tg:
                for batch in list(self._batches):
                    self._fail_all(batch, lambda call: _closed(why))
                    if batch.create_scope is not None:
                        batch.create_scope.deadline = self._clock() + ABORT_GRACE_S
                    elif batch.id is not None:
                        tg.start_soon(partial(self._cancel_remote, batch, aborting=True))


def _closed(why: str) -> FleetClosedError:
    return FleetClosedError(f"the fleet closed {why}; this call was not answered. Submit it again")


def _result_error(batch: _Batch, call: _Call, exc: Exception) -> BaseException:
    err = BatchResultError(
        f"could not get this call's result ({type(exc).__name__}: {exc})",
        batch_id=batch.id or "?",
        custom_id=call.custom_id,
    )
    err.__cause__ = exc
    return err


def _backend_clock() -> Callable[[], float]:
    """``anyio.current_time`` of the running backend, as one function found once.

    anyio finds the backend on every read; the fleet reads the clock a few times per call,
    so it asks anyio once which loop runs and keeps that loop's own clock.
    """
    token = anyio.lowlevel.current_token()
    native = token.native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return native.time  # what anyio's asyncio backend reads
    trio = sys.modules.get("trio")
    if trio is not None and isinstance(native, trio.lowlevel.TrioToken):
        # What trio.current_time() reads, without its two lookups (a MockClock too).
        clock: Callable[[], float] = trio.lowlevel.current_clock().current_time
        return clock
    return token.backend_class.current_time


@asynccontextmanager
async def _run(fleet: FleetDispatcher) -> AsyncIterator[FleetDispatcher]:
    if fleet._entered:
        raise RuntimeError("a FleetDispatcher can be entered once; make a new one")
    fleet._entered = True
    fleet._clock = _backend_clock()
    fleet._idle = idle = anyio.Event()
    fleet._new_event = type(idle)  # the running backend's Event class: one per batched call
    fleet._reconcile_lock = anyio.Lock()
    send, receive = anyio.create_memory_object_stream[_Call](math.inf)
    body_error: BaseException | None = None
    board = fleet._board = StatusBoard(
        fleet.provider, fleet._budget, fleet.policy, fleet._count, fleet._provider_error
    )
    background = anyio.CancelScope()

    async def run_background(*, task_status: TaskStatus[None]) -> None:
        # The status board and the deadline timers: they serve the batches and calls in
        # flight, and stop once the last one is done.
        with background:
            async with anyio.create_task_group() as inner:
                await inner.start(board.run)
                await inner.start(fleet._timers.run)
                task_status.started()

    async with anyio.create_task_group() as tg:
        fleet._tg = tg
        fleet._send = send
        fleet._receive = receive
        await tg.start(run_background)
        await tg.start(fleet._flusher, receive)
        fleet._state = "open"
        try:
            yield fleet
        except BaseException as exc:
            # Exit by exception or outer cancellation: abort, and re-raise the body's own
            # exception after the task group, so it is not wrapped in an ExceptionGroup.
            body_error = exc
            await fleet._abort("because the `async with` block raised")
            tg.cancel_scope.cancel()
        else:
            fleet._close()
            with anyio.move_on_after(
                math.inf if fleet._drain_timeout is None else fleet._drain_timeout
            ):
                await idle.wait()
            if not idle.is_set():
                logger.warning("drain timeout: cancelling %d batches", len(fleet._batches))
                await fleet._abort("after drain_timeout_ms")
                tg.cancel_scope.cancel()
            # Every batch has ended: the board and the timers have nothing left to serve.
            background.cancel()
    if body_error is not None:
        try:
            raise body_error
        finally:
            body_error = None
    # Every caller's outcome is in its slot, but the callers woken by the last results have
    # not run yet. One checkpoint lets them run before the code after `async with` does, so
    # "the block returns when every caller has its outcome" holds for what callers record.
    await anyio.lowlevel.checkpoint()


# -- open_fleet(broker=...): one fleet across processes (src/llmfleet/broker/) -------------
@overload
def open_fleet(
    client: Any,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    broker: None = None,
) -> AbstractAsyncContextManager[FleetDispatcher]: ...
@overload
def open_fleet(
    client: Any,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    broker: str,
    broker_name: str = "default",
    lease_ttl_ms: int = 10_000,
    broker_timeout_ms: int = 30_000,
) -> AbstractAsyncContextManager[BrokeredFleet]: ...


# -- end open_fleet(broker=...) overloads --------------------------------------------------


def open_fleet(
    client: Any,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    broker: str | None = None,
    **broker_options: Any,
) -> AbstractAsyncContextManager[FleetDispatcher] | AbstractAsyncContextManager[BrokeredFleet]:
    """Open a fleet over ``client``: an async context manager yielding a :class:`FleetDispatcher`.

    The fleet owns a task group (the flusher and one task per in-flight batch) that lives as
    long as the ``async with`` block. On normal exit new calls are refused, the queue is
    flushed at once (reason ``drain``) and the block returns when every caller has its
    outcome. On exit by exception or cancellation, queued callers get
    :class:`~llmfleet.FleetClosedError`, in-flight batches are cancelled with the provider
    (shielded, bounded by a few seconds), and the body's exception propagates as itself.

    :param client: ``anthropic.AsyncAnthropic`` or any :class:`~llmfleet.providers.Provider`.
    :param policy: routing and flushing rules (:class:`~llmfleet.RoutingPolicy`).
    :param drain_timeout_ms: on normal exit, wait at most this long for in-flight batches;
        then cancel them with the provider and fail their callers with ``FleetClosedError``.
        ``None`` (default) waits for every batch to end.
    :param prices: the price table for cost figures (default: list prices).
    :param on_result: called with a :class:`~llmfleet.ResultEvent` as each call ends.
    :param broker: a Redis URL (``"redis://host:6379/0"``, needs ``llmfleet[redis]``): the
        fleet spans every process that opens it there (see the README, "One fleet across
        processes"); it yields a :class:`~llmfleet.broker.BrokeredFleet`. Its options:
        ``broker_name`` (fleets sharing one Redis), ``lease_ttl_ms`` (how soon a dead
        leader's work is taken over), ``broker_timeout_ms`` (how long calls wait for an
        unreachable Redis before :class:`~llmfleet.BrokerError`).
    :raises TypeError: no adapter knows this client.
    """
    # -- open_fleet(broker=...) -----------------------------------------------------------
    if broker is not None:
        from .broker import open_broker_fleet

        return open_broker_fleet(
            client,
            broker=broker,
            policy=policy,
            drain_timeout_ms=drain_timeout_ms,
            prices=prices,
            on_result=on_result,
            **broker_options,
        )
    if broker_options:
        raise TypeError(f"{', '.join(sorted(broker_options))}: only with open_fleet(broker=...)")
    # -- end open_fleet(broker=...) -------------------------------------------------------
    fleet = FleetDispatcher(
        client,
        policy=policy,
        drain_timeout_ms=drain_timeout_ms,
        prices=prices,
        on_result=on_result,
    )
    return _run(fleet)
