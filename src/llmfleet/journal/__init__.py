"""The durable journal: a fleet's record of its batches and results (docs/journal.md).

:class:`Journal` is what users pass to ``open_fleet(client, journal=...)``. The store
protocol (:class:`BatchRecordStore` and its data types) lets another store (Redis, say) keep
the same record; :class:`SQLiteStore` is the one the journal uses by default.
"""

from __future__ import annotations

from ._journal import Journal as Journal
from ._sqlite import SQLiteStore as SQLiteStore
from ._store import FINAL_KINDS as FINAL_KINDS
from ._store import BatchRecordStore as BatchRecordStore
from ._store import FlushEntry as FlushEntry
from ._store import FlushRecord as FlushRecord
from ._store import OutcomeKind as OutcomeKind
from ._store import StoredOutcome as StoredOutcome
from ._store import StoreState as StoreState

__all__ = [
    "FINAL_KINDS",
    "BatchRecordStore",
    "FlushEntry",
    "FlushRecord",
    "Journal",
    "OutcomeKind",
    "SQLiteStore",
    "StoreState",
    "StoredOutcome",
]
