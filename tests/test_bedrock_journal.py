"""A fleet with a journal (docs/journal.md) over the Bedrock adapter, against the stand-in and
moto's S3, on asyncio and trio: a new process (a new adapter, a new fleet) re-attaches a job
an aborted fleet left running, finds a job whose create got no answer by the tag in its name,
and maps the job's records back to custom_ids from S3. One job, one bill.

Real clocks, for the reasons given in ``test_bedrock.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anthropic.types import Message

import llmfleet._batch as batch_module
from llmfleet import FleetClosedError, RoutingPolicy, open_fleet
from llmfleet.emulator import BedrockConfig, BedrockFault
from llmfleet.journal import SQLiteStore

from bedrock_env import bedrock_client, params, stand_in

if TYPE_CHECKING:
    from pathlib import Path

    from llmfleet.emulator import BedrockEmulator

pytestmark = [pytest.mark.timeout(60)]

TEXTS = ["a", "b", "c"]
POLICY = RoutingPolicy(
    sync_max_latency_ms=0,
    batch_window_ms=50,
    batch_min_size=3,
    batch_max_size=3,
    poll_interval_ms=20,
    poll_max_interval_ms=100,
    batch_api_rpm=None,
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Abort(Exception):
    pass


async def until(predicate: Any, limit_s: float = 10.0) -> None:
    with anyio.fail_after(limit_s):
        # Polling: the state watched is the stand-in's, on another thread.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def abort_when(emu: BedrockEmulator, bucket: str, path: Path, ready: Any) -> None:
    """Submit TEXTS through a journaled fleet and let its block raise once ``ready(emu)``."""
    out: dict[str, object] = {}

    async def one(fleet: Any, text: str) -> None:
        try:
            out[text] = await fleet.submit_batch(**params(text))
        except Exception as exc:
            out[text] = exc

    async with anyio.create_task_group() as callers:
        try:
            async with open_fleet(bedrock_client(emu, bucket), policy=POLICY, journal=path) as f:
                for text in TEXTS:
                    callers.start_soon(one, f, text)
                await until(lambda: ready(emu))
                raise Abort
        except Abort:
            pass
    assert all(isinstance(v, FleetClosedError) for v in out.values()), out


async def answers_from_the_job(emu: BedrockEmulator, bucket: str, path: Path) -> None:
    """A new adapter and fleet on the same journal answer every call from the one job."""
    out: dict[str, Message] = {}
    async with open_fleet(bedrock_client(emu, bucket), policy=POLICY, journal=path) as fleet:
        assert fleet.stats.reattached_batches == 1

        async def one(text: str) -> None:
            out[text] = await fleet.submit_batch(**params(text))

        async with anyio.create_task_group() as tg:
            for text in TEXTS:
                tg.start_soon(one, text)
        stats = fleet.stats.snapshot()
    assert {t: m.content[0].text for t, m in out.items()} == {t: t for t in TEXTS}  # type: ignore[union-attr]
    assert all(type(m) is Message for m in out.values())
    assert stats.batches_submitted == 0
    assert stats.from_journal == len(TEXTS)
    assert emu.counts["CreateModelInvocationJob"] == 1
    (job,) = emu.jobs.values()
    assert job.status == "Completed"
    # The bill: each record once, all from that job.
    billed = emu.ledger.select(route="batch")
    assert len(billed) == len(TEXTS)
    assert {entry.batch_id for entry in billed} == {job.arn}


async def open_flushes(path: Path) -> list[str | None]:
    """The batch ids of the journal's open flushes (``None``: an intent with no id)."""
    store = SQLiteStore(path, provider="bedrock")
    await store.open()
    try:
        state = await store.load()
    finally:
        await store.aclose()
    return [flush.batch_id for flush in state.open_flushes]


async def test_a_new_process_re_attaches_the_job_an_aborted_fleet_left_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    async with stand_in(BedrockConfig(min_records=3, turnaround_s=1.0)) as (emu, bucket):
        await abort_when(emu, bucket, path, lambda emu: len(emu.jobs) == 1)
        (job,) = emu.jobs.values()
        assert job.status != "Completed"  # still running: the journal leaves it so
        assert await open_flushes(path) == [job.arn]
        await answers_from_the_job(emu, bucket, path)
        assert emu.counts["StopModelInvocationJob"] == 0


async def test_an_unanswered_create_is_found_by_its_tag_in_a_new_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create is carried out but its answer lost, and the fleet aborts while it looks for
    the job (its listing is slow, past the abort's grace): the intent has no id, as a process
    killed then leaves it. The next fleet finds the job by the tag in its name rather than
    voiding the intent and making a second job."""
    monkeypatch.setattr(batch_module, "ABORT_GRACE_S", 0.3)
    path = tmp_path / "j.db"
    async with stand_in(BedrockConfig(min_records=3, turnaround_s=0.5)) as (emu, bucket):
        emu.add_fault(BedrockFault("CreateModelInvocationJob", "accept_then_drop"))
        emu.add_fault(BedrockFault("ListModelInvocationJobs", "slow", delay_s=2.0))
        await abort_when(emu, bucket, path, lambda emu: emu.counts["ListModelInvocationJobs"] >= 1)
        assert len(emu.jobs) == 1
        assert await open_flushes(path) == [None]
        (job,) = emu.jobs.values()
        assert job.name.startswith("llmfleet-lf-")  # the journal's tag, as a job name holds it
        await answers_from_the_job(emu, bucket, path)
        assert await open_flushes(path) == []
        # Found by the exact name stem the tag makes (the first listing was the dead fleet's).
        lists = [r.query for r in emu.requests if r.path == "/model-invocation-jobs"]
        stem = job.name.rsplit("-", 1)[0] + "-"
        assert len(lists) == 2
        assert f"nameContains={stem}" in lists[1]
