"""A fleet with a journal (llmfleet/journal), over the fake provider in virtual time: answers
from the journal, re-attached batches, reconciled creates, and what is never sent twice."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from llmfleet import (
    BatchRequestError,
    BatchRequestExpiredError,
    BatchSubmitError,
    FleetClosedError,
    Journal,
    JournalError,
    RoutingPolicy,
    open_fleet,
)
from llmfleet.journal import (
    BatchRecordStore,
    FlushEntry,
    FlushRecord,
    SQLiteStore,
    StoredOutcome,
    StoreState,
)
from llmfleet.journal._keys import params_hash
from llmfleet.providers import ErrorKind, ItemResult

from fakes import BreakingProvider, FakeError, FakeMessage, FakeProvider, request

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path


@dataclass
class JournaledFake(FakeProvider):
    """The fake, with the journal's optional adapter methods."""

    def dump_value(self, value: FakeMessage) -> dict[str, Any]:
        return {"custom_id": value.custom_id, "text": value.text, "route": value.route}

    def load_value(self, data: dict[str, Any]) -> FakeMessage:
        return FakeMessage(data["custom_id"], data["text"], data["route"])


POLICY = RoutingPolicy(
    batch_window_ms=100, batch_min_size=10, batch_max_size=10, poll_interval_ms=100
)


async def until_created(fake: FakeProvider, n: int = 1) -> None:
    """Wait until ``n`` creates were sent (the journal writes on a real thread, so virtual
    time alone does not get there)."""
    with anyio.fail_after(600):  # virtual seconds: the loop spins while the thread writes
        while len(fake.creates) < n:  # noqa: ASYNC110 - the fake has no event to wait on
            await anyio.sleep(0.01)


class Crash(Exception):
    pass


async def crash_while_waiting(fake: FakeProvider, path: Path, texts: list[str]) -> None:
    """Submit ``texts``, and once their batch is created let the fleet's block raise while
    its callers still wait (an exception or Ctrl-C in the program around the fleet)."""
    out: dict[str, Any] = {}
    async with anyio.create_task_group() as callers:
        try:
            async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
                for text in texts:
                    callers.start_soon(run_calls, fleet, [text], out)
                await until_created(fake)
                raise Crash
        except Crash:
            pass
    assert all(isinstance(v, FleetClosedError) for v in out.values()), out


async def run_calls(fleet: Any, texts: list[str], out: dict[str, Any]) -> None:
    async def one(text: str) -> None:
        try:
            out[text] = await fleet.submit_batch(**request(text))
        except Exception as exc:
            out[text] = exc

    async with anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(one, text)


async def test_a_rerun_is_answered_from_the_journal_with_no_request(tmp_path: Path) -> None:
    fake = JournaledFake(turnaround=5.0)
    path = tmp_path / "j.db"
    texts = ["a", "b", "c", "a"]  # "a" twice: two calls, two keys
    first: dict[str, Any] = {}
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        await run_calls(fleet, texts[:3], first)
        again = await fleet.submit_batch(**request("a"))
    assert len(fake.creates) == 2
    assert [first[t].text for t in "abc"] == ["a", "b", "c"]

    second: dict[str, Any] = {}
    async with open_fleet(fake, policy=POLICY, journal=Journal(path)) as fleet:
        await run_calls(fleet, texts[:3], second)
        again2 = await fleet.submit_batch(**request("a"))
        stats = fleet.stats.snapshot()
    assert len(fake.creates) == 2  # nothing sent
    assert fake.direct_calls == []
    assert second == first
    assert again2 == again
    assert stats.from_journal == 4
    assert stats.succeeded == 4
    assert stats.batches_submitted == 0

    # A fifth identical call has no stored answer: it is sent.
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        for _ in range(2):
            await fleet.submit_batch(**request("a"))
        assert fleet.stats.from_journal == 2
    assert len(fake.creates) == 2
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        for _ in range(3):
            await fleet.submit_batch(**request("a"))
        assert fleet.stats.from_journal == 2
    assert len(fake.creates) == 3


