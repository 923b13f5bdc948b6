"""A caller's wake-up: a one-shot flag that one task waits on and the fleet sets once.

Every batched call's caller waits on one (``Call.done``), so a batch of 100,000 results wakes
100,000 tasks. ``anyio.Event`` on trio is an anyio object around a ``trio.Event`` (a set of
waiting tasks, a closure per wait): two layers to pass through on each wait and each set,
and two coroutine frames to resume through on each wake. :func:`wake_factory` gives the
running backend's cheapest equivalent: on trio, :class:`TrioWake` (``_wake_trio``), which
parks the one waiting task itself; on any other backend, ``anyio.Event``. Both keep
``anyio.Event``'s contract, cancellation included: a waiter cancelled while it waits
raises the backend's cancellation and is never woken afterwards, and a ``set()`` then (or
twice) does nothing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Wake", "wake_factory"]


class Wake(Protocol):
    """What a caller waits on: ``anyio.Event``'s ``set``, ``is_set`` and ``wait``, for one
    waiting task."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self) -> Awaitable[None]: ...


def wake_factory() -> Callable[[], Wake]:
    """The running backend's one-shot waiter class (call it for one waiter).

    Found once, when the fleet opens: ``anyio.Event()`` finds the backend on every call.
    """
    native = anyio.lowlevel.current_token().native_token
    trio = sys.modules.get("trio")
    if trio is not None and isinstance(native, trio.lowlevel.TrioToken):
        from ._wake_trio import TrioWake

        return TrioWake
    # The running backend's own Event class, without anyio's look-up per instance.
    event_class: Callable[[], Wake] = type(anyio.Event())
    return event_class
