"""``llmfleet demo``: a fleet of agents with mixed budgets, and what it cost (DESIGN §10).

Chat agents make one call at a time with a tight budget (the direct route); a grader submits a
burst of calls that can wait (the batch route), in irregular waves so that both flush reasons
show. Against the embedded emulator, the fleet's own cost figures are then set beside the
emulator's ledger, which must agree to the last digit.

Two scenarios:

- ``pooling`` (the default): grading budgets of minutes, so every grading call is batched.
- ``deadlines`` (issue 8, DESIGN §8): grading budgets of seconds, and a batch turnaround drawn
  per batch that sometimes exceeds them, so the fleet must keep its promise by flushing early,
  routing direct and escalating; the report adds each caller's own measure of its budget, the
  escalations and what they cost against what batching saved.

Either runs against the emulator's Anthropic routes or, with ``provider="openai"`` (issue 6),
its OpenAI ones through ``openai.AsyncOpenAI``.

Needs the ``emulator`` extra (``starlette``, ``uvicorn``, ``rich``), and ``openai`` for
``provider="openai"``.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final

import anthropic
import anyio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._dispatcher import FleetDispatcher
from ._policy import RoutingPolicy
from ._stats import ResultEvent, Route
from .emulator import EmulatorConfig, run_emulator
from .errors import BatchRequestError, DeadlineExceededError, FleetError
from .pricing import Cost

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from rich.console import Console

    from ._stats import FleetStats, Percentiles, StatsSnapshot
    from .emulator import Duration, Emulator

__all__ = [
    "SCENARIOS",
    "BudgetFigures",
    "DemoConfig",
    "DemoReport",
    "EscalationFigures",
    "LedgerFigures",
    "print_report",
    "report_json",
    "run_demo",
]

Scenario: TypeAlias = Literal["pooling", "deadlines"]
ProviderName: TypeAlias = Literal["anthropic", "openai", "bedrock"]
DeadlineAction: TypeAlias = Literal["escalate", "wait", "fail"]

CHAT_MODEL: Final = "claude-haiku-4-5"
GRADING_MODEL: Final = "claude-sonnet-4-6"
#: The model of both paths with ``provider="openai"``.
OPENAI_MODEL: Final = "gpt-4.1-mini"
#: The key the SDK sends to the emulator, which accepts any.
EMULATOR_KEY: Final = "llmfleet-demo-not-a-real-key"
#: The environment variable a real endpoint's key is read from, per provider.
API_KEY_VARS: Final[Mapping[ProviderName, str]] = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    # -- begin: Bedrock (stand-in only; see _bedrock_vendor) --
    "bedrock": "AWS_ACCESS_KEY_ID",
    # -- end: Bedrock --
}
# -- begin: Bedrock ------------------------------------------------------------------------------
#: The models of the two paths with ``provider="bedrock"`` (Bedrock model ids).
BEDROCK_CHAT_MODEL: Final = "anthropic.claude-haiku-4-5-20251001-v1:0"
BEDROCK_GRADING_MODEL: Final = "anthropic.claude-sonnet-4-5-20250929-v1:0"
#: The demo's stand-in account, role and bucket.
_BEDROCK_ROLE: Final = "arn:aws:iam::123456789012:role/llmfleet-demo"
_BEDROCK_BUCKET: Final = "llmfleet-demo"
# -- end: Bedrock --------------------------------------------------------------------------------

_QUESTIONS: Final = (
    "Which of our plans includes priority support?",
    "Can I move my booking to next Tuesday?",
    "Why was I charged twice this month?",
    "How do I export my data as CSV?",
    "Is there a student discount?",
    "My password reset email never arrived.",
)
_ANSWERS: Final = (
    "Photosynthesis turns light, water and carbon dioxide into glucose and oxygen.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
    "A hash map gives average O(1) lookups by hashing keys into buckets.",
    "Mitochondria are where the cell's respiration produces most of its ATP.",
    "Inflation is a general rise in prices that lowers money's purchasing power.",
    "TCP retransmits lost segments; UDP leaves that to the application.",
)
# Long enough to be worth caching; the emulator models the prompt cache, so the report shows
# one cache write and many cache reads on the batch route.
_RUBRIC: Final = (
    "You grade short answers to exam questions. Score each from 1 (wrong) to 5 (complete and "
    "precise). Judge only correctness and completeness, not style. Reply with the score, then "
    "one sentence saying what is missing or wrong. Be consistent: the same answer always gets "
    "the same score. " * 3
)
# The emulator answers a batch item carrying one of these markers as errored (with that error
# type), so the report shows per-caller error handling. Never sent to a real endpoint.
_ERRORED_MARKERS: Final = ("[[errored:overloaded_error]]", "[[errored]]")

#: What each scenario changes from :class:`DemoConfig`'s defaults (see :meth:`DemoConfig.preset`).
#: ``deadlines`` (issue 8): budgets of 4–10 s against batches that take 1–8 s, so some batches
#: end too late and the fleet has to escalate their calls to the direct route.
SCENARIOS: Final[Mapping[Scenario, Mapping[str, Any]]] = {
    "pooling": {},
    "deadlines": {
        "turnaround_s": (1.0, 8.0),
        "grading_budget_ms": (4_000, 10_000),
        "sync_max_latency_ms": 2_000,
        "escalation_margin_ms": 500,
        "window_s": 1.0,
        # Arrivals spread over longer than a turnaround, so later calls meet a fleet that has
        # learnt how long batches take (flush reason "deadline", routing direct at submit).
        "wave_gap_s": (0.5, 1.5),
        "batch_api_rpm": 600,
    },
}


def _check_range(name: str, value: float | tuple[float, float]) -> None:
    low, high = value if isinstance(value, tuple) else (value, value)
    if not 0 <= low <= high or high == float("inf"):
        raise ValueError(f"{name} must be a finite value or (low, high) range >= 0, got {value}")


@final
@dataclass(frozen=True, kw_only=True, slots=True)
class DemoConfig:
    """What the demo runs. Times are seconds unless named ``_ms``; a ``(low, high)`` pair is a
    range drawn from uniformly (per batch for ``turnaround_s``, per call for
    ``grading_budget_ms``). :meth:`preset` gives a scenario's values.

    :param scenario: ``"pooling"`` or ``"deadlines"``: what the report dwells on.
    :param provider: ``"anthropic"`` (``AsyncAnthropic``) or ``"openai"`` (``AsyncOpenAI``,
        chat completions with :data:`OPENAI_MODEL`).
    :param agents: chat agents; each makes ``turns`` calls one after another (direct route).
    :param turns: calls per chat agent.
    :param calls: calls in the grading burst (batch route).
    :param turnaround_s: how long the emulator takes to end a batch.
    :param window_s: the policy's ``batch_window_ms``, in seconds.
    :param grading_budget_ms: the grading calls' latency budget.
    :param deadline_action: the policy's ``deadline_action`` (DESIGN §8).
    :param base_url: a real endpoint instead of the emulator (then ``api_key`` is required).
    :param api_key: the key for ``base_url``; never printed.
    """

    scenario: Scenario = "pooling"
    provider: ProviderName = "anthropic"
    agents: int = 3
    turns: int = 5
    calls: int = 200
    turnaround_s: float | tuple[float, float] = 3.0
    window_s: float = 2.0
    batch_min_size: int = 50
    batch_max_size: int = 100
    chat_budget_ms: int = 2_000
    grading_budget_ms: int | tuple[int, int] = 600_000
    sync_max_latency_ms: int = 5_000
    deadline_action: DeadlineAction = "escalate"
    escalation_margin_ms: int = 2_000
    #: Pause between a chat agent's turns (drawn uniformly from this range).
    think_s: tuple[float, float] = (0.2, 0.6)
    #: How long the emulator takes to answer a direct call (drawn uniformly).
    direct_latency_s: tuple[float, float] = (0.1, 0.4)
    #: The policy's ``batch_api_rpm``: requests a minute to the batch endpoints (``None``: no
    #: limit). Budgets of seconds need status checks every second or so, more than a real
    #: provider's 50 a minute allows for many batches in flight.
    batch_api_rpm: int | None = 50
    #: Pause between the grading burst's waves (drawn uniformly); ``None``: a twentieth to a
    #: sixth of the window, so the burst fills batches.
    wave_gap_s: tuple[float, float] | None = None
    #: Grading prompts that come back errored (emulator only).
    errored: int = 2
    seed: int = 0
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {tuple(SCENARIOS)}, got {self.scenario!r}")
        if self.provider not in API_KEY_VARS:
            raise ValueError(
                f"provider must be one of {tuple(API_KEY_VARS)}, got {self.provider!r}"
            )
        for name in ("agents", "turns", "calls", "errored", "chat_budget_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("turnaround_s", "window_s", "grading_budget_ms"):
            _check_range(name, getattr(self, name))
        if self.chat_budget_ms > self.sync_max_latency_ms:
            # The chat agents stand for the direct route; a longer budget would batch them.
            raise ValueError(
                f"chat_budget_ms ({self.chat_budget_ms}) must be <= sync_max_latency_ms "
                f"({self.sync_max_latency_ms}), so that chat calls go direct"
            )
        if self.provider == "bedrock" and self.base_url is not None:
            # A real Bedrock needs a role, a bucket and AWS credentials, not a URL and a key.
            raise ValueError(
                "provider 'bedrock' runs against the embedded Bedrock stand-in only; for real "
                "Bedrock, pass llmfleet.providers.bedrock.BedrockClient(...) to open_fleet"
            )
        if self.base_url is not None and not self.api_key:
            raise ValueError(
                "a real endpoint (base_url) needs an API key "
                f"({API_KEY_VARS.get(self.provider, 'ANTHROPIC_API_KEY')})"
            )

    @classmethod
    def preset(cls, scenario: Scenario = "pooling", **overrides: Any) -> DemoConfig:
        """The configuration of ``scenario`` (see :data:`SCENARIOS`), with ``overrides``.

        :raises ValueError: an unknown scenario or an invalid value.
        """
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {tuple(SCENARIOS)}, got {scenario!r}")
        return cls(scenario=scenario, **{**SCENARIOS[scenario], **overrides})

    @property
    def emulated(self) -> bool:
        """The demo runs against the embedded emulator."""
        return self.base_url is None

    def policy(self) -> RoutingPolicy:
        """The routing policy: small batches and short polls, so batching shows in seconds."""
        return RoutingPolicy(
            sync_max_latency_ms=self.sync_max_latency_ms,
            batch_window_ms=round(self.window_s * 1000),
            batch_min_size=self.batch_min_size,
            batch_max_size=self.batch_max_size,
            poll_interval_ms=250,
            poll_max_interval_ms=1_000,
            deadline_action=self.deadline_action,
            escalation_margin_ms=self.escalation_margin_ms,
            batch_api_rpm=self.batch_api_rpm,
        )

    def turnaround(self) -> Duration:
        """The emulator's ``turnaround_s``: fixed, or drawn per batch from the range."""
        if isinstance(self.turnaround_s, tuple):
            low, high = self.turnaround_s
            return lambda rng: rng.uniform(low, high)
        return self.turnaround_s


