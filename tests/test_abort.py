"""The fleet inside a task group that also holds its callers: the root cause always leaves.

The shape users write (docs/design.md §5): one outer trio nursery or anyio task group holds
both the callers and the fleet. When the ``async with open_fleet`` body raises, the callers
fail with :class:`FleetClosedError`, which cancels the outer group while the fleet's exit is
still cleaning up. Whatever that cancellation does, the body's exception must reach the user,
and a real cancellation from outside must still cancel. Each case is played over several
orders (callers raising before or after the fleet aborts, batches queued, in flight or being
created), repeated so trio's randomised scheduling and asyncio's task order both vary.
"""

from __future__ import annotations

import math
import sys
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import anyio
import pytest
import trio

from llmfleet import BatchSubmitError, FleetClosedError, RoutingPolicy, open_fleet
from llmfleet.providers import ErrorKind

from fakes import FakeError, FakeMessage, FakeProvider, request, text_of

if sys.version_info < (3, 11):  # anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

# Flushes after 1 s or at 3 queued calls.
POLICY = RoutingPolicy(
    sync_max_latency_ms=5_000,
    batch_window_ms=1_000,
    batch_min_size=3,
    batch_max_size=10,
    poll_interval_ms=1_000,
)
BUDGET_MS = 600_000  # the batch route

# When the body raises: before any caller ran, with every call queued, with a batch in flight
# (and more queued), or while a slow create is being answered.
When = Literal["at_once", "queued", "in_flight", "mid_create"]
WHENS: tuple[When, ...] = ("at_once", "queued", "in_flight", "mid_create")
BODY_DELAY: dict[When, float] = {"at_once": 0.0, "queued": 0.5, "in_flight": 2.5, "mid_create": 1.5}


class AgentCrashed(RuntimeError):
    """The body's own failure, distinct from anything the fleet raises."""


def _outer_group(kind: str) -> AbstractAsyncContextManager[Any]:
    """An anyio task group, or (on trio) a bare trio nursery: both have ``start_soon``."""
    if kind == "trio_nursery":
        return trio.open_nursery()
    return anyio.create_task_group()


