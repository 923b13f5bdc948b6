"""The soak (docs/design.md §10): many calls from many agents through the real SDK against the
emulator with random faults, checking that nothing is lost, duplicated, hung or billed twice, that
memory stays flat, and that the API key shows up nowhere.

1,000 agents with mixed budgets (some direct, most batched, a few tight enough to escalate)
make ``LLMFLEET_SOAK_SIZE`` calls in all (default 10,000; ``nox -s soak`` runs 100,000). About
5% of HTTP calls fail at random (``EmulatorConfig.fault_ratio``: 500/529/429, dropped
connections, creates accepted then dropped, cut result streams), 1% of batch items end
errored and 0.5% expired, 3% of callers give up after a random delay, and twice during the run
a "storm" cancels every batched caller still waiting (so whole batches are abandoned and must
be cancelled with the provider).

The emulator runs in a child process: it keeps every request, batch and ledger line it
sees, which would otherwise grow this process's memory and hide the fleet's own. It audits
itself at the end and sends back what the checks need.

Real clocks: the server is another process, and a virtual clock would fire the HTTP
client's timeouts while it waits on a socket.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anthropic
import anyio
import anyio.to_thread
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message

from llmfleet import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultError,
    BatchResultMissingError,
    BatchSubmitError,
    DeadlineExceededError,
    FleetClosedError,
    ResultEvent,
    Route,
    RoutingPolicy,
    open_fleet,
)
from llmfleet.emulator import EmulatorConfig, start_emulator

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from llmfleet import FleetDispatcher
    from llmfleet.emulator import Emulator, Endpoint

#: Calls in all; ``nox -s soak`` sets 100,000.
SIZE: Final = int(os.environ.get("LLMFLEET_SOAK_SIZE", "10000"))
AGENTS: Final = 1_000
KEY: Final = "sk-soak-SECRET"
MODEL: Final = "claude-haiku-4-5"
SEED: Final = 5
FAULT_RATIO: Final = 0.05
ERRORED_RATIO: Final = 0.01
EXPIRED_RATIO: Final = 0.005
#: Share of callers that give up after a random delay (``move_on_after``).
IMPATIENT: Final = 0.03
#: Progress at which a storm cancels every batched caller still waiting.
STORMS: Final = (0.3, 0.7)
#: Wall-clock seconds the whole run may take before it counts as hung.
DEADLINE_S: Final = 60 + SIZE * 0.006
#: RSS at 90% progress must be within this share of RSS at 50%.
MEMORY_TOLERANCE: Final = 0.10

pytestmark = [pytest.mark.timeout(DEADLINE_S + 60)]

POLICY: Final = RoutingPolicy(
    sync_max_latency_ms=1_000,
    batch_window_ms=100,
    batch_min_size=100,
    batch_max_size=200,
    poll_interval_ms=50,
    poll_max_interval_ms=200,
    batch_api_rpm=None,
    escalation_margin_ms=300,
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


# -- the emulator, in its own process ---------------------------------------------------------


def _turnaround(rng: random.Random) -> float:
    # Most batches end quickly; a long tail lasts long enough that an abandoned batch the
    # fleet failed to cancel is still running when its callers have all gone.
    return 3.0 if rng.random() < 0.05 else 0.2


@dataclass(frozen=True)
class BatchRow:
    """One batch as the emulator saw it (times: ``time.time()``)."""

    id: str
    custom_ids: tuple[str, ...]
    status: str
    ended_at: float | None
    cancel_initiated_at: float | None
    #: The fleet's cancel requests for it: (arrival time, injected fault or "").
    cancels: tuple[tuple[float, str], ...]


@dataclass(frozen=True)
class Audit:
    """What the emulator saw, summed up where it runs."""

    counts: dict[str, int]
    #: Random faults injected, by (endpoint, kind and status).
    faults: dict[tuple[str, str], int]
    requests: int
    #: Recorded requests whose text holds the key; and those that carried a key header.
    key_in_requests: int
    keyed_requests: int
    batches: list[BatchRow]
    #: custom_ids in more than one create body (a create sent again after a lost answer).
    sent_twice: int
    ledger: dict[tuple[str, str], int]
    #: custom_ids with more than one line on the bill.
    billed_twice: list[str]
    paid: str = field(default="0")
    #: CPU seconds the emulator's process used.
    cpu_s: float = 0.0


def _audit(emu: Emulator) -> Audit:
    counts = emu.counts
    faults: Counter[tuple[str, str]] = Counter()
    config = emu.config
    for endpoint, n in counts.items():
        name: Endpoint = endpoint  # type: ignore[assignment]
        for i in range(1, n + 1):
            fault = config.random_fault(name, i)
            if fault is not None:
                kind = f"{fault.status}" if fault.kind == "status" else fault.kind
                faults[endpoint, kind] += 1
    requests = emu.requests
    created: Counter[str] = Counter()
    cancels: dict[str, list[tuple[float, str]]] = {}
    n_cancel = 0
    key_in_requests = keyed = 0
    for request in requests:
        if KEY in repr(request):
            key_in_requests += 1
        if "[redacted]" in (request.headers.get(h) for h in ("x-api-key", "authorization")):
            keyed += 1
        if request.endpoint == "batch_create" and isinstance(request.body, dict):
            created.update(r.get("custom_id") for r in request.body.get("requests", ()))
        elif request.endpoint == "batch_cancel":
            # Recorded in arrival order, so this is the n-th call to the endpoint.
            n_cancel += 1
            fault = config.random_fault("batch_cancel", n_cancel)
            what = "" if fault is None else f"{fault.kind} {fault.status}"
            cancels.setdefault(request.path.split("/")[-2], []).append((request.time, what))
    batches = [
        BatchRow(
            b.id,
            b.custom_ids,
            b.processing_status,
            b.ended_at,
            b.cancel_initiated_at,
            tuple(cancels.get(b.id, ())),
        )
        for b in emu.batches.values()
    ]
    entries = emu.ledger.entries
    ledger: Counter[tuple[str, str]] = Counter((e.route, e.result) for e in entries)
    billed = Counter(e.custom_id for e in entries if e.custom_id is not None)
    return Audit(
        counts=counts,
        faults=dict(faults),
        requests=len(requests),
        key_in_requests=key_in_requests,
        keyed_requests=keyed,
        batches=batches,
        sent_twice=sum(1 for n in created.values() if n > 1),
        ledger=dict(ledger),
        billed_twice=[cid for cid, n in billed.items() if n > 1],
        paid=str(emu.ledger.total().paid),
        cpu_s=time.process_time(),
    )


def _serve_emulator(conn: Connection) -> None:
    """The child process: serve, send the URL, audit when asked, stop."""
    config = EmulatorConfig(
        turnaround_s=_turnaround,
        errored_ratio=ERRORED_RATIO,
        expired_ratio=EXPIRED_RATIO,
        fault_ratio=FAULT_RATIO,
        seed=SEED,
    )
    with start_emulator(config) as emu:
        conn.send(emu.url)
        if conn.recv() == "audit":
            conn.send(_audit(emu))
    conn.close()


# -- what the test watches --------------------------------------------------------------------


def _rss_reader() -> Any:
    """A function returning this process's RSS in bytes (psutil, else /proc), or None."""
    try:
        psutil = importlib.import_module("psutil")
    except ImportError:
        psutil = None
    if psutil is not None:
        process = psutil.Process()
        return lambda: int(process.memory_info().rss)
    if os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def statm() -> int:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page

        return statm
    return None