# -- the providers --------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class _Vendor:
    """What differs between providers: the client, the params, the text of a reply."""

    client: Callable[[str, str], Any]
    chat: Callable[[list[dict[str, str]]], dict[str, Any]]
    grade: Callable[[str], dict[str, Any]]
    text: Callable[[Any], str]
    #: What the direct route raises (the SDK's own errors).
    errors: tuple[type[Exception], ...]


def _anthropic_text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _vendor(config: DemoConfig) -> _Vendor:
    """The provider's side of the demo.

    :raises RuntimeError: ``provider="openai"`` without the ``openai`` package.
    """
    if config.provider == "bedrock":
        return _bedrock_vendor()
    if config.provider == "anthropic":
        return _Vendor(
            client=lambda key, url: anthropic.AsyncAnthropic(api_key=key, base_url=url),
            chat=lambda history: {"model": CHAT_MODEL, "max_tokens": 200, "messages": history},
            grade=lambda content: {
                "model": GRADING_MODEL,
                "max_tokens": 100,
                "system": [
                    {"type": "text", "text": _RUBRIC, "cache_control": {"type": "ephemeral"}}
                ],
                "messages": [{"role": "user", "content": content}],
            },
            text=_anthropic_text,
            errors=(anthropic.APIError,),
        )
    try:
        import openai
    except ImportError as exc:
        raise RuntimeError(
            "the demo with provider 'openai' needs the openai package: "
            "pip install 'llmfleet[openai]'"
        ) from exc
    # The emulator serves OpenAI's routes under /v1, as api.openai.com does.
    suffix = "/v1" if config.emulated else ""
    return _Vendor(
        client=lambda key, url: openai.AsyncOpenAI(api_key=key, base_url=url + suffix),
        chat=lambda history: {
            "model": OPENAI_MODEL,
            "max_completion_tokens": 200,
            "messages": history,
        },
        grade=lambda content: {
            "model": OPENAI_MODEL,
            "max_completion_tokens": 100,
            "messages": [
                {"role": "system", "content": _RUBRIC},
                {"role": "user", "content": content},
            ],
        },
        text=lambda completion: completion.choices[0].message.content or "",
        errors=(openai.APIError,),
    )