def _only(error: BaseException, kind: type[BaseException]) -> list[BaseException]:
    """The leaves of ``error`` (a group or not) that are ``kind``; asserts no other kind of leaf
    than ``kind`` or FleetClosedError is there (no Cancelled leaks out)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(error)
    strays = [e for e in leaves if not isinstance(e, (kind, FleetClosedError))]
    assert strays == [], f"unexpected exceptions left the outer group: {strays!r}"
    return [e for e in leaves if isinstance(e, kind)]


def _group_kinds(anyio_backend: Any) -> list[str]:
    backend = anyio_backend[0] if isinstance(anyio_backend, tuple) else anyio_backend
    return ["anyio", "trio_nursery"] if backend == "trio" else ["anyio"]


@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.parametrize("when", WHENS)
@pytest.mark.parametrize("callers", [1, 4])
async def test_body_exception_reaches_the_user_through_the_outer_group(
    anyio_backend: Any, callers: int, when: When, attempt: int
) -> None:
    for group in _group_kinds(anyio_backend):
        await _body_raises(group, callers, when, attempt)


async def _body_raises(group: str, callers: int, when: When, attempt: int) -> None:
    async def slow_create(reqs: list[tuple[str, dict[str, Any]]]) -> None:
        await anyio.sleep(1.0)

    fake = FakeProvider(turnaround=100.0, on_create=slow_create if when == "mid_create" else None)
    crash = AgentCrashed("agent crashed")
    fleet: Any = None

    async def run() -> None:
        nonlocal fleet
        async with _outer_group(group) as outer:
            async with open_fleet(fake, policy=POLICY) as fleet:
                submit = partial(fleet.submit, latency_budget_ms=BUDGET_MS)
                # Vary the order the callers and the body reach their first checkpoint.
                for i in range(callers):
                    outer.start_soon(partial(submit, **request(f"t{i}")))
                    if attempt == 1:
                        await anyio.lowlevel.checkpoint()
                if when == "in_flight":
                    await anyio.sleep(2.0)  # the window flushed them: a batch in flight
                    outer.start_soon(partial(submit, **request("late")))
                    await anyio.sleep(BODY_DELAY[when] - 2.0)
                else:
                    await anyio.sleep(BODY_DELAY[when])
                if attempt == 2:
                    await anyio.lowlevel.checkpoint()
                raise crash

    t0 = anyio.current_time()
    with pytest.raises(BaseException) as excinfo:  # noqa: PT011 - inspected below
        await run()
    crashes = _only(excinfo.value, AgentCrashed)
    assert crashes == [crash], f"{group}: the body's exception was lost: {excinfo.value!r}"
    # Bounded: the abort does not wait for the batches (turnaround 100 s) to end.
    assert anyio.current_time() - t0 < 10.0
    stats = fleet.stats
    assert (stats.queued, stats.in_flight_batches, stats.succeeded) == (0, 0, 0)
    if when in ("in_flight", "mid_create"):
        # The batches nobody will wait for were cancelled at the provider, not left running.
        assert fake.batches
        assert sorted(bid for _, bid in fake.cancels) == sorted(fake.batches)


@pytest.mark.parametrize("attempt", range(3))
async def test_body_exception_stays_itself_without_an_outer_group(
    anyio_backend: Any, attempt: int
) -> None:
    # The same abort with callers that catch their own errors: the body's exception leaves
    # `async with open_fleet` as itself, not wrapped in a group.
    fake = FakeProvider(turnaround=100.0)
    out: dict[str, BaseException] = {}

    async def caller(fleet: Any, text: str) -> None:
        try:
            await fleet.submit(latency_budget_ms=BUDGET_MS, **request(text))
        except FleetClosedError as exc:
            out[text] = exc

    crash = AgentCrashed("agent crashed")

    async def run(outer: Any) -> None:
        async with open_fleet(fake, policy=POLICY) as fleet:
            for text in "abcd":
                outer.start_soon(caller, fleet, text)
            await anyio.sleep(0.5 + attempt)
            raise crash

    async with anyio.create_task_group() as outer:
        with pytest.raises(AgentCrashed) as excinfo:
            await run(outer)
    assert excinfo.value is crash
    assert sorted(out) == list("abcd")


@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.parametrize("callers", [1, 5])
async def test_callers_in_the_outer_group_and_a_normal_exit(
    anyio_backend: Any, callers: int, attempt: int
) -> None:
    fake = FakeProvider(turnaround=10.0)
    results: dict[str, Any] = {}

    async def caller(fleet: Any, text: str) -> None:
        results[text] = await fleet.submit(latency_budget_ms=BUDGET_MS, **request(text))

    t0 = anyio.current_time()
    after_fleet = math.nan
    async with anyio.create_task_group() as outer:
        async with open_fleet(fake, policy=POLICY) as fleet:
            for i in range(callers):
                outer.start_soon(caller, fleet, f"t{i}")
            # Let the callers submit (a caller that first runs after the exit is refused).
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(0.25 * attempt)
        after_fleet = anyio.current_time()
        # The block returned once every caller had its outcome.
        assert sorted(results) == sorted(f"t{i}" for i in range(callers))
    assert all(isinstance(v, FakeMessage) and v.text == k for k, v in results.items())
    assert fleet.stats.succeeded == callers
    # Flushed at the drain (or at size) and waited for: one batch turnaround.
    assert after_fleet - t0 >= 10.0
    assert fake.cancels == []


@pytest.mark.parametrize("attempt", range(3))
async def test_a_caller_failing_during_the_drain_reaches_the_user(
    anyio_backend: Any, attempt: int
) -> None:
    # Body exits normally; during the drain one batch is refused, its caller's
    # BatchSubmitError cancels the outer group, which cancels the drain. The refusal (the
    # root cause) reaches the user, the other batch is cancelled at the provider, and no
    # Cancelled leaks out.
    def on_create(reqs: list[tuple[str, dict[str, Any]]]) -> None:
        if any(text_of(p) == "refused" for _, p in reqs):
            raise FakeError(ErrorKind.FATAL, "refused")

    fake = FakeProvider(turnaround=100.0, on_create=on_create)
    policy = RoutingPolicy(batch_window_ms=1_000, batch_min_size=1, batch_max_size=1)
    fleet: Any = None

    async def run() -> None:
        nonlocal fleet
        async with anyio.create_task_group() as outer:
            async with open_fleet(fake, policy=policy) as fleet:
                outer.start_soon(
                    partial(fleet.submit, latency_budget_ms=BUDGET_MS, **request("ok"))
                )
                await anyio.sleep(0.5 * attempt)
                outer.start_soon(
                    partial(fleet.submit, latency_budget_ms=BUDGET_MS, **request("refused"))
                )
                await anyio.wait_all_tasks_blocked()

    t0 = anyio.current_time()
    with pytest.raises(BaseExceptionGroup) as excinfo:
        await run()
    [refused] = _only(excinfo.value, BatchSubmitError)
    assert "refused" in str(refused)
    assert anyio.current_time() - t0 < 10.0
    # The batch that was accepted is not left running for nobody.
    assert [bid for _, bid in fake.cancels] == ["fakebatch_1"]
    assert (fleet.stats.in_flight_batches, fleet.stats.queued) == (0, 0)


async def _cancel_outer_from_outside(
    *, during: Literal["body", "drain", "shielded_body_raises"], attempt: int
) -> tuple[anyio.CancelScope, list[str], FakeProvider, Any, float]:
    fake = FakeProvider(turnaround=100.0)
    ran_after: list[str] = []
    t0 = anyio.current_time()
    fleet: Any = None
    with anyio.move_on_after(5.0) as scope:
        async with anyio.create_task_group() as outer:
            async with open_fleet(fake, policy=POLICY) as fleet:
                for text in "abcd":
                    outer.start_soon(
                        partial(fleet.submit, latency_budget_ms=BUDGET_MS, **request(text))
                    )
                await anyio.sleep(2.0 + 0.25 * attempt)  # a batch in flight
                if during == "body":
                    await anyio.sleep_forever()
                elif during == "shielded_body_raises":
                    with anyio.CancelScope(shield=True):
                        await anyio.sleep(5.0)
                    raise AgentCrashed("crashed after the outer deadline")
            # Normal exit: the drain waits for the batch (100 s) when the deadline strikes.
            ran_after.append("after open_fleet")
        ran_after.append("after the outer group")
    return scope, ran_after, fake, fleet, anyio.current_time() - t0


@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.parametrize("during", ["body", "drain"])
async def test_outer_cancellation_from_outside_still_cancels(
    anyio_backend: Any, during: Literal["body", "drain"], attempt: int
) -> None:
    scope, ran_after, fake, fleet, took = await _cancel_outer_from_outside(
        during=during, attempt=attempt
    )
    # The cancellation was not swallowed: nothing after `async with open_fleet` ran, and the
    # outer scope caught its own cancellation.
    assert scope.cancelled_caught
    assert ran_after == []
    assert took == 5.0
    assert [bid for _, bid in fake.cancels] == ["fakebatch_1"]
    stats = fleet.stats
    assert (stats.queued, stats.in_flight_batches) == (0, 0)
    assert stats.withdrawn + stats.failed == 4


@pytest.mark.parametrize("attempt", range(2))
async def test_body_exception_raised_after_the_outer_deadline_is_not_swallowed(
    anyio_backend: Any, attempt: int
) -> None:
    # The outer deadline passes while the body is shielded, then the body raises: the
    # exception leaves the cancelled outer scope (a scope only swallows Cancelled).
    with pytest.raises(BaseException) as excinfo:  # noqa: PT011 - inspected below
        await _cancel_outer_from_outside(during="shielded_body_raises", attempt=attempt)
    assert len(_only(excinfo.value, AgentCrashed)) == 1


async def test_abort_still_runs_when_body_is_cancelled_by_its_own_scope(
    anyio_backend: Any,
) -> None:
    # A cancellation that the body's own scope catches leaves open_fleet as Cancelled and is
    # caught there: the fleet aborted, and the code after the scope runs.
    fake = FakeProvider(turnaround=100.0)
    with anyio.move_on_after(3.0) as scope:
        async with open_fleet(fake, policy=POLICY) as fleet:
            async with anyio.create_task_group() as inner:
                for text in "abc":
                    inner.start_soon(
                        partial(fleet.submit, latency_budget_ms=BUDGET_MS, **request(text))
                    )
    assert scope.cancelled_caught
    assert [bid for _, bid in fake.cancels] == ["fakebatch_1"]
    assert fleet.closed