async def test_an_idempotency_key_names_the_call(tmp_path: Path) -> None:
    fake = JournaledFake(turnaround=1.0)
    path = tmp_path / "j.db"
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        first = await fleet.submit_batch(idempotency_key="job-1", **request("one"))
        # The direct route ignores the key (only batched calls are journaled).
        direct = await fleet.submit(latency_budget_ms=1, idempotency_key="job-1", **request("x"))
    assert direct.route == "direct"
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        # The key, not the params, says which call it is.
        assert await fleet.submit_batch(idempotency_key="job-1", **request("changed")) == first
        assert await fleet.submit(latency_budget_ms=60_000, idempotency_key="job-1") == first
    assert len(fake.creates) == 1


async def test_one_key_in_flight_at_a_time(tmp_path: Path) -> None:
    fake = JournaledFake(turnaround=1.0)
    async with open_fleet(fake, policy=POLICY, journal=tmp_path / "j.db") as fleet:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: fleet.submit_batch(idempotency_key="k", **request("a")))
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(ValueError, match="in flight already"):
                await fleet.submit_batch(idempotency_key="k", **request("a"))
        with pytest.raises(ValueError, match="1 to 256"):
            await fleet.submit_batch(idempotency_key="", **request("a"))
        with pytest.raises(TypeError, match="string"):
            await fleet.submit_batch(idempotency_key=7, **request("a"))  # type: ignore[arg-type]


async def test_errored_results_are_final_expired_ones_are_sent_again(tmp_path: Path) -> None:
    def outcome(custom_id: str, params: dict[str, Any]) -> ItemResult:
        text = params["messages"][0]["content"]
        if text == "bad":
            return ItemResult("errored", error_type="invalid_request_error", message="no")
        if text == "late" and fake.expire:
            return ItemResult("expired")
        return ItemResult("succeeded", value=FakeMessage(custom_id, text, "batch"))

    @dataclass
    class Fake(JournaledFake):
        expire: bool = True

    fake = Fake(turnaround=1.0, outcome=outcome)
    path = tmp_path / "j.db"
    out: dict[str, Any] = {}
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        await run_calls(fleet, ["bad", "late"], out)
    assert isinstance(out["bad"], BatchRequestError)
    assert isinstance(out["late"], BatchRequestExpiredError)
    fake.expire = False
    again: dict[str, Any] = {}
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        await run_calls(fleet, ["bad", "late"], again)
    assert len(fake.creates) == 2
    assert len(fake.creates[1][2]) == 1  # only "late" went again
    error = again["bad"]
    assert isinstance(error, BatchRequestError)
    assert (error.error_type, error.message) == ("invalid_request_error", "no")
    assert error.batch_id == out["bad"].batch_id
    assert again["late"].text == "late"


async def test_an_aborted_fleet_leaves_its_batch_running_and_the_next_re_attaches(
    tmp_path: Path,
) -> None:
    fake = JournaledFake(turnaround=30.0)
    path = tmp_path / "j.db"
    texts = [f"t{i}" for i in range(5)]

    await crash_while_waiting(fake, path, texts)
    assert fake.cancels == []  # the journal keeps it: the next fleet collects it
    assert len(fake.batches) == 1

    out: dict[str, Any] = {}
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert fleet.stats.reattached_batches == 1
        await run_calls(fleet, [*texts, "new"], out)
        stats = fleet.stats.snapshot()
    assert len(fake.creates) == 2  # the old batch, and one for "new" only
    assert fake.creates[1][2] == [fake.creates[1][2][0]]
    assert [out[t].text for t in texts] == texts
    assert {out[t].custom_id for t in texts} == set(fake.creates[0][2])
    assert stats.batches_submitted == 1
    assert stats.from_journal == 5  # each waited for the re-attached batch to store it


async def test_results_of_a_re_attached_batch_nobody_asks_for_are_kept(tmp_path: Path) -> None:
    fake = JournaledFake(turnaround=10.0)
    path = tmp_path / "j.db"
    await crash_while_waiting(fake, path, ["x"])
    # Nobody submits "x" while the re-attached batch runs: its result is stored anyway ...
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert fleet.stats.reattached_batches == 1
    # ... and answers it later, with no request.
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert (await fleet.submit_batch(**request("x"))).text == "x"
        assert fleet.stats.from_journal == 1
    assert len(fake.creates) == 1
    assert len(fake.result_fetches) == 1