def _leaks(exc: BaseException) -> bool:
    """Whether ``exc``, or what caused it, shows the key in its message or repr."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if KEY in str(current) or KEY in repr(current):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


class _KeyScan(logging.Handler):
    """Reads every llmfleet log record as it is emitted; keeps counts, not records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.levels: Counter[str] = Counter()
        self.leaks: list[str] = []
        self.errors: list[str] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self._formatter.formatException(record.exc_info)
        if KEY in text:
            self.leaks.append(text[:300])
        if record.levelno >= logging.ERROR and len(self.errors) < 5:
            self.errors.append(text[:2000])


@dataclass
class Soak:
    """The run's tallies: a fixed size however many calls are made (memory must stay flat)."""

    calls: list[int]
    done: list[int]
    tally: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    #: ``on_result`` events per batch-route custom_id number (lf_<tag>_<n>).
    resolved: bytearray = field(default_factory=bytearray)
    direct_events: int = 0
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    bad_ids: list[str] = field(default_factory=list)
    #: When each withdrawn batch-route caller left (wall clock, to compare with the emulator).
    withdrawn_at: dict[str, float] = field(default_factory=dict)
    #: Batched callers waiting now, for the storms.
    pending: set[anyio.CancelScope] = field(default_factory=set)
    storms: list[int] = field(default_factory=list)
    ended: int = 0
    rss: dict[str, int] = field(default_factory=dict)
    rss_peak: int = 0

    def on_result(self, event: ResultEvent) -> None:
        self.events[event.route.value, event.outcome] += 1
        cid = event.custom_id
        if cid is None:
            self.direct_events += 1
            return
        try:
            n = int(cid.rpartition("_")[2])
            self.resolved[n] = min(255, self.resolved[n] + 1)
        except (ValueError, IndexError):
            self.bad_ids.append(cid)
            return
        if event.outcome == "withdrawn":
            self.withdrawn_at[cid] = time.time()


