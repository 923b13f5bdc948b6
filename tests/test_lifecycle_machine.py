"""The fleet's lifecycle (docs/design.md §4–§5) as a hypothesis state machine, manual trio clock.

Rules submit calls (bursts), cancel callers, advance time, end batches at the provider, make
the next create fail, and close or abort the fleet. After every step the fleet is checked
against a small, independent model of the flush rule and of who must have which outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import trio.testing
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from llmfleet import BatchSubmitError, FleetClosedError, FleetDispatcher, RoutingPolicy
from llmfleet.providers import ErrorKind

from fakes import FakeError, FakeMessage, FakeProvider, request

MIN, MAX, WINDOW = 3, 5, 2.0
POLICY = RoutingPolicy(
    batch_min_size=MIN,
    batch_max_size=MAX,
    batch_window_ms=int(WINDOW * 1000),
    poll_interval_ms=250,
    poll_max_interval_ms=1000,
)


@dataclass
class Caller:
    index: int
    arrival: float
    scope: anyio.CancelScope
    outcomes: list[Any]
    cancel_requested: bool = False


class FleetMachine(RuleBasedStateMachine):
    """Drives one fleet through a generated life; the model lives in plain attributes."""

    def __init__(self) -> None:
        super().__init__()
        # Trio runs the tasks of one tick in a random order; hypothesis must be able to replay
        # an example exactly, so that order is made the same in every run.
        trio_run_module = getattr(trio._core, "_run", None)
        if trio_run_module is not None and hasattr(trio_run_module, "_r"):
            trio_run_module._r.seed(0)
        self.clock = trio.testing.MockClock()
        self.portal_cm = start_blocking_portal("trio", {"clock": self.clock})
        self.portal: BlockingPortal = self.portal_cm.__enter__()
        self.fake = FakeProvider(turnaround=10**9)
        self.fail_next_create = False
        self.fake.on_create = self._on_create
        self.callers: list[Caller] = []
        self.arrived: list[int] = []
        # The model: ids of queued calls in arrival order, and what was flushed so far.
        self.model_queue: list[int] = []
        self.model_flushed: list[int] = []
        self.refused: set[int] = set()
        self.state = "open"
        self.fleet = FleetDispatcher(self.fake, policy=POLICY)
        self.tg_cm = self.portal.wrap_async_context_manager(
            self.portal.call(anyio.create_task_group)
        )
        self.tg = self.tg_cm.__enter__()
        self.fleet_cm = self.portal.wrap_async_context_manager(self.fleet)
        self.fleet_cm.__enter__()

    def _on_create(self, requests: list[tuple[str, dict[str, Any]]]) -> None:
        if self.fail_next_create:
            self.fail_next_create = False
            for _, params in requests:
                self.refused.add(int(params["messages"][0]["content"].removeprefix("c")))
            raise FakeError(ErrorKind.SERVER, "injected 500")

    # -- helpers -------------------------------------------------------------------------

    def now(self) -> float:
        return self.portal.call(anyio.current_time)

    def autojump(self) -> None:
        """Let time run by itself from now on (set in trio's thread, so the clock notices)."""
        self.portal.call(setattr, self.clock, "autojump_threshold", 0)

    def settle(self) -> None:
        self.portal.call(anyio.wait_all_tasks_blocked)

    def run_model(self, now: float) -> None:
        """Flush the model's queue as §4 says, up to ``now`` (deadlines in order)."""
        while self.model_queue:
            oldest = self.callers[self.model_queue[0]].arrival
            if len(self.model_queue) >= MIN or now >= oldest + WINDOW:
                batch, self.model_queue = self.model_queue[:MAX], self.model_queue[MAX:]
                self.model_flushed += batch
            else:
                break

    # -- rules ---------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.settle()

    @precondition(lambda self: self.state == "open")
    @rule(n=st.integers(1, 7))
    def submit(self, n: int) -> None:
        """A burst of ``n`` calls in one tick."""
        now = self.now()
        new = []
        for _ in range(n):
            index = len(self.callers)
            caller = Caller(index, now, self.portal.call(anyio.CancelScope), [])
            self.callers.append(caller)
            new.append(caller)

        def spawn() -> None:
            for caller in new:
                self.tg.start_soon(self._call, caller)

        self.portal.call(spawn)
        self.settle()
        # Trio runs the tasks of one tick in random order: queue them in their real order.
        fresh = {c.index for c in new}
        self.model_queue += [i for i in self.arrived if i in fresh]
        self.run_model(now)

    async def _call(self, caller: Caller) -> None:
        with caller.scope:
            try:
                # submit_batch() queues the call before it first yields: this is arrival order.
                self.arrived.append(caller.index)
                caller.outcomes.append(await self.fleet.submit_batch(**request(f"c{caller.index}")))
            except (BatchSubmitError, FleetClosedError) as exc:
                caller.outcomes.append(exc)
        if caller.scope.cancelled_caught:
            caller.outcomes.append("cancelled")

    @precondition(lambda self: self.state == "open")
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        live = [c for c in self.callers if not c.outcomes and not c.cancel_requested]
        if not live:
            return
        # Drawn independently of the run's state, so hypothesis can always replay the draw.
        caller = live[data.draw(st.integers(0, 10**6)) % len(live)]
        caller.cancel_requested = True
        self.portal.call(caller.scope.cancel)
        self.settle()
        if caller.index in self.model_queue:
            self.model_queue.remove(caller.index)

    @precondition(lambda self: self.state == "open")
    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 1.9, 2.0, 3.0, 7.5]))
    def advance(self, dt: float) -> None:
        # Jump from one window deadline of the model to the next, so each flush happens at
        # its own instant, then to the target.
        target = self.now() + dt
        while (now := self.now()) < target:
            stop = target
            if self.model_queue:
                stop = min(stop, self.callers[self.model_queue[0]].arrival + WINDOW)
            self.portal.call(self.clock.jump, max(stop - now, 0.0))
            self.settle()
            self.run_model(self.now())

    @precondition(lambda self: self.state == "open")
    @rule(data=st.data())
    def complete_batch(self, data: st.DataObject) -> None:
        running = [b for b in self.fake.batches.values() if b.turnaround > 10**8]
        if not running:
            return
        batch = running[data.draw(st.integers(0, 10**6)) % len(running)]
        batch.turnaround = self.now() - batch.created_at
        self.advance(1.0)  # longer than the poll ceiling: the batch's callers are answered

    @precondition(lambda self: self.state == "open")
    @rule()
    def fail_next_batch_create(self) -> None:
        self.fail_next_create = True

    @precondition(lambda self: self.state == "open")
    @rule()
    def close(self) -> None:
        """Normal exit: drain, and every batch ends at the provider soon after."""
        self.fake.turnaround = 0.0
        for batch in self.fake.batches.values():
            batch.turnaround = 0.0
        # Time must run for the batches to end. (A window may run out before the exit
        # drains the queue; either way every queued call is flushed.)
        self.autojump()
        self.fleet_cm.__exit__(None, None, None)
        self.state = "closed"
        self.model_flushed += self.model_queue
        self.model_queue = []

    @precondition(lambda self: self.state == "open")
    @rule()
    def abort(self) -> None:
        """Exit by exception: queued and in-flight callers get FleetClosedError."""
        # No time needs to pass: queued callers are told at once, cancels are shielded.
        # Not suppressed, and not replaced by an ExceptionGroup (which __exit__ would raise).
        suppressed = self.fleet_cm.__exit__(KeyError, KeyError("boom"), None)
        assert not suppressed
        self.state = "aborted"
        self.aborted_queue = list(self.model_queue)
        self.model_queue = []

    @precondition(lambda self: self.state != "open")
    @rule()
    def submit_after_close(self) -> None:
        async def late() -> None:
            with pytest.raises(FleetClosedError, match="closed"):
                await self.fleet.submit_batch(**request("late"))

        self.portal.call(late)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def flushes_match_the_model(self) -> None:
        assert self.fake.sent_ids is not None
        sent = [
            int(p["messages"][0]["content"][1:])
            for b in self.fake.batches.values()
            for _, p in b.requests
        ]
        refused = sorted(self.refused)
        assert sorted(sent + refused) == sorted(set(sent + refused))  # G1: never twice
        assert sorted(sent + refused) == sorted(self.model_flushed)

    @invariant()
    def queue_matches_the_model(self) -> None:
        if self.state == "open":
            assert self.fleet.stats.queued == len(self.model_queue)
            assert len(self.model_queue) < MIN

    @invariant()
    def each_caller_ends_once_and_correctly(self) -> None:
        flushed = set(self.model_flushed)
        for caller in self.callers:
            assert len(caller.outcomes) <= 1
            if not caller.outcomes:
                continue
            outcome = caller.outcomes[0]
            if outcome == "cancelled":
                continue
            if isinstance(outcome, FakeMessage):
                assert outcome.text == f"c{caller.index}"
                assert caller.index in flushed
            elif isinstance(outcome, BatchSubmitError):
                assert caller.index in self.refused
            else:
                assert isinstance(outcome, FleetClosedError)
                assert self.state == "aborted"

    def teardown(self) -> None:
        try:
            if self.state == "open":
                self.close()
            # Nothing hangs: every caller has exactly one outcome once the fleet is closed.
            assert all(len(c.outcomes) == 1 for c in self.callers)
            for caller in self.callers:
                if caller.outcomes[0] == "cancelled":
                    assert caller.cancel_requested or self.state == "aborted"
            # Withdrawn calls never reached the provider.
            sent = {
                int(p["messages"][0]["content"][1:])
                for b in self.fake.batches.values()
                for _, p in b.requests
            }
            for caller in self.callers:
                if caller.outcomes[0] == "cancelled" and caller.index not in sent:
                    assert caller.index not in self.model_flushed
            if self.state == "aborted":
                # In-flight batches were cancelled at the provider.
                cancelled = {bid for _, bid in self.fake.cancels}
                for batch in self.fake.batches.values():
                    if batch.cancelled_at is None and batch.turnaround > 10**8:
                        assert batch.id in cancelled
        finally:
            self.tg_cm.__exit__(None, None, None)
            self.portal_cm.__exit__(None, None, None)


FleetMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    # The explain phase traces every line: minutes for a run like this one under 3.11.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestFleetLifecycle = FleetMachine.TestCase
