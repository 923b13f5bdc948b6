"""Latency budgets as promises: flush in time, and act at the deadline (docs/design.md §8).

A call with a budget gets a deadline. The fleet learns what batches and direct calls take
(per model, :class:`~llmfleet._estimate.Estimator`) and from that: routes a call direct when
no batch could meet its budget, flushes its batch no later than the turnaround allows, and
when the deadline comes with no result either fails the call (``deadline_action="fail"``) or
escalates it to the direct route early enough for a direct call to make it (``"escalate"``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, final

import anyio

from ._batch import closed_error
from ._call import DONE, ESCALATED, GONE, PENDING, Call
from ._estimate import Estimator
from ._stats import Route
from ._timers import Timers
from .errors import DeadlineExceededError
from .providers import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskGroup

    from ._call import Outcomes
    from ._policy import RoutingPolicy
    from ._stats import FleetStats, Outcome
    from .providers import Provider

__all__ = ["TURNAROUND_QUANTILE", "Deadlines"]

logger = logging.getLogger("llmfleet")

#: The turnaround a batch should beat (p90), and the direct latency an escalation allows
#: for (p95).
TURNAROUND_QUANTILE: Final = 0.9
DIRECT_QUANTILE: Final = 0.95


def _alive(call: Call) -> bool:
    return call.state in PENDING


@final
class Deadlines:
    """The estimators, the deadline timers, and the escalations of one fleet.

    :param detach: takes a pending call out of the queue or its batch (it must then move
        out of its pending state at once); false if the call was not pending.
    """

    __slots__ = (
        "_detach",
        "_outcomes",
        "_policy",
        "_provider",
        "_stats",
        "clock",
        "direct_latency",
        "tg",
        "timers",
        "turnaround",
    )

    def __init__(
        self,
        policy: RoutingPolicy,
        provider: Provider,
        stats: FleetStats,
        outcomes: Outcomes,
        detach: Callable[[Call], bool],
    ) -> None:
        self._policy = policy
        self._provider = provider
        self._stats = stats
        self._outcomes = outcomes
        self._detach = detach
        prior = policy.expected_turnaround_ms
        #: What batches and direct calls take, per model, as the fleet sees them.
        self.turnaround = Estimator(
            TURNAROUND_QUANTILE, prior=None if prior is None else prior / 1000
        )
        self.direct_latency = Estimator(DIRECT_QUANTILE)
        self.timers: Timers[Call] = Timers(self.reached, alive=_alive)
        #: The fleet's clock (set once the fleet runs).
        self.clock: Callable[[], float] = anyio.current_time
        #: Where escalations run; ``None`` before the fleet runs and once it aborts.
        self.tg: TaskGroup | None = None

    def promise(self, call: Call, deadline: float, turnaround: float | None) -> None:
        """Make the call's budget a promise: flush it in time, and act at its deadline."""
        call.deadline = deadline
        if turnaround is not None:
            # Flushed no later than this, the batch should end by the deadline (p90).
            call.flush_by = deadline - turnaround
        action = self._policy.deadline_action
        if action == "escalate":
            direct = self.direct_latency.estimate(call.model) or 0.0
            margin = self._policy.escalation_margin_ms / 1000
            self.timers.schedule(max(call.arrival, deadline - direct - margin), call)
        elif action == "fail":
            self.timers.schedule(deadline, call)

    def reached(self, call: Call) -> None:
        """A call's timer fired: fail it or escalate it, if it still waits."""
        if call.state not in PENDING:
            return  # resolved, withdrawn or escalated already
        if self._policy.deadline_action == "fail":
            self._detach(call)
            budget_ms = (call.deadline - call.arrival) * 1000
            error = DeadlineExceededError(
                f"no result within the latency budget ({budget_ms:.0f} ms); use a longer"
                " budget, deadline_action='escalate', or submit_sync()"
            )
            self._outcomes.fail_pending(call, error)
            return
        tg = self.tg
        if tg is None:
            return
        self._detach(call)
        call.move(ESCALATED)
        self._stats._escalated()
        logger.debug("escalating %s to the direct route", call.custom_id)
        tg.start_soon(self.escalate, call, name=f"llmfleet escalation {call.custom_id}")

    def send_direct(self, calls: list[Call], reason: str, minimum: int) -> None:
        """Send a flush smaller than the provider's smallest batch (``min_batch_requests``)
        down the direct route, each call now: its caller cannot wait for more calls (the
        window or a deadline ran out, or the fleet is draining). Each call is then answered
        as an escalated one is (a caller who leaves cancels its direct call, its deadline
        timer does nothing, its direct price counts in ``escalation_cost``), but it is not
        counted as an escalation: the fleet counted it in ``below_min_batch``."""
        tg = self.tg
        assert tg is not None  # the flusher flushes only while the fleet runs
        logger.debug(
            "flush of %d calls (reason %s) is below the provider's minimum of %d: sent direct",
            len(calls),
            reason,
            minimum,
        )
        for call in calls:
            call.move(ESCALATED)
            tg.start_soon(self.escalate, call, name=f"llmfleet direct {call.custom_id}")

    async def escalate(self, call: Call) -> None:
        """Send a call down the direct route for its caller; its batch result is dropped."""
        provider = self._provider
        outcomes = self._outcomes
        start = self.clock()
        with anyio.CancelScope() as scope:
            call.escalation = scope
            try:
                value = await provider.call(call.params)
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    if call.state == ESCALATED:
                        # The fleet is aborting and cancelled this task (a caller who left
                        # moved its call to GONE first): its caller must still hear why.
                        call.move(DONE)
                        call.error = closed_error("while this call's escalated direct call ran")
                        outcomes.record(
                            Route.DIRECT, "failed", call.model, call.arrival, None, call=call
                        )
                        call.done.set()
                    raise
                if call.state == ESCALATED:
                    info = provider.classify(exc)
                    errored = info is not None and info.kind is not ErrorKind.CONNECTION
                    call.move(DONE)
                    call.error = exc
                    outcome: Outcome = "errored" if errored else "failed"
                    outcomes.record(
                        Route.DIRECT, outcome, call.model, call.arrival, None, call=call
                    )
                    call.done.set()
                return
            finally:
                call.escalation = None
        if scope.cancelled_caught or call.state != ESCALATED:
            return
        self.direct_latency.observe(call.model, self.clock() - start)
        call.move(DONE)
        call.value = value
        outcomes.record(Route.DIRECT, "succeeded", call.model, call.arrival, value, call=call)
        self._stats._escalation_answered(outcomes.cost_of(call.model, value, batch=False))
        call.done.set()

    def abandoned(self, call: Call) -> bool:
        """The caller of an escalated call left: stop its direct call. False if the call was
        not escalated."""
        if call.state != ESCALATED:
            return False
        call.move(GONE)
        if call.escalation is not None:
            call.escalation.cancel()
        self._outcomes.record(Route.DIRECT, "withdrawn", call.model, call.arrival, None, call=call)
        return True
