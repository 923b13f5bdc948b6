"""The fleet: :class:`FleetDispatcher` (docs/design.md §1, §2, §4, §5).

Routing, the flusher, and the fleet's closing and abort live here. One task group holds
the flusher, the status board and the deadline timers, and one task per in-flight batch.
Calls for the batch route travel to the flusher through a memory object stream; each caller
waits on its own :class:`~llmfleet._call.Call` slot and nothing else. :func:`open_fleet`
and the order in which a fleet opens, drains and aborts (the task group itself) are in
``_open``; a call's life is in ``_call``, a batch's in ``_batch``, the create gate in
``_create_gate``, deadlines and escalation in ``_deadlines``; every counter is written by
``_stats``.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, NoReturn, final, overload

import anyio
from typing_extensions import TypeVar

from ._batch import ABORT_GRACE_S, Batch, BatchContext, closed_error
from ._budget import RequestBudget
from ._call import _RELEASED, GONE, NEW, QUEUED, SENT, Call, Outcomes, illegal_move
from ._deadlines import Deadlines
from ._flush import ENVELOPE_BYTES, FlushQueue, FlushReason
from ._policy import RoutingPolicy
from ._stats import FleetStats, OnResult, Route
from ._turns import ReadTurns
from .errors import (
    DeadlineExceededError,
    FleetClosedError,
    FleetUsageError,
    UnbatchableRequestError,
)
from .journal._fleet import FleetJournal
from .pricing import PriceTable
from .providers import ErrorKind, Provider, adapter_for

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Coroutine, Hashable, Mapping
    from types import TracebackType

    from anthropic import AsyncAnthropic
    from anthropic.types import Message
    from anyio.abc import TaskGroup, TaskStatus
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    # Optional dependencies: their types only, for type checkers (never imported at run time).
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

    from ._stats import Outcome
    from ._wake import Wake
    from .journal import FlushRecord, Journal
    from .providers.bedrock import BedrockClient

__all__ = ["FleetDispatcher"]

#: What a fleet's calls return: the SDK's own type for the client it was made with
#: (``anthropic.types.Message`` for ``AsyncAnthropic`` and ``BedrockClient``, ``ChatCompletion
#: | Response`` for ``AsyncOpenAI``), ``Any`` for any other provider. For type checkers only:
#: nothing checks or converts it at run time (docs/design.md §1).
R_co = TypeVar("R_co", covariant=True, default=Any)

logger = logging.getLogger("llmfleet")

_NUMBER: Final = (int, float)
#: The SDK timeout of a flex call at least (OpenAI suggests 15 minutes for flex, §B).
FLEX_TIMEOUT_S: Final = 900.0


@final
class FleetDispatcher(Generic[R_co]):
    """Routes each call direct or into a pooled batch, and hands every caller its own outcome.

    Use it as ``async with FleetDispatcher(client, policy=...) as fleet:``, which is
    :func:`open_fleet` in class form. See :func:`open_fleet` for the parameters.

    Generic in what its calls return, for type checkers: ``FleetDispatcher[Message]`` over an
    ``AsyncAnthropic`` or a ``BedrockClient``, ``FleetDispatcher[ChatCompletion | Response]``
    over an ``AsyncOpenAI``, ``FleetDispatcher[Any]`` over any other provider.
    """

    # The response type follows the client's type (typing only: one __init__ runs).
    @overload
    def __init__(
        self: FleetDispatcher[Message],
        client: AsyncAnthropic | BedrockClient,
        *,
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: FleetDispatcher[ChatCompletion | Response],
        client: AsyncOpenAI,
        *,
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: FleetDispatcher[Any],
        client: Any,
        *,
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
    ) -> None: ...
    def __init__(
        self,
        client: Any,
        *,
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
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
        # The running backend's clock, looked up once when the fleet opens (_open; anyio's
        # current_time() finds the backend on every read, which costs more than the rest of a
        # direct call).
        self._clock: Callable[[], float] = anyio.current_time
        # Each batched caller's waiter (_wake): _open keeps the running backend's cheapest.
        self._new_event: Callable[[], Wake] = anyio.Event
        self._outcomes = Outcomes(
            self._stats, self.provider, self._prices, on_result, anyio.current_time
        )
        self._deadlines = Deadlines(
            policy, self.provider, self._stats, self._outcomes, self._detach
        )
        # The direct route's own estimator, kept at hand for its hot path.
        self._direct_latency = self._deadlines.direct_latency
        # The provider's flex tier, if it has one (docs/design.md §2.3).
        self._supports_flex: Callable[[Mapping[str, Any]], bool] | None = (
            getattr(self.provider, "supports_flex", None)
            if callable(getattr(self.provider, "call_flex", None))
            else None
        )
        self._max_size = min(policy.batch_max_size, self.provider.max_batch_requests)
        # A provider may refuse batches below a size (Bedrock: 100 records a job): the queue
        # then waits for that many calls (or its window), and a smaller flush goes direct.
        self._min_batch = max(1, int(getattr(self.provider, "min_batch_requests", 1)))
        if self._min_batch > self._max_size:
            logger.warning(
                "%s batches hold at least %d calls but batch_max_size allows %d: every batched "
                "call will go by the direct route; raise batch_max_size",
                self.provider.name,
                self._min_batch,
                self._max_size,
            )
        # One queue per batch key: a provider whose batches must not mix some requests (an
        # OpenAI batch file holds one endpoint and model) gives each kind its own queue, each
        # under the §4 rule. Most providers have one key.
        self._queues: dict[Hashable, FlushQueue[Call]] = {}
        self._batch_key: Callable[[Mapping[str, Any]], Hashable] | None = getattr(
            self.provider, "batch_key", None
        )
        self._send: MemoryObjectSendStream[Call] | None = None
        self._receive: MemoryObjectReceiveStream[Call] | None = None
        self._flusher_done = False
        self._tg: TaskGroup | None = None
        self._state = "new"  # new -> open -> closed (-> aborted)
        self._entered = False
        self._batches: set[Batch] = set()
        self._room: anyio.Event | None = None
        # The flusher's wait for the next call, and whether its next flush takes every
        # queued call at once (_send_queue_now).
        self._flusher_wait: anyio.CancelScope | None = None
        self._send_now = False
        self._idle: anyio.Event | None = None  # made in _open: an Event needs a running loop
        # custom_ids are opaque: a random fleet tag and a counter, never the request content.
        # 128 random bits, so that no two fleets anywhere share custom_ids: an adapter that
        # derives a create's idempotency token from them (Bedrock) must never be answered
        # with another fleet's batch (docs/design.md §4.4). 3 + 32 + 1 characters leave a
        # counter of up to 28 digits within the 64 a custom_id may have.
        self._tag = secrets.token_hex(16)
        self._ids = itertools.count(1)
        self._stack: AsyncExitStack | None = None
        # What every batch shares (the board, the create gate): made in _open.
        self._ctx: BatchContext | None = None
        # The durable record of batches and results (llmfleet/journal), if any.
        self._journal = None if journal is None else FleetJournal.of(journal, self.provider)

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

    async def submit(
        self,
        *,
        latency_budget_ms: float | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> R_co:
        """Make one create call, by whichever route its budget allows (docs/design.md §2).

        Takes exactly the keyword arguments of the SDK's create call and returns exactly what
        it returns (``anthropic.types.Message``; typed so, see the class), whichever route ran.

        :param latency_budget_ms: how long the caller can wait. ``None`` or at most
            ``policy.sync_max_latency_ms``: the direct route; up to
            ``policy.flex_max_latency_ms``, where the provider offers a flex tier for the
            request: the flex route (docs/design.md §2.3); longer: the batch route.
        :param idempotency_key: with a journal, the call's stable key (else a hash of its
            params): a batched call whose result the journal holds is answered from it.
            Not sent to the provider; ignored on the direct and flex routes.
        :raises ValueError: a negative budget; an ``idempotency_key`` already in flight.
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
        flex_max = self.policy.flex_max_latency_ms
        if flex_max is not None and latency_budget_ms <= flex_max and self._flex_ok(params):
            # Too tight for a batch, loose enough for a slow answer at the batch price
            # (docs/design.md §2.3).
            flexed: R_co = await self._flex(params, budget)
            return flexed
        if self.policy.deadline_action == "wait":
            # The seed's behaviour: the budget only chooses the route (and is kept for the
            # hit-rate figures).
            # (Typed R_co here: the provider answers with the client's own type.)
            batched: R_co = await self._submit_batch(params, budget, None, idempotency_key)
            return batched
        model = self.provider.model_of(params)
        turnaround = self._deadlines.turnaround.estimate(model)
        if turnaround is not None and budget < turnaround:
            # Even a batch flushed now would likely end after the deadline (docs/design.md
            # §8): the flex tier if the model has one (same price as the batch), else direct.
            self._stats._routed_by_deadline()
            if flex_max is not None and self._flex_ok(params):
                flexed = await self._flex(params, budget)
                return flexed
            return await self._direct(params)
        batched = await self._submit_batch(params, budget, turnaround, idempotency_key, model=model)
        return batched

    def _flex_ok(self, params: dict[str, Any]) -> bool:
        supports = self._supports_flex
        return supports is not None and supports(params)

    async def _flex(self, params: dict[str, Any], budget: float) -> Any:
        """The flex route (docs/design.md §2.3): the provider's flex tier, falling back to its
        standard tier (the direct route) on a refusal, or in time for the budget when the
        flex answer is late (``deadline_action="escalate"``; ``"fail"`` raises
        :class:`~llmfleet.DeadlineExceededError` at the deadline; ``"wait"`` waits)."""
        if self._state != "open":
            self._check_open()
        provider: Any = self.provider
        provider.check(params)
        model = provider.model_of(params)
        policy = self.policy
        action = policy.deadline_action
        if action == "escalate":
            # Cut off early enough for a standard call to answer by the deadline, as an
            # escalation is (docs/design.md §8).
            direct = self._direct_latency.estimate(model) or 0.0
            cutoff = budget - direct - policy.escalation_margin_ms / 1000
            if cutoff <= 0:
                # No time left for a flex answer at all: the standard tier, now.
                return await self._direct(params)
        else:
            cutoff = budget if action == "fail" else math.inf
        stats = self._stats
        stats._flex_started()
        clock = self._clock
        start = clock()
        deadline = start + budget
        # The SDK's own timeout must not end the call before the fleet would: flex answers
        # are slow (OpenAI suggests 15 minutes).
        timeout = max(FLEX_TIMEOUT_S, cutoff + 1.0) if cutoff != math.inf else FLEX_TIMEOUT_S
        outcomes = self._outcomes
        reason: str
        with anyio.move_on_after(cutoff) as scope:
            try:
                value = await provider.call_flex(params, sdk_timeout=timeout)
            except Exception as exc:
                info = provider.classify(exc)
                if info is None:
                    # Not a provider error: a bug, not a reason to pay the standard price.
                    outcomes.record(Route.FLEX, "failed", model, start, None, deadline=deadline)
                    raise
                if info.kind is ErrorKind.RATE_LIMITED:
                    unavailable = getattr(provider, "flex_unavailable", None)
                    reason = (
                        "unavailable"
                        if unavailable is not None and unavailable(exc)
                        else "rate_limited"
                    )
                else:
                    reason = "error"
                logger.debug("flex call failed (%s: %s): the standard tier", reason, exc)
            except BaseException:
                if not scope.cancel_called:
                    # The caller left (or the fleet aborts): nothing more to send.
                    outcomes.record(Route.FLEX, "withdrawn", model, start, None)
                raise
            else:
                outcomes.record(Route.FLEX, "succeeded", model, start, value, deadline=deadline)
                return value
        if scope.cancelled_caught:
            if action == "fail":
                outcomes.record(Route.FLEX, "failed", model, start, None, deadline=deadline)
                raise DeadlineExceededError(
                    f"no flex answer within the latency budget ({budget * 1000:.0f} ms); use a "
                    "longer budget, deadline_action='escalate', or submit_sync()"
                )
            reason = "deadline"
            logger.debug("flex call cut off at %.3f s: the standard tier", clock() - start)
        stats._flex_fallback(reason)
        return await self._flex_fallback(params, model, start, deadline)

    async def _flex_fallback(
        self, params: dict[str, Any], model: str, start: float, deadline: float
    ) -> Any:
        """The standard tier for a flex call that failed or ran late: answered on the direct
        route (its wait counted from the flex call's start), its cost in
        ``stats.flex_fallback_cost`` as well."""
        outcomes = self._outcomes
        provider = self.provider
        clock = self._clock
        began = clock()
        try:
            value = await provider.call(params)
        except Exception as exc:
            info = provider.classify(exc)
            errored = info is not None and info.kind is not ErrorKind.CONNECTION
            outcome: Outcome = "errored" if errored else "failed"
            outcomes.record(Route.DIRECT, outcome, model, start, None, deadline=deadline)
            raise
        except BaseException:
            outcomes.record(Route.DIRECT, "withdrawn", model, start, None)
            raise
        self._direct_latency.observe(model, clock() - began)
        outcomes.record(Route.DIRECT, "succeeded", model, start, value, deadline=deadline)
        self._stats._flex_fallback_answered(outcomes.cost_of(model, value, batch=False))
        return value

    @overload
    def client(
        self: FleetDispatcher[Message], *, latency_budget_ms: float | None = None
    ) -> AsyncAnthropic: ...
    @overload
    def client(
        self: FleetDispatcher[ChatCompletion | Response], *, latency_budget_ms: float | None = None
    ) -> AsyncOpenAI: ...
    @overload
    def client(self, *, latency_budget_ms: float | None = None) -> Any: ...
    def client(self, *, latency_budget_ms: float | None = None) -> Any:
        """An SDK client whose create calls go through this fleet (docs/design.md §12).

        A real ``AsyncAnthropic`` (or ``AsyncOpenAI``, as the fleet's own client is), a copy
        of the fleet's client over a :class:`~llmfleet.FleetTransport`: hand it to code or a
        framework that takes a client. ``messages.create`` (``chat.completions.create``,
        ``responses.create``) and their streams are fleet calls, routed by the call's budget:
        its ``llmfleet-latency-budget-ms`` header, else :func:`~llmfleet.latency_budget`,
        else ``latency_budget_ms`` here; none means the direct route. Every other request
        goes to the provider unchanged. Use it while the fleet is open. The client never
        retries (the fleet's own client retries the direct route).

        :param latency_budget_ms: the budget of a call that names none.
        :raises FleetUsageError: the fleet is over another provider (Bedrock, a custom one).
        """
        from ._transport import fleet_client

        return fleet_client(self, latency_budget_ms)

    def submit_sync(self, **params: Any) -> Coroutine[Any, Any, R_co]:
        """Make the call on the direct route, now. Same arguments and result as the SDK's
        (``await fleet.submit_sync(...)``)."""
        # The direct route's own coroutine, not one awaiting it: a frame less to resume at
        # every suspension of the HTTP call.
        return self._direct(params)

    async def _direct(self, params: dict[str, Any]) -> R_co:
        # The hot path of the direct route: one clock read before and after, and the
        # bookkeeping of Outcomes.record without its generality. Keep it lean: the fleet's
        # own cost per direct call is budgeted at about 2 µs (benchmarks/bench_direct.py).
        if self._state != "open":
            self._check_open()
        provider = self.provider
        provider.check(params)
        stats = self._stats
        stats._direct_started()
        model = provider.model_of(params)
        clock = self._clock
        start = clock()
        try:
            value: R_co = await provider.call(params)
        except Exception as exc:
            info = provider.classify(exc)
            errored = info is not None and info.kind is not ErrorKind.CONNECTION
            outcome: Outcome = "errored" if errored else "failed"
            self._outcomes.record(Route.DIRECT, outcome, model, start, None)
            raise
        except BaseException:
            # Cancelled, possibly wrapped: trio's connect raises a group of Cancelled when
            # cancelled mid-connect, and the HTTP stack passes it on as it is.
            self._outcomes.record(Route.DIRECT, "withdrawn", model, start, None)
            raise
        if self._on_result is not None:
            self._direct_latency.observe(model, clock() - start)
            self._outcomes.record(Route.DIRECT, "succeeded", model, start, value)
            return value
        took = clock() - start
        self._direct_latency.observe(model, took)
        # No deadline and no hook to tell: the outcome is counted with no hop through
        # Outcomes.record.
        stats._outcome(Route.DIRECT, "succeeded", model, took, provider.tokens_of(value), None)
        return value

    async def submit_batch(self, *, idempotency_key: str | None = None, **params: Any) -> R_co:
        """Put the call in the next batch and wait for its result, however long it takes.
        Same arguments and result as the SDK's create call (``idempotency_key``: see
        :meth:`submit`)."""
        batched: R_co = await self._submit_batch(params, None, None, idempotency_key)
        return batched

    async def _submit_arrived(
        self, params: dict[str, Any], *, arrival: float, budget_ms: float | None
    ) -> Any:
        """A batch-route call that arrived at ``arrival`` (this fleet's clock, at or before
        now) rather than now: the broker's leader serving a call another process submitted
        (docs/design.md §9.3). Its window (§4) and its deadline (§8) count from its arrival;
        its budget routes as :meth:`submit` routes what is left of it.

        :param budget_ms: the caller's whole latency budget, or ``None`` (``submit_batch``).
        """
        now = self._clock()
        arrival = min(arrival, now)
        if budget_ms is None or self.policy.deadline_action == "wait":
            return await self._submit_batch(params, None, None, arrival=arrival)
        left_ms = budget_ms - (now - arrival) * 1000
        if left_ms <= self.policy.sync_max_latency_ms:
            return await self._direct(params)
        model = self.provider.model_of(params)
        turnaround = self._deadlines.turnaround.estimate(model)
        if turnaround is not None and left_ms / 1000 < turnaround:
            self._stats._routed_by_deadline()
            return await self._direct(params)
        return await self._submit_batch(
            params, budget_ms / 1000, turnaround, arrival=arrival, model=model
        )

    async def _submit_batch(
        self,
        params: dict[str, Any],
        budget: float | None,
        turnaround: float | None,
        idempotency_key: str | None = None,
        *,
        arrival: float | None = None,
        model: str | None = None,
    ) -> Any:
        # model: provider.model_of(params), when the caller has it already (submit does).
        if self._state != "open":
            self._check_open()
        provider = self.provider
        custom_id, size, request = self._prepared(params)
        journal = self._journal
        jkey = None
        if journal is not None:
            # Answered from the journal if its result is stored (after its re-attached
            # batch, if it is in one, has stored it).
            jkey, stored = await journal.lookup(params, idempotency_key)
            if stored is not None:
                self._stats._from_journal(stored.kind == "succeeded")
                return journal.answer(stored)
            self._check_open()
        if model is None:
            model = provider.model_of(params)
        call = Call(custom_id, params, request, size, model, self._new_event())
        call.jkey = jkey
        if self._batch_key is not None:
            call.key = self._batch_key(params)
        # Counted as queued once there is room; nothing awaits between the count and the
        # send below, so nobody sees the one without the other.
        if not self._stats._enqueue(self.policy.max_queued):
            await self._room_for_one()
        assert self._send is not None
        call.arrival = now = self._clock() if arrival is None else arrival
        if budget is not None:
            self._deadlines.promise(call, now + budget, turnaround)
        self._send.send_nowait(call)
        if journal is not None and jkey is not None:
            with journal.hold(jkey):
                return await self._wait(call)
        # The hot path: _wait's body, inline (one coroutine frame less per batched call).
        try:
            await call.done.wait()
        except BaseException:
            self._abandon(call)
            raise
        value, error = call.value, call.error
        # As Call.release(), inline.
        call.value = call.error = call.request = None
        call.params = _RELEASED
        if error is not None:
            raise error
        return value

    def _prepared(self, params: dict[str, Any]) -> tuple[str, int, Any]:
        """A batch-route call's ``custom_id``, and its request as the adapter prepared it
        (its size, and the request): what every way into the queue does first.

        :raises UnbatchableRequestError: the request cannot go in a batch.
        """
        provider = self.provider
        provider.check(params)
        custom_id = f"lf_{self._tag}_{next(self._ids)}"
        size, request = provider.prepare(custom_id, params)
        if size + ENVELOPE_BYTES > provider.max_batch_bytes:
            # An adapter refuses such a request in prepare(); one whose measure and limit
            # disagree must still not take the flusher down with it: the call fails alone.
            raise UnbatchableRequestError(
                f"the request is {size:,} bytes, more than a {provider.name} batch body can "
                f"hold ({provider.max_batch_bytes:,} bytes): make it smaller, or send it with "
                "submit_sync()"
            )
        return custom_id, size, request

    async def _room_for_one(self) -> None:
        """Wait until the queue has room for one more call, then count it as queued. For a
        caller whose ``_enqueue`` found the queue full (the path with room costs no await)."""
        stats = self._stats
        while True:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
            self._check_open()
            if stats._enqueue(self.policy.max_queued):
                return

    async def _wait(self, call: Call) -> Any:
        # The inline wait of _submit_batch, for a call held in the journal.
        try:
            await call.done.wait()
        except BaseException:
            self._abandon(call)
            raise
        value, error = call.value, call.error
        call.release()
        if error is not None:
            raise error
        return value

    def _results_as_json(self) -> None:
        """``llmfleet run``'s: every batch result read from now on comes as the provider's
        JSON where the adapter can give it (``raw_results``), not as the SDK's object. Only
        for a fleet whose batch callers only store and write their values (the run's
        :meth:`_enqueue_batch` callbacks): a caller of :meth:`submit` would get a dict.
        The journal stores that JSON as it is; ``tokens_of`` reads it."""
        assert self._ctx is not None, "the fleet is open"
        self._ctx.raw_results = True

    def _unsent(self) -> int:
        """Batch-route calls whose request the fleet still holds to send: queued, or in a
        batch being made."""
        assert self._ctx is not None, "the fleet is open"
        return self._stats.queued + self._ctx.making

    async def _unsent_below(self, limit: int) -> None:
        """``llmfleet run``'s: wait until :meth:`_unsent` is below ``limit``. The count falls
        as batches are made (and as queued calls leave), so a reader that waits here before
        queueing holds the requests of at most ``limit`` lines at once (docs/journal.md)."""
        ctx = self._ctx
        assert ctx is not None, "the fleet is open"
        while self._unsent() >= limit and ctx.making:
            if ctx.made is None:
                ctx.made = anyio.Event()
            await ctx.made.wait()

    def _send_queue_now(self) -> None:
        """``llmfleet run``'s, at the input's end: every call queued (or sent to the queue
        already) goes now, whatever its batch's size or window. The run's last line carries
        its window over with it, but a last line refused at once carries nothing, and the
        lines before it waited out the window."""
        self._send_now = True
        if self._flusher_wait is not None:
            self._flusher_wait.cancel()

    def _one_results_stream(self) -> None:
        """``llmfleet run``'s: from now on, one batch's results are read at a time, of those
        that ended the one made first (llmfleet/_turns.py)."""
        assert self._ctx is not None, "the fleet is open"
        self._ctx.read_turns = ReadTurns()

    async def _enqueue_batch(
        self,
        params: dict[str, Any],
        idempotency_key: str,
        then: _Then,
        *,
        arrival: float | None = None,
        model: str | None = None,
    ) -> None:
        """``llmfleet run``'s entry point (llmfleet/journal/_run.py; docs/journal.md, "llmfleet
        run at scale"): :meth:`submit_batch` without a waiting caller. Returns once the call
        is queued (after waiting for room in the queue, as a caller does); the fleet then
        calls ``then.answered(value, None)`` or ``then.answered(None, error)`` once, from its
        own task, when the call has its outcome, and lets go of the call. So a million lines
        cost no task each.

        Only for a journaled fleet with a ``deadline_action="wait"`` policy, and a call whose
        key is neither stored nor in a re-attached batch (``FleetJournal.answers``: such a call
        is answered by :meth:`submit_batch`, which may wait) and that no other call of this
        fleet has: the key is not held as a caller's is (``FleetJournal.hold``), a hold that
        would cost every held line a set entry, since the run's keys are unique already
        (each names its line's custom_id, which the run checks is unique). ``arrival``: as in
        :meth:`_submit_arrived`; ``model``: as in :meth:`_submit_batch`. A call refused at once
        raises, as :meth:`submit_batch` does.
        """
        self._check_open()
        journal = self._journal
        assert journal is not None
        provider = self.provider
        custom_id, size, request = self._prepared(params)
        jkey = journal.key_of(params, idempotency_key)
        # A Call waits on anything with the Event's set(): here, ``then`` (duck-typed).
        if model is None:
            model = provider.model_of(params)
        call = Call(custom_id, params, request, size, model, then)  # type: ignore[arg-type]
        then.call = call
        call.jkey = jkey
        if self._batch_key is not None:
            call.key = self._batch_key(params)
        if self._min_batch <= 1:
            # No flush goes direct and no deadline escalates it: nothing will send its
            # params, only its prepared request (a queued line holds no params dict).
            call.params = _RELEASED
        if not self._stats._enqueue(self.policy.max_queued):
            await self._room_for_one()
        assert self._send is not None
        call.arrival = self._clock() if arrival is None else min(arrival, self._clock())
        self._send.send_nowait(call)

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> FleetDispatcher[R_co]:
        # _open runs this class (and open_fleet makes it): imported here, not at the top.
        from ._open import run_dispatcher

        stack = AsyncExitStack()
        await stack.enter_async_context(run_dispatcher(self))
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

    if not TYPE_CHECKING:
        # At run time only, so that type checkers still flag a plain `with` as an error.

        def __enter__(self) -> NoReturn:
            raise FleetUsageError(
                "FleetDispatcher is an async context manager: use `async with "
                "FleetDispatcher(client) as fleet:` in an async function (or `async with "
                "open_fleet(client) as fleet:`), and call fleet.submit(...) inside the block"
            )

        def __exit__(self, *exc_info: object) -> None:  # never reached: __enter__ raises
            pass

    def _check_open(self) -> None:
        if self._state != "open":
            raise FleetClosedError(
                "the fleet is not open yet: use it as `async with open_fleet(...) as fleet:`"
                if self._state == "new"
                else "the fleet is closed: submit calls inside `async with open_fleet(...)`"
            )

    # -- the flusher --------------------------------------------------------------------

    async def _flusher(
        self, receive: MemoryObjectReceiveStream[Call], *, task_status: TaskStatus[None]
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
                    with anyio.CancelScope(
                        deadline=math.inf if deadline is None else deadline
                    ) as self._flusher_wait:
                        self._accept(await receive.receive())
                except anyio.EndOfStream:
                    break
                finally:
                    self._flusher_wait = None
                # Take every call already sent before deciding, so a burst submitted in one
                # tick lands in as few batches as the limits allow (G6).
                while True:
                    try:
                        self._accept(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                drain, self._send_now = self._send_now, False
                self._flush(self._clock(), drain=drain)
        # Every send clone is closed: the fleet is closing. Flush what is left
        # (docs/design.md §5).
        self._flush(self._clock(), drain=True)
        self._flusher_done = True
        self._check_idle()

    def _accept(self, call: Call) -> None:
        # NEW -> QUEUED inline: the guard is its check (a call that left already is skipped).
        if call.state is NEW:
            call.state = QUEUED
            queue = self._queues.get(call.key)
            if queue is None:
                policy = self.policy
                queue = self._queues[call.key] = FlushQueue(
                    # At least the provider's minimum (see __init__), at most a full batch.
                    min_size=min(max(policy.batch_min_size, self._min_batch), self._max_size),
                    max_size=self._max_size,
                    window=policy.batch_window_ms / 1000,
                    max_bytes=self.provider.max_batch_bytes,
                )
            queue.push(call)

    def _flush(self, now: float, *, drain: bool = False) -> None:
        for queue in self._queues.values():
            for calls, reason in queue.take(now, drain=drain):
                self._start_batch(calls, reason)

    def _start_batch(
        self,
        calls: list[Call],
        reason: FlushReason | Literal["reattach"],
        *,
        batch_id: str | None = None,
        flush: FlushRecord | None = None,
    ) -> None:
        """Start the task of one batch of queued calls; with ``batch_id``, of a batch the
        provider already has (it is not created again); with ``flush`` too, of a batch an
        earlier fleet journaled, re-attached (its results answer its calls' keys when they
        are submitted). A new flush smaller than the provider's smallest batch goes by the
        direct route instead (``min_batch_requests``)."""
        if len(calls) < self._min_batch and batch_id is None:
            self._stats._below_min_batch(len(calls))
            self._make_room()
            self._deadlines.send_direct(calls, reason, self._min_batch)
            return
        ctx = self._ctx
        assert ctx is not None
        assert self._tg is not None
        batch = Batch(ctx, calls, reason, batch_id=batch_id, flush=flush)
        for call in calls:
            # QUEUED -> SENT, checked inline against its one legal source state.
            if call.state is not QUEUED:
                raise illegal_move(call, SENT)
            call.state = SENT
            call.batch = batch
            if call.deadline == math.inf:
                # Nothing sends its params now (only an escalation would): the batch holds
                # its prepared request.
                call.params = _RELEASED
        if flush is None:
            self._stats._flushed(reason, len(calls))
        else:
            self._stats._reattached()
            logger.info("re-attached batch %s from the journal", batch_id)
        self._batches.add(batch)
        logger.debug("flush: %d calls (reason %s)", len(calls), reason)
        self._make_room()
        self._tg.start_soon(batch.run, name=f"llmfleet batch ({len(calls)} calls)")

    def _make_room(self) -> None:
        room = self._room
        if room is not None and self._stats._queue_below(self.policy.max_queued):
            self._room = None
            room.set()

    def _batch_ended(self, batch: Batch) -> None:
        self._batches.discard(batch)
        self._check_idle()

    def _check_idle(self) -> None:
        if self._flusher_done and not self._batches and self._idle is not None:
            self._idle.set()

    # -- callers leaving ----------------------------------------------------------------

    def _abandon(self, call: Call) -> None:
        """The caller of ``call`` was cancelled: withdraw it, or drop its coming result."""
        if not self._deadlines.abandoned(call) and self._detach(call):
            call.move(GONE)
            self._outcomes.record(
                Route.BATCH, "withdrawn", call.model, call.arrival, None, call=call
            )
        call.release()  # nothing will send it now

    def _detach(self, call: Call) -> bool:
        """Take a pending call out of the queue or its batch (whose result it will then
        drop); a batch left with no live caller is cancelled. False if it was not pending.
        The caller moves the call out of its pending state at once."""
        state = call.state
        if state == NEW or state == QUEUED:
            if state == QUEUED:
                self._queues[call.key].withdraw(call)
            self._stats._dequeued()
            self._make_room()
            return True
        if state == SENT:
            batch = call.batch
            assert batch is not None
            batch.caller_left()
            return True
        return False

    # -- shutdown -----------------------------------------------------------------------

    def _close(self) -> None:
        """Refuse new calls; the flusher drains the queue and exits (docs/design.md §5,
        normal exit)."""
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
        self._deadlines.tg = None  # no new escalation
        if self._ctx is not None:
            self._ctx.aborting = True
        # Calls sent to the flusher but not yet taken into its queue count as queued too.
        if self._receive is not None:
            while True:
                try:
                    self._accept(self._receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
        for key, queue in self._queues.items():
            for call in list(queue):
                self._queues[key].withdraw(call)
                self._stats._dequeued()
                self._outcomes.fail_pending(call, closed_error(why))
        with anyio.move_on_after(ABORT_GRACE_S, shield=True):
            async with anyio.create_task_group() as tg:
                for batch in list(self._batches):
                    if batch.abort(why):
                        tg.start_soon(partial(batch.cancel_remote, aborting=True))


class _Then:
    """What a :meth:`FleetDispatcher._enqueue_batch` call waits on, made by its user as a
    subclass that says what to do in :meth:`answered` (one object a line: a held line of a
    large run costs no second one). set() (as the fleet sets a caller's Event) lets go of
    the call, then calls :meth:`answered`."""

    __slots__ = ("call",)

    def __init__(self) -> None:
        self.call: Call | None = None

    def set(self) -> None:
        call = self.call
        if call is None:  # set once only
            return
        value, error = call.value, call.error
        call.release()
        try:
            # The call is still :attr:`call` meanwhile (its key, for one: release() keeps it).
            self.answered(value, error)
        finally:
            self.call = None

    def answered(self, value: Any, error: BaseException | None) -> None:
        """The call's outcome, once: its value, or its error."""
        raise NotImplementedError