# -- begin: Bedrock ------------------------------------------------------------------------------


def _bedrock_vendor() -> _Vendor:
    """Bedrock's side of the demo: a :class:`BedrockClient` to the stand-in (its URL stands
    for the ``url`` argument; moto's S3 URL travels with it), Claude params with Bedrock ids.

    :raises RuntimeError: botocore or moto is not installed.
    """
    try:
        import botocore.exceptions
        import botocore.session

        from .providers.bedrock import BedrockClient
    except ImportError as exc:
        raise RuntimeError(
            "the demo with provider 'bedrock' needs botocore and moto: "
            "pip install 'llmfleet[emulator,bedrock]'"
        ) from exc

    @asynccontextmanager
    async def client(key: str, url: str) -> AsyncIterator[BedrockClient]:
        endpoint, _, s3_url = url.partition(" ")
        session = botocore.session.Session()
        session.set_credentials("llmfleet-demo", key)
        yield BedrockClient(
            role_arn=_BEDROCK_ROLE,
            bucket=_BEDROCK_BUCKET,
            endpoint_url=endpoint,
            runtime_endpoint_url=endpoint,
            s3_endpoint_url=s3_url,
            session=session,
        )

    return _Vendor(
        client=client,
        chat=lambda history: {
            "model": BEDROCK_CHAT_MODEL,
            "max_tokens": 200,
            "messages": history,
        },
        grade=lambda content: {
            "model": BEDROCK_GRADING_MODEL,
            "max_tokens": 100,
            "system": _RUBRIC,
            "messages": [{"role": "user", "content": content}],
        },
        text=_anthropic_text,
        errors=(botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError),
    )


async def _start_bedrock(stack: AsyncExitStack, config: DemoConfig) -> tuple[Any, str]:
    """Start the Bedrock stand-in (and moto's S3) for the demo; return it and the ``url``
    the vendor's client takes (the stand-in's URL, a space, moto's)."""
    from .emulator import BedrockConfig, run_bedrock_emulator

    low, high = config.direct_latency_s
    emulator = await stack.enter_async_context(
        run_bedrock_emulator(
            BedrockConfig(
                turnaround_s=config.turnaround(),
                direct_latency_s=lambda rng: rng.uniform(low, high),
                seed=config.seed,
            )
        )
    )
    emulator.create_bucket(_BEDROCK_BUCKET)
    return emulator, f"{emulator.url} {emulator.s3_url}"


# -- end: Bedrock --------------------------------------------------------------------------------


# -- what the run observed ------------------------------------------------------------------


def _minus(a: Cost, b: Cost) -> Cost:
    return Cost(a.list_price - b.list_price, a.paid - b.paid)


@final
@dataclass(frozen=True, slots=True)
class LedgerFigures:
    """What the emulator billed: cost per route (``"direct"``, ``"batch"``) and batches made.

    ``unused`` is the part of the batch route's bill for calls whose caller did not take the
    batch's answer (escalated to the direct route, or failed at the deadline): the batch item
    was processed and billed anyway.
    """

    cost: dict[Route, Cost]
    batches_created: int
    unused: Cost = field(default_factory=Cost)
    unused_items: int = 0

    @property
    def total(self) -> Cost:
        return sum(self.cost.values(), Cost())


@final
@dataclass(frozen=True, slots=True)
class BudgetFigures:
    """Calls with a budget, measured by their callers: wait from submit to outcome vs budget.

    ``kept``: an outcome (a result, or an error of its own) within the budget; ``late``: an
    outcome after it; ``exceeded``: ``DeadlineExceededError`` (``deadline_action="fail"``).
    """

    calls: int = 0
    kept: int = 0
    late: int = 0
    exceeded: int = 0
    #: The longest wait as a share of its call's budget (1.0: right at the deadline).
    worst_ratio: float | None = None

    @property
    def kept_percent(self) -> Decimal:
        if not self.calls:
            return Decimal(100)
        return (Decimal(self.kept) / self.calls * 100).quantize(Decimal("0.1"))

    def __add__(self, other: BudgetFigures) -> BudgetFigures:
        ratios = [r for r in (self.worst_ratio, other.worst_ratio) if r is not None]
        return BudgetFigures(
            calls=self.calls + other.calls,
            kept=self.kept + other.kept,
            late=self.late + other.late,
            exceeded=self.exceeded + other.exceeded,
            worst_ratio=max(ratios) if ratios else None,
        )


@final
@dataclass(frozen=True, slots=True)
class EscalationFigures:
    """What keeping the budgets cost (DESIGN §8).

    ``stats.escalation_cost`` is the escalated direct calls plus the batch price of results that
    came anyway; the first part is also in the direct route's cost, the second in no route's.
    ``direct`` is the first part, summed from the ``on_result`` events of escalated calls;
    ``dropped`` the rest.
    """

    escalations: int
    #: Escalated calls the direct route answered (with their cost in ``direct``).
    answered: int
    cost: Cost
    direct: Cost
    routed_by_deadline: int
    results_dropped: int

    @property
    def dropped(self) -> Cost:
        """The batch price of results that came after their caller had its answer (or its
        ``DeadlineExceededError``): billed, unused, and in no route's cost."""
        return _minus(self.cost, self.direct)


