"""Configuration of the emulator: what it answers, how slowly, and which faults it injects."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, final, get_args

from llmfleet.pricing import PriceTable

__all__ = [
    "DEFAULT_MODELS",
    "EXTRA_LINE_CUSTOM_ID",
    "Duration",
    "EmulatorConfig",
    "Endpoint",
    "Fault",
    "FaultKind",
]

#: A duration in seconds, or a function that draws one from the emulator's seeded generator.
Duration: TypeAlias = float | Callable[[random.Random], float]

Endpoint: TypeAlias = Literal[
    "messages",
    "batch_create",
    "batch_retrieve",
    "batch_list",
    "batch_cancel",
    "batch_results",
    "batch_delete",
    # The OpenAI routes (_openai.py).
    "openai_chat",
    "openai_responses",
    "openai_file_upload",
    "openai_file_content",
    "openai_file_delete",
    "openai_batch_create",
    "openai_batch_retrieve",
    "openai_batch_list",
    "openai_batch_cancel",
    # The Gemini routes (_gemini.py).
    "gemini_generate",
    "gemini_batch_create",
    "gemini_batch_get",
    "gemini_batch_list",
    "gemini_batch_cancel",
    "gemini_batch_delete",
    # The Bedrock stand-in's operations (_bedrock.py; its own server, over moto's S3).
    "bedrock_job_create",
    "bedrock_job_get",
    "bedrock_job_list",
    "bedrock_job_stop",
    "bedrock_invoke",
]
FaultKind: TypeAlias = Literal[
    "status",
    "slow",
    "drop",
    "accept_then_drop",
    "accept_then_slow",
    "cut_stream",
    "transient_404",
    "extra_line",
    "drop_line",
]

#: The model ids the emulator serves by default (:attr:`EmulatorConfig.models`): the current
#: ones of each vendor, with their dated snapshots, as their model pages list them. An id the
#: real API does not serve gets its 404 here too.
DEFAULT_MODELS: Final = frozenset(
    {
        # Anthropic: aliases and snapshots.
        "claude-fable-5-2",
        "claude-fable-5-1",
        "claude-fable-5",
        "claude-mythos-5-2",
        "claude-mythos-5-1",
        "claude-mythos-5",
        "claude-mythos-preview",
        "claude-opus-5-5",
        "claude-opus-5",
        "claude-sonnet-5-5",
        "claude-sonnet-5",
        "claude-haiku-5-5",
        "claude-opus-4-8",
        "claude-opus-4-7",
        "claude-opus-4-6",
        "claude-opus-4-5",
        "claude-opus-4-5-20251101",
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        "claude-opus-4-0",
        "claude-opus-4-20250514",
        "claude-sonnet-4-6",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-0",
        "claude-sonnet-4-20250514",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-3-7-sonnet-latest",
        "claude-3-7-sonnet-20250219",
        "claude-3-5-haiku-latest",
        "claude-3-5-haiku-20241022",
        "claude-3-haiku-20240307",
        # OpenAI: chat and reasoning models, with their dated snapshots.
        "gpt-6.2-astra",
        "gpt-6-astra",
        "gpt-6.2-sol",
        "gpt-6.1-sol",
        "gpt-6-sol",
        "gpt-6.1-terra",
        "gpt-6-luna",
        "gpt-5.6-sol",
        "gpt-5.6-terra",
        "gpt-5.6-luna",
        "gpt-5.5",
        "gpt-5.5-2026-04-23",
        "gpt-5.4",
        "gpt-5.4-mini",
        "gpt-5.4-nano",
        "gpt-5.4-mini-2026-03-17",
        "gpt-5.4-nano-2026-03-17",
        "gpt-5.2",
        "gpt-5.2-pro",
        "gpt-5.2-2025-12-11",
        "gpt-5.2-pro-2025-12-11",
        "gpt-5.1",
        "gpt-5.1-mini",
        "gpt-5.1-2025-11-13",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5-2025-08-07",
        "gpt-5-mini-2025-08-07",
        "gpt-5-nano-2025-08-07",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4.1-2025-04-14",
        "gpt-4.1-mini-2025-04-14",
        "gpt-4.1-nano-2025-04-14",
        "gpt-4o",
        "gpt-4o-2024-11-20",
        "gpt-4o-2024-08-06",
        "gpt-4o-2024-05-13",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "o4-mini",
        "o4-mini-2025-04-16",
        "o3",
        "o3-2025-04-16",
        "o3-mini",
        "o3-mini-2025-01-31",
        "o1",
        "o1-2024-12-17",
        # Google: Gemini.
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
    }
)

ENDPOINTS: Final[tuple[str, ...]] = get_args(Endpoint)
FAULT_KINDS: Final[tuple[str, ...]] = get_args(FaultKind)

# Which endpoints a fault kind makes sense on; the others are rejected at construction.
_KIND_ENDPOINTS: Final[dict[str, tuple[str, ...]]] = {
    "status": ENDPOINTS,
    "slow": ENDPOINTS,
    "drop": ENDPOINTS,
    "accept_then_drop": (
        "batch_create",
        "openai_batch_create",
        "gemini_batch_create",
        "bedrock_job_create",
    ),
    "accept_then_slow": ("batch_create", "openai_batch_create", "gemini_batch_create"),
    "cut_stream": ("batch_results", "openai_file_content"),
    "transient_404": (
        "batch_retrieve",
        "batch_results",
        "openai_batch_retrieve",
        "openai_file_content",
        "gemini_batch_get",
    ),
    "extra_line": ("batch_results",),
    "drop_line": ("batch_results",),
}

#: The ``custom_id`` of the line an ``"extra_line"`` fault adds: no batch holds it (the
#: emulator's own ids never have this prefix, and a client's are its own business).
EXTRA_LINE_CUSTOM_ID: Final = "llmfleet-emulator-extra-line"

# The error type the real API pairs with each status code (others: api_error).
STATUS_ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@final
@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure on one endpoint.

    The fault hits ``times`` consecutive calls to ``endpoint``: the calls made right after it is
    added (``nth=None``), or starting at the ``nth`` call (1-based) counted from when it is added
    (a fault in :attr:`EmulatorConfig.faults` is added at start-up, so there ``nth`` counts from the
    first call). Faults are consumed as they fire; when several match a call, the one added first
    wins.

    Kinds:

    - ``"status"``: answer ``status`` with the real error body (``error_type`` defaults to the
      one the API pairs with the status) and ``retry-after``/``retry-after-ms`` headers when set.
      Nothing else happens: a faulted ``batch_create`` creates no batch.
    - ``"slow"``: sleep ``delay_s``, then answer normally (work is done after the sleep, even if
      the client gave up meanwhile, as a real server would).
    - ``"drop"``: close the connection without a response, before doing anything.
    - ``"accept_then_drop"`` (``batch_create`` only): create the batch, then close the connection
      without a response: the ambiguous case a client cannot tell from ``"drop"``.
    - ``"accept_then_slow"`` (``batch_create`` only): create the batch, then wait ``delay_s``
      before answering: a create in flight whose batch exists already (a client killed in
      that window has its batch created but never learnt its id).
    - ``"cut_stream"`` (``batch_results`` only): send the first half of the lines, then close the
      connection in the middle of the chunked body.
    - ``"transient_404"`` (``batch_retrieve``, ``batch_results``): answer 404 ``not_found_error``
      although the batch exists.
    - ``"extra_line"`` (``batch_results``): add, in the middle of the results, a line for a
      ``custom_id`` the batch does not hold (:data:`EXTRA_LINE_CUSTOM_ID`), carrying a copy of
      another line's result.
    - ``"drop_line"`` (``batch_results``): leave out the line of the batch's first request (in
      the order of the create body), as if the provider had lost it.

    :raises ValueError: for an unknown endpoint or kind, a kind that does not apply to the
        endpoint, or a non-positive ``nth``/``times``.
    """

    endpoint: Endpoint
    kind: FaultKind
    nth: int | None = field(default=None, kw_only=True)
    times: int = field(default=1, kw_only=True)
    status: int = field(default=429, kw_only=True)
    retry_after: float | None = field(default=None, kw_only=True)
    retry_after_ms: int | None = field(default=None, kw_only=True)
    delay_s: float = field(default=1.0, kw_only=True)
    error_type: str | None = field(default=None, kw_only=True)
    message: str | None = field(default=None, kw_only=True)
    #: Sent as ``x-should-retry: true|false``, which the SDK obeys over its own rules.
    should_retry: bool | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; expected one of {ENDPOINTS}")
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.endpoint not in _KIND_ENDPOINTS[self.kind]:
            raise ValueError(f"a {self.kind!r} fault does not apply to {self.endpoint!r}")
        if self.nth is not None and self.nth < 1:
            raise ValueError(f"nth must be >= 1 (1-based), got {self.nth}")
        if self.times < 1:
            raise ValueError(f"times must be >= 1, got {self.times}")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {self.status}")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError(f"delay_s must be a finite number >= 0, got {self.delay_s}")

    @property
    def resolved_error_type(self) -> str:
        """The ``error.type`` a ``"status"`` fault answers with."""
        if self.error_type is not None:
            return self.error_type
        return STATUS_ERROR_TYPES.get(self.status, "api_error")