# -- the agents -------------------------------------------------------------------------------


def _classify(exc: Exception) -> str:
    if isinstance(exc, BatchRequestError):
        return "errored"
    if isinstance(exc, BatchRequestExpiredError):
        return "expired"
    if isinstance(exc, BatchRequestCanceledError):
        return "canceled"
    if isinstance(exc, BatchResultMissingError):
        return "missing"
    if isinstance(exc, BatchResultError):
        return "result_error"
    if isinstance(exc, BatchSubmitError):
        return "submit_error"
    if isinstance(exc, FleetClosedError):
        return "closed"
    if isinstance(exc, DeadlineExceededError):
        return "deadline"
    if isinstance(exc, anthropic.APIError):
        return "api_error"
    return "unexpected"


async def _one_call(
    soak: Soak, fleet: FleetDispatcher, rng: random.Random, kind: str, text: str
) -> None:
    budget: float | None
    if kind == "direct":
        budget = rng.choice([None, 200])
    elif kind == "tight":
        budget = rng.uniform(2_000, 6_000)
    else:
        budget = rng.choice([600_000, 3_600_000])
    outcome = "none"
    with anyio.CancelScope() as scope:
        if rng.random() < IMPATIENT:
            scope.deadline = anyio.current_time() + rng.uniform(0.0, 1.0)
        if kind != "direct":
            soak.pending.add(scope)
        try:
            message = await fleet.submit(
                latency_budget_ms=budget,
                model=MODEL,
                max_tokens=64,
                messages=[{"role": "user", "content": text}],
            )
        except Exception as exc:
            outcome = _classify(exc)
            if _leaks(exc):
                soak.leaks.append(repr(exc)[:300])
            if outcome == "unexpected" and len(soak.unexpected) < 5:
                soak.unexpected.append(repr(exc)[:500])
        else:
            block = message.content[0] if isinstance(message, Message) else None
            ok = block is not None and block.type == "text" and block.text == text
            outcome = "succeeded" if ok else "misrouted"
        finally:
            soak.pending.discard(scope)
    if scope.cancelled_caught:
        outcome = "withdrawn"
    soak.tally[outcome] += 1
    soak.ended += 1


async def _agent(soak: Soak, fleet: FleetDispatcher, i: int) -> None:
    rng = random.Random(f"{SEED}/agent/{i}")
    # 15% direct, 10% batched with budgets tight enough to escalate, the rest patient.
    kind = "direct" if i % 20 < 3 else "tight" if i % 20 < 5 else "patient"
    for j in range(soak.calls[i]):
        if kind == "direct":
            # Spread the direct calls over the run instead of finishing them first.
            await anyio.sleep(rng.uniform(0.0, 0.8))
        await _one_call(soak, fleet, rng, kind, f"agent {i} call {j}")
        soak.done[i] += 1


async def _monitor(soak: Soak, rss: Any) -> None:
    """Sample RSS against progress, and raise the storms."""
    storms = list(STORMS)
    while True:
        progress = soak.ended / SIZE
        if rss is not None:
            value = rss()
            soak.rss_peak = max(soak.rss_peak, value)
            for mark in (0.5, 0.9):
                if progress >= mark and str(mark) not in soak.rss:
                    soak.rss[str(mark)] = value
        if storms and progress >= storms[0]:
            storms.pop(0)
            scopes = list(soak.pending)
            for scope in scopes:
                scope.cancel()
            soak.storms.append(len(scopes))
        await anyio.sleep(0.05)


# -- the test ---------------------------------------------------------------------------------


async def _recv(conn: Connection, limit_s: float) -> Any:
    def recv() -> Any:
        if not conn.poll(limit_s):
            raise TimeoutError(f"the emulator process did not answer within {limit_s} s")
        return conn.recv()

    return await anyio.to_thread.run_sync(recv, abandon_on_cancel=True)