async def test_a_key_not_sent_here_is_found_only_if_stored_before_or_re_attached(
    tmp_path: Path,
) -> None:
    """``llmfleet run`` asks ``maybe_stored_before`` once a line. A first run has no result
    stored before it and re-attaches nothing: it never says yes, not even for a key its own
    batch stored meanwhile. A rerun finds the stored key, and so does a fleet whose
    re-attached batch stores it."""
    fake = JournaledFake(turnaround=5.0)
    path = tmp_path / "j.db"
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        journal = fleet._journal
        assert journal is not None
        await fleet.submit_batch(idempotency_key="k1", **request("a"))
        assert journal.answers("key:k1")  # stored by this process
        assert not journal.maybe_stored_before("key:k1")
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        journal = fleet._journal
        assert journal is not None
        assert journal.maybe_stored_before("key:k1")

    path = tmp_path / "crashed.db"
    fake = JournaledFake(turnaround=10.0)
    await crash_while_waiting(fake, path, ["x"])  # nothing stored: its batch still runs
    key = f"hash:{params_hash(request('x'))}-1"
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        journal = fleet._journal
        assert journal is not None
        event = journal.pending(key)
        assert event is not None
        await event.wait()  # the re-attached batch stored it
        assert journal.maybe_stored_before(key)
    assert len(fake.creates) == 1


async def test_an_interrupted_create_is_found_and_adopted_not_sent_again(tmp_path: Path) -> None:
    """The process died between its intent and the create's answer, and the create went
    through: the next fleet finds the batch (by count, for a provider without tags) and
    answers from it."""
    fake = JournaledFake(turnaround=2.0)
    path = tmp_path / "j.db"
    # What the dead process left: a batch at the provider, and its intent with no id.
    batch_id = await fake.create_batch([("lf_dead_1", request("p")), ("lf_dead_2", request("q"))])
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        keys = [fleet._journal.key_of(request(t), None) for t in "pq"]  # type: ignore[union-attr]
    store = SQLiteStore(path, provider="fake")
    await store.open()
    entries = (FlushEntry("lf_dead_1", keys[0]), FlushEntry("lf_dead_2", keys[1]))
    await store.record_intent(FlushRecord("fl_dead", "tag", 0.0, entries))
    await store.aclose()

    out: dict[str, Any] = {}
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        await run_calls(fleet, ["p", "q"], out)
    assert len(fake.creates) == 1  # only the dead process's
    assert [out[t].custom_id for t in "pq"] == ["lf_dead_1", "lf_dead_2"]
    store = SQLiteStore(path, provider="fake")
    await store.open()
    state = await store.load()
    assert state.open_flushes == ()
    assert batch_id in state.known_batch_ids
    await store.aclose()


async def test_an_interrupted_create_that_made_nothing_is_voided_then_sent(tmp_path: Path) -> None:
    fake = JournaledFake(turnaround=1.0)
    path = tmp_path / "j.db"
    store = SQLiteStore(path, provider="fake")
    await store.open()
    entries = (FlushEntry("lf_dead_1", "hash:x-1"),)
    await store.record_intent(FlushRecord("fl_dead", "tag", 0.0, entries))
    await store.aclose()
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert fleet.stats.reattached_batches == 0
        assert (await fleet.submit_batch(**request("r"))).text == "r"
    assert len(fake.creates) == 1
    assert len(fake.list_pages) == 0  # the fake is found by find_batch, not the listing