@final
@dataclass(frozen=True, slots=True)
class DemoReport:
    """Everything the demo observed: the fleet's stats, the callers' side, the ledger's bill."""

    config: DemoConfig
    backend: str
    #: ``"emulator"`` or the real endpoint's base URL.
    target: str
    elapsed_s: float
    stats: StatsSnapshot
    #: Calls planned, and calls whose caller got a result or an exception, per route.
    planned: dict[Route, int]
    ended: dict[Route, int]
    #: Outcomes per route, as the ``on_result`` hook saw them.
    outcomes: dict[Route, dict[str, int]]
    #: One line per call whose caller handled an exception.
    handled: list[str]
    ledger: LedgerFigures | None
    #: Per planned route (chat: direct, grading: batch), as each caller measured it.
    budgets: dict[Route, BudgetFigures]
    escalation: EscalationFigures

    @property
    def cost(self) -> Cost:
        """The fleet's cost of the answers its callers got, over both routes."""
        return sum(self.stats.cost.values(), Cost())

    @property
    def spent(self) -> Cost:
        """Everything paid for: the answers, plus the batch results dropped (see
        :attr:`EscalationFigures.dropped`)."""
        return self.cost + self.escalation.dropped

    @property
    def saving_percent(self) -> Decimal:
        """Saving as a percentage of the list price, to two places."""
        return _percent(self.cost.saving, self.cost.list_price)

    @property
    def batching_saving(self) -> Decimal:
        """What the batch route saved on the answers it gave (list price − paid)."""
        return self.stats.cost[Route.BATCH].saving

    @property
    def net_saving(self) -> Decimal:
        """The list price of every answer (as if all went direct) minus everything paid,
        dropped batch results included: what batching saved, less what escalating wasted."""
        return self.cost.list_price - self.spent.paid

    @property
    def budgets_total(self) -> BudgetFigures:
        return sum(self.budgets.values(), BudgetFigures())

    @property
    def budgets_kept(self) -> bool | None:
        """With ``deadline_action="escalate"`` against the emulator (whose direct latency the
        demo sets), every call answered within its budget; ``None`` where nothing is
        promised (``"wait"``, ``"fail"``, a real endpoint)."""
        if self.config.deadline_action != "escalate" or not self.config.emulated:
            return None
        total = self.budgets_total
        return total.kept == total.calls

    @property
    def ledger_matches(self) -> bool | None:
        """The ledger's bill equals the fleet's figures, exactly; ``None`` without one.

        Direct route: the ledger equals the fleet's direct cost (escalated calls included).
        Batch route: the ledger equals the fleet's batch cost plus the dropped results, the
        part of ``escalation_cost`` no route holds; and that part equals what the ledger billed
        for the calls that did not take their batch's answer.
        """
        if self.ledger is None:
            return None
        cost = self.stats.cost
        dropped = self.escalation.dropped
        return (
            cost[Route.DIRECT] == self.ledger.cost[Route.DIRECT]
            and cost[Route.BATCH] + dropped == self.ledger.cost[Route.BATCH]
            and dropped == self.ledger.unused
        )

    @property
    def all_ended(self) -> bool:
        """Every planned call ended (with a result or an exception)."""
        return self.ended == self.planned

    @property
    def ok(self) -> bool:
        """Every call ended and, against the emulator, the figures match the ledger and, with
        ``"escalate"``, every budget was kept."""
        return (
            self.all_ended and self.ledger_matches is not False and self.budgets_kept is not False
        )


def _percent(part: Decimal, whole: Decimal) -> Decimal:
    if not whole:
        return Decimal(0)
    return (part / whole * 100).quantize(Decimal("0.01"))


# -- the agents -----------------------------------------------------------------------------


@final
class _Tally:
    """The callers' side of the run: what ended, how long it took, the errors they handled."""

    def __init__(self) -> None:
        self.ended: Counter[Route] = Counter()
        self.handled: list[str] = []
        self.outcomes: dict[Route, Counter[str]] = {route: Counter() for route in Route}
        self.budgets: dict[Route, BudgetFigures] = {route: BudgetFigures() for route in Route}
        #: The escalated calls' direct cost, and the ids of calls that left their batch's
        #: answer unused (escalated, or failed at their deadline).
        self.escalated_cost = Cost()
        self.escalated_answered = 0
        self.unused_ids: set[str] = set()

    def on_result(self, event: ResultEvent) -> None:
        self.outcomes[event.route][event.outcome] += 1
        if event.custom_id is None:
            return
        # Only batched calls carry a custom_id: on the direct route, they were escalated.
        if event.route is Route.DIRECT:
            self.unused_ids.add(event.custom_id)
            if event.cost is not None:
                self.escalated_cost += event.cost
                self.escalated_answered += 1
        elif event.outcome == "failed":
            self.unused_ids.add(event.custom_id)

    def timed(self, route: Route, budget_ms: float, start: float, exc: Exception | None) -> None:
        """Count one call that ended, measured on its caller's own clock."""
        wait = anyio.current_time() - start
        budget = budget_ms / 1000
        seen = self.budgets[route]
        exceeded = isinstance(exc, DeadlineExceededError)
        kept = not exceeded and wait <= budget
        ratio = wait / budget if budget else None
        ratios = [r for r in (seen.worst_ratio, ratio) if r is not None]
        self.budgets[route] = BudgetFigures(
            calls=seen.calls + 1,
            kept=seen.kept + kept,
            late=seen.late + (not exceeded and not kept),
            exceeded=seen.exceeded + exceeded,
            worst_ratio=max(ratios) if ratios else None,
        )
        self.ended[route] += 1


async def _chat_agent(
    fleet: FleetDispatcher, n: int, config: DemoConfig, vendor: _Vendor, tally: _Tally
) -> None:
    """A user is waiting: one call at a time, each with a tight budget, keeping the history."""
    rng = random.Random(f"{config.seed}/chat/{n}")
    errors: tuple[type[Exception], ...] = (*vendor.errors, FleetError)
    history: list[dict[str, str]] = []
    for turn in range(config.turns):
        if turn:
            await anyio.sleep(rng.uniform(*config.think_s))
        history.append({"role": "user", "content": rng.choice(_QUESTIONS)})
        start = anyio.current_time()
        error: Exception | None = None
        try:
            reply = await fleet.submit(
                latency_budget_ms=config.chat_budget_ms, **vendor.chat(list(history))
            )
        except errors as exc:
            # The direct route raises the SDK's own errors, as the SDK's create would.
            error = exc
            tally.handled.append(f"chat agent {n}, turn {turn}: {type(exc).__name__}: {exc}")
            history.pop()
        else:
            history.append({"role": "assistant", "content": vendor.text(reply)})
        finally:
            tally.timed(Route.DIRECT, config.chat_budget_ms, start, error)


