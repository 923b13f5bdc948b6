"""The Bedrock stand-in's state: every batch inference job's life, and InvokeModel.

A job reads its input JSONL from S3 when it is validated and writes ``<job id>/<input>.out``
and ``manifest.json.out`` to S3 when it ends, as the service does. The requests, faults,
request ids, lock and ledger are the shared :class:`~._core.Core`'s; each answered record and
call is billed through :meth:`~._core.Core.bill`.

A job's life is its own rather than a :class:`~._jobs.JobBook`'s: it goes Submitted,
Validating (reading its input from S3, where it may fail), Scheduled, InProgress, and ends
Completed, PartiallyCompleted, Failed, Stopped (after Stopping) or Expired (half of its
records processed), none of which the shared running/canceling/ended phases describe.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, final

from llmfleet.pricing import TokenUsage

from ._anthropic_params import last_user_text
from ._bedrock_params import (
    _CLAUDE,
    _JOB_ID,
    _JOB_NAME,
    _RECORD_ID,
    _ROLE_ARN,
    _S3_URI,
    _TOKEN,
    ENDED,
    ERRORED,
    UNPROCESSED,
    BedrockConfig,
    JobInfo,
    check_input,
    echo_message,
    invalid,
    null,
    pattern,
)
from ._core import ApiError, rfc3339

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._config import Duration
    from ._core import Core
    from ._ledger import ResultType

#: What one record of an ended job is billed as: its recordId, result, usage and message id.
_Bill = tuple[str, "ResultType", TokenUsage, "str | None"]

__all__ = ["BedrockState"]


@dataclass
class _Job:
    arn: str
    job_id: str
    name: str
    token: str
    model: str
    role_arn: str
    input_uri: str
    output_uri: str
    timeout_hours: int
    submit: float
    turnaround: float
    status: str = "Submitted"
    message: str = ""
    modified: float = 0.0
    end: float | None = None
    stop_at: float | None = None
    #: ``(recordId, modelInput)`` once validated.
    records: list[tuple[str, Any]] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    #: How it ends when its time comes: None (by its records), "expire" or "fail".
    fate: str | None = None


def _parse_time(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise invalid(f"'{value}' is not a valid timestamp") from None


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@final
class BedrockState:
    """Every job, behind the core's lock (thread-safe).

    :param core: the shared core: lock, requests, faults, request ids, ledger.
    :param s3: a botocore S3 client to the bucket the jobs read and write.
    """

    def __init__(self, core: Core, config: BedrockConfig, s3: Any) -> None:
        self.core = core
        self.config = config
        self._s3 = s3
        self._lock = core.lock
        self._jobs: dict[str, _Job] = {}
        self._by_token: dict[str, str] = {}
        self._rng = random.Random(config.seed)
        for fault in config.faults:
            core.add_fault(fault.fault())
        core.on_refresh(self.refresh_all)

    # -- the control plane ------------------------------------------------------------------

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise invalid("The request body is not a valid JSON object.")
        for member in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if body.get(member) is None:
                raise null(member)
        name, role, model = body["jobName"], body["roleArn"], body["modelId"]
        pattern("jobName", name, _JOB_NAME, 63)
        pattern("roleArn", role, _ROLE_ARN, 2048)
        token = body.get("clientRequestToken")
        if token is not None:
            pattern("clientRequestToken", token, _TOKEN, 256)
        if not isinstance(model, str) or not _CLAUDE.fullmatch(model):
            raise invalid(
                f"The provided model identifier is invalid: {model!r} (the llmfleet stand-in "
                "serves Anthropic Claude models only)."
            )
        input_uri = self._uri(body, "inputDataConfig", "s3InputDataConfig")
        output_uri = self._uri(body, "outputDataConfig", "s3OutputDataConfig")
        fmt = body["inputDataConfig"]["s3InputDataConfig"].get("s3InputFormat", "JSONL")
        if fmt != "JSONL":
            raise invalid(f"Value '{fmt}' at 's3InputFormat' must be JSONL.")
        hours = body.get("timeoutDurationInHours", 24)
        if isinstance(hours, bool) or not isinstance(hours, int) or not 24 <= hours <= 168:
            raise invalid(
                f"1 validation error detected: Value '{hours}' at 'timeoutDurationInHours' "
                "failed to satisfy constraint: Member must have value between 24 and 168"
            )
        now = time.time()
        with self._lock:
            if token is not None and token in self._by_token:
                # Idempotent: the same token is answered with the job it made.
                return {"jobArn": self._by_token[token]}
            if any(job.name == name for job in self._jobs.values()):
                raise ApiError(
                    400, "ConflictException", f"A job with the name {name} already exists."
                )
            job_id = "".join(
                self._rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in "x" * 12
            )
            arn = (
                f"arn:aws:bedrock:{self.config.region}:{self.config.account}:"
                f"model-invocation-job/{job_id}"
            )
            job = _Job(
                arn,
                job_id,
                name,
                token or secrets.token_hex(16),
                model,
                role,
                input_uri,
                output_uri,
                hours,
                now,
                self._draw(self.config.turnaround_s),
                modified=now,
            )
            self._jobs[arn] = job
            self._by_token[job.token] = arn
        return {"jobArn": arn}

    @staticmethod
    def _uri(body: Mapping[str, Any], member: str, inner: str) -> str:
        config = body[member]
        if not isinstance(config, dict) or not isinstance(config.get(inner), dict):
            raise null(f"{member}.{inner}")
        uri = config[inner].get("s3Uri")
        if uri is None:
            raise null(f"{member}.{inner}.s3Uri")
        pattern(f"{member}.{inner}.s3Uri", uri, _S3_URI, 1024)
        return str(uri)

    def _draw(self, duration: Duration) -> float:
        # Caller holds the lock (the generator is shared).
        return float(duration(self._rng) if callable(duration) else duration)

    def direct_latency(self) -> float:
        """Seconds the next InvokeModel takes."""
        with self._lock:
            return self._draw(self.config.direct_latency_s)

    def _job(self, identifier: str) -> _Job:
        pattern("jobIdentifier", identifier, _JOB_ID, 1011)
        job = self._jobs.get(identifier)
        if job is None:
            job = next((j for j in self._jobs.values() if j.job_id == identifier), None)
        if job is None:
            raise ApiError(
                404, "ResourceNotFoundException", f"The job {identifier} could not be found."
            )
        return job

    def get(self, identifier: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(identifier)
            self._advance(job, time.time())
            return self._json(job)

    def list(self, query: Mapping[str, str]) -> dict[str, Any]:
        raw = query.get("maxResults", "1000")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise invalid(
                f"1 validation error detected: Value '{raw}' at 'maxResults' failed to satisfy "
                "constraint: Member must have value between 1 and 1000"
            )
        limit = int(raw)
        after = _parse_time(query["submitTimeAfter"]) if "submitTimeAfter" in query else None
        before = _parse_time(query["submitTimeBefore"]) if "submitTimeBefore" in query else None
        name, status = query.get("nameContains"), query.get("statusEquals")
        if query.get("sortBy", "CreationTime") != "CreationTime":
            raise invalid("sortBy must be CreationTime.")
        order = query.get("sortOrder", "Descending")
        if order not in ("Ascending", "Descending"):
            raise invalid("sortOrder must be Ascending or Descending.")
        start = 0
        if "nextToken" in query:
            token = query["nextToken"]
            if not token.isdigit():
                raise invalid("The nextToken is not valid.")
            start = int(token)
        now = time.time()
        with self._lock:
            jobs = list(self._jobs.values())
            for job in jobs:
                self._advance(job, now)
            if order == "Descending":
                jobs.reverse()
            jobs = [
                j
                for j in jobs
                if (after is None or j.submit >= after)
                and (before is None or j.submit <= before)
                and (name is None or name in j.name)
                and (status is None or j.status == status)
            ]
            page = jobs[start : start + limit]
            out: dict[str, Any] = {"invocationJobSummaries": [self._json(j) for j in page]}
        if start + limit < len(jobs):
            out["nextToken"] = str(start + limit)
        return out

    def stop(self, identifier: str, *, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        with self._lock:
            job = self._job(identifier)
            self._advance(job, now)
            if job.status in ENDED or job.status == "Stopping":
                raise invalid(f"The job {job.arn} is {job.status} and cannot be stopped.")
            job.stop_at = now
            job.status = "Stopping"
            job.modified = now
            self._advance(job, now)
        return {}

    # -- tests' controls --------------------------------------------------------------------

    def end(self, identifier: str, fate: str | None = None, message: str = "") -> JobInfo:
        """End a job now: by its records, or ``"expire"``, or ``"fail"`` with ``message``."""
        now = time.time()
        with self._lock:
            job = self._job(identifier)
            if job.status not in ENDED:
                job.fate = fate or "complete"
                job.message = message
                self._advance(job, now)
            return self._info(job)

    def jobs(self) -> dict[str, JobInfo]:
        self.refresh_all()
        with self._lock:
            return {arn: self._info(job) for arn, job in self._jobs.items()}

    def refresh_all(self) -> None:
        now = time.time()
        with self._lock:
            for job in self._jobs.values():
                self._advance(job, now)

    # -- a job's life -----------------------------------------------------------------------

    def _advance(self, job: _Job, now: float) -> None:
        if job.status in ENDED:
            return
        turnaround = job.turnaround
        elapsed = now - job.submit
        # Validation (reading the input) comes at a tenth of the turnaround; with no
        # turnaround (inf: the job runs until a test ends it), at the first read.
        validate_at = 0.1 * turnaround if turnaround != math.inf else 0.0
        early = job.stop_at is not None or job.fate is not None  # ended by hand: now
        if job.records is None and (elapsed >= validate_at or early):
            failure = self._validate(job)
            if failure is not None:
                job.message = failure
                self._finish(job, "Failed", now, validated=False)
                return
        if job.stop_at is not None:
            if now >= job.stop_at + self.config.stop_delay_s:
                self._finish(job, "Stopped", now)
            return
        if job.fate == "fail":
            self._finish(job, "Failed", now)
            return
        if job.fate == "expire":
            self._finish(job, "Expired", now)
            return
        if elapsed >= turnaround or job.fate == "complete":
            self._finish(job, "Completed", now)
            return
        phase = "Submitted"
        if elapsed >= 0.3 * turnaround or (turnaround == math.inf and job.records is not None):
            phase = "InProgress"
        elif elapsed >= 0.2 * turnaround:
            phase = "Scheduled"
        elif elapsed >= 0.1 * turnaround:
            phase = "Validating"
        if phase != job.status:
            job.status, job.modified = phase, now

    def _validate(self, job: _Job) -> str | None:
        """Read and check the input file; the reason the job fails, or ``None``."""
        bucket, key = _split(job.input_uri)
        try:
            data = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            return f"Unable to read the input from {job.input_uri}: {exc}"
        records: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for n, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return f"Line {n} of {job.input_uri} is not valid JSON."
            if not isinstance(line, dict) or "modelInput" not in line:
                return f"Line {n} of {job.input_uri} has no modelInput."
            record_id = line.get("recordId")
            if record_id is None:
                record_id = f"{n:011d}"
            if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
                return f"Line {n}: recordId {record_id!r} is not an alphanumeric string."
            if record_id in seen:
                return f"Line {n}: recordId {record_id} is not unique in the input."
            seen.add(record_id)
            records.append((record_id, line["modelInput"]))
        if len(records) < self.config.min_records:
            return (
                f"The input has {len(records)} records, fewer than the minimum of "
                f"{self.config.min_records} records per batch inference job."
            )
        if len(records) > self.config.max_records:
            return (
                f"The input has {len(records)} records, more than the maximum of "
                f"{self.config.max_records} records per batch inference job."
            )
        job.records = records
        job.counts["totalRecordCount"] = len(records)
        return None

    def _finish(self, job: _Job, status: str, now: float, *, validated: bool = True) -> None:
        records = job.records or []
        lines: list[bytes] = []
        bills: list[_Bill] = []
        counts = {"processed": 0, "success": 0, "error": 0, "input": 0, "output": 0}
        unanswered: ResultType = "expired" if status == "Expired" else "canceled"
        partial = False
        for n, (record_id, model_input) in enumerate(records):
            text = last_user_text(model_input) if isinstance(model_input, dict) else ""
            processed = status == "Completed" or (status == "Expired" and n < len(records) // 2)
            if UNPROCESSED in text and status == "Completed":
                processed, partial = False, True
            if not processed:
                if status != "Failed":
                    bills.append((record_id, unanswered, TokenUsage(), None))
                continue
            counts["processed"] += 1
            problem = check_input(model_input)
            if problem is None and ERRORED in text:
                problem = (500, "Internal error processing the record (injected by the stand-in).")
            if problem is not None:
                counts["error"] += 1
                code, message = problem
                line = {
                    "recordId": record_id,
                    "modelInput": model_input,
                    "error": {"errorCode": code, "errorMessage": message},
                }
                bills.append((record_id, "errored", TokenUsage(), None))
            else:
                counts["success"] += 1
                message_id = f"msg_bdrk_{secrets.token_hex(12)}"
                output, usage = echo_message(job.model, model_input, message_id)
                counts["input"] += usage.input_tokens
                counts["output"] += usage.output_tokens
                line = {"recordId": record_id, "modelInput": model_input, "modelOutput": output}
                bills.append((record_id, "succeeded", usage, message_id))
            lines.append(json.dumps(line).encode())
        if partial:
            status = "PartiallyCompleted"
        if validated and records:
            # The output's order is not the input's (the user guide says so): shuffle it.
            self._rng.shuffle(lines)
            manifest = {
                "totalRecordCount": len(records),
                "processedRecordCount": counts["processed"],
                "successRecordCount": counts["success"],
                "errorRecordCount": counts["error"],
                "inputTokenCount": counts["input"],
                "outputTokenCount": counts["output"],
            }
            bucket, prefix = _split(job.output_uri)
            folder = f"{prefix.rstrip('/')}/{job.job_id}".lstrip("/")
            input_name = job.input_uri.rsplit("/", 1)[-1]
            try:
                self._s3.put_object(
                    Bucket=bucket, Key=f"{folder}/{input_name}.out", Body=b"\n".join(lines) + b"\n"
                )
                self._s3.put_object(
                    Bucket=bucket,
                    Key=f"{folder}/manifest.json.out",
                    Body=json.dumps(manifest).encode(),
                )
            except Exception as exc:
                status, job.message = "Failed", f"Unable to write to {job.output_uri}: {exc}"
                bills = []
            job.counts.update(
                processedRecordCount=counts["processed"],
                successRecordCount=counts["success"],
                errorRecordCount=counts["error"],
            )
        job.status, job.end, job.modified = status, now, now
        for record_id, result, usage, billed_id in bills:
            self.core.bill(
                "batch",
                batch_id=job.arn,
                custom_id=record_id,
                message_id=billed_id,
                model=job.model,
                result=result,
                usage=usage,
            )
        if bills:
            self.core.ledger._count_batch()

    def _json(self, job: _Job) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobArn": job.arn,
            "jobName": job.name,
            "modelId": job.model,
            "clientRequestToken": job.token,
            "roleArn": job.role_arn,
            "status": job.status,
            "submitTime": rfc3339(job.submit),
            "lastModifiedTime": rfc3339(job.modified),
            "inputDataConfig": {
                "s3InputDataConfig": {"s3Uri": job.input_uri, "s3InputFormat": "JSONL"}
            },
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
            "timeoutDurationInHours": job.timeout_hours,
            "jobExpirationTime": rfc3339(job.submit + job.timeout_hours * 3600),
            **job.counts,
        }
        if job.message:
            out["message"] = job.message
        if job.end is not None:
            out["endTime"] = rfc3339(job.end)
        return out

    def _info(self, job: _Job) -> JobInfo:
        return JobInfo(
            job.arn,
            job.name,
            job.model,
            job.status,
            job.message,
            len(job.records or ()),
            job.token,
        )

    # -- the runtime ------------------------------------------------------------------------

    def invoke(self, model: str, body: Any) -> tuple[dict[str, Any], TokenUsage]:
        """Answer InvokeModel; enters the call in the ledger at the on-demand price."""
        if not _CLAUDE.fullmatch(model):
            raise invalid("The provided model identifier is invalid.")
        problem = check_input(body)
        if problem is not None:
            raise invalid(problem[1])
        message_id = f"msg_bdrk_{secrets.token_hex(12)}"
        message, usage = echo_message(model, body, message_id)
        self.core.bill(
            "direct",
            batch_id=None,
            custom_id=None,
            message_id=message_id,
            model=model,
            result="succeeded",
            usage=usage,
        )
        return message, usage
