"""One batch-route call's life: its states, the moves between them, and its outcome slot.

A call is made by ``submit``, waits in the queue, travels in a batch and ends with an outcome
in its slot (docs/design.md §1, §5). Its caller waits on ``done`` and nothing else. The
moves a call may make are a table; a move not in it is a bug in the fleet, and
:meth:`Call.move` raises :class:`IllegalTransitionError` rather than let the call's
bookkeeping (queue counts, a batch's live callers) go wrong quietly.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import TYPE_CHECKING, Any, Final, final

from ._stats import ResultEvent, Route
from .pricing import Cost, TokenUsage

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    import anyio

    from ._batch import Batch
    from ._stats import FleetStats, OnResult, Outcome
    from ._wake import Wake
    from .pricing import PriceTable
    from .providers import Provider

__all__ = [
    "Call",
    "CallState",
    "IllegalTransitionError",
    "Outcomes",
    "illegal_move",
]

logger = logging.getLogger("llmfleet")


class CallState(enum.IntEnum):
    """Where a batch-route call is in its life."""

    #: Sent to the flusher, not yet in its queue.
    NEW = 0
    #: In the flusher's queue.
    QUEUED = 1
    #: In a batch (being created, or in flight).
    SENT = 2
    #: Near its deadline, it left the queue or its batch for the direct route (§8).
    ESCALATED = 3
    #: Its caller has an outcome. Final.
    DONE = 4
    #: Its caller left (cancelled); any result that comes is dropped. Final.
    GONE = 5


NEW: Final = CallState.NEW
QUEUED: Final = CallState.QUEUED
SENT: Final = CallState.SENT
ESCALATED: Final = CallState.ESCALATED
DONE: Final = CallState.DONE
GONE: Final = CallState.GONE

#: The moves a call may make. DONE from NEW or QUEUED: failed by its deadline
#: (``deadline_action="fail"``) or by the fleet aborting before it was flushed.
TRANSITIONS: Final[dict[CallState, frozenset[CallState]]] = {
    NEW: frozenset({QUEUED, ESCALATED, DONE, GONE}),
    QUEUED: frozenset({SENT, ESCALATED, DONE, GONE}),
    SENT: frozenset({ESCALATED, DONE, GONE}),
    ESCALATED: frozenset({DONE, GONE}),
    DONE: frozenset(),
    GONE: frozenset(),
}
# The same table as one bit mask per state, so a checked move costs a shift and an index.
_ALLOWED: Final[tuple[int, ...]] = tuple(
    sum(1 << target for target in TRANSITIONS[state]) for state in CallState
)
#: States in which a call still waits for an answer (in the queue or a batch).
PENDING: Final = frozenset({NEW, QUEUED, SENT})

_INF: Final = math.inf
_BATCH: Final = Route.BATCH

# What a finished call's params are replaced with, so that nothing keeps them alive.
_RELEASED: Final[dict[str, Any]] = {}


class IllegalTransitionError(AssertionError):
    """A call was moved between two states the lifecycle does not connect: a fleet bug."""


def illegal_move(call: Call, to: CallState) -> IllegalTransitionError:
    """The error for moving ``call`` to ``to`` when the lifecycle has no such move.

    The three moves every batched call makes (NEW -> QUEUED, QUEUED -> SENT, SENT -> DONE)
    are checked inline where they happen, against their one legal source state (as strict
    as the table, without a call per item); they raise this. Every other move goes through
    :meth:`Call.move`.
    """
    return IllegalTransitionError(
        f"call {call.custom_id}: {call.state.name} -> {to.name} is not a lifecycle move"
    )


@final
class Call:
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
        "jkey",
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
        done: Wake,
    ) -> None:
        self.custom_id = custom_id
        # The caller's params, for the direct route if the call escalates (sent as they are
        # then, like any direct call), and the provider's prepared snapshot for the batch.
        self.params = params
        self.request = request
        self.size = size
        self.model = model
        self.arrival = 0.0
        self.state = NEW
        self.batch: Batch | None = None
        self.done = done
        self.value: Any = None
        self.error: BaseException | None = None
        # docs/design.md §8: the caller's deadline, the latest flush that can still meet
        # it, and the scope of its escalated direct call.
        self.deadline = math.inf
        self.flush_by = math.inf
        self.escalation: anyio.CancelScope | None = None
        self.key: Hashable = None
        # Its stable key in the fleet's journal (llmfleet/journal), when the fleet has one.
        self.jkey: str | None = None

    def move(self, to: CallState) -> None:
        """Move to ``to``; :class:`IllegalTransitionError` if the lifecycle has no such move."""
        if not _ALLOWED[self.state] >> to & 1:
            raise illegal_move(self, to)
        self.state = to

    def release(self) -> None:
        """Let go of what the call no longer needs: it may outlive its caller in a batch or
        in the deadline timers, and must keep no request or result alive through them."""
        self.value = self.error = self.request = None
        self.params = _RELEASED

    def __repr__(self) -> str:
        return f"<Call {self.custom_id} {self.state.name}>"


@final
class Outcomes:
    """Hands calls their outcome: counts it in the stats and tells the ``on_result`` hook."""

    __slots__ = ("_clock", "_on_result", "_prices", "_provider", "_stats", "_tokens_of")

    def __init__(
        self,
        stats: FleetStats,
        provider: Provider,
        prices: PriceTable,
        on_result: OnResult | None,
        clock: Callable[[], float],
    ) -> None:
        self._stats = stats
        self._provider = provider
        # Found once: every result is counted with it.
        self._tokens_of = provider.tokens_of
        self._prices = prices
        self._on_result = on_result
        self._clock = clock

    def set_clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def record(
        self,
        route: Route,
        outcome: Outcome,
        model: str,
        start: float,
        value: Any,
        *,
        call: Call | None = None,
        deadline: float | None = None,
    ) -> None:
        """Count one call's outcome in the stats, and tell the hook if there is one.

        O(1) and cheap: tokens are summed per model and priced only when the stats are read.

        :param deadline: the deadline of a call that has no :class:`Call` (a flex call's).
        """
        now = self._clock()
        wait = now - start
        tokens = None if value is None else self._provider.tokens_of(value)
        hit = None
        if call is not None:
            deadline = call.deadline
        if deadline is not None and deadline != math.inf and outcome != "withdrawn":
            # Budget hit rate per route (docs/design.md §8): answered by the deadline or not.
            hit = now <= deadline
        self._stats._outcome(route, outcome, model, wait, tokens, hit)
        if self._on_result is not None:
            self._tell(route, outcome, model, wait, tokens, call)

    def _tell(
        self,
        route: Route,
        outcome: Outcome,
        model: str,
        wait: float,
        tokens: tuple[int, int, int, int] | None,
        call: Call | None,
    ) -> None:
        assert self._on_result is not None
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
            else self._prices.cost(
                model, usage, batch=route is Route.BATCH, flex=route is Route.FLEX
            ),
        )
        try:
            self._on_result(event)
        except Exception:
            # A metrics hook must not break the fleet; say so loudly, once per failure.
            logger.exception("on_result hook raised")

    def resolve(
        self,
        call: Call,
        outcome: Outcome,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Give a call in a batch its outcome (nothing if it is no longer in one).

        Every batched call ends here: the move SENT -> DONE is made inline (the guard is its
        check) and the outcome is counted as :meth:`record` would, with no hop through it.
        A result passes its value positionally (a keyword argument costs a Python call a
        third more, on the path of every result).
        """
        if call.state is not SENT:
            return
        call.state = DONE
        call.value = value
        call.error = error
        batch = call.batch
        if batch is not None:
            batch.live -= 1
        now = self._clock()
        wait = now - call.arrival
        tokens = None if value is None else self._tokens_of(value)
        deadline = call.deadline
        hit = None if deadline == _INF or outcome == "withdrawn" else now <= deadline
        self._stats._outcome(_BATCH, outcome, call.model, wait, tokens, hit)
        if self._on_result is not None:
            self._tell(_BATCH, outcome, call.model, wait, tokens, call)
        call.done.set()

    def fail_pending(self, call: Call, error: BaseException) -> None:
        """Fail a batch-route call taken out of the queue or its batch (deadline, abort)."""
        call.move(DONE)
        call.error = error
        self.record(Route.BATCH, "failed", call.model, call.arrival, None, call=call)
        call.done.set()

    def cost_of(self, model: str, value: Any, *, batch: bool, flex: bool = False) -> Cost | None:
        """What one response cost (``None``: no usage, or no price for its model)."""
        tokens = self._provider.tokens_of(value)
        if tokens is None:
            return None
        return self._prices.cost(model, TokenUsage(*tokens), batch=batch, flex=flex)