async def _grade(
    fleet: FleetDispatcher,
    n: int,
    answer: str,
    budget_ms: int,
    vendor: _Vendor,
    tally: _Tally,
) -> None:
    errors: tuple[type[Exception], ...] = (FleetError, *vendor.errors)
    start = anyio.current_time()
    error: Exception | None = None
    try:
        await fleet.submit(latency_budget_ms=budget_ms, **vendor.grade(f"Answer #{n}: {answer}"))
    except BatchRequestError as exc:
        # One errored item fails its own caller only; the rest of its batch is unaffected.
        error = exc
        tally.handled.append(f"grade #{n}: {exc.error_type} (batch {exc.batch_id})")
    except DeadlineExceededError as exc:
        # deadline_action="fail": the budget ran out; counted, not listed one by one.
        error = exc
    except errors as exc:
        # Any other outcome (a refused batch, an expired item, an escalated call's SDK error)
        # is likewise this caller's own business.
        error = exc
        tally.handled.append(f"grade #{n}: {type(exc).__name__}: {exc}")
    finally:
        tally.timed(Route.BATCH, budget_ms, start, error)


def _grading_budget(config: DemoConfig, rng: random.Random) -> int:
    if isinstance(config.grading_budget_ms, tuple):
        return rng.randint(*config.grading_budget_ms)
    return config.grading_budget_ms


