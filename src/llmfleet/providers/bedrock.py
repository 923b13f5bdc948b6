"""The Amazon Bedrock adapter: Claude through ``InvokeModel`` and batch inference jobs
(``CreateModelInvocationJob``), over botocore.

``open_fleet(BedrockClient(role_arn=..., bucket=...))`` picks this adapter. A batch is a JSONL
file in S3 with one ``{"recordId", "modelInput"}`` line per call (``modelInput`` is the
InvokeModel body: the Messages params without ``model``, with ``anthropic_version``), the
records' custom_ids beside it (``ids.json``), and a job over it; the job writes
``<output prefix>/<job id>/<input file>.out`` (one line per record, in any order, each with
``modelOutput`` or ``error``) and ``manifest.json.out``. A job holds one model, so
:meth:`BedrockProvider.batch_key` is the model id.

Both routes return ``anthropic.types.Message``: a batch record's ``modelOutput`` is the same
Messages body InvokeModel returns, so a caller cannot tell which route answered.

botocore is synchronous: every AWS call runs in a worker thread (``anyio.to_thread``), so the
adapter works under asyncio and trio alike. Requests to the batch control plane and to S3 go
out once (no botocore retry): the fleet retries them itself, within its request budget.

Needs botocore (``pip install 'llmfleet[bedrock]'``): without it, importing this module
raises ``ModuleNotFoundError`` saying so.

Wire facts it relies on (from botocore's service model ``bedrock/2023-04-20`` and the Bedrock
user guide) are listed in docs/design.md.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import posixpath
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, TypeAlias, final

import anyio
import anyio.to_thread
from anthropic.types import Message

try:
    import botocore.exceptions
    import botocore.session
    from botocore.config import Config
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] != "botocore":
        raise
    # Still a ModuleNotFoundError (code that imports this module optionally catches that),
    # saying what to install.
    raise ModuleNotFoundError(
        "the Bedrock adapter (llmfleet.providers.bedrock) needs botocore: "
        "pip install 'llmfleet[bedrock]'",
        name=exc.name,
    ) from exc

from ..errors import UnbatchableRequestError, excerpt
from ._base import BATCH_TAG, BatchStatus, ErrorInfo, ErrorKind, ItemResult
from ._bedrock_wire import (
    ENDED,
    JOB_PREFIX,
    MARK_MAX,
    OutputIncomplete,
    classify_aws,
    count_of,
    custom_id_of,
    error_code,
    record_id,
    split_uri,
    status_of,
    tag_mark,
    unanswered_result,
)
from ._json import encode
from ._schema import bedrock_claude, check_leaked, check_messages, wire_body
from .anthropic import dump_message, load_message, message_tokens

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence

__all__ = [
    "ANTHROPIC_VERSION",
    "ENDED",
    "JOB_PREFIX",
    "BedrockClient",
    "BedrockProvider",
    "RunSync",
    "classify_aws",
]

logger = logging.getLogger("llmfleet")

#: The ``anthropic_version`` every Claude body on Bedrock carries.
ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
#: Bedrock's defaults per job: at least 100 records (a service quota), at most 50,000, and
#: 1 GB per input file.
MIN_RECORDS: Final = 100
MAX_RECORDS: Final = 50_000
MAX_FILE_BYTES: Final = 1024**3
# Params the SDK's create call takes as request options, not body fields.
_REQUEST_OPTIONS: Final = ("extra_headers", "extra_query", "extra_body", "timeout")
# `{"recordId":"R0000000001","modelInput":…}\n` around each body.
_LINE_OVERHEAD: Final = len('{"recordId":"R0000000001","modelInput":}\n')
_CLOCK_SLACK_S: Final = 5.0
_LIST_PAGE: Final = 1000
_INPUT_FILE: Final = "input.jsonl"
# Beside the input: the job's custom_ids in record order (a JSON list), so that any process
# maps the job's recordIds back to custom_ids.
_IDS_FILE: Final = "ids.json"

#: Runs a blocking function without blocking the event loop: ``anyio.to_thread.run_sync``
#: unless told otherwise (see :class:`BedrockProvider`).
RunSync: TypeAlias = "Callable[[Callable[[], Any]], Awaitable[Any]]"
# A prepared request: its model id and its modelInput as JSON.
_Prepared: TypeAlias = tuple[str, str]


@final
@dataclass(frozen=True, kw_only=True)
class BedrockClient:
    """Where and how the fleet reaches Bedrock: pass it to :func:`~llmfleet.open_fleet`.

    Credentials come from botocore's usual chain (environment, profile, instance role), or
    from ``session``.

    :param role_arn: the IAM service role Bedrock assumes to read and write the bucket.
    :param bucket: the S3 bucket for job inputs and outputs.
    :param prefix: the key prefix under which each job gets ``<prefix>/<job name>/``.
    :param region: the AWS region of Bedrock and the bucket.
    :param min_batch_requests: the fewest records a job may hold (Bedrock's quota, 100 by
        default): a smaller flush goes by the direct route instead.
    :param max_batch_requests: the most records a job may hold (Bedrock's quota).
    :param timeout_hours: the job's ``timeoutDurationInHours`` (24 to 168).
    :param endpoint_url: the Bedrock control plane's URL, for a stand-in.
    :param runtime_endpoint_url: bedrock-runtime's URL (InvokeModel), for a stand-in.
    :param s3_endpoint_url: S3's URL, for a stand-in.
    :param session: the botocore session to make clients from (default: a new one).
    :param read_timeout: seconds botocore waits for an answer.
    :param max_direct_attempts: attempts botocore makes at a direct InvokeModel call.
    """

    role_arn: str
    bucket: str
    prefix: str = "llmfleet"
    region: str = "us-east-1"
    min_batch_requests: int = MIN_RECORDS
    max_batch_requests: int = MAX_RECORDS
    timeout_hours: int = 24
    endpoint_url: str | None = None
    runtime_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    session: Any = field(default=None, repr=False, compare=False)
    read_timeout: float = 60.0
    max_direct_attempts: int = 3

    def __post_init__(self) -> None:
        if not self.role_arn.startswith("arn:") or ":role/" not in self.role_arn:
            raise ValueError(
                f"role_arn must be an IAM role ARN (arn:aws:iam::<account>:role/<name>), "
                f"got {self.role_arn!r}"
            )
        if not self.bucket or "/" in self.bucket:
            raise ValueError(f"bucket must be a bucket name (no s3://, no /), got {self.bucket!r}")
        if not 1 <= self.min_batch_requests <= self.max_batch_requests:
            raise ValueError(
                "need 1 <= min_batch_requests <= max_batch_requests, got "
                f"{self.min_batch_requests} and {self.max_batch_requests}"
            )
        if not 24 <= self.timeout_hours <= 168:
            raise ValueError(f"timeout_hours must be 24 to 168, got {self.timeout_hours}")
        if self.max_direct_attempts < 1:
            raise ValueError(f"max_direct_attempts must be >= 1, got {self.max_direct_attempts}")


class _UnknownJob(Exception):
    """Results asked of a job this adapter did not make (a bug in the caller)."""


class _ForeignJob(_UnknownJob):
    """The job a create or a search returned is not the flush's own (its input or its record
    count differ): its results belong to other callers and are not read."""


@dataclass(slots=True)
class _Attempt:
    """The job one batch task is creating: its name and its records' custom_ids."""

    name: str
    ids: tuple[str, ...]


