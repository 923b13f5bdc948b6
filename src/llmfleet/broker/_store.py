"""The durable batch record in Redis: a flush is written BEFORE its create is sent and gets its
batch id after, so a leader that dies never makes a successor bill the same calls twice.

The record has the shape of the journal's store protocol (``src/llmfleet/journal/_store.py``:
intent, created, void, results, finished, load); a call's key is its fleet-wide call id, and
each call also names the stream entry it came in and the process waiting for it. Results are
"recorded" by delivering them (:meth:`RedisBatchStore.deliver`): the origin's results stream is
itself durable, and the delivery removes the call from the pending list in the same step.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from .._budget import RequestBudget
from ._redis import BROKER_DOWN, GROUP

if TYPE_CHECKING:
    import coredis

    from ._redis import Keys, Scripts

__all__ = [
    "LEADER_LOST",
    "FlushRecord",
    "Lease",
    "NotLeadingError",
    "RedisBatchStore",
    "StoredCall",
]

#: How long a result waits in a process's results stream for a reader (a dead process's
#: results are never read: they expire).
RESULT_TTL_MS: Final = 24 * 3600 * 1000
_SEQ: Final = itertools.count()


class NotLeadingError(Exception):
    """This process's lease is gone: a successor owns the fleet's batches now."""


#: What ends a leader's term: its lease refused, or Redis failing.
LEADER_LOST: Final[tuple[type[BaseException], ...]] = (NotLeadingError, *BROKER_DOWN)


@final
class Lease:
    """The lease this process holds, if any: its value (fencing token and name) and whether
    the process still acts as the leader."""

    __slots__ = ("active", "value")

    def __init__(self) -> None:
        self.value = ""
        self.active = False


@final
@dataclass(frozen=True, slots=True)
class StoredCall:
    """One call of a flush: the custom_id it was sent with, its fleet-wide key (call id), the
    calls-stream entry it came in, and the process waiting for it."""

    custom_id: str
    call_id: str
    entry_id: str
    origin: str


@final
@dataclass(slots=True)
class FlushRecord:
    """One flush: recorded before its create, given its batch id after."""

    flush_id: str
    created_after: float
    calls: list[StoredCall] = field(default_factory=list)
    batch_id: str | None = None
    tag: str = ""

    def dumps(self) -> str:
        return json.dumps(
            {
                "flush_id": self.flush_id,
                "tag": self.tag,
                "batch_id": self.batch_id,
                "created_after": self.created_after,
                "calls": [[c.custom_id, c.call_id, c.entry_id, c.origin] for c in self.calls],
            }
        )

    @classmethod
    def loads(cls, text: str) -> FlushRecord:
        data = json.loads(text)
        return cls(
            flush_id=data["flush_id"],
            tag=data.get("tag", ""),
            batch_id=data["batch_id"],
            created_after=data["created_after"],
            calls=[StoredCall(*row) for row in data["calls"]],
        )


@final
class RedisBatchStore:
    """The leader's writes, each fenced by its lease."""

    def __init__(self, redis: coredis.Redis[str], keys: Keys, scripts: Scripts, lease: Lease):
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self.lease = lease

    def _refused(self) -> NotLeadingError:
        self.lease.active = False
        return NotLeadingError("the lease was lost: a successor leads the fleet")

    async def load(self) -> list[FlushRecord]:
        """Every open flush (intent without an id, or created and not finished)."""
        rows = await self._redis.hgetall(self._keys.flushes)
        return sorted((FlushRecord.loads(v) for v in rows.values()), key=lambda f: f.flush_id)

    async def known_batch_ids(self) -> set[str]:
        """Batch ids the fleet recorded in the last day (never adopted by a reconcile)."""
        return set(await self._redis.zrange(self._keys.batch_ids, 0, -1))

    async def _put(self, flush: FlushRecord) -> None:
        done: Any = await self._scripts.put_flush(
            keys=[self._keys.lease, self._keys.flushes, self._keys.batch_ids],
            args=[
                self.lease.value,
                flush.flush_id,
                flush.dumps(),
                flush.batch_id or "",
                int(time.time() * 1000),
            ],
        )
        if done != 1:
            raise self._refused()

    async def record_intent(self, flush: FlushRecord) -> None:
        """Before the create is sent."""
        await self._put(flush)

    async def record_created(self, flush: FlushRecord, batch_id: str) -> None:
        flush.batch_id = batch_id
        await self._put(flush)

    async def _drop(self, flush_id: str) -> None:
        done: Any = await self._scripts.drop_flush(
            keys=[self._keys.lease, self._keys.flushes], args=[self.lease.value, flush_id]
        )
        if done != 1:
            raise self._refused()

    async def record_void(self, flush_id: str) -> None:
        """The create was refused, or a reconcile found no batch: nothing was billed."""
        await self._drop(flush_id)

    async def record_finished(self, flush_id: str) -> None:
        """Every call of the flush has its outcome delivered."""
        await self._drop(flush_id)

    async def deliver(self, call: StoredCall | tuple[str, str, str], payload: str) -> bool:
        """Send a call's outcome to its origin and take it off the pending list, once.

        :param call: the call, or ``(call_id, entry_id, origin)``.
        :param payload: the encoded outcome; ``""`` only takes the call off the list (its
            caller left).
        :return: False if it was already answered.
        """
        if isinstance(call, StoredCall):
            call_id, entry_id, origin = call.call_id, call.entry_id, call.origin
        else:
            call_id, entry_id, origin = call
        done: Any = await self._scripts.deliver(
            keys=[self._keys.lease, self._keys.calls, self._keys.results(origin)],
            args=[self.lease.value, GROUP, entry_id, call_id, payload, RESULT_TTL_MS],
        )
        if done == -1:
            raise self._refused()
        return bool(done == 1)

    async def check(self) -> None:
        """Raise :class:`NotLeadingError` unless the lease is still ours."""
        if not self.lease.active:
            raise NotLeadingError("this process no longer leads the fleet")
        done: Any = await self._scripts.fenced(keys=[self._keys.lease], args=[self.lease.value])
        if done != 1:
            raise self._refused()

    async def take_slot(self, per_minute: int | None) -> None:
        """Wait for a slot in the fleet-wide request budget (the last minute's requests of
        every leader, kept in Redis, so a new leader does not burst). Fenced: only the
        lease's holder takes slots, so its budget is the fleet's."""
        if per_minute is None:
            return
        while True:
            now_ms = int(time.time() * 1000)
            member = f"{now_ms}:{self.lease.value}:{next(_SEQ)}"
            wait_ms: Any = await self._scripts.take_slot(
                keys=[self._keys.lease, self._keys.requests],
                args=[self.lease.value, now_ms, per_minute, member],
            )
            if wait_ms == 0:
                return
            if wait_ms == -1:
                raise self._refused()
            await anyio.sleep(min(float(wait_ms) / 1000, RequestBudget.WINDOW_S))
