"""Faults × phases (docs/design.md §5) on the Bedrock adapter: the fleet through botocore, in
worker threads, against the stand-in's injected faults and job endings, on asyncio and trio.

The counterpart of ``test_reliability.py`` (which drives the anthropic SDK): phases *direct*,
*create*, *poll* and *queued*; the results phase reads S3 (moto), whose faults are covered by
the adapter's own classification (an output cut short or behind its manifest is read again).
Real clocks, for the reasons given in ``test_bedrock.py``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import anyio
import botocore.exceptions
import pytest
from anthropic.types import Message

import llmfleet._create_gate as create_gate_module
from llmfleet import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchSubmitError,
    FleetClosedError,
    FleetDispatcher,
    RoutingPolicy,
    open_fleet,
)
from llmfleet.emulator import BedrockConfig, BedrockFault
from llmfleet.providers import ErrorKind
from llmfleet.providers.bedrock import classify_aws

from bedrock_env import bedrock_client, params, stand_in

if TYPE_CHECKING:
    from llmfleet.emulator import BedrockEmulator

pytestmark = [pytest.mark.timeout(60)]

Outcomes = dict[str, object]
CANCELLED = "cancelled"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def policy(**overrides: Any) -> RoutingPolicy:
    fields: dict[str, Any] = {
        "sync_max_latency_ms": 0,
        "batch_window_ms": 50,
        "batch_min_size": 2,
        "batch_max_size": 10,
        "poll_interval_ms": 20,
        "poll_max_interval_ms": 100,
        "batch_api_rpm": None,
    } | overrides
    return RoutingPolicy(**fields)


def config(**overrides: Any) -> BedrockConfig:
    return BedrockConfig(**{"min_records": 2, "turnaround_s": 0.05, **overrides})


async def call(fleet: FleetDispatcher, text: str, out: Outcomes, *, route: str = "batch") -> None:
    body = params(text)
    with anyio.CancelScope() as scope:
        try:
            if route == "batch":
                out[text] = await fleet.submit_batch(**body)
            else:
                out[text] = await fleet.submit_sync(**body)
        except Exception as exc:
            out[text] = exc
    if scope.cancelled_caught:
        out[text] = CANCELLED


def text_of(message: object) -> str:
    assert type(message) is Message, message
    block = message.content[0]
    assert block.type == "text"
    return block.text


async def until(predicate: Any, limit_s: float = 5.0) -> None:
    with anyio.fail_after(limit_s):
        # Polling: the state watched is the stand-in's, on another thread.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def only_job(emu: BedrockEmulator) -> str:
    (arn,) = emu.jobs
    return arn


async def run_pair(emu: BedrockEmulator, bucket: str, out: Outcomes, **kw: Any) -> FleetDispatcher:
    async with open_fleet(bedrock_client(emu, bucket, **kw), policy=policy()) as fleet:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
    return fleet


# -- create ---------------------------------------------------------------------------------


async def test_create_throttled_fails_that_batch_only_and_is_sent_once() -> None:
    out: Outcomes = {}
    async with stand_in(config()) as (emu, bucket):
        emu.add_fault(BedrockFault("CreateModelInvocationJob"))
        fleet = await run_pair(emu, bucket, out)
        assert emu.counts["CreateModelInvocationJob"] == 1
        assert emu.jobs == {}
        for text in "ab":
            error = out[text]
            assert type(error) is BatchSubmitError
            assert "status 429" in str(error)
            assert isinstance(error.__cause__, botocore.exceptions.ClientError)
        assert out["a"] is not out["b"]
        assert fleet.stats.rate_limited == 1
        assert fleet.stats.failed == 2


async def test_create_accepted_then_dropped_is_found_by_name_and_adopted() -> None:
    out: Outcomes = {}
    async with stand_in(config()) as (emu, bucket):
        emu.add_fault(BedrockFault("CreateModelInvocationJob", "accept_then_drop"))
        fleet = await run_pair(emu, bucket, out)
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        assert emu.counts["CreateModelInvocationJob"] == 1
        assert emu.counts["ListModelInvocationJobs"] >= 1
        assert len(emu.jobs) == 1
        assert fleet.stats.batches_submitted == 1
        assert len(emu.ledger.select(route="batch")) == 2


async def test_create_dropped_is_sent_again_and_makes_one_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fleet looks for the job this long before it sends the create again (5 s by default).
    monkeypatch.setattr(create_gate_module, "RECONCILE_WINDOW_S", 0.5)
    out: Outcomes = {}
    async with stand_in(config()) as (emu, bucket):
        emu.add_fault(BedrockFault("CreateModelInvocationJob", "drop"))
        await run_pair(emu, bucket, out)
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        assert emu.counts["CreateModelInvocationJob"] == 2
        assert len(emu.jobs) == 1


async def test_create_timing_out_then_carried_out_late_is_one_job() -> None:
    """The create outlives botocore's read timeout and is carried out after the client gave
    up; the fleet's second create carries the same clientRequestToken, so the service answers
    it with the same job: one job, one bill, whichever comes first."""
    out: Outcomes = {}
    async with stand_in(config()) as (emu, bucket):
        emu.add_fault(BedrockFault("CreateModelInvocationJob", "slow", delay_s=0.6))
        await run_pair(emu, bucket, out, read_timeout=0.3)
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        await until(lambda: emu.counts["CreateModelInvocationJob"] >= 1)
        await anyio.sleep(0.5)  # the slow create has been carried out by now
        assert len(emu.jobs) == 1
        assert len(emu.ledger.select(route="batch", result="succeeded")) == 2


# -- poll -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        BedrockFault("GetModelInvocationJob", status=500, code="InternalServerException", times=3),
        # Each 429 pauses every batch request for a second (no retry-after): one is enough.
        BedrockFault("GetModelInvocationJob", times=1),
        BedrockFault("GetModelInvocationJob", "drop", times=2),
    ],
    ids=["500", "throttled", "drop"],
)
async def test_poll_faults_never_abandon_the_job(fault: BedrockFault) -> None:
    out: Outcomes = {}
    async with stand_in(config()) as (emu, bucket):
        emu.add_fault(fault)
        await run_pair(emu, bucket, out)
        assert (text_of(out["a"]), text_of(out["b"])) == ("a", "b")
        assert emu.counts["GetModelInvocationJob"] >= fault.times + 2


# -- how a job ends -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["fail", "expire", "stop"])
async def test_a_job_failed_expired_or_stopped_from_outside(how: str) -> None:
    out: Outcomes = {}
    texts = [f"t{i}" for i in range(4)]
    async with stand_in(config(turnaround_s=math.inf, min_records=4)) as (emu, bucket):
        client = bedrock_client(emu, bucket)
        async with (
            open_fleet(client, policy=policy(batch_min_size=4)) as fleet,
            anyio.create_task_group() as tg,
        ):
            for text in texts:
                tg.start_soon(call, fleet, text, out)
            await until(lambda: emu.counts.get("GetModelInvocationJob", 0) >= 1)
            arn = only_job(emu)
            if how == "fail":
                emu.fail_job(arn, "The model could not be reached.")
            elif how == "expire":
                emu.expire_job(arn)
            else:
                emu.stop_job_externally(arn)
        status = emu.jobs[arn].status
        assert emu.counts.get("StopModelInvocationJob", 0) == 0
        outcomes = [out[t] for t in texts]
        if how == "fail":
            assert status == "Failed"
            for error in outcomes:
                assert type(error) is BatchRequestError
                assert (error.error_type, error.message) == (
                    "JobFailed",
                    "The model could not be reached.",
                )
                assert error.batch_id == arn
        elif how == "expire":
            # The first half of the records was processed before the job expired.
            assert status == "Expired"
            answered = [o for o in outcomes if isinstance(o, Message)]
            expired = [o for o in outcomes if type(o) is BatchRequestExpiredError]
            assert (len(answered), len(expired)) == (2, 2)
            assert fleet.stats.expired == 2
        else:
            assert status == "Stopped"
            assert all(type(o) is BatchRequestCanceledError for o in outcomes)
            assert fleet.stats.canceled == 4


async def test_partially_completed_fails_only_the_unprocessed_callers() -> None:
    out: Outcomes = {}
    texts = ["p0", "p1 [[unprocessed]]", "p2", "p3 [[errored]]"]
    async with stand_in(config(min_records=4)) as (emu, bucket):
        client = bedrock_client(emu, bucket)
        async with open_fleet(client, policy=policy(batch_min_size=4)) as fleet:
            async with anyio.create_task_group() as tg:
                for text in texts:
                    tg.start_soon(call, fleet, text, out)
        (job,) = emu.jobs.values()
        assert job.status == "PartiallyCompleted"
        assert (text_of(out["p0"]), text_of(out["p2"])) == ("p0", "p2")
        unprocessed = out["p1 [[unprocessed]]"]
        assert type(unprocessed) is BatchRequestError
        assert unprocessed.error_type == "RecordNotProcessed"
        assert "PartiallyCompleted" in unprocessed.message
        errored = out["p3 [[errored]]"]
        assert type(errored) is BatchRequestError
        assert errored.error_type == "500"
        assert fleet.stats.errored == 2


async def test_every_caller_leaving_stops_the_job() -> None:
    out: Outcomes = {}
    async with stand_in(config(turnaround_s=math.inf)) as (emu, bucket):
        client = bedrock_client(emu, bucket)
        async with open_fleet(client, policy=policy()) as fleet, anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
            await until(lambda: emu.counts.get("GetModelInvocationJob", 0) >= 1)
            tg.cancel_scope.cancel()
        await until(lambda: emu.counts.get("StopModelInvocationJob", 0) == 1)
        arn = only_job(emu)
        await until(lambda: emu.jobs[arn].status == "Stopped")
        # Nothing was processed: the records are on the bill as canceled, at no cost.
        assert {e.result for e in emu.ledger.entries} == {"canceled"}
        assert fleet.stats.withdrawn == 2


# -- shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["queued", "create", "poll"])
async def test_exit_by_exception_in_every_phase(phase: str) -> None:
    out: Outcomes = {}
    boom = ValueError("the body failed")
    async with (
        anyio.create_task_group() as tg,
        stand_in(config(turnaround_s=math.inf)) as (emu, bucket),
    ):
        if phase == "create":
            emu.add_fault(BedrockFault("CreateModelInvocationJob", "slow", delay_s=0.3))
        rules = policy(batch_min_size=3, batch_window_ms=30_000) if phase == "queued" else policy()
        fleet = FleetDispatcher(bedrock_client(emu, bucket), policy=rules)

        async def body() -> None:
            async with fleet:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
                if phase == "create":
                    await until(lambda: emu.counts.get("CreateModelInvocationJob", 0) >= 1)
                elif phase == "poll":
                    await until(lambda: emu.counts.get("GetModelInvocationJob", 0) >= 1)
                else:
                    await anyio.sleep(0.05)
                raise boom

        start = time.monotonic()
        with pytest.raises(ValueError, match="the body failed") as caught:
            await body()
        assert caught.value is boom
        assert time.monotonic() - start < 3.0
        await until(lambda: len(out) == 2)
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        if phase == "queued":
            assert emu.counts.get("CreateModelInvocationJob", 0) == 0
        else:
            # The job made (after the slow create, too) is stopped, not left to run.
            await until(lambda: emu.counts.get("StopModelInvocationJob", 0) == 1)
            assert emu.jobs[only_job(emu)].status == "Stopped"


async def test_drain_timeout_stops_the_job() -> None:
    out: Outcomes = {}
    async with (
        anyio.create_task_group() as tg,
        stand_in(config(turnaround_s=math.inf)) as (emu, bucket),
    ):
        start = time.monotonic()
        async with open_fleet(
            bedrock_client(emu, bucket), policy=policy(), drain_timeout_ms=200
        ) as fleet:
            tg.start_soon(call, fleet, "a", out)
            tg.start_soon(call, fleet, "b", out)
            await until(lambda: emu.counts.get("GetModelInvocationJob", 0) >= 1)
        assert time.monotonic() - start < 3.0
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        assert emu.counts["StopModelInvocationJob"] == 1
        assert emu.jobs[only_job(emu)].status == "Stopped"
        assert fleet.stats.failed == 2


async def test_outer_cancellation_stops_the_job() -> None:
    out: Outcomes = {}
    async with (
        anyio.create_task_group() as tg,
        stand_in(config(turnaround_s=math.inf)) as (emu, bucket),
    ):
        start = time.monotonic()
        with anyio.CancelScope() as scope:
            async with open_fleet(bedrock_client(emu, bucket), policy=policy()) as fleet:
                tg.start_soon(call, fleet, "a", out)
                tg.start_soon(call, fleet, "b", out)
                await until(lambda: emu.counts.get("GetModelInvocationJob", 0) >= 1)
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert time.monotonic() - start < 3.0
        await until(lambda: len(out) == 2)
        assert type(out["a"]) is type(out["b"]) is FleetClosedError
        assert emu.counts["StopModelInvocationJob"] == 1


# -- the direct route -----------------------------------------------------------------------


async def test_direct_throttling_is_retried_by_botocore_then_surfaces() -> None:
    out: Outcomes = {}
    async with stand_in(config()) as (emu, bucket):
        client = bedrock_client(emu, bucket, max_direct_attempts=2)
        async with open_fleet(client, policy=policy()) as fleet:
            emu.add_fault(BedrockFault("InvokeModel", times=1))
            await call(fleet, "once", out, route="direct")
            emu.add_fault(BedrockFault("InvokeModel", times=2))
            await call(fleet, "always", out, route="direct")
        assert text_of(out["once"]) == "once"
        error = out["always"]
        assert isinstance(error, botocore.exceptions.ClientError)
        assert error.response["Error"]["Code"] == "ThrottlingException"
        info = classify_aws(error)
        assert info is not None
        assert info.kind is ErrorKind.RATE_LIMITED
        assert emu.counts["InvokeModel"] == 4  # 2 attempts each
        assert fleet.stats.errored == 1


async def test_a_direct_caller_cancelled_mid_call_leaves_at_once() -> None:
    async with stand_in(config(direct_latency_s=0.8)) as (emu, bucket):
        async with open_fleet(bedrock_client(emu, bucket), policy=policy()) as fleet:
            start = time.monotonic()
            with anyio.move_on_after(0.2) as scope:
                await fleet.submit_sync(**params("slow"))
            # The worker thread is abandoned to botocore's own timeout; the caller is not
            # held by it.
            assert scope.cancelled_caught
            assert time.monotonic() - start < 1.0
        assert fleet.stats.withdrawn == 1


def test_classification_of_botocore_errors() -> None:
    def client_error(code: str, status: int, headers: dict[str, str] | None = None) -> Any:
        return botocore.exceptions.ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
            },
            "Op",
        )

    cases = {
        ErrorKind.RATE_LIMITED: [
            client_error("ThrottlingException", 429, {"retry-after": "3"}),
            client_error("ModelNotReadyException", 429),
        ],
        ErrorKind.NOT_FOUND: [client_error("ResourceNotFoundException", 404)],
        ErrorKind.SERVER: [
            client_error("InternalServerException", 500),
            client_error("ServiceUnavailableException", 503),
            client_error("ModelTimeoutException", 408),
        ],
        ErrorKind.FATAL: [
            client_error("ValidationException", 400),
            client_error("AccessDeniedException", 403),
            client_error("ConflictException", 400),
            botocore.exceptions.NoCredentialsError(),
        ],
        ErrorKind.CONNECTION: [
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
            botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"),
            botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"),
        ],
    }
    for kind, errors in cases.items():
        for exc in errors:
            info = classify_aws(exc)
            assert info is not None, exc
            assert info.kind is kind, exc
    throttled = classify_aws(cases[ErrorKind.RATE_LIMITED][0])
    assert throttled is not None
    assert throttled.retry_after == 3.0
    assert classify_aws(ValueError("not ours")) is None
