"""The Bedrock adapter and its stand-in: botocore over real HTTP to the stand-in and moto's S3,
botocore in worker threads (the production path), on asyncio and trio.

Real clocks, as in ``test_reliability.py``: the servers live on their own threads, and so does
botocore; a virtual clock would jump while a thread works.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
import botocore.exceptions
import pytest
from anthropic.types import Message

from llmfleet import (
    BatchRequestError,
    BatchResultError,
    FleetDispatcher,
    RoutingPolicy,
    UnbatchableRequestError,
    open_fleet,
)
from llmfleet.emulator import BedrockConfig
from llmfleet.providers import BATCH_TAG, ErrorKind, adapter_for
from llmfleet.providers.bedrock import ANTHROPIC_VERSION, BedrockClient, BedrockProvider

from bedrock_env import MODEL, ROLE, bedrock_client, params, provider, stand_in

if TYPE_CHECKING:
    from llmfleet.emulator import BedrockEmulator

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


def fast_policy(**overrides: Any) -> RoutingPolicy:
    fields: dict[str, Any] = {
        "sync_max_latency_ms": 0,
        "batch_window_ms": 100,
        "batch_min_size": 5,
        "batch_max_size": 10,
        "poll_interval_ms": 20,
        "poll_max_interval_ms": 100,
        "batch_api_rpm": None,
    } | overrides
    return RoutingPolicy(**fields)


def text_of(message: object) -> str:
    assert type(message) is Message, message
    block = message.content[0]
    assert block.type == "text"
    return block.text


async def gather(fleet: Any, texts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def one(text: str) -> None:
        try:
            out[text] = await fleet.submit_batch(**params(text))
        except Exception as exc:
            out[text] = exc

    async with anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(one, text)
    return out


def s3_objects(emu: BedrockEmulator, bucket: str) -> dict[str, bytes]:
    s3 = emu._state._s3
    listing = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


# -- configuration --------------------------------------------------------------------------


def test_bedrock_client_is_validated() -> None:
    with pytest.raises(ValueError, match="role_arn must be an IAM role ARN"):
        BedrockClient(role_arn="batch-role", bucket="b")
    with pytest.raises(ValueError, match="bucket must be a bucket name"):
        BedrockClient(role_arn=ROLE, bucket="s3://b/x")
    with pytest.raises(ValueError, match="min_batch_requests <= max_batch_requests"):
        BedrockClient(role_arn=ROLE, bucket="b", min_batch_requests=10, max_batch_requests=5)
    with pytest.raises(ValueError, match="timeout_hours must be 24 to 168"):
        BedrockClient(role_arn=ROLE, bucket="b", timeout_hours=12)


def test_open_fleet_picks_the_bedrock_adapter_from_a_bedrock_client() -> None:
    client = BedrockClient(role_arn=ROLE, bucket="jobs", region="eu-west-1", min_batch_requests=7)
    adapter = adapter_for(client)
    assert isinstance(adapter, BedrockProvider)
    assert adapter.min_batch_requests == 7
    assert adapter.max_batch_requests == 50_000
    assert repr(adapter) == "<BedrockProvider region='eu-west-1' bucket='jobs'>"
    with pytest.raises(TypeError, match="must be a BedrockClient"):
        BedrockProvider("jobs")  # type: ignore[arg-type]


def test_requests_are_checked_and_prepared_as_invoke_model_bodies() -> None:
    adapter = BedrockProvider(BedrockClient(role_arn=ROLE, bucket="jobs"))
    with pytest.raises(UnbatchableRequestError, match="stream=True"):
        adapter.check({**params("x"), "stream": True})
    with pytest.raises(UnbatchableRequestError, match="model= is required"):
        adapter.check({"max_tokens": 5, "messages": []})
    with pytest.raises(UnbatchableRequestError, match="extra_headers is an SDK request option"):
        adapter.check({**params("x"), "extra_headers": {"a": "b"}})
    with pytest.raises(UnbatchableRequestError, match="not JSON-serializable"):
        adapter.prepare("lf_a_1", {**params("x"), "metadata": object()})
    with pytest.raises(UnbatchableRequestError, match="max_tokens=0"):
        adapter.prepare("lf_a_1", params("x", max_tokens=0))
    size, (model, body) = adapter.prepare("lf_a_1", {**params("hé"), "system": "be brief"})
    assert model == MODEL
    assert json.loads(body) == {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hé"}],
        "system": "be brief",
    }
    line = f'{{"recordId":"R0000000000","modelInput":{body}}}\n'
    assert size >= len(line.encode())
    assert adapter.batch_key(params("x")) == MODEL
    assert adapter.batch_key(params("x", model="other")) != adapter.batch_key(params("x"))


# -- the whole path -------------------------------------------------------------------------


async def test_a_fleet_over_bedrock_answers_every_caller_on_both_routes() -> None:
    async with stand_in(BedrockConfig(min_records=5)) as (emu, bucket):
        texts = [f"call-{i}" for i in range(6)] + ["call-6 [[errored]]"]
        async with open_fleet(bedrock_client(emu, bucket), policy=fast_policy()) as fleet:
            out = await gather(fleet, texts)
            direct = await fleet.submit_sync(**params("straight"))
        assert text_of(direct) == "straight"
        for text in texts[:6]:
            assert text_of(out[text]) == text
        error = out["call-6 [[errored]]"]
        assert isinstance(error, BatchRequestError)
        assert error.error_type == "500"
        assert "injected by the stand-in" in error.message
        # Two jobs (one of five, one of two would be under the minimum: direct instead).
        jobs = list(emu.jobs.values())
        stats = fleet.stats
        assert [job.status for job in jobs] == ["Completed"] * len(jobs)
        assert sum(job.records for job in jobs) + stats.below_min_batch == 7
        assert emu.counts["InvokeModel"] == 1 + stats.below_min_batch
        # The ledger: batch records at half the on-demand price, and the fleet agrees.
        batch = emu.ledger.select(route="batch", result="succeeded")
        assert batch
        assert all(e.cost is not None and e.cost.paid * 2 == e.cost.list_price for e in batch)
        assert (
            stats.snapshot().cost[next(r for r in stats.snapshot().cost if r.value == "batch")].paid
            == emu.ledger.total(route="batch").paid
        )
        assert emu.ledger.total(route="batch").paid > Decimal(0)


async def test_the_input_and_output_files_follow_bedrocks_format() -> None:
    async with stand_in(BedrockConfig(min_records=3)) as (emu, bucket):
        policy = fast_policy(batch_min_size=3, batch_max_size=3)
        async with open_fleet(bedrock_client(emu, bucket), policy=policy) as fleet:
            out = await gather(fleet, ["a", "b", "c"])
        assert {t: text_of(m) for t, m in out.items()} == {"a": "a", "b": "b", "c": "c"}
        objects = s3_objects(emu, bucket)
        (job,) = emu.jobs.values()
        job_id = job.arn.rsplit("/", 1)[1]
        folder = f"llmfleet/{job.name}"
        assert set(objects) == {
            f"{folder}/input.jsonl",
            f"{folder}/ids.json",
            f"{folder}/output/{job_id}/input.jsonl.out",
            f"{folder}/output/{job_id}/manifest.json.out",
        }
        lines = [json.loads(raw) for raw in objects[f"{folder}/input.jsonl"].splitlines()]
        assert len(lines) == 3
        for line in lines:
            assert set(line) == {"recordId", "modelInput"}
            assert line["recordId"].isalnum()
            assert len(line["recordId"]) == 11
            assert line["modelInput"]["anthropic_version"] == ANTHROPIC_VERSION
            assert "model" not in line["modelInput"]
        assert len({line["recordId"] for line in lines}) == 3
        # The custom_ids in record order, beside the input: any process maps the output back.
        ids = json.loads(objects[f"{folder}/ids.json"])
        assert len(ids) == 3
        assert all(cid.startswith("lf_") for cid in ids)
        manifest = json.loads(objects[f"{folder}/output/{job_id}/manifest.json.out"])
        assert manifest["processedRecordCount"] == manifest["successRecordCount"] == 3
        # The name and the token are the flush's: the same records make the same job.
        assert job.name.startswith("llmfleet-")
        assert job.name.endswith("-3")  # the record count: find_batch in another process
        assert len(job.client_token) == 64


async def test_a_pool_under_the_minimum_goes_direct_instead_of_waiting() -> None:
    # Bedrock's real minimum (100 records): three calls cannot make a job by their window.
    async with stand_in() as (emu, bucket):
        client = bedrock_client(emu, bucket)
        assert client.min_batch_requests == 100
        start = time.monotonic()
        async with open_fleet(client, policy=fast_policy(batch_max_size=100)) as fleet:
            out = await gather(fleet, ["x", "y", "z"])
        assert time.monotonic() - start < 5
        assert {t: text_of(m) for t, m in out.items()} == {"x": "x", "y": "y", "z": "z"}
        assert emu.counts.get("CreateModelInvocationJob", 0) == 0
        assert emu.counts["InvokeModel"] == 3
        assert fleet.stats.below_min_batch == 3
        assert {e.route for e in emu.ledger.entries} == {"direct"}


# -- the stand-in, through botocore ---------------------------------------------------------


def _create_args(bucket: str, name: str = "job1", **overrides: Any) -> dict[str, Any]:
    return {
        "jobName": name,
        "roleArn": ROLE,
        "modelId": MODEL,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{bucket}/in/{name}.jsonl"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/out/"}},
        **overrides,
    }


def _put_input(emu: BedrockEmulator, bucket: str, name: str, lines: list[Any]) -> None:
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    emu._state._s3.put_object(Bucket=bucket, Key=f"in/{name}.jsonl", Body=body)


def _record(record_id: str, text: str = "hi") -> dict[str, Any]:
    return {
        "recordId": record_id,
        "modelInput": {
            "anthropic_version": ANTHROPIC_VERSION,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": text}],
        },
    }


async def test_the_stand_in_refuses_bad_creates_as_the_service_does() -> None:
    async with stand_in(BedrockConfig(min_records=1)) as (emu, bucket):
        adapter = provider(emu, bucket)
        control = adapter._bedrock

        def refused(**overrides: Any) -> botocore.exceptions.ClientError:
            with pytest.raises(botocore.exceptions.ClientError) as info:
                control.create_model_invocation_job(**_create_args(bucket, **overrides))
            return info.value

        cases = {
            "roleArn": refused(roleArn="arn:aws:iam::123:user/me"),
            "s3Uri": refused(
                inputDataConfig={"s3InputDataConfig": {"s3Uri": "https://bucket/in.jsonl"}}
            ),
            "model identifier": refused(modelId="meta.llama3-8b-instruct-v1:0"),
            "between 24 and 168": refused(timeoutDurationInHours=200),
            "jobName": refused(jobName="-bad name"),
        }
        for needle, exc in cases.items():
            assert exc.response["Error"]["Code"] == "ValidationException"
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert needle in exc.response["Error"]["Message"]
            info = adapter.classify(exc)
            assert info is not None
            assert info.kind is ErrorKind.FATAL
        # Idempotency: the same token is the same job; the same name with another is refused.
        first = control.create_model_invocation_job(
            **_create_args(bucket, clientRequestToken="tok1")
        )
        again = control.create_model_invocation_job(
            **_create_args(bucket, clientRequestToken="tok1")
        )
        assert first["jobArn"] == again["jobArn"]
        conflict = refused(clientRequestToken="tok2")
        assert conflict.response["Error"]["Code"] == "ConflictException"
        with pytest.raises(botocore.exceptions.ClientError) as missing:
            control.get_model_invocation_job(jobIdentifier="abcdefabcdef")
        assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
        info = adapter.classify(missing.value)
        assert info is not None
        assert info.kind is ErrorKind.NOT_FOUND


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        pytest.param([_record("a1"), _record("a2")], "fewer than the minimum of 3", id="min"),
        pytest.param(
            [_record("a1"), _record("a1"), _record("a2")], "recordId a1 is not unique", id="dup"
        ),
        pytest.param(
            [_record("a_1"), _record("a2"), _record("a3")], "not an alphanumeric", id="format"
        ),
        pytest.param([{"recordId": "a1"}] * 3, "has no modelInput", id="no-input"),
    ],
)
async def test_an_invalid_input_file_fails_the_job_at_validation(
    lines: list[Any], reason: str
) -> None:
    async with stand_in(BedrockConfig(min_records=3)) as (emu, bucket):
        control = provider(emu, bucket)._bedrock
        _put_input(emu, bucket, "job1", lines)
        arn = control.create_model_invocation_job(**_create_args(bucket))["jobArn"]
        job = control.get_model_invocation_job(jobIdentifier=arn)
        assert job["status"] == "Failed"
        assert reason in job["message"]
        assert emu.ledger.entries == ()


async def test_a_job_goes_through_the_services_states_and_stops() -> None:
    async with stand_in(BedrockConfig(min_records=1, turnaround_s=1.0)) as (emu, bucket):
        control = provider(emu, bucket)._bedrock
        _put_input(emu, bucket, "job1", [_record("r1")])
        arn = control.create_model_invocation_job(**_create_args(bucket))["jobArn"]
        seen: list[str] = []
        while not seen or seen[-1] != "Completed":
            seen.append(control.get_model_invocation_job(jobIdentifier=arn)["status"])
            await anyio.sleep(0.01)
        # Forward only, through the service's states (0.1 s each for the first three, then
        # InProgress until the turnaround is over).
        order = ["Submitted", "Validating", "Scheduled", "InProgress", "Completed"]
        steps = [order.index(status) for status in seen]
        assert steps == sorted(steps)
        assert seen[0] in ("Submitted", "Validating")
        assert "InProgress" in seen
        # Listing: newest first, filtered by name.
        _put_input(emu, bucket, "job2", [_record("r1")])
        arn2 = control.create_model_invocation_job(**_create_args(bucket, "job2"))["jobArn"]
        listed = control.list_model_invocation_jobs(sortOrder="Descending")
        assert [j["jobArn"] for j in listed["invocationJobSummaries"]] == [arn2, arn]
        assert [
            j["jobArn"]
            for j in control.list_model_invocation_jobs(nameContains="job2")[
                "invocationJobSummaries"
            ]
        ] == [arn2]
        control.stop_model_invocation_job(jobIdentifier=arn2)
        job = control.get_model_invocation_job(jobIdentifier=arn2)
        assert job["status"] == "Stopped"
        with pytest.raises(botocore.exceptions.ClientError, match="cannot be stopped"):
            control.stop_model_invocation_job(jobIdentifier=arn2)


# -- reading a job's output -----------------------------------------------------------------


async def test_results_match_by_record_id_and_check_the_manifest() -> None:
    async with stand_in(BedrockConfig(min_records=1)) as (emu, bucket):
        adapter = provider(emu, bucket)
        requests = [
            (cid, adapter.prepare(cid, params(text))[1])
            for cid, text in [("lf_t_1", "one"), ("lf_t_2", "two"), ("lf_t_3", "three")]
        ]
        arn = await adapter.create_batch(requests)
        assert (await adapter.poll(arn)).ended
        s3 = emu._state._s3
        job_id = arn.rsplit("/", 1)[1]
        key = next(k for k in s3_objects(emu, bucket) if k.endswith(f"{job_id}/input.jsonl.out"))
        lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
        # An output file behind its manifest (read while being written) is an error the
        # fleet reads again.
        s3.put_object(Bucket=bucket, Key=key, Body=b"\n".join(lines[:2]))
        with pytest.raises(Exception, match="2 lines for 3 processed records") as cut:
            [item async for item in adapter.results(arn)]
        info = adapter.classify(cut.value)
        assert info is not None
        assert info.kind is ErrorKind.CONNECTION
        # Lines in any order, matched by recordId; a line for a record the job never had is
        # ignored.
        stranger = json.dumps({"recordId": "R0000000009", "modelInput": {}, "modelOutput": {}})
        s3.put_object(Bucket=bucket, Key=key, Body=b"\n".join([*lines[::-1], stranger.encode()]))
        got = {cid: text_of(item.value) async for cid, item in adapter.results(arn)}
        assert got == {"lf_t_1": "one", "lf_t_2": "two", "lf_t_3": "three"}


async def test_another_adapter_instance_reads_a_jobs_results_from_its_ids_file() -> None:
    """A new process (a reopened journal, a broker's new leader) has none of the creating
    adapter's memory: it maps recordIds back to custom_ids from the ``ids.json`` written
    beside the job's input, and a job without one is refused, not guessed at."""
    async with stand_in(BedrockConfig(min_records=1)) as (emu, bucket):
        maker = provider(emu, bucket)
        texts = {"lf_x_1": "one", "lf_x_2": "two", "lf_x_3": "three"}
        requests = [(cid, maker.prepare(cid, params(text))[1]) for cid, text in texts.items()]
        arn = await maker.create_batch(requests)
        assert (await maker.poll(arn)).ended
        reader = provider(emu, bucket)
        got = {cid: text_of(item.value) async for cid, item in reader.results(arn)}
        assert got == texts
        # The same answer the maker gets from its memory.
        assert {cid: text_of(item.value) async for cid, item in maker.results(arn)} == texts
        (ids_key,) = [k for k in s3_objects(emu, bucket) if k.endswith("/ids.json")]
        emu._state._s3.delete_object(Bucket=bucket, Key=ids_key)
        with pytest.raises(Exception, match="was not created by this adapter"):
            [item async for item in provider(emu, bucket).results(arn)]


async def test_another_adapter_instance_finds_a_job_by_count_and_time_or_by_its_tag() -> None:
    """With none of the creating adapter's memory (a broker's new leader, a reopened journal):
    ``find_batch`` takes the newest job this adapter named for that many records, submitted
    since the time given and not excluded; ``find_tagged`` the job whose name holds the tag."""
    async with stand_in(BedrockConfig(min_records=1)) as (emu, bucket):
        maker = provider(emu, bucket)
        since = time.time()
        made: dict[int, str] = {}

        async def create(n: int, tag: str | None) -> None:
            # In a task of its own, as the fleet's batch tasks are: the create's context
            # (the attempt find_batch would look for first) stays there.
            BATCH_TAG.set(tag)
            reqs = [(f"lf_{n}_{i}", maker.prepare(f"lf_{n}_{i}", params("x"))[1]) for i in range(n)]
            made[n] = await maker.create_batch(reqs)

        async with anyio.create_task_group() as tg:
            tg.start_soon(create, 3, None)
        async with anyio.create_task_group() as tg:
            tg.start_soon(create, 2, "lf_0123456789abcdef0123456789abcdef")
        arn3, arn2 = made[3], made[2]
        assert emu.jobs[arn2].name == "llmfleet-lf-0123456789abcdef0123456789abcdef-2"
        other = provider(emu, bucket)
        assert await other.find_batch(count=3, created_after=since, exclude=set()) == arn3
        assert await other.find_batch(count=2, created_after=since, exclude=set()) == arn2
        assert await other.find_batch(count=3, created_after=since, exclude={arn3}) is None
        assert await other.find_batch(count=4, created_after=since, exclude=set()) is None
        assert await other.find_batch(count=3, created_after=since + 60, exclude=set()) is None
        tag = "lf_0123456789abcdef0123456789abcdef"
        assert await other.find_tagged(tag, created_after=since, exclude=set()) == arn2
        assert await other.find_tagged(tag, created_after=since, exclude={arn2}) is None
        assert await other.find_tagged("lf_" + "f" * 32, created_after=since, exclude=set()) is None


async def test_records_missing_from_a_completed_job_are_errors_of_their_own() -> None:
    async with stand_in(BedrockConfig(min_records=1)) as (emu, bucket):
        adapter = provider(emu, bucket)
        requests = [(cid, adapter.prepare(cid, params(cid))[1]) for cid in ("lf_m_1", "lf_m_2")]
        arn = await adapter.create_batch(requests)
        assert (await adapter.poll(arn)).ended
        s3 = emu._state._s3
        job_id = arn.rsplit("/", 1)[1]
        keys = [k for k in s3_objects(emu, bucket) if f"/{job_id}/" in k]
        for key in keys:  # as if the job had written nothing
            s3.delete_object(Bucket=bucket, Key=key)
        items = {cid: item async for cid, item in adapter.results(arn)}
        assert {cid: (i.kind, i.error_type) for cid, i in items.items()} == {
            "lf_m_1": ("errored", "RecordNotProcessed"),
            "lf_m_2": ("errored", "RecordNotProcessed"),
        }
        assert "Completed" in items["lf_m_1"].message


# -- idempotency across fleets ----------------------------------------------------------------


async def test_two_fleets_whose_custom_ids_coincide_each_get_their_own_answers() -> None:
    """Bedrock answers a create whose clientRequestToken it has seen with the job that token
    made, without an error. Two fleets forced onto the same tag flush the same custom_ids:
    each still gets a job of its own and every caller its own answer, because a job's name
    and token are digests of the flush's own content, not of its custom_ids alone."""
    async with stand_in(BedrockConfig(min_records=5)) as (emu, bucket):
        answers: dict[str, dict[str, Any]] = {}
        for name in ("alpha", "beta"):
            fleet = FleetDispatcher(
                bedrock_client(emu, bucket), policy=fast_policy(batch_min_size=10)
            )
            fleet._tag = "0badc0de"  # the same tag in both fleets: lf_0badc0de_1 … _10 twice
            async with fleet:
                answers[name] = await gather(fleet, [f"{name}-{i}" for i in range(10)])
            assert fleet.stats.batches_submitted == 1
        for out in answers.values():
            for text, outcome in out.items():
                assert text_of(outcome) == text
        assert len(emu.jobs) == 2
        assert len({job.client_token for job in emu.jobs.values()}) == 2


async def test_a_job_that_is_not_the_flushs_own_is_not_read_for_its_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A create answered with another create's job (forced here: the same token under another
    name) is checked before its results are read: its input is not this flush's, so the
    callers get a BatchResultError saying so, never the other job's answers."""
    async with stand_in(BedrockConfig(min_records=1)) as (emu, bucket):
        first = provider(emu, bucket)
        reqs = [(f"lf_a_{i}", first.prepare(f"lf_a_{i}", params(f"a-{i}"))[1]) for i in range(3)]
        arn = await first.create_batch(reqs)
        token = emu.jobs[arn].client_token
        fleet = FleetDispatcher(bedrock_client(emu, bucket), policy=fast_policy(batch_min_size=3))
        adapter = fleet.provider
        assert isinstance(adapter, BedrockProvider)
        names = adapter._names

        def same_token(*args: Any) -> tuple[str, str]:
            return names(*args)[0], token

        monkeypatch.setattr(adapter, "_names", same_token)
        async with fleet:
            out = await gather(fleet, ["b-0", "b-1", "b-2"])
        assert len(emu.jobs) == 1  # the token answered with the first job
        for outcome in out.values():
            assert isinstance(outcome, BatchResultError), outcome
            assert outcome.batch_id == arn
            assert "not this flush's input" in str(outcome)
        # The job's own maker still reads it.
        got = {cid: text_of(item.value) async for cid, item in first.results(arn)}
        assert got == {f"lf_a_{i}": f"a-{i}" for i in range(3)}


async def test_a_job_of_another_record_count_is_not_read() -> None:
    """A job found by another process whose ids file does not match its record count (its
    manifest, its name) is refused before its results are read."""
    async with stand_in(BedrockConfig(min_records=1)) as (emu, bucket):
        maker = provider(emu, bucket)
        reqs = [(f"lf_c_{i}", maker.prepare(f"lf_c_{i}", params("x"))[1]) for i in range(3)]
        arn = await maker.create_batch(reqs)
        assert (await maker.poll(arn)).ended
        (ids_key,) = [k for k in s3_objects(emu, bucket) if k.endswith("/ids.json")]
        emu._state._s3.put_object(Bucket=bucket, Key=ids_key, Body=b'["lf_c_0","lf_c_1"]')
        with pytest.raises(Exception, match="does not hold this flush's 2 records"):
            [item async for item in provider(emu, bucket).results(arn)]
