"""The SQLite journal: :class:`SQLiteStore`, a :class:`~._store.BatchRecordStore` in one file.

The standard library's ``sqlite3``, driven from worker threads through
``anyio.to_thread.run_sync`` one operation at a time (a capacity limiter of 1), so the event
loop never blocks and it works the same on asyncio and trio. WAL mode, ``synchronous=FULL``:
a write that returned survives the process being killed, and the machine losing power.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import anyio
import anyio.to_thread

from ..errors import JournalError
from ._store import FlushEntry, FlushRecord, StoredOutcome, StoreState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")

#: ``PRAGMA application_id`` of a journal: "LMFJ". A file with another id is not ours.
APPLICATION_ID: Final = 0x4C4D464A
#: ``PRAGMA user_version``: the schema this code writes. Older ones are migrated on open;
#: a newer one is refused (written by a newer llmfleet).
SCHEMA_VERSION: Final = 1
_HEADER: Final = b"SQLite format 3\x00"
# Keys fetched per query (SQLite allows 32766 host parameters; stay well below).
_FETCH_CHUNK: Final = 500
_BUSY_TIMEOUT_MS: Final = 10_000

_SCHEMA: Final = f"""
PRAGMA application_id = {APPLICATION_ID};
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE flushes (
    flush_id TEXT PRIMARY KEY,
    tag TEXT NOT NULL,
    created_after REAL NOT NULL,
    batch_id TEXT,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'void', 'finished')),
    recorded_at REAL NOT NULL
);
CREATE INDEX flushes_open ON flushes (state) WHERE state = 'open';
CREATE TABLE entries (
    flush_id TEXT NOT NULL REFERENCES flushes (flush_id),
    custom_id TEXT NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    PRIMARY KEY (flush_id, custom_id)
) WITHOUT ROWID;
CREATE TABLE results (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL
        CHECK (kind IN ('succeeded', 'errored', 'expired', 'canceled', 'missing')),
    value TEXT,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    flush_id TEXT,
    recorded_at REAL NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""

# A stored final outcome is never replaced: only a non-final one (expired, canceled,
# missing) gives way to a newer outcome of a resent call.
_UPSERT: Final = """
INSERT INTO results
    (key, kind, value, error_type, message, batch_id, custom_id, flush_id, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    kind = excluded.kind, value = excluded.value, error_type = excluded.error_type,
    message = excluded.message, batch_id = excluded.batch_id, custom_id = excluded.custom_id,
    flush_id = excluded.flush_id, recorded_at = excluded.recorded_at
WHERE results.kind NOT IN ('succeeded', 'errored')
"""


def _what_to_do(path: Path) -> str:
    return (
        f"move {path} aside (or delete it, losing the results it holds) to start a fresh "
        "journal, or pass another journal path"
    )


@final
class SQLiteStore:
    """A :class:`~llmfleet.journal.BatchRecordStore` in an SQLite file (made if missing).

    Use :meth:`open` before anything else and :meth:`aclose` at the end. While open, the
    store holds an exclusive lock (``<path>.lock``, holding its pid) so that no two processes
    drive the same journal at once (where ``fcntl`` exists, i.e. not on Windows). The lock
    file is removed when the store closes; a process that dies leaves it, unlocked, and the
    next store to open takes it over.

    :param path: the journal file.
    :param provider: the adapter name the fleet uses (``"anthropic"``); a journal written
        for another provider is refused (its batch ids mean nothing there).
    """

    def __init__(self, path: str | os.PathLike[str], *, provider: str = "") -> None:
        self.path = Path(path)
        self.provider = provider
        self._db: sqlite3.Connection | None = None
        self._lock_file: Any = None
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        state = "open" if self._db is not None else "closed"
        return f"<SQLiteStore {str(self.path)!r} {state}>"

    # -- opening and closing ------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the journal and check that it is one this code can use.

        :raises JournalError: the file is not an SQLite database, is corrupt, belongs to
            another application, was written by a newer llmfleet or for another provider,
            or is in use by another process.
        """
        if self._db is not None:
            raise RuntimeError("this store is open already")
        self._limiter = anyio.CapacityLimiter(1)
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        path = self.path
        try:
            with path.open("rb") as file:
                header = file.read(len(_HEADER))
        except FileNotFoundError:
            header = b""
        except OSError as exc:
            raise JournalError(f"cannot read the journal {path}: {exc}") from exc
        if header and header != _HEADER:
            raise JournalError(
                f"{path} is not an llmfleet journal (not an SQLite database); " + _what_to_do(path)
            )
        self._lock(path)
        try:
            db = sqlite3.connect(
                path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            self._unlock()
            raise JournalError(f"cannot open the journal {path}: {exc}") from exc
        try:
            self._check(db, path)
        except BaseException:
            db.close()
            self._unlock()
            raise
        self._db = db

    def _check(self, db: sqlite3.Connection, path: Path) -> None:
        try:
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            check = db.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                problem = "; ".join(str(row[0]) for row in check[:3])
                raise JournalError(
                    f"the journal {path} is corrupt ({problem}); " + _what_to_do(path)
                )
            app = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app == 0 and version == 0 and tables == 0:
                self._create(db)
            elif app != APPLICATION_ID:
                raise JournalError(
                    f"{path} is an SQLite database of another application, not an llmfleet "
                    "journal; " + _what_to_do(path)
                )
            elif version > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal {path} was written by a newer llmfleet (schema {version}, "
                    f"this one reads up to {SCHEMA_VERSION}); upgrade llmfleet, or "
                    + _what_to_do(path)
                )
            elif version < 1:
                raise JournalError(
                    f"the journal {path} has no schema (an interrupted creation?); "
                    + _what_to_do(path)
                )
            # WAL: readers (a test, `sqlite3 journal.db`) never block the writer; FULL: a
            # commit is on disk when it returns, so an intent precedes its create for good.
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            row = db.execute("SELECT value FROM meta WHERE name = 'provider'").fetchone()
            if row is None:
                with _transaction(db):
                    db.execute(
                        "INSERT INTO meta (name, value) VALUES ('provider', ?)", (self.provider,)
                    )
            elif self.provider and row[0] and row[0] != self.provider:
                raise JournalError(
                    f"the journal {path} records {row[0]} batches, but this fleet talks to "
                    f"{self.provider}; use the {row[0]} client with it, or another journal path"
                )
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"the journal {path} cannot be read ({exc}); " + _what_to_do(path)
            ) from exc

    def _create(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode = WAL")
        with _transaction(db):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT INTO meta (name, value) VALUES ('created_at', ?)", (str(time.time()),)
            )

    def _lock(self, path: Path) -> None:
        if sys.platform == "win32":  # pragma: no cover - no fcntl
            return
        import fcntl

        lock_path = self._lock_path
        while True:
            try:
                file = lock_path.open("a+")
            except OSError as exc:
                raise JournalError(
                    f"cannot make the journal's lock file {lock_path}: {exc}"
                ) from exc
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                file.seek(0)
                holder = file.read().strip() or "?"
                file.close()
                raise JournalError(
                    f"the journal {path} is in use by another process (pid {holder}); wait "
                    "for it to end, or pass another journal path"
                ) from None
            # The holder removes the file as it lets go (_unlock): the file locked here may
            # be one it removed after this process opened it, which guards nothing (a third
            # process may have made and locked a new one). Only the file at the path counts.
            if _same_file(file, lock_path):
                break
            file.close()
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        self._lock_file = file

    def _unlock(self) -> None:
        file, self._lock_file = self._lock_file, None
        if file is not None:
            # Removed while still locked, then closed (which releases the lock): a process
            # that opened the old file meanwhile finds it is no longer the one at the path
            # once it gets the lock, and takes the path's (_lock). A process that dies keeps
            # its file, holding its pid but no lock: the next one locks it and goes on.
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)
            file.close()

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return

        def close() -> None:
            try:
                db.close()
            finally:
                self._unlock()

        with anyio.CancelScope(shield=True):
            await self._run(close)

    # -- the protocol -------------------------------------------------------------------

    async def load(self) -> StoreState:
        return await self._run(self._load_sync)

    def _load_sync(self) -> StoreState:
        db = self._conn()
        final = frozenset(
            row[0]
            for row in db.execute("SELECT key FROM results WHERE kind IN ('succeeded', 'errored')")
        )
        flushes = []
        rows = db.execute(
            "SELECT flush_id, tag, created_after, batch_id FROM flushes "
            "WHERE state = 'open' ORDER BY rowid"
        ).fetchall()
        for flush_id, tag, created_after, batch_id in rows:
            entries = tuple(
                FlushEntry(custom_id, key, model)
                for custom_id, key, model in db.execute(
                    "SELECT custom_id, key, model FROM entries WHERE flush_id = ?", (flush_id,)
                )
            )
            flushes.append(FlushRecord(flush_id, tag, created_after, entries, batch_id))
        known = frozenset(
            row[0] for row in db.execute("SELECT batch_id FROM flushes WHERE batch_id IS NOT NULL")
        )
        return StoreState(final_keys=final, open_flushes=tuple(flushes), known_batch_ids=known)

    async def record_intent(self, flush: FlushRecord) -> None:
        def write() -> None:
            db = self._conn()
            with _transaction(db):
                db.execute(
                    "INSERT INTO flushes (flush_id, tag, created_after, batch_id, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (flush.flush_id, flush.tag, flush.created_after, flush.batch_id, time.time()),
                )
                db.executemany(
                    "INSERT INTO entries (flush_id, custom_id, key, model) VALUES (?, ?, ?, ?)",
                    [(flush.flush_id, e.custom_id, e.key, e.model) for e in flush.entries],
                )

        await self._run(write)

    async def record_created(self, flush_id: str, batch_id: str) -> None:
        await self._update("UPDATE flushes SET batch_id = ? WHERE flush_id = ?", batch_id, flush_id)

    async def record_void(self, flush_id: str) -> None:
        await self._update("UPDATE flushes SET state = 'void' WHERE flush_id = ?", flush_id)

    async def record_finished(self, flush_id: str) -> None:
        await self._update("UPDATE flushes SET state = 'finished' WHERE flush_id = ?", flush_id)

    async def record_results(
        self, flush_id: str, results: Sequence[tuple[str, StoredOutcome]]
    ) -> None:
        if not results:
            return
        now = time.time()
        rows = [
            (
                key,
                outcome.kind,
                outcome.encoded
                if outcome.encoded is not None
                else None
                if outcome.value is None
                else json.dumps(outcome.value),
                outcome.error_type,
                outcome.message,
                outcome.batch_id,
                outcome.custom_id,
                flush_id,
                now,
            )
            for key, outcome in results
        ]

        def write() -> None:
            db = self._conn()
            with _transaction(db):
                db.executemany(_UPSERT, rows)

        await self._run(write)

    async def fetch_results(self, keys: Iterable[str]) -> Mapping[str, StoredOutcome]:
        wanted = list(dict.fromkeys(keys))

        def read() -> dict[str, StoredOutcome]:
            db = self._conn()
            found: dict[str, StoredOutcome] = {}
            for start in range(0, len(wanted), _FETCH_CHUNK):
                chunk = wanted[start : start + _FETCH_CHUNK]
                marks = ",".join("?" * len(chunk))
                query = (
                    "SELECT key, kind, value, error_type, message, batch_id, custom_id "
                    f"FROM results WHERE key IN ({marks})"
                )
                for key, kind, value, error_type, message, batch_id, custom_id in db.execute(
                    query, chunk
                ):
                    found[key] = StoredOutcome(
                        kind,
                        None if value is None else json.loads(value),
                        error_type,
                        message,
                        batch_id,
                        custom_id,
                        encoded=value,
                    )
            return found

        return await self._run(read)

    # -- plumbing -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError("the journal is closed")
        return self._db

    async def _update(self, sql: str, *args: object) -> None:
        def write() -> None:
            db = self._conn()
            with _transaction(db):
                db.execute(sql, args)

        await self._run(write)

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker thread, one at a time. Not abandoned on cancellation: a
        write that started is finished (and committed or rolled back) before we go on."""
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise JournalError(
                f"the journal {self.path} failed ({type(exc).__name__}: {exc}); check the disk "
                "it is on, then run again: what was recorded is kept"
            ) from exc


def _same_file(file: Any, path: Path) -> bool:
    """``file`` (open) is the file now at ``path``."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(file.fileno())
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Any:
    """One ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back if the body raises)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