async def test_soak() -> None:
    per_agent, extra = divmod(SIZE, AGENTS)
    soak = Soak(
        calls=[per_agent + (i < extra) for i in range(AGENTS)],
        done=[0] * AGENTS,
        resolved=bytearray(SIZE + 1),
    )
    rss = _rss_reader()
    scan = _KeyScan()
    logger = logging.getLogger("llmfleet")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    # Not to pytest's log capture, which would keep every record (and grow memory).
    logger.propagate = False
    logger.addHandler(scan)

    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    process = context.Process(
        target=_serve_emulator, args=(child_conn,), name="llmfleet-soak-emulator", daemon=True
    )
    process.start()
    child_conn.close()
    fleet: FleetDispatcher | None = None
    hung: str | None = None
    try:
        url = await _recv(conn, 60)
        start, cpu = time.monotonic(), time.process_time()
        try:
            with anyio.fail_after(DEADLINE_S):
                async with (
                    AsyncAnthropic(api_key=KEY, base_url=url, max_retries=2) as client,
                    open_fleet(client, policy=POLICY, on_result=soak.on_result) as fleet,
                    anyio.create_task_group() as tg,
                ):
                    tg.start_soon(_monitor, soak, rss)
                    async with anyio.create_task_group() as agents:
                        for i in range(AGENTS):
                            agents.start_soon(_agent, soak, fleet, i)
                    tg.cancel_scope.cancel()
        except TimeoutError:
            hung = f"hung: {soak.ended:,} of {SIZE:,} calls ended within {DEADLINE_S:.0f} s"
        elapsed, cpu = time.monotonic() - start, time.process_time() - cpu
        conn.send("audit")
        audit: Audit = await _recv(conn, 120)
    finally:
        logger.removeHandler(scan)
        logger.setLevel(level)
        logger.propagate = propagate
        conn.close()
        await anyio.to_thread.run_sync(process.join, 30)
        if process.is_alive():
            process.kill()
    assert fleet is not None
    stats = fleet.stats

    # Batches whose callers all left: each one still running then must have been cancelled
    # by the fleet: a cancel request answered (maybe after it ended on its own: the cancel
    # was on its way). One that only met injected faults was left running, and billed.
    abandoned = cancelled = ended_first = late = 0
    lag = 0.0
    left_running: list[str] = []
    for batch in audit.batches:
        if not batch.custom_ids or any(c not in soak.withdrawn_at for c in batch.custom_ids):
            continue
        abandoned += 1
        last = max(soak.withdrawn_at[c] for c in batch.custom_ids)
        answered = [at for at, fault in batch.cancels if not fault]
        if answered:
            lag = max(lag, min(answered) - last)
        if batch.ended_at is not None and batch.ended_at <= last:
            ended_first += 1
        elif batch.cancel_initiated_at is not None:
            cancelled += 1
        elif answered:
            late += 1
        else:
            tried = [(f"+{at - last:.2f} s", fault or "ok") for at, fault in batch.cancels]
            left_running.append(
                f"{batch.id}: {len(batch.custom_ids)} calls, {batch.status} "
                f"+{(batch.ended_at or time.time()) - last:.2f} s after its last caller left; "
                f"cancels {tried}"
            )
    in_batches = Counter(c for b in audit.batches for c in b.custom_ids)
    in_two = [c for c, n in in_batches.items() if n > 1]
    running = [b.id for b in audit.batches if b.status != "ended"]
    issued = stats.batched_calls
    not_once = [n for n in range(1, issued + 1) if soak.resolved[n] != 1]
    stray = sum(soak.resolved[issued + 1 :])
    lost = [i for i in range(AGENTS) if soak.done[i] != soak.calls[i]]
    outcomes = (
        stats.succeeded
        + stats.errored
        + stats.expired
        + stats.canceled
        + stats.withdrawn
        + stats.failed
    )
    faults = sum(audit.faults.values())
    http = sum(audit.counts.values())
    rss50, rss90 = soak.rss.get("0.5"), soak.rss.get("0.9")
    mib = 1024 * 1024

    print(
        f"\n== soak: {SIZE:,} calls, {AGENTS:,} agents, {elapsed:.1f} s ({SIZE / elapsed:,.0f}/s)"
    )
    print(f"cpu:     this process {cpu:.1f} s, the emulator's {audit.cpu_s:.1f} s")
    print(f"callers: {dict(sorted(soak.tally.items()))}")
    waits = {r.value: stats.wait_ms(r) for r in Route}
    print(
        "waits:   "
        + ", ".join(f"{r} p50 {w.p50 or 0:.0f} p95 {w.p95 or 0:.0f} ms" for r, w in waits.items())
    )
    print(
        f"fleet:   routes direct={stats.sync_calls:,} batch={stats.batched_calls:,}; "
        f"succeeded={stats.succeeded:,} errored={stats.errored:,} expired={stats.expired:,} "
        f"canceled={stats.canceled:,} withdrawn={stats.withdrawn:,} failed={stats.failed:,}; "
        f"results_dropped={stats.results_dropped:,} escalations={stats.escalations:,} "
        f"routed_by_deadline={stats.routed_by_deadline:,}"
    )
    print(
        f"batches: {stats.batches_submitted:,} accepted, {len(audit.batches):,} at the emulator; "
        f"flushes {dict(stats.flushes)}; sizes {stats.batch_size_min}–{stats.batch_size_max}"
    )
    print(f"fleet api_requests: {dict(stats.api_requests)}; rate_limited={stats.rate_limited}")
    print(
        f"http:    {http:,} requests, {faults:,} random faults ({faults / max(http, 1):.1%}): "
        f"{dict(sorted(audit.faults.items()))}"
    )
    print(
        f"lost:    {len(lost)} agents short, {SIZE - soak.ended} calls not ended, "
        f"{len(not_once)} batch ids not resolved exactly once {not_once[:5]}, {stray} stray "
        f"events; {outcomes:,} outcomes counted; direct events {soak.direct_events:,} for "
        f"{stats.sync_calls:,} direct calls"
    )
    print(
        f"dups:    {len(in_two)} custom_ids in two batches; {audit.sent_twice} sent in two "
        f"creates; {len(audit.billed_twice)} billed twice"
    )
    print(
        f"abandon: storms cancelled {soak.storms} callers; {abandoned} batches all withdrawn: "
        f"{ended_first} ended first, {cancelled} cancelled by the fleet, {late} cancelled as "
        f"they ended, {len(left_running)} left running (cancel up to {lag:.2f} s after the "
        f"last caller left); {len(running)} not ended at exit"
    )
    print(f"ledger:  {dict(sorted(audit.ledger.items()))}; paid ${audit.paid}")
    if rss50 is not None and rss90 is not None:
        print(
            f"memory:  RSS {rss50 / mib:.1f} MiB at 50%, {rss90 / mib:.1f} MiB at 90% "
            f"({(rss90 - rss50) / rss50:+.1%}), peak {soak.rss_peak / mib:.1f} MiB"
        )
    print(
        f"key:     {sum(scan.levels.values()):,} log records {dict(scan.levels)}, "
        f"{len(scan.leaks)} with the key; {len(soak.leaks)} caller exceptions with it; "
        f"{audit.key_in_requests} of {audit.requests:,} recorded requests "
        f"({audit.keyed_requests:,} sent it, redacted)"
    )

    assert hung is None, hung
    # 0 lost: every submit ended, once, with an outcome; the fleet counted each one once.
    assert not lost, lost[:10]
    assert soak.ended == SIZE
    assert sum(soak.tally.values()) == SIZE
    assert soak.tally["none"] == 0
    assert not soak.unexpected, soak.unexpected
    assert soak.tally["misrouted"] == 0
    assert soak.tally["closed"] == 0
    assert stats.sync_calls + stats.batched_calls == SIZE
    assert outcomes == SIZE
    assert not not_once, not_once[:10]
    assert stray == 0
    assert not soak.bad_ids, soak.bad_ids[:5]
    assert soak.direct_events + issued == SIZE
    # A caller whose scope fires just as its result lands counts as withdrawn here and as
    # answered in the stats; never the other way round.
    assert soak.tally["succeeded"] <= stats.succeeded
    assert stats.withdrawn <= soak.tally["withdrawn"]
    # 0 duplicated, 0 double-billed.
    assert not in_two, in_two[:10]
    assert not audit.billed_twice, audit.billed_twice[:10]
    assert not left_running, left_running[:10]
    assert not running, running[:10]
    # No error logged (a batch task that failed on something no rule covers).
    assert not scan.errors, scan.errors
    # The key nowhere.
    assert not scan.leaks, scan.leaks
    assert not soak.leaks, soak.leaks
    assert audit.key_in_requests == 0
    assert audit.keyed_requests > 0
    # The run did what it says: faults, errored and expired items, callers leaving, storms.
    assert 0.02 < faults / http < 0.08
    assert soak.tally["errored"] > 0
    assert soak.tally["expired"] > 0
    assert soak.tally["withdrawn"] > 0
    assert len(soak.storms) == len(STORMS)
    assert abandoned > 0
    # Memory flat.
    if rss50 is None or rss90 is None:
        pytest.skip("no way to read RSS here (psutil missing, no /proc)")
    assert abs(rss90 - rss50) <= MEMORY_TOLERANCE * rss50, (rss50, rss90)
