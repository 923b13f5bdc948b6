"""The Bedrock stand-in's configuration, faults and request checks, free of HTTP.

Bedrock's operations are endpoints of the shared core (``bedrock_*`` in ``_config.Endpoint``:
counts, faults and the request log are the core's); :class:`BedrockFault` names them by their
operation, as botocore does, and becomes a core :class:`~._config.Fault`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final

from llmfleet.pricing import PriceTable, TokenUsage
from llmfleet.providers._schema import bedrock_claude

from ._anthropic_params import last_user_text
from ._config import Fault
from ._core import ApiError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._config import Duration, Endpoint

__all__ = [
    "ANTHROPIC_VERSION",
    "ENDED",
    "ENDPOINT_OF",
    "ERRORED",
    "OPERATIONS",
    "UNPROCESSED",
    "BedrockConfig",
    "BedrockFault",
    "JobInfo",
    "Operation",
    "check_input",
    "echo_message",
    "invalid",
]

Operation: TypeAlias = Literal[
    "CreateModelInvocationJob",
    "GetModelInvocationJob",
    "ListModelInvocationJobs",
    "StopModelInvocationJob",
    "InvokeModel",
]
OPERATIONS: Final = (
    "CreateModelInvocationJob",
    "GetModelInvocationJob",
    "ListModelInvocationJobs",
    "StopModelInvocationJob",
    "InvokeModel",
)
#: In a record's last user text (also as ``[[errored:<type>]]``): the record comes back with
#: an ``error`` instead of output.
ERRORED: Final = "[[errored"
#: In a record's last user text: the job leaves it unprocessed and ends PartiallyCompleted.
UNPROCESSED: Final = "[[unprocessed]]"
#: The core's endpoint name of each operation.
ENDPOINT_OF: Final[dict[str, Endpoint]] = {
    "CreateModelInvocationJob": "bedrock_job_create",
    "GetModelInvocationJob": "bedrock_job_get",
    "ListModelInvocationJobs": "bedrock_job_list",
    "StopModelInvocationJob": "bedrock_job_stop",
    "InvokeModel": "bedrock_invoke",
}
ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
ENDED: Final = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})

# The patterns of botocore's service model (bedrock 2023-04-20).
_JOB_NAME: Final = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
_ROLE_ARN: Final = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_S3_URI: Final = re.compile(
    r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?"
)
_TOKEN: Final = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,254}[a-zA-Z0-9])?")
_JOB_ID: Final = re.compile(
    r"((arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?[a-z0-9]{12})"
)
_RECORD_ID: Final = re.compile(r"[a-zA-Z0-9]+")
# A Claude model id, bare or behind a cross-region inference profile (us., eu., global., …).
_CLAUDE: Final = re.compile(r"([a-z]{2,6}\.)?anthropic\.claude-[a-z0-9.\-]+(:[0-9]+)?")
_CHARS_PER_TOKEN: Final = 4


def invalid(message: str) -> ApiError:
    """A ``ValidationException`` (400): the request breaks a rule of the API."""
    return ApiError(400, "ValidationException", message)


def null(member: str) -> ApiError:
    return invalid(
        f"1 validation error detected: Value null at '{member}' failed to satisfy constraint: "
        "Member must not be null"
    )


def pattern(member: str, value: object, pattern: re.Pattern[str], max_len: int) -> None:
    if not isinstance(value, str) or len(value) > max_len or not pattern.fullmatch(value):
        raise invalid(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {pattern.pattern}"
        )


@final
@dataclass(frozen=True, slots=True)
class BedrockFault:
    """An injected failure on the next ``times`` calls of ``operation``.

    Kinds: ``"status"`` answers ``status`` with error ``code`` (default: a 429
    ``ThrottlingException``) and does nothing else; ``"drop"`` closes the connection with no
    answer; ``"accept_then_drop"`` (``CreateModelInvocationJob``) creates the job, then
    closes the connection; ``"slow"`` waits ``delay_s`` before answering.
    """

    operation: Operation
    kind: Literal["status", "drop", "accept_then_drop", "slow"] = "status"
    status: int = 429
    code: str = "ThrottlingException"
    message: str = ""
    delay_s: float = 0.0
    times: int = 1

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {OPERATIONS}, got {self.operation!r}")
        if self.kind == "accept_then_drop" and self.operation != "CreateModelInvocationJob":
            raise ValueError("accept_then_drop applies to CreateModelInvocationJob only")
        self.fault()  # its checks (times, status, delay_s)

    def fault(self) -> Fault:
        """The core's fault on the operation's endpoint."""
        return Fault(
            ENDPOINT_OF[self.operation],
            self.kind,
            times=self.times,
            status=self.status,
            error_type=self.code,
            message=self.message or f"{self.code} (injected by the llmfleet stand-in)",
            delay_s=self.delay_s,
        )


@dataclass(kw_only=True)
class BedrockConfig:
    """How the stand-in behaves; assign fields on a running one to change it from then on.

    :param turnaround_s: seconds from a job's create to its end (0: it ends when next read;
        ``math.inf``: it runs until a test ends, expires, fails or stops it).
    :param min_records: fewest records a job may hold (Bedrock's quota, 100 by default).
    :param max_records: most records a job may hold.
    :param stop_delay_s: seconds a stopped job stays ``Stopping``.
    :param direct_latency_s: seconds InvokeModel takes.

    Durations are seconds, or a function drawing them from the stand-in's seeded generator
    (per job, per call).

    :param seed: the seed of job ids, durations and the order of output records.
    :param prices: what the ledger bills at (read when the stand-in starts).
    :param faults: faults armed at start-up.
    """

    turnaround_s: Duration = 0.0
    min_records: int = 100
    max_records: int = 50_000
    stop_delay_s: float = 0.0
    direct_latency_s: Duration = 0.0
    region: str = "us-east-1"
    account: str = "123456789012"
    seed: int = 0
    prices: PriceTable = field(default_factory=PriceTable)
    faults: tuple[BedrockFault, ...] = ()


@final
@dataclass(frozen=True, slots=True)
class JobInfo:
    """A snapshot of one job, for tests."""

    arn: str
    name: str
    model: str
    status: str
    message: str
    records: int
    client_token: str


def check_input(body: Any) -> tuple[int, str] | None:
    """What InvokeModel would refuse in a Claude body, as ``(400, message)``."""
    if not isinstance(body, dict):
        return 400, "Malformed input request: expected a JSON object."
    if body.get("anthropic_version") != ANTHROPIC_VERSION:
        return 400, (
            "Malformed input request: #: required key [anthropic_version] not found"
            if "anthropic_version" not in body
            else f"Invalid anthropic_version {body['anthropic_version']!r}; use {ANTHROPIC_VERSION}"
        )
    if "model" in body:
        return 400, "Malformed input request: #: extraneous key [model] is not permitted"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return 400, "Malformed input request: #/max_tokens: expected an integer >= 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, "Malformed input request: #/messages: expected a non-empty array"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return 400, f"Malformed input request: #/messages/{i}/role: expected user or assistant"
    if body.get("stream"):
        return 400, "Malformed input request: #: extraneous key [stream] is not permitted"
    # The Messages parameters the installed SDK knows, as Claude on Bedrock takes them
    # (llmfleet/providers/_schema.py).
    known = bedrock_claude().known
    for key in body:
        if key not in known:
            return 400, (
                f"Malformed input request: #: extraneous key [{key}] is not permitted, "
                "please reformat your input and try again."
            )
    return None


def echo_message(
    model: str, body: Mapping[str, Any], message_id: str
) -> tuple[dict[str, Any], TokenUsage]:
    """The echo of the last user text, as the Messages body Claude on Bedrock returns."""
    text = last_user_text(body)
    limit = int(body["max_tokens"]) * _CHARS_PER_TOKEN
    stop = "end_turn"
    if len(text) > limit:
        text, stop = text[:limit], "max_tokens"
    prompt = json.dumps(body.get("messages", [])) + json.dumps(body.get("system", ""))
    usage = TokenUsage(
        max(1, len(prompt) // _CHARS_PER_TOKEN), max(1, len(text) // _CHARS_PER_TOKEN)
    )
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
    }
    return message, usage