# As in the OpenAI adapter: find_batch() runs in the task that sent the unanswered create,
# and a context variable carries that create's job name to it.
_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "llmfleet_bedrock_attempt", default=None
)


async def _to_thread(fn: Callable[[], Any]) -> Any:
    # abandon_on_cancel: a cancelled caller leaves at once; botocore's own timeouts end the
    # thread's request later. The fleet shields what it must see through (a create).
    return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)


@final
class BedrockProvider:
    """Adapter over Bedrock's InvokeModel and batch inference jobs (docs/design.md §7).

    **Idempotency.** A job's name and ``clientRequestToken`` are digests of the flush's own
    content (model, custom_ids, input file; in a fleet with a journal or a broker, its name
    carries the flush's ``BATCH_TAG`` instead), so the same flush sent twice is the same job
    and no other flush, from any fleet, is answered with it: after an unanswered create,
    :meth:`find_batch` finds it by name (``ListModelInvocationJobs nameContains``), and a
    create sent again is answered with the job already made. The name ends in the record
    count, so a process that did not send the create finds the job by count and time
    (:meth:`find_batch`) or exactly by its tag (:meth:`find_tagged`). The custom_ids are
    written beside the job's input (``ids.json``), so any process reads any job's results.
    Before reading them, the job is checked to be the flush's own (its input file, its record
    count): a foreign job's results are never handed to this flush's callers.

    :param client: where Bedrock is, and the job limits.
    :param run_sync: how blocking botocore calls run (default: in a worker thread). Tests
        with a virtual clock pass a runner that calls in line, so that no clock jumps while
        a thread works.
    """

    name = "bedrock"
    # GetModelInvocationJob, the manifest, the output file; and ids.json for a job this
    # process did not make.
    results_requests = 4
    max_batch_bytes = MAX_FILE_BYTES

    def __init__(self, client: BedrockClient, *, run_sync: RunSync | None = None) -> None:
        if not isinstance(client, BedrockClient):
            raise TypeError(f"client must be a BedrockClient, got {type(client).__name__}")
        self.config = client
        self.min_batch_requests = client.min_batch_requests
        self.max_batch_requests = client.max_batch_requests
        self._run = _to_thread if run_sync is None else run_sync
        session = client.session if client.session is not None else botocore.session.Session()
        # Batch endpoints and S3: one attempt each (see the module docstring).
        once = Config(
            retries={"total_max_attempts": 1},
            read_timeout=client.read_timeout,
            # Many jobs are polled and fetched at once, each from its own thread.
            max_pool_connections=32,
        )
        direct = Config(
            retries={"total_max_attempts": client.max_direct_attempts, "mode": "standard"},
            read_timeout=client.read_timeout,
            max_pool_connections=64,
        )
        # Clients are made here, on one thread: botocore's sessions are not thread-safe, its
        # clients are.
        self._bedrock = session.create_client(
            "bedrock", region_name=client.region, endpoint_url=client.endpoint_url, config=once
        )
        self._runtime = session.create_client(
            "bedrock-runtime",
            region_name=client.region,
            endpoint_url=client.runtime_endpoint_url,
            config=direct,
        )
        self._s3 = session.create_client(
            "s3", region_name=client.region, endpoint_url=client.s3_endpoint_url, config=once
        )
        self._lock = threading.Lock()
        # The custom_ids and input URI of each job this adapter made or found, until its
        # results are read.
        self._records: dict[str, tuple[tuple[str, ...], str]] = {}
        # Creates that got no answer, by job name: the fallback for a find_batch() called
        # outside the task that sent the create.
        self._unanswered: dict[str, tuple[str, ...]] = {}

    def __repr__(self) -> str:
        return f"<BedrockProvider region={self.config.region!r} bucket={self.config.bucket!r}>"

    # -- requests -------------------------------------------------------------------------

    def check(self, params: Mapping[str, Any]) -> None:
        if params.get("stream"):
            raise UnbatchableRequestError(
                "stream=True is not supported: the fleet returns whole messages. Call "
                "InvokeModelWithResponseStream yourself for streaming."
            )
        if "latency_budget_ms" in params or "idempotency_key" in params:
            check_leaked(params)
        model = params.get("model")
        if not isinstance(model, str) or not model:
            raise UnbatchableRequestError(
                "model= is required: pass a Bedrock model id or inference profile "
                "(e.g. model='anthropic.claude-haiku-4-5-20251001-v1:0')"
            )
        options = [key for key in _REQUEST_OPTIONS if key in params]
        if options:
            raise UnbatchableRequestError(
                f"{', '.join(options)} {'is an' if len(options) == 1 else 'are'} SDK request "
                "option(s) Bedrock cannot carry; put body fields in the params themselves"
            )

    def batch_key(self, params: Mapping[str, Any]) -> Hashable:
        """Requests with equal keys may share a job: one job, one model."""
        return self.model_of(params)

    def model_of(self, params: Mapping[str, Any]) -> str:
        return str(params.get("model", ""))

    def prepare(self, custom_id: str, params: Mapping[str, Any]) -> tuple[int, _Prepared]:
        # The record's body checked as Claude on Bedrock takes it: a job whose records break
        # the schema errors them (docs/design.md §2.1).
        request = model_input(params)
        schema = bedrock_claude()
        wire_body(request, schema)
        check_messages(request, schema)
        try:
            body = encode(request)
        except (TypeError, ValueError) as exc:
            raise UnbatchableRequestError(
                f"the request params are not JSON-serializable ({exc}); a batch carries plain "
                "JSON: pass dicts, lists, strings and numbers, or use submit_sync()"
            ) from None
        size = len(body) + _LINE_OVERHEAD
        if size > MAX_FILE_BYTES:
            raise UnbatchableRequestError(
                f"the request is {size:,} bytes, over Bedrock's {MAX_FILE_BYTES:,}-byte limit "
                f"per input file (starts {excerpt(body)}); use submit_sync() or make it smaller"
            )
        return size, (self.model_of(params), body)

    def tokens_of(self, value: Any) -> tuple[int, int, int, int] | None:
        return message_tokens(value)

    def dump_value(self, value: Message) -> dict[str, Any]:
        """A response as JSON, for the journal."""
        return dump_message(value)

    def load_value(self, data: dict[str, Any]) -> Message:
        """A response from the journal (:meth:`dump_value`'s inverse)."""
        return load_message(data)

    # -- the direct route -----------------------------------------------------------------

    async def call(self, params: Mapping[str, Any]) -> Message:
        body = encode(model_input(params)).encode()
        model = self.model_of(params)

        def invoke() -> bytes:
            response = self._runtime.invoke_model(
                modelId=model, body=body, contentType="application/json", accept="application/json"
            )
            payload: bytes = response["body"].read()
            return payload

        payload = await self._run(invoke)
        return Message.model_validate_json(payload)

    # -- jobs -----------------------------------------------------------------------------

    def _names(
        self, ids: Sequence[str], tag: str | None, model: str, body: bytes
    ) -> tuple[str, str]:
        """The job name and clientRequestToken of a flush: the same flush, the same job.

        Both are digests of the flush's own content (its model, its records' custom_ids and
        its input file), so no other flush, from this fleet or any other, shares them even
        where two fleets' custom_ids coincide: Bedrock answers a create whose token it has
        seen with the job that token made, without an error (docs/design.md §C). With a
        journal's or broker's tag (``BATCH_TAG``, 128 random bits) the name carries the tag
        instead, for :meth:`find_tagged`, and the token covers the tag too.
        """
        digest = hashlib.sha256()
        for part in (tag or "", model, "\n".join(ids)):
            data = part.encode()
            digest.update(len(data).to_bytes(8, "big") + data)
        digest.update(body)
        token = digest.hexdigest()
        mark = token[:MARK_MAX] if tag is None else tag_mark(tag)
        return f"{JOB_PREFIX}{mark}-{len(ids)}", token

    def _input_uri(self, name: str) -> str:
        """Where the input file of the job named ``name`` is written."""
        return self._uri(posixpath.join(self.config.prefix, name, _INPUT_FILE))

    def _uri(self, key: str) -> str:
        return f"s3://{self.config.bucket}/{key}"

    async def create_batch(self, requests: Sequence[tuple[str, _Prepared]]) -> str:
        ids = tuple(cid for cid, _ in requests)
        models = {model for _, (model, _) in requests}
        if len(models) != 1:
            # batch_key keeps models apart; reaching here is a bug in the caller.
            raise ValueError(f"one job runs one model, got {sorted(models)}")
        (model,) = models
        ids_body = json.dumps(list(ids), separators=(",", ":")).encode()
        # A recordId is the record's place in the job, in 11 alphanumeric characters (the
        # user guide's format, "CALL0000001"): the adapter keeps the job's custom_ids in order.
        body = "".join(
            f'{{"recordId":"{record_id(n)}","modelInput":{json_body}}}\n'
            for n, (_, (_, json_body)) in enumerate(requests)
        ).encode()
        name, token = self._names(ids, BATCH_TAG.get(), model, body)
        folder = posixpath.join(self.config.prefix, name)
        input_key = f"{folder}/{_INPUT_FILE}"
        attempt = _Attempt(name, ids)
        _ATTEMPT.set(attempt)
        with self._lock:
            self._unanswered[name] = ids
        config = self.config

        def create() -> str:
            # The same bytes under the same keys on every attempt: a second put is harmless.
            # The ids first: a job exists only once its mapping does.
            self._s3.put_object(Bucket=config.bucket, Key=f"{folder}/{_IDS_FILE}", Body=ids_body)
            self._s3.put_object(Bucket=config.bucket, Key=input_key, Body=body)
            response = self._bedrock.create_model_invocation_job(
                jobName=name,
                clientRequestToken=token,
                roleArn=config.role_arn,
                modelId=model,
                inputDataConfig={
                    "s3InputDataConfig": {"s3Uri": self._uri(input_key), "s3InputFormat": "JSONL"}
                },
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": self._uri(f"{folder}/output/")}},
                timeoutDurationInHours=config.timeout_hours,
            )
            arn: str = response["jobArn"]
            return arn

        try:
            arn: str = await self._run(create)
        except Exception as exc:
            info = classify_aws(exc)
            if info is None or info.kind is not ErrorKind.CONNECTION or info.unreachable:
                # Refused, or never sent: no job to look for later.
                with self._lock:
                    self._unanswered.pop(name, None)
            raise
        with self._lock:
            self._unanswered.pop(name, None)
            # The job the token answered with is checked against this flush before its
            # results are read (_read_results): a create is idempotent by token alone.
            self._records[arn] = (ids, self._uri(input_key))
        return arn

    async def find_batch(
        self, *, count: int, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        """The job an unanswered create made: by its exact name where this process sent the
        create; else (a new process, a broker's new leader) the newest job named by this
        adapter for ``count`` records, submitted since ``created_after``, not in ``exclude``
        (docs/design.md §9.4)."""
        since = datetime.fromtimestamp(created_after - _CLOCK_SLACK_S, timezone.utc)
        attempt = _ATTEMPT.get()
        with self._lock:
            if attempt is not None:
                wanted = {attempt.name: attempt.ids}
            else:
                wanted = {n: ids for n, ids in self._unanswered.items() if len(ids) == count}
            own = set(self._unanswered)
        for name, ids in wanted.items():
            for job in await self._list(name, since):
                arn = job["jobArn"]
                if job.get("jobName") == name and arn not in exclude:
                    with self._lock:
                        self._unanswered.pop(name, None)
                        self._records[arn] = (ids, self._input_uri(name))
                    return str(arn)
        if attempt is not None or wanted:
            # This process's own create, not found by its name: it made no job.
            return None
        cursor: str | None = None
        while True:
            jobs, cursor = await self._list_page(JOB_PREFIX, since, cursor)
            for job in jobs:
                name = str(job.get("jobName", ""))
                arn = job["jobArn"]
                if count_of(name) == count and arn not in exclude and name not in own:
                    return str(arn)
            if cursor is None:
                return None

    async def find_tagged(
        self, tag: str, *, created_after: float, exclude: frozenset[str] | set[str]
    ) -> str | None:
        """The job whose create carried ``tag`` (``BATCH_TAG``: its name holds it), submitted
        since ``created_after`` (Unix time), not in ``exclude``; or ``None``."""
        since = datetime.fromtimestamp(created_after - _CLOCK_SLACK_S, timezone.utc)
        stem = f"{JOB_PREFIX}{tag_mark(tag)}-"
        for job in await self._list(stem, since):
            name = str(job.get("jobName", ""))
            arn = job["jobArn"]
            if name.startswith(stem) and name[len(stem) :].isdigit() and arn not in exclude:
                return str(arn)
        return None

    async def _list(self, name: str, since: datetime) -> list[dict[str, Any]]:
        """The jobs whose name contains ``name``, submitted since ``since`` (one request)."""
        jobs, _ = await self._list_page(name, since, None, limit=10)
        return jobs

    async def _list_page(
        self, name: str, since: datetime, cursor: str | None, *, limit: int = _LIST_PAGE
    ) -> tuple[list[dict[str, Any]], str | None]:
        args: dict[str, Any] = {
            "nameContains": name,
            "submitTimeAfter": since,
            "maxResults": limit,
            "sortBy": "CreationTime",
            "sortOrder": "Descending",
        }
        if cursor is not None:
            args["nextToken"] = cursor
        page = await self._run(lambda: self._bedrock.list_model_invocation_jobs(**args))
        jobs: list[dict[str, Any]] = page.get("invocationJobSummaries", [])
        return jobs, page.get("nextToken") or None

    async def poll(self, batch_id: str) -> BatchStatus:
        job = await self._run(
            lambda: self._bedrock.get_model_invocation_job(jobIdentifier=batch_id)
        )
        return status_of(job)

    async def list_page(
        self, cursor: str | None
    ) -> tuple[list[tuple[str, BatchStatus]], str | None]:
        args: dict[str, Any] = {
            "maxResults": _LIST_PAGE,
            "sortBy": "CreationTime",
            "sortOrder": "Descending",
            "nameContains": JOB_PREFIX,
        }
        if cursor is not None:
            args["nextToken"] = cursor
        page = await self._run(lambda: self._bedrock.list_model_invocation_jobs(**args))
        rows = [(job["jobArn"], status_of(job)) for job in page.get("invocationJobSummaries", [])]
        return rows, page.get("nextToken") or None

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, ItemResult]]:
        items = await self._run(lambda: self._read_results(batch_id))
        for custom_id, item in items:
            yield custom_id, item
        with self._lock:
            self._records.pop(batch_id, None)

    def _read_results(self, batch_id: str) -> list[tuple[str, ItemResult]]:
        """Every record's result, read in one worker thread (three requests; four for a job
        another process made).

        The job is checked first: a job this adapter made or found must read the input this
        flush wrote, and every job must hold as many records as its custom_ids, else its
        results are another flush's and are not read (:class:`_ForeignJob`)."""
        job = self._bedrock.get_model_invocation_job(jobIdentifier=batch_id)
        status = job.get("status", "")
        input_uri = job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        output_uri = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        job_id = batch_id.rsplit("/", 1)[-1]
        bucket, out_prefix = split_uri(output_uri)
        folder = posixpath.join(out_prefix, job_id)
        with self._lock:
            known = self._records.get(batch_id)
        if known is not None:
            ids, expected = known
            if input_uri != expected:
                raise _ForeignJob(
                    f"job {batch_id} reads {input_uri}, not this flush's input {expected}: it "
                    "is another create's job (Bedrock answers a repeated clientRequestToken "
                    "with the job it made first), so its results are not read. Submit the "
                    "calls again."
                )
        else:
            # A job another process made (a journal reopened, a broker's new leader): its
            # custom_ids are beside its input.
            ids = self._read_ids(input_uri, batch_id)
        manifest = self._get(bucket, f"{folder}/manifest.json.out")
        counts = json.loads(manifest) if manifest is not None else {}
        named = count_of(str(job.get("jobName", "")))
        total = counts.get("totalRecordCount")
        if (named is not None and named != len(ids)) or (
            total is not None and int(total) != len(ids)
        ):
            raise _ForeignJob(
                f"job {batch_id} ({job.get('jobName')!r}, {total} records in its manifest) "
                f"does not hold this flush's {len(ids)} records, so its results are not read. "
                "Submit the calls again."
            )
        output = self._get(bucket, f"{folder}/{posixpath.basename(input_uri)}.out")
        results: dict[str, ItemResult] = {}
        for raw in (output or b"").splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            custom_id = custom_id_of(str(line.get("recordId", "")), ids)
            if custom_id is None:
                logger.debug("ignoring an output line with recordId %r", line.get("recordId"))
                continue
            error = line.get("error")
            if error is not None or "modelOutput" not in line:
                error = error if isinstance(error, dict) else {}
                results[custom_id] = ItemResult(
                    "errored",
                    error_type=str(error.get("errorCode", "error")),
                    message=str(error.get("errorMessage", "no modelOutput for this record")),
                )
            else:
                results[custom_id] = ItemResult(
                    "succeeded", value=Message.model_validate(line["modelOutput"])
                )
        if manifest is not None:
            processed = int(counts.get("processedRecordCount", 0))
            if len(results) < processed:
                raise OutputIncomplete(
                    f"{output_uri}: {len(results)} lines for {processed} processed records"
                )
        # Records with no line: why depends on how the job ended.
        for custom_id in ids:
            if custom_id not in results:
                results[custom_id] = unanswered_result(status, str(job.get("message") or ""))
        return list(results.items())

    def _read_ids(self, input_uri: str, batch_id: str) -> tuple[str, ...]:
        """The custom_ids of a job, in record order, from the ``ids.json`` beside its input."""
        bucket, input_key = split_uri(input_uri)
        key = posixpath.join(posixpath.dirname(input_key), _IDS_FILE)
        data = self._get(bucket, key)
        ids = json.loads(data) if data is not None else None
        if not isinstance(ids, list) or not all(isinstance(cid, str) for cid in ids):
            raise _UnknownJob(
                f"job {batch_id} was not created by this adapter: s3://{bucket}/{key} does not "
                "hold its records' custom_ids"
            )
        return tuple(ids)

    def _get(self, bucket: str, key: str) -> bytes | None:
        try:
            response = self._s3.get_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        data: bytes = response["Body"].read()
        return data

    async def cancel(self, batch_id: str) -> None:
        await self._run(lambda: self._bedrock.stop_model_invocation_job(jobIdentifier=batch_id))

    def classify(self, exc: BaseException) -> ErrorInfo | None:
        return classify_aws(exc)


def model_input(params: Mapping[str, Any]) -> dict[str, Any]:
    """The InvokeModel body of a Messages create call's params: without ``model``, with
    ``anthropic_version`` (the caller's own, if it set one)."""
    body = {key: value for key, value in params.items() if key != "model"}
    body.setdefault("anthropic_version", ANTHROPIC_VERSION)
    return body