#: What ``fault_ratio`` draws from: (kind, status, retry-after), kept where the kind applies.
_RANDOM_FAULTS: Final[tuple[tuple[FaultKind, int, float | None], ...]] = (
    ("status", 500, None),
    ("status", 529, 0.1),
    ("status", 429, 0.1),
    ("drop", 429, None),
    ("accept_then_drop", 429, None),
    ("cut_stream", 429, None),
)


def _check_duration(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or a callable, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_ratio(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_rpm(name: str, value: object) -> None:
    if value is not None:
        _check_positive_int(name, value)


def _check_models(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, frozenset) or not all(isinstance(m, str) and m for m in value):
        raise TypeError(
            f"{name} must be a frozenset of model ids, or None to serve any model, "
            f"got {value!r:.80}"
        )


_CHECKS: Final[dict[str, Callable[[str, object], None]]] = {
    "models": _check_models,
    "batch_rpm": _check_rpm,
    "turnaround_s": lambda n, v: _check_duration(n, v, optional=True),
    "direct_latency_s": lambda n, v: _check_duration(n, v, optional=False),
    "flex_latency_s": lambda n, v: _check_duration(n, v, optional=False),
    "flex_unavailable_ratio": _check_ratio,
    "cancel_delay_s": lambda n, v: _check_duration(n, v, optional=False),
    "errored_ratio": _check_ratio,
    "expired_ratio": _check_ratio,
    "fault_ratio": _check_ratio,
    "max_batch_requests": _check_positive_int,
    "max_batch_bytes": _check_positive_int,
    "max_message_bytes": _check_positive_int,
    "results_chunk_bytes": _check_positive_int,
    "results_line_delay_s": lambda n, v: _check_duration(n, v, optional=False),
}


@final
@dataclass(kw_only=True, slots=True)
class EmulatorConfig:
    """How the emulator behaves. Keyword-only; every field is checked when set.

    The running emulator reads its config on each request, so a test may change fields while it
    runs (plain attribute assignment; a value read mid-request is either the old or the new one).

    :param turnaround_s: how long after creation a batch ends on its own: seconds, a callable
        drawing seconds from a :class:`random.Random` seeded by ``seed`` and the batch id, or
        ``None`` for never (tests then end batches with :meth:`Emulator.end_batch`). Read when
        the batch is created.
    :param direct_latency_s: delay before ``POST /v1/messages`` answers (seconds or callable).
    :param flex_latency_s: delay before an OpenAI call with ``service_tier="flex"`` answers,
        instead of ``direct_latency_s`` (flex is the slow tier; seconds or callable).
    :param flex_unavailable_ratio: share of OpenAI flex calls refused with 429
        ``resource_unavailable`` (not billed), drawn from ``seed`` and the call's number.
    :param cancel_delay_s: how long a batch stays ``canceling`` after a cancel before it ends.
    :param errored_ratio: share of batch items that end ``errored`` (``api_error``), drawn
        deterministically from ``seed``, the batch id and the ``custom_id``.
    :param expired_ratio: likewise for ``expired`` (applied after ``errored_ratio``: together
        they cover at most all items).
    :param seed: makes ids, turnarounds, outcomes and result order reproducible.
    :param prices: prices for the ledger.
    :param max_batch_requests: most requests per batch (the API's 100,000).
    :param max_batch_bytes: largest batch-create body (the API's 256 MB), else 413.
    :param max_message_bytes: largest ``POST /v1/messages`` body (the API's 32 MB), else 413.
    :param results_chunk_bytes: size of the chunks the results stream is sent in; chunks split
        lines wherever they fall, as a real server's do.
    :param results_line_delay_s: a pause before each line of a results stream (Anthropic's
        results, OpenAI's file downloads), which then goes out a line at a time: results
        that drip in, so a test can act while half of them have arrived.
    :param faults: faults armed at start-up.
    :param models: the model ids served (default :data:`DEFAULT_MODELS`), or ``None`` for any.
        Another id gets the API's 404: on ``POST /v1/messages``, ``not_found_error``
        (``model: <id>``); on OpenAI's direct routes, ``model_not_found``. Inside a batch, the
        batch is accepted and that request alone ends errored with the same error.
    :param batch_rpm: like the real API's organisation limit, at most this many requests to
        the batch endpoints (create, retrieve, list, cancel, delete, results) in any 60 s;
        beyond it they answer 429 ``rate_limit_error`` with ``retry-after``. ``None``: no limit.
    :param fault_ratio: share of requests, on every endpoint, that fail at random (a soak's
        background noise): ``500``, ``529`` or ``429`` (those two with
        ``retry-after: 0.1``), a dropped connection, and where they apply a create that is
        accepted then dropped or a results stream cut in half. Which calls fail is drawn from
        ``seed``, the endpoint and the call's number on it (:meth:`random_fault`). Faults
        armed with :attr:`faults` or ``add_fault`` come first.
    """

    turnaround_s: Duration | None = 2.0
    direct_latency_s: Duration = 0.0
    cancel_delay_s: Duration = 0.0
    errored_ratio: float = 0.0
    expired_ratio: float = 0.0
    seed: int = 0
    prices: PriceTable = field(default_factory=PriceTable)
    max_batch_requests: int = 100_000
    max_batch_bytes: int = 256 * 1024 * 1024
    max_message_bytes: int = 32 * 1024 * 1024
    results_chunk_bytes: int = 64 * 1024
    results_line_delay_s: Duration = 0.0
    faults: Sequence[Fault] = ()
    models: frozenset[str] | None = DEFAULT_MODELS
    batch_rpm: int | None = None
    fault_ratio: float = 0.0
    flex_latency_s: Duration = 0.0
    flex_unavailable_ratio: float = 0.0

    def __setattr__(self, name: str, value: Any) -> None:
        check = _CHECKS.get(name)
        if check is not None:
            check(name, value)
        object.__setattr__(self, name, value)

    def random_fault(self, endpoint: Endpoint, n: int) -> Fault | None:
        """The fault :attr:`fault_ratio` injects on the ``n``-th call (1-based) to ``endpoint``,
        or ``None``: a pure function of the config, so a test can count what was injected."""
        if not self.fault_ratio:
            return None
        rng = random.Random(f"{self.seed}/{endpoint}/{n}/fault")
        if rng.random() >= self.fault_ratio:
            return None
        choices = [f for f in _RANDOM_FAULTS if endpoint in _KIND_ENDPOINTS[f[0]]]
        kind, status, retry_after = rng.choice(choices)
        return Fault(endpoint, kind, status=status, retry_after=retry_after)


def draw(duration: Duration | None, rng: random.Random) -> float | None:
    """Seconds from a fixed duration or a distribution (``None`` stays ``None``)."""
    if duration is None:
        return None
    value = duration(rng) if callable(duration) else float(duration)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"a duration callable returned {value!r}; expected seconds >= 0")
    return value
