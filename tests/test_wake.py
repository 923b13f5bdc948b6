"""The one-shot waiter a batched caller waits on (``_wake``), on both backends: set before
the wait, the wait then set, cancelled while it waits, and set twice."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from llmfleet._wake import Wake, wake_factory


async def test_the_backend_gets_its_own_waiter(anyio_backend_name: str) -> None:
    wake = wake_factory()()
    expected = "TrioWake" if anyio_backend_name == "trio" else "Event"
    assert type(wake).__name__ == expected


async def test_set_before_wait_returns_at_once() -> None:
    wake = wake_factory()()
    wake.set()
    assert wake.is_set()
    with anyio.fail_after(1):
        await wake.wait()


async def test_set_before_wait_still_checkpoints() -> None:
    # As anyio.Event: waiting on a set waiter is a checkpoint, so a cancelled task raises.
    wake = wake_factory()()
    wake.set()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await wake.wait()
        pytest.fail("a cancelled waiter went on")
    assert scope.cancelled_caught


async def test_wait_then_set_wakes_the_waiter() -> None:
    wake = wake_factory()()
    woken: list[str] = []

    async def waiter() -> None:
        await wake.wait()
        woken.append("woken")

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert not woken
        assert not wake.is_set()
        wake.set()
        wake.set()  # a second set does nothing
    assert woken == ["woken"]
    assert wake.is_set()


async def test_cancelled_waiter_raises_and_a_later_set_wakes_nobody() -> None:
    wake = wake_factory()()
    outcome: list[str] = []

    async def waiter(scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await wake.wait()
            except anyio.get_cancelled_exc_class():
                outcome.append("cancelled")
                raise
            outcome.append("woken")  # pragma: no cover - the test fails if reached
        # Still in its task: a set() now must not reschedule it into a sleep it left.
        await anyio.sleep(1)
        outcome.append("slept")

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, scope)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert outcome == ["cancelled"]
        wake.set()  # nobody waits now: a no-op (trio would fail on a stray reschedule)
    assert outcome == ["cancelled", "slept"]
    assert wake.is_set()


async def test_set_then_cancel_before_it_runs() -> None:
    # A waiter set first is woken with its result; the cancellation that came after reaches
    # it at its next checkpoint (as with anyio.Event: nothing lost, nothing hangs).
    wake = wake_factory()()
    got: list[str] = []

    async def waiter(scope: anyio.CancelScope) -> None:
        with scope:
            await wake.wait()
            got.append("woken")
            await anyio.lowlevel.checkpoint()
            got.append("not cancelled")  # pragma: no cover

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, scope)
        await anyio.wait_all_tasks_blocked()
        wake.set()
        scope.cancel()
    assert got == ["woken"]


async def test_many_waiters_each_on_their_own() -> None:
    make = wake_factory()
    wakes: list[Wake] = [make() for _ in range(50)]
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await wakes[i].wait()
        woken.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(waiter, i)
        await anyio.wait_all_tasks_blocked()
        for i in range(0, 50, 2):
            wakes[i].set()
        await anyio.wait_all_tasks_blocked()
        assert sorted(woken) == list(range(0, 50, 2))
        for i in range(1, 50, 2):
            wakes[i].set()
    assert sorted(woken) == list(range(50))
