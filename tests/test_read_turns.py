"""ReadTurns (llmfleet/_turns.py): one batch read at a time, the first made first among those
that have ended; a batch not ended yet holds up nobody."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from llmfleet._turns import ReadTurns

pytestmark = pytest.mark.anyio


class FakeBatch:
    """What ReadTurns reads of a batch: whether its task saw it end, and its board watch."""

    def __init__(self, *, ended: bool, seen_ended: bool) -> None:
        self.ended = ended
        self.watch = SimpleNamespace(status=SimpleNamespace(ended=seen_ended))


def batch(*, ended: bool = False, seen_ended: bool = False) -> Any:
    return FakeBatch(ended=ended, seen_ended=seen_ended)


async def test_of_the_batches_that_ended_the_first_made_reads_first_and_alone() -> None:
    turns = ReadTurns()
    first, second, third = batch(), batch(), batch()
    for b in (first, second, third):
        turns.waiting(b)
    # All three seen ended by the board; the third and second ask first.
    for b in (first, second, third):
        b.watch.status.ended = True
    order: list[str] = []

    async def read(b: Any, name: str) -> None:
        async with turns.turn(b):
            order.append(f"{name} in")
            await anyio.sleep(0.01)
            order.append(f"{name} out")

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, third, "third")
        tg.start_soon(read, second, "second")
        await anyio.sleep(0.005)
        tg.start_soon(read, first, "first")
    assert order == ["first in", "first out", "second in", "second out", "third in", "third out"]


async def test_a_batch_that_has_not_ended_holds_up_nobody() -> None:
    turns = ReadTurns()
    slow, quick = batch(), batch(seen_ended=True)
    turns.waiting(slow)
    turns.waiting(quick)
    with anyio.fail_after(1):
        async with turns.turn(quick):
            pass
    # Once a batch leaves (failed, or its callers left), those behind it go on.
    slow.ended = True
    late = batch(ended=True)
    turns.waiting(late)
    entered = anyio.Event()

    async def read_late() -> None:
        async with turns.turn(late):
            entered.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_late)
        await anyio.sleep(0.01)
        assert not entered.is_set()  # the slow batch ended first: it reads first
        turns.left(slow)
        with anyio.fail_after(1):
            await entered.wait()


async def test_a_read_that_broke_off_keeps_its_place() -> None:
    turns = ReadTurns()
    first, second = batch(ended=True), batch(ended=True)
    turns.waiting(first)
    turns.waiting(second)
    with pytest.raises(OSError, match="broke off"):
        async with turns.turn(first):
            raise OSError("stream broke off")
    entered: list[str] = []

    async def read(b: Any, name: str) -> None:
        async with turns.turn(b):
            entered.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, second, "second")
        await anyio.sleep(0.01)
        assert entered == []  # the first batch tries again before it
        tg.start_soon(read, first, "first")
    assert entered == ["first", "second"]
