"""The pure flush rule of DESIGN §4: when queued calls leave the queue, and in which batches.

Nothing here awaits or reads a clock: the dispatcher passes ``now`` in, so the rule is tested
in plain code over generated schedules (G1–G6) and reused unchanged by the real flusher.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, Generic, Literal, Protocol, TypeVar, final

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["FlushQueue", "FlushReason", "Queueable"]

FlushReason = Literal["size", "window", "drain", "deadline"]

#: Bytes of ``{"requests":[`` … ``]}`` around the entries of a batch body.
ENVELOPE_BYTES: Final = 16


class Queueable(Protocol):
    """What the queue needs to know of a call."""

    #: When the call entered the queue (the dispatcher's clock, seconds).
    arrival: float
    #: Bytes the call adds to a batch body (its entry plus a separator).
    size: int


T = TypeVar("T", bound=Queueable)


@final
class FlushQueue(Generic[T]):
    """A FIFO of queued calls and the rule that flushes them.

    A flush is due at the earliest instant the queue is non-empty and either holds
    ``min_size`` live calls (reason ``size``) or its oldest live call has waited ``window``
    seconds (reason ``window``). A flush takes the first ``max_size`` live calls, fewer if the
    next one would push the body past ``max_bytes``, and repeats while a flush is still due.

    Calls withdrawn by their callers are dropped lazily, so withdrawing is O(1).

    :param min_size: live calls that make a flush due at once (>= 1).
    :param max_size: most calls in one batch (>= min_size).
    :param window: seconds a call may wait (>= 0).
    :param max_bytes: most bytes in one batch body; every call's ``size`` must fit alone.
    """

    __slots__ = ("_items", "_live", "_withdrawn", "max_bytes", "max_size", "min_size", "window")

    def __init__(self, *, min_size: int, max_size: int, window: float, max_bytes: int) -> None:
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size
        self.window = window
        self.max_bytes = max_bytes
        self._items: deque[T] = deque()
        # Ids of withdrawn calls still in the deque; they are skipped when reached.
        self._withdrawn: set[int] = set()
        self._live = 0

    def __len__(self) -> int:
        """Live (not withdrawn) calls in the queue."""
        return self._live

    def __iter__(self) -> Iterator[T]:
        """Live calls, oldest first."""
        withdrawn = self._withdrawn
        return (item for item in self._items if id(item) not in withdrawn)

    def push(self, item: T) -> None:
        """Append a call; its ``arrival`` must not precede the last one's."""
        if item.size + ENVELOPE_BYTES > self.max_bytes:
            raise ValueError(f"a call of {item.size} bytes can never fit a batch body")
        self._items.append(item)
        self._live += 1

    def withdraw(self, item: T) -> None:
        """Forget a queued call (its caller left); it will never be flushed."""
        self._withdrawn.add(id(item))
        self._live -= 1
        self._trim()

    def _trim(self) -> None:
        items, withdrawn = self._items, self._withdrawn
        while items and id(items[0]) in withdrawn:
            withdrawn.discard(id(items.popleft()))

    def oldest(self) -> T | None:
        """The oldest live call, or ``None``."""
        return self._items[0] if self._items else None

    def deadline(self) -> float | None:
        """When the window of the oldest live call runs out, or ``None`` if the queue is empty."""
        return self._items[0].arrival + self.window if self._items else None

    def due(self, now: float) -> FlushReason | None:
        """Why a flush is due at ``now``, or ``None``."""
        if self._live >= self.min_size:
            return "size"
        if self._items and now >= self._items[0].arrival + self.window:
            return "window"
        return None

    def pop_batch(self) -> list[T]:
        """Take the next batch: the first ``max_size`` live calls, within ``max_bytes``."""
        items, withdrawn = self._items, self._withdrawn
        batch: list[T] = []
        total = ENVELOPE_BYTES
        while items and len(batch) < self.max_size:
            item = items[0]
            if id(item) in withdrawn:
                withdrawn.discard(id(items.popleft()))
                continue
            if batch and total + item.size > self.max_bytes:
                break
            items.popleft()
            total += item.size
            batch.append(item)
        self._live -= len(batch)
        self._trim()
        return batch

    def take(self, now: float, *, drain: bool = False) -> Iterator[tuple[list[T], FlushReason]]:
        """Every batch due at ``now`` (with ``drain``, every queued call), in FIFO order.

        A generator, so the caller can start each batch before the next is cut.
        """
        while self._live:
            reason: FlushReason | None = "drain" if drain else self.due(now)
            if reason is None:
                return
            yield self.pop_batch(), reason
