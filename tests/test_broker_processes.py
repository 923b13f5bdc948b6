"""One fleet across real OS processes on a real redis-server (``open_fleet(broker=...)``).

The emulator runs in this process (its own thread); each worker process points its SDK
client at it, so the emulator's ledger is the bill of the whole fleet: it shows how many
batches were created and that no call was billed twice.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from llmfleet.emulator import Emulator, EmulatorConfig, start_emulator

from broker_support import RedisServer, Worker, redis_server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    import coredis

pytestmark = pytest.mark.slow

BACKENDS = ["asyncio", "trio"]
MESSAGE = "anthropic.types.message.Message"


def policy(size: int, window_ms: int = 600_000) -> dict[str, Any]:
    """By default flushes by size only (the window is far longer than a test): each flush is
    exactly ``size`` calls, whichever processes they came from."""
    return {
        "sync_max_latency_ms": 1_000,
        "batch_window_ms": window_ms,
        "batch_min_size": size,
        "batch_max_size": size,
        "poll_interval_ms": 50,
        "poll_max_interval_ms": 200,
        "batch_api_rpm": 10_000,
    }


@pytest.fixture
def emulator_factory() -> Iterator[Callable[[float], Emulator]]:
    started: list[Emulator] = []

    def start(turnaround_s: float) -> Emulator:
        emu = start_emulator(EmulatorConfig(turnaround_s=turnaround_s, seed=7))
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.close()


#: Every worker a test started: killed at its end if still running (a failed test must
#: not leave processes behind).
_STARTED: list[Worker] = []


@pytest.fixture(autouse=True)
def _reap_workers() -> Iterator[None]:
    yield
    while _STARTED:
        worker = _STARTED.pop()
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.communicate()


def start_workers(
    count: int, calls: int, redis: RedisServer, emu: Emulator, backend: str, **extra: Any
) -> list[Worker]:
    config = {
        "redis": redis.url,
        "emulator": emu.url,
        "backend": backend,
        "calls": calls,
        "policy": policy(extra.pop("size", count * calls), extra.pop("window_ms", 600_000)),
        **extra,
    }
    workers = [Worker(f"w{n}", config) for n in range(count)]
    _STARTED.extend(workers)
    return workers


def wait_for(predicate: Callable[[], bool], limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_own_answers(worker: Worker, calls: int) -> None:
    outcomes = worker.outcomes
    assert sorted(outcomes) == list(range(calls)), (worker.tag, worker.stderr[-2000:])
    for i, line in outcomes.items():
        assert line.get("type") == MESSAGE, (worker.tag, line, worker.stderr[-2000:])
        # The emulator echoes the last user text: each caller got its own answer (G7).
        assert line["text"].endswith(line["want"]), line
        assert line["want"] == f"{worker.tag}-call-{i}"


def assert_billed_once(emu: Emulator, batches: int, calls: int) -> None:
    ledger = emu.ledger
    assert ledger.batches_created == batches
    entries = ledger.select(route="batch")
    assert len(entries) == calls
    assert max(Counter(e.custom_id for e in entries).values()) == 1
    assert ledger.select(route="direct") == ()


def lease_holder(redis: RedisServer) -> tuple[int, str]:
    """The pid and fleet name (origin) of the process holding the lease."""

    async def get(client: coredis.Redis[str]) -> Any:
        return await client.get("llmfleet:{default}:lease")

    value = redis.run(get)
    assert value, "nobody holds the lease"
    # "<fencing token>:<host>-<pid>-<random>"
    origin = str(value).split(":", 1)[1]
    return int(origin.rsplit("-", 2)[1]), origin


def lease_holder_pid(redis: RedisServer) -> int:
    return lease_holder(redis)[0]


def results_waiting(redis: RedisServer, origin: str) -> int:
    async def get(client: coredis.Redis[str]) -> Any:
        return await client.xlen(f"llmfleet:{{default}}:results:{origin}")

    return int(redis.run(get))


def open_flushes(redis: RedisServer) -> dict[str, str]:
    async def get(client: coredis.Redis[str]) -> Any:
        return await client.hgetall("llmfleet:{default}:flushes")

    return dict(redis.run(get))


@pytest.mark.parametrize("backend", BACKENDS)
def test_four_processes_fill_fleet_wide_batches(
    backend: str, tmp_path: Path, emulator_factory: Callable[[float], Emulator]
) -> None:
    """4 processes × 10 calls, flushed at 20: two full batches, each mixing processes (no
    process has 20 calls of its own), not four half-empty ones; every caller its own answer."""
    emu = emulator_factory(0.2)
    with redis_server(tmp_path) as redis:
        workers = start_workers(4, 10, redis, emu, backend, size=20)
        for worker in workers:
            assert worker.finish(60) == 0, worker.stderr[-3000:]
        for worker in workers:
            assert_own_answers(worker, 10)
        assert_billed_once(emu, batches=2, calls=40)
        batch_sizes = Counter(e.batch_id for e in emu.ledger.select(route="batch"))
        assert sorted(batch_sizes.values()) == [20, 20]
        # Exactly one process led at a time; some process led.
        assert sum(w.summary["terms_led"] for w in workers) >= 1
        assert open_flushes(redis) == {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_leader_is_taken_over_without_loss_or_double_billing(
    backend: str, tmp_path: Path, emulator_factory: Callable[[float], Emulator]
) -> None:
    """kill -9 the leader while its batch runs: a survivor takes the lease, re-attaches to
    the recorded batch (never creates it again), and every survivor's caller is answered."""
    emu = emulator_factory(3.0)
    with redis_server(tmp_path) as redis:
        workers = start_workers(4, 5, redis, emu, backend, size=20, lease_ttl_ms=1000)
        wait_for(lambda: emu.ledger.batches_created == 1, 60, "the batch to be created")
        wait_for(
            lambda: any('"batch_id": "msgbatch' in v for v in open_flushes(redis).values()),
            10,
            "the batch id to be recorded",
        )
        leader_pid, leader_origin = lease_holder(redis)
        (leader,) = [w for w in workers if w.pid == leader_pid]
        leader.kill9()
        survivors = [w for w in workers if w is not leader]
        for worker in survivors:
            assert worker.finish(60) == 0, worker.stderr[-3000:]
        assert leader.finish(10) != 0
        for worker in survivors:
            assert_own_answers(worker, 5)
        # The dead process's 5 answers were delivered too, to its results stream, where
        # they wait unread until they expire.
        assert results_waiting(redis, leader_origin) == 5
        # 0 lost (above), 0 billed twice: one batch, each of its 20 calls billed once (the
        # dead process's 5 included: they ran, and their results expire unread).
        assert_billed_once(emu, batches=1, calls=20)
        assert sum(w.summary["terms_led"] for w in survivors) >= 1
        assert open_flushes(redis) == {}


