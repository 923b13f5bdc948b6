"""Wire helpers of the Bedrock adapter (``llmfleet.providers.bedrock``): what botocore's
errors mean, job states, job names, S3 URIs and recordIds (docs/design.md §9.4, §C)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import botocore.exceptions

from ._base import BatchStatus, ErrorInfo, ErrorKind, ItemResult

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

#: Job states after which a job does nothing more.
ENDED: Final = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})
#: The prefix of every job name the adapter makes (ListModelInvocationJobs filters on it).
JOB_PREFIX: Final = "llmfleet-"
#: A job name is JOB_PREFIX, a mark (the journal's tag, or a digest of the custom_ids), "-" and
#: the record count. The mark's longest is 40 characters: 9 + 40 + 1 + 5 stays within 63.
MARK_MAX: Final = 40
_NOT_NAME: Final = re.compile(r"[^A-Za-z0-9]")


class OutputIncomplete(Exception):
    """The job's output file holds fewer records than its manifest says were processed (a
    read that raced the write): read it again."""


def classify_aws(exc: BaseException) -> ErrorInfo | None:
    """What a botocore exception means to the dispatcher."""
    if isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        # "Could not connect to the endpoint URL": never connected, so nothing was sent.
        unreachable = isinstance(exc, botocore.exceptions.EndpointConnectionError)
        return ErrorInfo(ErrorKind.CONNECTION, unreachable=unreachable)
    if isinstance(exc, (json.JSONDecodeError, OutputIncomplete)):
        # An output file cut short, or read before it was whole.
        return ErrorInfo(ErrorKind.CONNECTION)
    if isinstance(exc, botocore.exceptions.ClientError):
        code = error_code(exc)
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0) or None
        retry_after = _retry_after(meta.get("HTTPHeaders", {}))
        if code in ("ThrottlingException", "ModelNotReadyException") or status == 429:
            return ErrorInfo(ErrorKind.RATE_LIMITED, retry_after, status)
        if code == "ResourceNotFoundException" or status == 404:
            return ErrorInfo(ErrorKind.NOT_FOUND, status=status)
        if (status is not None and status >= 500) or status == 408:
            return ErrorInfo(ErrorKind.SERVER, retry_after, status)
        return ErrorInfo(ErrorKind.FATAL, status=status)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        # No credentials, a parameter botocore refuses: trying again will not help.
        return ErrorInfo(ErrorKind.FATAL)
    return None


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def status_of(job: Mapping[str, Any]) -> BatchStatus:
    state = str(job.get("status", ""))
    ended = state in ENDED
    end = job.get("endTime")
    # The record counts appear once the job's input is read (totalRecordCount).
    total, processed = job.get("totalRecordCount"), job.get("processedRecordCount")
    return BatchStatus(
        ended=ended,
        state=state,
        ended_at=end.timestamp() if ended and isinstance(end, datetime) else None,
        requests=int(total) if isinstance(total, int) and total > 0 else None,
        requests_done=int(processed) if isinstance(processed, int) and total else None,
    )


def unanswered_result(status: str, message: str) -> ItemResult:
    """The result of a record the job's output does not hold."""
    if status == "Expired":
        return ItemResult("expired")
    if status in ("Stopped", "Stopping"):
        return ItemResult("canceled")
    if status == "Failed":
        return ItemResult("errored", error_type="JobFailed", message=message or "the job failed")
    return ItemResult(
        "errored",
        error_type="RecordNotProcessed",
        message=f"the job ended {status or 'without a status'} without processing this record",
    )


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)`` (the key without a trailing slash)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.rstrip("/")


def tag_mark(tag: str) -> str:
    """A fleet's batch tag as it appears in a job name: letters and digits, other characters
    as ``-`` (``lf_<hex>`` → ``lf-<hex>``); a longer tag by its digest."""
    mark = _NOT_NAME.sub("-", tag)
    if len(mark) > MARK_MAX or not mark:
        mark = hashlib.sha256(tag.encode()).hexdigest()[:MARK_MAX]
    return mark


def count_of(name: str) -> int | None:
    """The record count a job name made by this adapter ends in, or ``None``."""
    mark, dash, count = name.removeprefix(JOB_PREFIX).rpartition("-")
    if not name.startswith(JOB_PREFIX) or not (mark and dash and count.isdigit()):
        return None
    return int(count)


def record_id(n: int) -> str:
    return f"R{n:010d}"


def custom_id_of(record_id: str, ids: Sequence[str]) -> str | None:
    """The custom_id of a record of the job whose records are ``ids``, or ``None``."""
    if len(record_id) != 11 or record_id[0] != "R" or not record_id[1:].isdigit():
        return None
    n = int(record_id[1:])
    return ids[n] if n < len(ids) else None