async def _grader(
    fleet: FleetDispatcher, config: DemoConfig, vendor: _Vendor, tally: _Tally
) -> None:
    """Work that can wait: the burst arrives in irregular waves, as graded answers come in."""
    rng = random.Random(f"{config.seed}/grader")
    errored: dict[int, str] = {}
    if config.emulated:
        picks = rng.sample(range(config.calls), min(config.errored, config.calls))
        errored = {n: _ERRORED_MARKERS[i % len(_ERRORED_MARKERS)] for i, n in enumerate(picks)}
    # Waves smaller than batch_min_size, at gaps shorter than the window: some batches fill up
    # (flush reason "size"), the tail waits out the window (reason "window").
    low = max(1, config.batch_min_size // 8)
    high = max(low, config.batch_min_size * 3 // 4)
    async with anyio.create_task_group() as tg:
        n = 0
        while n < config.calls:
            wave = min(rng.randint(low, high), config.calls - n)
            for k in range(n, n + wave):
                answer = rng.choice(_ANSWERS)
                if k in errored:
                    answer = f"{answer} {errored[k]}"
                budget = _grading_budget(config, rng)
                tg.start_soon(_grade, fleet, k, answer, budget, vendor, tally)
            n += wave
            if n < config.calls:
                gap = config.wave_gap_s or (config.window_s / 20, config.window_s / 6)
                await anyio.sleep(rng.uniform(*gap))


# -- the live display -----------------------------------------------------------------------


@final
class _LiveView:
    """A progress display per route, drawn from the fleet's live stats on the event loop."""

    def __init__(self, console: Console, stats: FleetStats, planned: dict[Route, int]) -> None:
        self._stats = stats
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            # Redrawn by run() on the event loop, not by rich's own thread, so the stats are
            # read between the fleet's steps, never during one.
            auto_refresh=False,
        )
        self._direct = self.progress.add_task(
            "chat    (direct)", total=planned[Route.DIRECT], detail=""
        )
        self._batch = self.progress.add_task(
            "grading (batch) ", total=planned[Route.BATCH], detail=""
        )

    def draw(self) -> None:
        stats = self._stats
        done_direct = stats.wait_ms(Route.DIRECT).count
        done_batch = stats.wait_ms(Route.BATCH).count
        self.progress.update(
            self._direct,
            completed=done_direct,
            detail=f"in flight {stats.sync_calls - done_direct}",
        )
        self.progress.update(
            self._batch,
            completed=done_batch,
            detail=(
                f"queued {stats.queued} · batches in flight {stats.in_flight_batches} · "
                f"flushed {sum(stats.flushes.values())}"
            ),
        )
        self.progress.refresh()

    async def run(self) -> None:
        """Redraw ten times a second until cancelled."""
        while True:
            self.draw()
            await anyio.sleep(0.1)


# -- running --------------------------------------------------------------------------------


async def run_demo(
    config: DemoConfig, *, console: Console | None = None, live: bool = False
) -> DemoReport:
    """Run the demo to the end and return what it observed.

    :param console: where to print the introduction and, with ``live``, the progress display;
        ``None`` prints nothing.
    :param live: show a live progress display on ``console``.
    :raises ValueError: an invalid configuration.
    :raises RuntimeError: ``provider="openai"`` without the ``openai`` package.
    """
    vendor = _vendor(config)
    planned = {Route.DIRECT: config.agents * config.turns, Route.BATCH: config.calls}
    tally = _Tally()
    async with AsyncExitStack() as stack:
        emulator: Emulator | None = None
        if config.provider == "bedrock":  # -- Bedrock: its stand-in instead of the emulator
            emulator, url = await _start_bedrock(stack, config)
            key, target = EMULATOR_KEY, "Bedrock stand-in"
        elif config.base_url is None:
            low, high = config.direct_latency_s
            emulator = await stack.enter_async_context(
                run_emulator(
                    EmulatorConfig(
                        turnaround_s=config.turnaround(),
                        direct_latency_s=lambda rng: rng.uniform(low, high),
                        seed=config.seed,
                    )
                )
            )
            url, key, target = emulator.url, EMULATOR_KEY, "emulator"
        else:
            assert config.api_key is not None  # DemoConfig checked it
            url, key, target = config.base_url, config.api_key, config.base_url
        client = await stack.enter_async_context(vendor.client(key, url))
        fleet = FleetDispatcher(client, policy=config.policy(), on_result=tally.on_result)
        if console is not None:
            _print_intro(console, config, url)
        start = anyio.current_time()
        view: _LiveView | None = None
        if live and console is not None:
            view = _LiveView(console, fleet.stats, planned)
            view.progress.start()
            stack.callback(view.progress.stop)
        async with anyio.create_task_group() as ui:
            if view is not None:
                ui.start_soon(view.run)
            async with fleet, anyio.create_task_group() as agents:
                for n in range(config.agents):
                    agents.start_soon(_chat_agent, fleet, n, config, vendor, tally)
                agents.start_soon(_grader, fleet, config, vendor, tally)
            ui.cancel_scope.cancel()
        elapsed = anyio.current_time() - start
        if view is not None:
            view.draw()  # the final counts, before the display stops
            view.progress.stop()
        ledger: LedgerFigures | None = None
        if emulator is not None:
            ledger = _ledger_figures(emulator, tally.unused_ids)
    stats = fleet.stats.snapshot()
    return DemoReport(
        config=config,
        backend=_backend_name(),
        target=target,
        elapsed_s=elapsed,
        stats=stats,
        planned=planned,
        ended={route: tally.ended[route] for route in Route},
        outcomes={route: dict(tally.outcomes[route]) for route in Route},
        handled=tally.handled,
        ledger=ledger,
        budgets=dict(tally.budgets),
        escalation=EscalationFigures(
            escalations=stats.escalations,
            answered=tally.escalated_answered,
            cost=stats.escalation_cost,
            direct=tally.escalated_cost,
            routed_by_deadline=stats.routed_by_deadline,
            results_dropped=stats.results_dropped,
        ),
    )


def _ledger_figures(emulator: Emulator, unused_ids: set[str]) -> LedgerFigures:
    bill = emulator.ledger
    # One read of the entries: the bill of batches that ended by now, all of it.
    entries = bill.entries
    cost = dict.fromkeys(Route, Cost())
    unused = Cost()
    unused_items = 0
    for entry in entries:
        if entry.cost is None:
            continue
        cost[Route(entry.route)] += entry.cost
        if entry.route == "batch" and entry.custom_id in unused_ids and entry.cost.paid:
            unused += entry.cost
            unused_items += 1
    return LedgerFigures(
        cost=cost,
        batches_created=bill.batches_created,
        unused=unused,
        unused_items=unused_items,
    )


def _backend_name() -> str:
    # anyio has no public "which backend am I on"; trio is the only other one it runs on.
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return "trio"
    return "asyncio"


def _range(value: float | tuple[float, float], scale: float = 1.0) -> str:
    if isinstance(value, tuple):
        return f"{value[0] / scale:g}–{value[1] / scale:g}"
    return f"{value / scale:g}"


def _print_intro(console: Console, config: DemoConfig, url: str) -> None:
    where = (
        f"the emulator at {url} (batches end after {_range(config.turnaround_s)} s)"
        if config.emulated
        else f"{url} (a real endpoint: real batches, real money)"
    )
    if config.provider == "bedrock":  # -- Bedrock: the stand-in's URL, then moto's
        stand_in, _, s3 = url.partition(" ")
        where = (
            f"the Bedrock stand-in at {stand_in}, S3 from moto at {s3} (jobs end after "
            f"{_range(config.turnaround_s)} s, 100 records at least)"
        )
    budget = config.grading_budget_ms
    low = budget[0] if isinstance(budget, tuple) else budget
    grading = (
        f"budget {_range(budget, 60_000)} min"
        if low >= 60_000
        else f"budgets {_range(budget, 1000)} s, deadline action {config.deadline_action!r}"
    )
    console.print(
        f"[bold]llmfleet demo[/bold] ({config.scenario}, {config.provider}): {config.agents} "
        f"chat agents × {config.turns} turns (budget {config.chat_budget_ms / 1000:g} s → "
        f"direct) and a grading burst of {config.calls} calls ({grading} → batch), against "
        f"{where}.",
        highlight=False,
    )


# -- reporting ------------------------------------------------------------------------------


def _usd(amount: Decimal) -> str:
    # Exact: these are the figures compared with the ledger, so no rounding on display.
    return f"${amount.normalize():f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def _cost_json(cost: Cost) -> dict[str, str]:
    return {"list_price": str(cost.list_price), "paid": str(cost.paid), "saving": str(cost.saving)}


def _wait_json(p: Percentiles) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {"count": p.count, "p50": ms(p.p50), "p95": ms(p.p95), "max": ms(p.max)}


def _budget_json(b: BudgetFigures) -> dict[str, Any]:
    return {
        "calls": b.calls,
        "kept": b.kept,
        "late": b.late,
        "deadline_exceeded": b.exceeded,
        "kept_percent": str(b.kept_percent),
        "worst_wait_over_budget": None if b.worst_ratio is None else round(b.worst_ratio, 3),
    }


def report_json(report: DemoReport) -> dict[str, Any]:
    """The report as JSON-ready data: money as exact decimal strings, waits in ms."""
    s = report.stats
    e = report.escalation
    config = asdict(report.config)
    config.pop("api_key")  # never printed
    ledger: dict[str, Any] | None = None
    if report.ledger is not None:
        total = report.ledger.total
        ledger = {
            "batches_created": report.ledger.batches_created,
            "cost": {
                **{route.value: _cost_json(report.ledger.cost[route]) for route in Route},
                "total": _cost_json(total),
            },
            # The part of the batch route's bill for calls that did not take their batch's
            # answer: the fleet has it in escalation_cost, not in the batch route's cost.
            "unused_batch_results": {
                "items": report.ledger.unused_items,
                **_cost_json(report.ledger.unused),
            },
            "saving": str(total.saving),
            "matches": report.ledger_matches,
        }
    return {
        "ok": report.ok,
        "scenario": report.config.scenario,
        "provider": report.config.provider,
        "backend": report.backend,
        "target": report.target,
        "elapsed_s": round(report.elapsed_s, 3),
        "config": config,
        "policy": asdict(report.config.policy()),
        "calls": {
            "planned": {route.value: report.planned[route] for route in Route},
            "routed": {"direct": s.sync_calls, "batch": s.batched_calls},
            "ended": {route.value: report.ended[route] for route in Route},
        },
        "batches": {
            "submitted": s.batches_submitted,
            "flushes": dict(s.flushes),
            "size": {"min": s.batch_size_min, "mean": s.batch_size_mean, "max": s.batch_size_max},
        },
        "waits_ms": {route.value: _wait_json(s.wait_ms[route]) for route in Route},
        "outcomes": {
            "total": {
                "succeeded": s.succeeded,
                "errored": s.errored,
                "expired": s.expired,
                "canceled": s.canceled,
                "withdrawn": s.withdrawn,
                "failed": s.failed,
            },
            **{route.value: report.outcomes[route] for route in Route},
        },
        "handled_errors": report.handled,
        "budgets": {
            **{route.value: _budget_json(report.budgets[route]) for route in Route},
            "total": _budget_json(report.budgets_total),
            "all_kept": report.budgets_kept,
            "fleet_hits": {route.value: s.deadline_hits[route] for route in Route},
            "fleet_misses": {route.value: s.deadline_misses[route] for route in Route},
        },
        "escalations": {
            "count": e.escalations,
            "answered": e.answered,
            "routed_direct_by_deadline": e.routed_by_deadline,
            "results_dropped": e.results_dropped,
            "escalation_cost": _cost_json(e.cost),
            "direct_calls": _cost_json(e.direct),
            "dropped_results": _cost_json(e.dropped),
        },
        "tokens": {route.value: asdict(s.tokens[route]) for route in Route},
        "cost": {
            **{route.value: _cost_json(s.cost[route]) for route in Route},
            "total": _cost_json(report.cost),
        },
        "spent": _cost_json(report.spent),
        "saving": str(report.cost.saving),
        "saving_percent": str(report.saving_percent),
        "batching_saving": str(report.batching_saving),
        "net_saving": str(report.net_saving),
        "unpriced_calls": s.unpriced_calls,
        "ledger": ledger,
    }


def _policy_line(policy: RoutingPolicy) -> str:
    deadline = f"deadline action {policy.deadline_action!r}"
    if policy.deadline_action == "escalate":
        deadline += f" with a {policy.escalation_margin_ms / 1000:g} s margin"
    return (
        f"direct up to {policy.sync_max_latency_ms / 1000:g} s budgets; batches of "
        f"{policy.batch_min_size}–{policy.batch_max_size} calls or after a "
        f"{policy.batch_window_ms / 1000:g} s window; polls every "
        f"{policy.poll_interval_ms / 1000:g} s, slowing to "
        f"{policy.poll_max_interval_ms / 1000:g} s"
        + ("" if policy.batch_api_rpm is None else f" (at most {policy.batch_api_rpm}/min)")
        + f"; {deadline}"
    )


def _print_budgets(report: DemoReport, console: Console) -> None:
    s = report.stats
    config = report.config
    table = Table(
        title="Budgets, as each caller measured them (wait from submit to outcome)",
        title_justify="left",
    )
    table.add_column("planned route")
    for name in ("budget", "calls", "kept", "late", "deadline exceeded", "worst wait"):
        table.add_column(name, justify="right")
    budget_text = {
        Route.DIRECT: f"{config.chat_budget_ms / 1000:g} s",
        Route.BATCH: f"{_range(config.grading_budget_ms, 1000)} s",
    }
    names = {Route.DIRECT: "chat (direct)", Route.BATCH: "grading (batched)"}
    rows = [(names[route], budget_text[route], report.budgets[route]) for route in Route]
    rows.append(("total", "", report.budgets_total))
    for name, budget, b in rows:
        table.add_row(
            name,
            budget,
            str(b.calls),
            f"{b.kept} ({b.kept_percent}%)",
            str(b.late),
            str(b.exceeded),
            "–" if b.worst_ratio is None else f"{b.worst_ratio:.0%} of budget",
            style="bold" if name == "total" else None,
        )
    console.print(table)
    hits = " · ".join(
        f"{route.value} {s.deadline_hits[route]} hit / {s.deadline_misses[route]} missed"
        for route in Route
    )
    console.print(
        f"The fleet's own count, per route that answered a batched call: {hits}.",
        highlight=False,
    )


def _print_escalations(report: DemoReport, console: Console) -> None:
    e = report.escalation
    table = Table(
        title="Batching vs keeping the budgets (USD, exact)",
        title_justify="left",
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    table.add_row(
        "saving from batching",
        _usd(report.batching_saving),
        f"{report.stats.batched_calls - e.escalations} batched calls not escalated; list price "
        "− paid on the batch route",
    )
    table.add_row(
        "escalations",
        str(e.escalations),
        f"{e.answered} answered by the direct route; {e.routed_by_deadline} more calls routed "
        "direct at submit (no batch could meet their budget)",
    )
    table.add_row(
        "escalation_cost (paid)",
        _usd(e.cost.paid),
        f"list {_usd(e.cost.list_price)}: the two lines below",
    )
    table.add_row(
        "  escalated direct calls",
        _usd(e.direct.paid),
        "at list price; counted in the direct route's cost",
    )
    table.add_row(
        "  dropped batch results",
        _usd(e.dropped.paid),
        f"{e.results_dropped} results that came after their caller had its answer: billed at "
        "batch price, unused, in no route's cost",
    )
    table.add_row(
        "net saving",
        _usd(report.net_saving),
        f"{_percent(report.net_saving, report.cost.list_price)}% of the list price of every "
        f"answer ({_usd(report.cost.list_price)}): batching's saving − dropped results",
    )
    console.print(table)


def print_report(report: DemoReport, console: Console) -> None:
    """Print the report as tables, ending with whether the fleet's bill matches the ledger's."""
    s = report.stats
    console.print()
    console.print(
        f"Done in {report.elapsed_s:.1f} s on {report.backend}. "
        f"Policy: {_policy_line(report.config.policy())}.",
        highlight=False,
    )

    routed = {Route.DIRECT: s.sync_calls, Route.BATCH: s.batched_calls}
    calls = Table(title="Calls per route (wait: from submit to result)", title_justify="left")
    for name in ("route", "planned", "routed", "ended", "wait p50", "wait p95", "wait max"):
        calls.add_column(name, justify="left" if name == "route" else "right")
    for route in Route:
        waits = s.wait_ms[route]
        calls.add_row(
            route.value,
            str(report.planned[route]),
            str(routed[route]),
            str(report.ended[route]),
            _ms(waits.p50),
            _ms(waits.p95),
            _ms(waits.max),
        )
    console.print(calls)

    outcome_names = ("succeeded", "errored", "expired", "canceled", "withdrawn", "failed")
    outcomes = Table(title="Outcomes per route", title_justify="left")
    outcomes.add_column("route")
    for name in outcome_names:
        outcomes.add_column(name, justify="right")
    for route in Route:
        seen = report.outcomes[route]
        outcomes.add_row(route.value, *(str(seen.get(name, 0)) for name in outcome_names))
    console.print(outcomes)

    batches = Table(title="Batches", title_justify="left", show_header=False)
    batches.add_column(style="bold")
    batches.add_column()
    submitted = str(s.batches_submitted)
    if report.ledger is not None:
        submitted += f" (the emulator created {report.ledger.batches_created})"
    batches.add_row("submitted", submitted)
    batches.add_row(
        "flushed by reason",
        " · ".join(f"{reason} {count}" for reason, count in s.flushes.items()),
    )
    batches.add_row(
        "size min / mean / max",
        "–"
        if s.batch_size_mean is None
        else f"{s.batch_size_min} / {s.batch_size_mean:.1f} / {s.batch_size_max}",
    )
    console.print(batches)

    deadlines = report.config.scenario == "deadlines" or s.escalations or s.routed_by_deadline
    if deadlines:
        _print_budgets(report, console)

    tokens = Table(title="Tokens per route", title_justify="left")
    for name in ("route", "input", "output", "cache write", "cache read"):
        tokens.add_column(name, justify="left" if name == "route" else "right")
    for route in Route:
        t = s.tokens[route]
        tokens.add_row(
            route.value,
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            f"{t.cache_write_tokens:,}",
            f"{t.cache_read_tokens:,}",
        )
    console.print(tokens)

    _print_money(report, console)
    if deadlines:
        _print_escalations(report, console)

    console.print(
        f"Saving: [bold]{_usd(report.cost.saving)}[/bold] "
        f"({report.saving_percent}% of the list price {_usd(report.cost.list_price)}).",
        highlight=False,
    )
    if s.unpriced_calls:
        console.print(f"{s.unpriced_calls} calls had no known price: their tokens are counted.")
    exceeded = report.budgets_total.exceeded
    if exceeded:
        console.print(
            f"{exceeded} callers got DeadlineExceededError (deadline action 'fail').",
            highlight=False,
        )
    if report.handled:
        console.print(f"Errors handled by their callers ({len(report.handled)}):")
        for line in report.handled:
            console.print(f"  • {line}", highlight=False, markup=False)
    if not report.all_ended:
        console.print(
            f"[bold red]✗ not every call ended:[/bold red] planned {report.planned}, "
            f"ended {report.ended}",
            highlight=False,
        )
    total = report.budgets_total
    if report.budgets_kept is False:
        console.print(
            f"[bold red]✗ the budget is a promise, and {total.calls - total.kept} of "
            f"{total.calls} calls did not get their answer within it[/bold red] "
            "(deadline action 'escalate').",
            highlight=False,
        )
    elif report.budgets_kept:
        console.print(
            f"[bold green]✓ Every call got its answer within its budget[/bold green] "
            f"({total.calls} calls, by their callers' own clocks).",
            highlight=False,
        )
    _print_ledger_verdict(report, console)


def _print_money(report: DemoReport, console: Console) -> None:
    s = report.stats
    ledger = report.ledger
    dropped = report.escalation.dropped
    money = Table(title="Cost (USD, exact)", title_justify="left")
    for name in ("route", "list price", "paid", "saving"):
        money.add_column(name, justify="left" if name == "route" else "right")
    if ledger is not None:
        money.add_column("ledger list", justify="right")
        money.add_column("ledger charged", justify="right")
    rows: list[tuple[str, Cost, Cost | None]] = [
        (route.value, s.cost[route], ledger.cost[route] if ledger is not None else None)
        for route in Route
    ]
    show_dropped = dropped != Cost() or (ledger is not None and ledger.unused != Cost())
    if show_dropped:
        # Billed on the batch route but not in its cost (the fleet has it in escalation_cost):
        # the ledger's figure is already in its batch row, so it is shown here only to compare.
        rows.append(("  of which dropped", dropped, ledger.unused if ledger is not None else None))
    rows.append(("total", report.spent, ledger.total if ledger is not None else None))
    for name, cost, billed in rows:
        cells = [name, _usd(cost.list_price), _usd(cost.paid), _usd(cost.saving)]
        if billed is not None:
            cells += [_usd(billed.list_price), _usd(billed.paid)]
        money.add_row(*cells, style="bold" if name == "total" else None)
    if show_dropped:
        money.caption = (
            "The fleet's batch row holds the answers its callers took; 'of which dropped' is "
            "the batch price of results that came after their caller had its answer (in "
            "escalation_cost), which the ledger bills on its batch row: batch + dropped = "
            "ledger batch."
        )
        money.caption_justify = "left"
    console.print(money)


def _print_ledger_verdict(report: DemoReport, console: Console) -> None:
    ledger = report.ledger
    if ledger is None or report.ledger_matches is None:
        console.print("No ledger to compare with: the demo ran against a real endpoint.")
        return
    dropped = report.escalation.dropped
    if report.ledger_matches:
        if dropped == Cost() and ledger.unused == Cost():
            how = "list price and charged, per route, compared as Decimals"
        else:
            how = (
                "list price and charged, compared as Decimals: direct route = fleet's direct "
                "cost, escalated calls included; batch route = fleet's batch cost + the "
                f"{ledger.unused_items} dropped batch results in escalation_cost"
            )
        console.print(
            f"[bold green]✓ The fleet's figures match the emulator's ledger exactly[/bold green] "
            f"({how}).",
            highlight=False,
        )
        return
    s = report.stats
    unseen = _minus(ledger.cost[Route.BATCH], s.cost[Route.BATCH] + dropped)
    console.print(
        "[bold red]✗ The fleet's figures do NOT match the emulator's ledger[/bold red] "
        f"(see the last two columns above): the ledger billed {_usd(unseen.paid)} on the "
        "batch route that the fleet counted nowhere, and "
        f"{_usd(_minus(ledger.cost[Route.DIRECT], s.cost[Route.DIRECT]).paid)} more on the "
        "direct route.",
        highlight=False,
    )