def test_redis_restart_with_persistence_recovers(
    tmp_path: Path, emulator_factory: Callable[[float], Emulator]
) -> None:
    """Redis killed mid-batch and started again from its append-only file: the fleet picks
    up where it was; every call answered, the batch billed once."""
    emu = emulator_factory(2.0)
    with redis_server(tmp_path, persistent=True) as redis:
        workers = start_workers(4, 5, redis, emu, "trio", size=20, broker_timeout_ms=20_000)
        wait_for(lambda: emu.ledger.batches_created == 1, 60, "the batch to be created")
        wait_for(
            lambda: any('"batch_id": "msgbatch' in v for v in open_flushes(redis).values()),
            10,
            "the batch id to be recorded",
        )
        redis.kill()
        time.sleep(0.5)
        redis.start()
        for worker in workers:
            assert worker.finish(60) == 0, worker.stderr[-3000:]
        for worker in workers:
            assert_own_answers(worker, 5)
        assert_billed_once(emu, batches=1, calls=20)


def test_redis_restart_that_loses_the_state_fails_calls_clearly(
    tmp_path: Path, emulator_factory: Callable[[float], Emulator]
) -> None:
    """Redis killed mid-batch and started again empty: every call ends, answered or with a
    BrokerError that says what happened; nothing hangs."""
    emu = emulator_factory(2.0)
    with redis_server(tmp_path) as redis:
        workers = start_workers(4, 5, redis, emu, "asyncio", size=20, broker_timeout_ms=3_000)
        wait_for(lambda: emu.ledger.batches_created == 1, 60, "the batch to be created")
        redis.kill()
        time.sleep(0.5)
        redis.start()
        for worker in workers:
            assert worker.finish(60) == 0, worker.stderr[-3000:]
        errors = 0
        for worker in workers:
            outcomes = worker.outcomes
            assert sorted(outcomes) == list(range(5)), worker.stderr[-2000:]
            for line in outcomes.values():
                if "error" in line:
                    errors += 1
                    assert line["error"] == "BrokerError", line
                    assert "lost" in line["message"] or "unreachable" in line["message"]
                else:
                    assert line["text"].endswith(line["want"])
        assert errors > 0  # the calls were in the batch the lost state knew of
        assert emu.ledger.batches_created == 1  # the fleet sent nothing twice


def test_killed_leader_with_calls_not_yet_flushed_loses_none(
    tmp_path: Path, emulator_factory: Callable[[float], Emulator]
) -> None:
    """kill -9 the leader while the calls wait in its queue (before any create): a survivor
    claims the calls left pending and sends them again, in one batch, billed once."""
    emu = emulator_factory(0.2)
    with redis_server(tmp_path) as redis:
        workers = start_workers(
            4, 5, redis, emu, "trio", size=100, window_ms=3_000, lease_ttl_ms=1000
        )
        wait_for(lambda: pending_in_group(redis) == 20, 60, "the leader to read all 20 calls")
        assert emu.ledger.batches_created == 0
        leader_pid = lease_holder_pid(redis)
        (leader,) = [w for w in workers if w.pid == leader_pid]
        leader.kill9()
        survivors = [w for w in workers if w is not leader]
        for worker in survivors:
            assert worker.finish(60) == 0, worker.stderr[-3000:]
        for worker in survivors:
            assert_own_answers(worker, 5)
        assert_billed_once(emu, batches=1, calls=20)


def pending_in_group(redis: RedisServer) -> int:
    async def get(client: coredis.Redis[str]) -> Any:
        try:
            summary: Any = await client.xpending("llmfleet:{default}:calls", "leaders")
        except Exception:  # the group does not exist yet
            return 0
        return summary.pending if summary is not None else 0

    return int(redis.run(get))
