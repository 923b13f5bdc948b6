"""The SQLite journal store on its own (llmfleet/journal/_sqlite.py): schema, WAL, durable
writes, reopen, concurrent writers, and the clear refusal of files it must not touch."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import anyio
import pytest

from llmfleet import JournalError
from llmfleet.journal import FlushEntry, FlushRecord, SQLiteStore, StoredOutcome
from llmfleet.journal._keys import KeyMaker, params_hash
from llmfleet.journal._sqlite import APPLICATION_ID, SCHEMA_VERSION

if TYPE_CHECKING:
    from pathlib import Path


def flush(n: int = 2, *, flush_id: str = "fl_1", tag: str = "lf_tag") -> FlushRecord:
    entries = tuple(FlushEntry(f"c{i}", f"hash:k{i}-1", "m") for i in range(n))
    return FlushRecord(flush_id, tag, 1000.0, entries)


async def opened(path: Path, provider: str = "fake") -> SQLiteStore:
    store = SQLiteStore(path, provider=provider)
    await store.open()
    return store


async def test_a_new_journal_has_our_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = await opened(path)
    await store.aclose()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "flushes", "entries", "results"} <= tables
    finally:
        db.close()


async def test_a_flush_lives_from_intent_to_finished_across_reopens(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = await opened(path)
    await store.record_intent(flush(3))
    await store.aclose()

    store = await opened(path)
    state = await store.load()
    assert [f.flush_id for f in state.open_flushes] == ["fl_1"]
    (record,) = state.open_flushes
    assert record.batch_id is None
    assert record.tag == "lf_tag"
    assert record.created_after == 1000.0
    assert [e.custom_id for e in record.entries] == ["c0", "c1", "c2"]
    await store.record_created("fl_1", "batch_9")
    ok = StoredOutcome("succeeded", {"text": "hi"}, batch_id="batch_9", custom_id="c0")
    err = StoredOutcome("errored", error_type="invalid", message="no", batch_id="batch_9")
    await store.record_results("fl_1", [("hash:k0-1", ok), ("hash:k1-1", err)])
    await store.aclose()

    store = await opened(path)
    state = await store.load()
    assert state.open_flushes[0].batch_id == "batch_9"
    assert state.final_keys == {"hash:k0-1", "hash:k1-1"}
    assert state.known_batch_ids == {"batch_9"}
    found = await store.fetch_results(["hash:k0-1", "hash:k1-1", "hash:k2-1"])
    assert found == {"hash:k0-1": ok, "hash:k1-1": err}
    await store.record_finished("fl_1")
    await store.aclose()

    store = await opened(path)
    state = await store.load()
    assert state.open_flushes == ()
    assert state.known_batch_ids == {"batch_9"}
    await store.aclose()


async def test_void_flushes_are_not_open(tmp_path: Path) -> None:
    store = await opened(tmp_path / "j.db")
    await store.record_intent(flush(1, flush_id="a"))
    await store.record_intent(flush(1, flush_id="b"))
    await store.record_void("a")
    state = await store.load()
    assert [f.flush_id for f in state.open_flushes] == ["b"]
    await store.aclose()


async def test_a_final_result_is_never_replaced_but_a_non_final_one_is(tmp_path: Path) -> None:
    store = await opened(tmp_path / "j.db")
    expired = StoredOutcome("expired", batch_id="b1")
    ok = StoredOutcome("succeeded", "first", batch_id="b2")
    await store.record_results("f", [("k", expired)])
    assert (await store.load()).final_keys == frozenset()
    await store.record_results("f", [("k", ok)])
    await store.record_results("f", [("k", StoredOutcome("succeeded", "second"))])
    await store.record_results("f", [("k", StoredOutcome("canceled"))])
    assert (await store.fetch_results(["k"]))["k"] == ok
    await store.aclose()


async def test_concurrent_writers_all_land(tmp_path: Path) -> None:
    store = await opened(tmp_path / "j.db")

    async def write(i: int) -> None:
        rows = [(f"k{i}-{j}", StoredOutcome("succeeded", [i, j])) for j in range(20)]
        await store.record_results(f"f{i}", rows)

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(write, i)
    state = await store.load()
    assert len(state.final_keys) == 600
    many = await store.fetch_results(sorted(state.final_keys))
    assert many["k29-19"].value == [29, 19]
    assert len(many) == 600  # more keys than one query takes
    await store.aclose()


async def test_a_journal_in_use_by_another_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    first = await opened(path)
    with pytest.raises(JournalError, match="in use by another process"):
        await opened(path)
    await first.aclose()
    second = await opened(path)  # released on close
    await second.aclose()


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"custom_id": "a"}\n')
    with pytest.raises(JournalError, match=r"not an llmfleet journal .*move .* aside"):
        await opened(path)
    assert path.read_text() == '{"custom_id": "a"}\n'  # untouched


async def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="another application"):
        await opened(path)


async def test_a_journal_from_a_newer_llmfleet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await (await opened(path)).aclose()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(JournalError, match="newer llmfleet"):
        await opened(path)


async def test_a_journal_of_another_provider_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await (await opened(path, "anthropic")).aclose()
    with pytest.raises(JournalError, match=r"records anthropic batches.*openai"):
        await opened(path, "openai")


async def test_a_corrupt_journal_is_refused_not_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = await opened(path)
    rows = [(f"k{i}", StoredOutcome("succeeded", "x" * 200)) for i in range(200)]
    await store.record_results("f", rows)
    await store.aclose()
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xff" * 4096  # a page of garbage, header intact
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=r"corrupt|cannot be read"):
        await opened(path)
    assert path.read_bytes() == bytes(data)  # never overwritten with a fresh journal


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = await opened(tmp_path / "j.db")
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        await store.load()


def test_keys_are_stable_across_runs_and_count_identical_calls() -> None:
    p = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    q = dict(reversed(list(p.items())))  # the same params in another order
    first, second = KeyMaker(), KeyMaker()  # two runs
    keys = [first.key(p, None), first.key(q, None), first.key(p, "job-7")]
    assert keys == [second.key(q, None), second.key(p, None), second.key(q, "job-7")]
    assert keys[0] == f"hash:{params_hash(p)}-1"
    assert keys[1] == f"hash:{params_hash(p)}-2"
    assert keys[2] == "key:job-7"
    assert params_hash(p) == params_hash(q) != params_hash(p | {"max_tokens": 6})
