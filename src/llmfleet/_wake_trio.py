"""The one-shot waiter on trio (see ``_wake``); imported only when trio runs the fleet."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, final

import outcome
import trio
import trio.lowlevel
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Coroutine, Generator

__all__ = ["TrioWake"]

# Its state once set (else the waiting task, or None).
_SET: Final = object()


@final
class _Woken(outcome.Outcome[None]):
    """What a woken waiter's ``wait_task_rescheduled`` returns: ``None``, as the
    ``Value(None)`` that ``reschedule`` makes by default, but one shared instance that may be
    unwrapped any number of times (a ``Value`` is single-use: building one and marking it
    used cost a third of the rest of a wake)."""

    __slots__ = ()

    def unwrap(self) -> None:
        return None

    def send(self, gen: Generator[Any, None, object]) -> Any:
        return gen.send(None)

    async def asend(self, agen: AsyncGenerator[Any, None]) -> Any:
        return await agen.asend(None)

    def __repr__(self) -> str:
        return "Value(None)"


_WOKEN: Final = _Woken()


@final
class TrioWake:
    """``trio.Event`` for one waiting task, holding that task itself.

    Its one slot says where it is: ``None`` (not set, nobody waits), the waiting
    :class:`~trio.lowlevel.Task`, or set. ``set()`` reschedules the waiting task directly; a
    waiter cancelled while it waits empties the slot first (its abort), so a later ``set()``
    wakes nobody, and trio raises ``Cancelled`` in the waiter, as ``trio.Event.wait`` does.
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        # None, a trio.lowlevel.Task or _SET (Any: set() passes it on unchecked, on the
        # path of every batched result).
        self._state: Any = None

    def is_set(self) -> bool:
        return self._state is _SET

    def set(self) -> None:
        task = self._state
        if task is _SET:
            return
        self._state = _SET
        if task is not None:
            reschedule(task, _WOKEN)

    def wait(self) -> Coroutine[Any, Any, None]:
        # Not a coroutine function: it hands the caller trio's own wait to await, so a
        # woken caller resumes through one frame less (as trio.Event.wait waits).
        state = self._state
        if state is _SET:
            # As trio.Event.wait: a checkpoint (a cancelled waiter still raises).
            return trio.lowlevel.checkpoint()  # noqa: ASYNC105 - awaited by the caller
        if state is not None:
            raise RuntimeError("a TrioWake has one waiter: another task waits on it already")
        self._state = current_task()
        wait: Coroutine[Any, Any, None] = wait_task_rescheduled(self._abort)  # noqa: ASYNC105 - as above
        return wait

    def _abort(self, _raise_cancel: trio.lowlevel.RaiseCancelT) -> Abort:
        # Cancelled while waiting: nobody waits any more, so set() reschedules nobody (one
        # reschedule per wait: trio raises Cancelled in the task for Abort.SUCCEEDED).
        self._state = None
        return Abort.SUCCEEDED

    def __repr__(self) -> str:
        state = self._state
        where = "set" if state is _SET else "waiting" if state is not None else "unset"
        return f"<TrioWake {where}>"
