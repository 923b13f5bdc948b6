"""The public :class:`Journal`: where a fleet keeps its durable batch record."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, final

from ._sqlite import SQLiteStore

if TYPE_CHECKING:
    from ._store import BatchRecordStore

__all__ = ["Journal"]


@final
class Journal:
    """A durable record of a fleet's batches and results, so that a process that dies (a
    deploy, OOM, Ctrl-C, ``kill -9``) never makes the provider bill a request twice.

    Pass it (or just a path) as ``open_fleet(client, journal=...)``. Every batched call gets
    a stable key (``submit(..., idempotency_key=...)``, else a hash of its params and how
    many identical calls came before it in this fleet). The journal records each batch
    **before** its create is sent, its id once created, and each result as it arrives. A
    fleet opened again on the same journal re-attaches to the batches still running (they
    are never created again), looks for any whose create was interrupted before sending
    anything new, and answers a call whose result is stored at once, with no request.

    :param path: an SQLite file (made if missing; WAL mode, so ``-wal``/``-shm`` files sit
        beside it, and ``<path>.lock`` while a fleet uses it).
    :param store: instead of ``path``, any :class:`~llmfleet.journal.BatchRecordStore`.
    :raises TypeError: neither or both of ``path`` and ``store``.
    """

    __slots__ = ("_path", "_store")

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        store: BatchRecordStore | None = None,
    ) -> None:
        if (path is None) == (store is None):
            raise TypeError("Journal needs a path or a store (one of them)")
        self._path = None if path is None else os.fspath(path)
        self._store = store

    @property
    def path(self) -> str | None:
        """The SQLite file, or ``None`` for a journal over another store."""
        return self._path

    def __repr__(self) -> str:
        where = repr(self._path) if self._path is not None else repr(self._store)
        return f"Journal({where})"

    async def _open_store(self, provider: str) -> BatchRecordStore:
        if self._store is not None:
            return self._store
        assert self._path is not None
        store = SQLiteStore(self._path, provider=provider)
        await store.open()
        return store
