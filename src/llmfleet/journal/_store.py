"""The durable batch record: what a store keeps so that a process that dies never makes the
provider bill a flush twice, and its successor re-attaches (docs/journal.md).

This module holds the protocol and its data types only. The SQLite journal
(:mod:`llmfleet.journal._sqlite`) implements it; any other store (Redis, say) may too.

Order of writes, per flush (a batch the fleet sends):

1. :meth:`BatchRecordStore.record_intent` **before** the create is sent: the flush's tag, the
   wall time before the create, and each ``(custom_id, key)`` it carries;
2. then exactly one of :meth:`~BatchRecordStore.record_created` (the provider's batch id) or
   :meth:`~BatchRecordStore.record_void` (the create was refused, or reconciling found no
   batch: nothing was billed);
3. :meth:`~BatchRecordStore.record_results` for each page of results as they stream in,
   before any caller is woken with them;
4. :meth:`~BatchRecordStore.record_finished` once every line of that batch is stored.

A flush that is neither void nor finished is *open*: :meth:`~BatchRecordStore.load` returns
it, and the next fleet on the store re-attaches it (batch id known) or reconciles it (no id)
before it sends anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, final, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "FINAL_KINDS",
    "BatchRecordStore",
    "FlushEntry",
    "FlushRecord",
    "OutcomeKind",
    "StoreState",
    "StoredOutcome",
]

OutcomeKind: TypeAlias = Literal["succeeded", "errored", "expired", "canceled", "missing"]

#: Outcomes that answer a call for good: a call whose stored outcome is one of these is
#: answered from the store and never sent again. ``expired``/``canceled``/``missing`` items
#: were never processed (nor billed), so a later submit of the same call sends it again.
FINAL_KINDS: frozenset[str] = frozenset({"succeeded", "errored"})


@final
@dataclass(frozen=True, slots=True)
class FlushEntry:
    """One call in a flush: the ``custom_id`` it was sent under, its stable key, its model."""

    custom_id: str
    key: str
    model: str = ""


@final
@dataclass(frozen=True, slots=True)
class FlushRecord:
    """A flush as recorded before its create is sent (and as loaded while it is open).

    :param flush_id: the store's name for the flush, made before create.
    :param tag: the tag an adapter that can tag batches puts on the create (OpenAI
        ``metadata``), so that reconciling finds the batch exactly.
    :param created_after: wall time (Unix seconds) taken before the first create attempt:
        a batch this flush made was created at or after it.
    :param entries: the calls it carries.
    :param batch_id: the provider's batch id, once known.
    """

    flush_id: str
    tag: str
    created_after: float
    entries: tuple[FlushEntry, ...]
    batch_id: str | None = None


@final
@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """One call's result as stored: what the provider answered for it.

    :param kind: ``succeeded`` (``value`` holds the response, encoded by the adapter),
        ``errored`` (``error_type``, ``message``), ``expired``, ``canceled``, ``missing``.
    :param batch_id: the batch that answered it; ``custom_id``: its id in that batch.
    """

    kind: OutcomeKind
    value: Any = None
    error_type: str = ""
    message: str = ""
    batch_id: str = ""
    custom_id: str = ""
    #: ``value`` as JSON text, when the journal made it already (a store may keep it as is,
    #: rather than encode ``value`` again).
    encoded: str | None = field(default=None, compare=False, repr=False)

    @property
    def final(self) -> bool:
        """True when this outcome answers the call for good (see :data:`FINAL_KINDS`)."""
        return self.kind in FINAL_KINDS


@final
@dataclass(frozen=True, slots=True)
class StoreState:
    """What a store holds when a fleet opens on it.

    :param final_keys: keys of calls whose stored outcome is final (their values are read
        with :meth:`BatchRecordStore.fetch_results` when asked for: a long run's results are
        not all held in memory).
    :param open_flushes: flushes neither void nor finished, oldest first.
    :param known_batch_ids: every batch id the store has recorded (reconciling by request
        count never takes one of these for the batch it looks for).
    """

    final_keys: frozenset[str] = frozenset()
    open_flushes: tuple[FlushRecord, ...] = field(default=())
    known_batch_ids: frozenset[str] = frozenset()


@runtime_checkable
class BatchRecordStore(Protocol):
    """A durable record of flushes and results. Every method is one atomic write or read;
    a method that returned has made its write durable (it survives the process being
    killed right after)."""

    async def load(self) -> StoreState:
        """What the store holds: final keys and open flushes."""

    async def record_intent(self, flush: FlushRecord) -> None:
        """Record a flush **before** its create is sent."""

    async def record_created(self, flush_id: str, batch_id: str) -> None:
        """Record the batch id the provider gave the flush."""

    async def record_void(self, flush_id: str) -> None:
        """The flush made no batch (create refused, or reconciling found none)."""

    async def record_results(
        self, flush_id: str, results: Sequence[tuple[str, StoredOutcome]]
    ) -> None:
        """Record ``(key, outcome)`` for a page of results, in one transaction. A key whose
        stored outcome is final keeps it (a result is never overwritten by a later one)."""

    async def record_finished(self, flush_id: str) -> None:
        """Every result of the flush's batch is stored: it is no longer open."""

    async def fetch_results(self, keys: Iterable[str]) -> Mapping[str, StoredOutcome]:
        """The stored outcomes of those keys that have one."""

    async def aclose(self) -> None:
        """Release the store (idempotent)."""