async def test_a_refused_create_is_void_and_sent_again_next_time(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    refuse = True

    def on_create(requests: Any) -> None:
        if refuse:
            raise FakeError(ErrorKind.FATAL, "no")

    fake = JournaledFake(turnaround=1.0, on_create=on_create)
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        with pytest.raises(BatchSubmitError):
            await fleet.submit_batch(**request("z"))
    refuse = False
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert fleet.stats.reattached_batches == 0
        assert (await fleet.submit_batch(**request("z"))).text == "z"
    assert len(fake.creates) == 1


async def test_a_bad_journal_fails_async_with_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a journal\n")
    fake = JournaledFake()
    with pytest.raises(JournalError, match="not an llmfleet journal"):
        async with open_fleet(fake, policy=POLICY, journal=path):
            pytest.fail("opened")
    assert fake.creates == []


async def test_two_fleets_cannot_share_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with open_fleet(JournaledFake(), policy=POLICY, journal=path):
        with pytest.raises(JournalError, match="in use"):
            async with open_fleet(JournaledFake(), policy=POLICY, journal=path):
                pytest.fail("opened")


async def test_an_open_flush_whose_results_are_all_stored_is_closed_not_fetched(
    tmp_path: Path,
) -> None:
    """The process died after storing the last result but before marking its batch done
    (whose files the provider may have deleted since): nothing is fetched again."""
    fake = JournaledFake(turnaround=1.0)
    path = tmp_path / "j.db"
    store = SQLiteStore(path, provider="fake")
    await store.open()
    entries = (FlushEntry("lf_dead_1", "key:a"),)
    await store.record_intent(FlushRecord("fl_dead", "tag", 0.0, entries, "gone_batch"))
    await store.record_results(
        "fl_dead",
        [
            (
                "key:a",
                StoredOutcome(
                    "succeeded", {"custom_id": "lf_dead_1", "text": "a", "route": "batch"}
                ),
            )
        ],
    )
    await store.aclose()
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert fleet.stats.reattached_batches == 0
        assert (await fleet.submit_batch(idempotency_key="a", **request("a"))).text == "a"
    assert fake.polls == []
    assert fake.result_fetches == []


async def test_a_batch_whose_callers_left_runs_on_and_its_results_are_kept(
    tmp_path: Path,
) -> None:
    fake = JournaledFake(turnaround=5.0)
    path = tmp_path / "j.db"
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        with anyio.move_on_after(2):  # the caller gives up while its batch runs
            await fleet.submit_batch(**request("gave up"))
        assert fleet.stats.withdrawn == 1
    assert fake.cancels == []
    assert len(fake.result_fetches) == 1  # collected before the fleet closed
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert (await fleet.submit_batch(**request("gave up"))).text == "gave up"
        assert fleet.stats.from_journal == 1
    assert len(fake.creates) == 1


async def test_same_size_creates_reconciled_by_count_lose_nothing_if_paired_crosswise(
    tmp_path: Path,
) -> None:
    """Two creates of two requests each were in flight when the process died: reconciling by
    count cannot tell which batch is whose (here it pairs them crosswise). Results are stored
    by custom_id, unique across fleets, so every call is still answered from its own line."""
    fake = JournaledFake(turnaround=2.0)
    path = tmp_path / "j.db"
    first = [("lf_dead_1", request("a")), ("lf_dead_2", request("b"))]
    second = [("lf_dead_3", request("c")), ("lf_dead_4", request("d"))]
    await fake.create_batch(first)
    await fake.create_batch(second)
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        keys = [fleet._journal.key_of(request(t), None) for t in "abcd"]  # type: ignore[union-attr]
    store = SQLiteStore(path, provider="fake")
    await store.open()
    for flush_id, ids in (("fl_1", (0, 1)), ("fl_2", (2, 3))):
        entries = tuple(FlushEntry(f"lf_dead_{i + 1}", keys[i]) for i in ids)
        await store.record_intent(FlushRecord(flush_id, flush_id, 0.0, entries))
    await store.aclose()

    out: dict[str, Any] = {}
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert fleet.stats.reattached_batches == 2
        await run_calls(fleet, list("abcd"), out)
    assert len(fake.creates) == 2  # only the dead process's
    assert [out[t].text for t in "abcd"] == list("abcd")
    assert [out[t].custom_id for t in "abcd"] == [f"lf_dead_{i}" for i in range(1, 5)]


async def test_a_fleet_aborting_mid_create_still_records_the_batch_id(tmp_path: Path) -> None:
    async def slow_create(requests: Any) -> None:
        await anyio.sleep(1)

    fake = JournaledFake(turnaround=5.0, on_create=slow_create)
    path = tmp_path / "j.db"
    out: dict[str, Any] = {}
    async with anyio.create_task_group() as callers:
        try:
            async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
                callers.start_soon(run_calls, fleet, ["m"], out)
                with anyio.fail_after(600):
                    while not journal_has("SELECT 1 FROM flushes", path):  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                raise Crash  # the create is in flight (it takes a second)
        except Crash:
            pass
    assert isinstance(out["m"], FleetClosedError)
    (batch_id,) = fake.batches
    assert journal_has(f"SELECT 1 FROM flushes WHERE batch_id = '{batch_id}'", path)
    assert fake.cancels == []
    async with open_fleet(fake, policy=POLICY, journal=path) as fleet:
        assert fleet.stats.reattached_batches == 1
        assert (await fleet.submit_batch(**request("m"))).text == "m"
    assert len(fake.creates) == 1


def journal_has(sql: str, path: Path) -> bool:
    db = sqlite3.connect(path, timeout=5)
    try:
        return db.execute(sql).fetchone() is not None
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


class MemoryStore:
    """A BatchRecordStore in memory: the protocol is all a fleet needs of a store."""

    def __init__(self) -> None:
        self.flushes: dict[str, FlushRecord] = {}
        self.state: dict[str, str] = {}
        self.results: dict[str, StoredOutcome] = {}
        self.log: list[str] = []

    async def load(self) -> StoreState:
        return StoreState(
            final_keys=frozenset(k for k, o in self.results.items() if o.final),
            open_flushes=tuple(f for i, f in self.flushes.items() if self.state[i] == "open"),
            known_batch_ids=frozenset(f.batch_id for f in self.flushes.values() if f.batch_id),
        )

    async def record_intent(self, flush: FlushRecord) -> None:
        self.log.append("intent")
        self.flushes[flush.flush_id] = flush
        self.state[flush.flush_id] = "open"

    async def record_created(self, flush_id: str, batch_id: str) -> None:
        self.log.append("created")
        self.flushes[flush_id] = replace(self.flushes[flush_id], batch_id=batch_id)

    async def record_void(self, flush_id: str) -> None:
        self.state[flush_id] = "void"

    async def record_results(
        self, flush_id: str, results: Sequence[tuple[str, StoredOutcome]]
    ) -> None:
        self.log.append(f"results {len(results)}")
        for key, outcome in results:
            if key not in self.results or not self.results[key].final:
                self.results[key] = outcome

    async def record_finished(self, flush_id: str) -> None:
        self.log.append("finished")
        self.state[flush_id] = "finished"

    async def fetch_results(self, keys: Iterable[str]) -> Mapping[str, StoredOutcome]:
        return {k: self.results[k] for k in keys if k in self.results}

    async def aclose(self) -> None:
        pass


async def test_any_store_of_the_protocol_serves_a_fleet(tmp_path: Path) -> None:
    store = MemoryStore()
    assert isinstance(store, BatchRecordStore)
    fake = JournaledFake(turnaround=3.0)
    journal = Journal(store=store)
    out: dict[str, Any] = {}
    async with open_fleet(fake, policy=POLICY, journal=journal) as fleet:
        await run_calls(fleet, ["u", "v"], out)
    # In the protocol's order; the fake streams a line per tick, so a page per line.
    assert store.log == ["intent", "created", "results 1", "results 1", "finished"]
    async with open_fleet(fake, policy=POLICY, journal=journal) as fleet:
        again: dict[str, Any] = {}
        await run_calls(fleet, ["u", "v"], again)
    assert again == out
    assert len(fake.creates) == 1
    with pytest.raises(TypeError, match="a path or a store"):
        Journal()


class BreakingJournaledFake(BreakingProvider, JournaledFake):
    """The journaled fake, its first results stream breaking off after two lines."""


async def test_a_results_stream_read_again_stores_only_the_rest(tmp_path: Path) -> None:
    """The batch's record lets go of its keys once recorded (each call has its own; the
    batch keeps no second copy of them) and each key goes once its result is stored: the
    stream read again after it broke off stores the lines not stored yet, each result once,
    and every caller has its own."""
    store = MemoryStore()
    fake = BreakingJournaledFake(turnaround=3.0)
    out: dict[str, Any] = {}
    texts = ["a", "b", "c", "d"]
    policy = replace(POLICY, batch_min_size=4, batch_max_size=4)
    async with open_fleet(fake, policy=policy, journal=Journal(store=store)) as fleet:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_calls, fleet, texts, out)
            await until_created(fake)
            (batch,) = fleet._batches
            assert batch.flush is not None
            assert batch.flush.entries == ()  # the record holds no key: the calls do
            assert batch.keys == {}
            ids = list(batch.calls)
            keys = {batch.key_of(custom_id) for custom_id in ids}
            assert None not in keys
            assert len(keys) == 4
        assert [batch.key_of(custom_id) for custom_id in ids] == [None] * 4  # all stored
    assert fake.broke
    assert [out[t].text for t in texts] == texts
    stored = [int(entry.split()[1]) for entry in store.log if entry.startswith("results")]
    assert sum(stored) == 4  # two before the break, two after: none stored twice
    (flush,) = store.flushes.values()
    assert len(flush.entries) == 4  # the store has the whole record
