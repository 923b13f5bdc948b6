"""What the demo runs: its scenarios, its configuration, and the table of providers.

A provider is one row of :data:`PROVIDERS`: the SDK client, the request params of both kinds
of call, how to read a reply's text, the SDK's errors, and where the API key of a real
endpoint comes from. The command line takes its ``--provider`` choices, key variables and
install hints from the same table, so a provider is added here and nowhere else.

Imports no SDK and nothing of the ``emulator`` extra: each row loads its SDK when used.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final

from .._policy import RoutingPolicy
from . import bedrock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from contextlib import AsyncExitStack

    from ..emulator import Duration

__all__ = [
    "EMULATOR_KEY",
    "PROVIDERS",
    "SCENARIOS",
    "DemoConfig",
    "DemoProvider",
    "ProviderName",
]

Scenario: TypeAlias = Literal["pooling", "deadlines"]
ProviderName: TypeAlias = Literal["anthropic", "openai", "gemini", "bedrock"]
DeadlineAction: TypeAlias = Literal["escalate", "wait", "fail"]

CHAT_MODEL: Final = "claude-haiku-4-5"
GRADING_MODEL: Final = "claude-sonnet-4-6"
#: The model of both paths with ``provider="openai"``.
OPENAI_MODEL: Final = "gpt-4.1-mini"
#: The model of both paths with ``provider="gemini"``.
GEMINI_MODEL: Final = "gemini-2.5-flash"
#: The key the SDK sends to the emulator, which accepts any.
EMULATOR_KEY: Final = "llmfleet-demo-not-a-real-key"


# -- the providers --------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class DemoProvider:
    """What differs between providers: one row of :data:`PROVIDERS`.

    The callables import the SDK (``package``) when called, so the table itself is importable
    without it.
    """

    #: The SDK's import name (checked before the demo runs, with ``needs``), and how to
    #: install them.
    package: str
    install: str
    #: The environment variable a real endpoint's key is read from.
    key_var: str
    #: The SDK client for ``(api_key, base_url)``, an async context manager.
    client: Callable[[str, str], Any]
    #: The params of a chat call (from the history) and of a grading call (rubric, answer).
    chat: Callable[[list[dict[str, str]]], dict[str, Any]]
    grade: Callable[[str, str], dict[str, Any]]
    #: The text of a direct reply.
    text: Callable[[Any], str]
    #: What the direct route raises (the SDK's own errors).
    errors: Callable[[], tuple[type[Exception], ...]]
    #: Appended to the emulator's URL: where it serves this provider's routes.
    emulator_path: str = ""
    #: What the ``--provider`` help says of it.
    summary: str = ""
    #: Other modules it needs besides ``package``.
    needs: tuple[str, ...] = ()
    #: Starts the provider's own stand-in on the stack instead of the emulator, and returns
    #: it (its ``ledger`` is the bill) and the URL for ``client``; ``None``: the emulator.
    stand_in: Callable[[AsyncExitStack, DemoConfig], Awaitable[tuple[Any, str]]] | None = None
    #: What the introduction calls the emulator (or stand-in) at a URL, given the turnaround.
    where: Callable[[str, str], str] = lambda url, turnaround: (
        f"the emulator at {url} (batches end after {turnaround} s)"
    )
    #: Why a real endpoint cannot be used (``"runs against ... only"``); ``None``: it can.
    emulator_only: str | None = None

    def missing(self, name: str) -> str | None:
        """What to install before the demo can talk to provider ``name``; ``None``: nothing."""
        absent = [m for m in (self.package, *self.needs) if importlib.util.find_spec(m) is None]
        if not absent:
            return None
        what = f"the {absent[0]} package" if len(absent) == 1 else ", ".join(absent)
        return f"--provider {name} needs {what}: {self.install}"


def _anthropic_client(key: str, url: str) -> Any:
    import anthropic

    return anthropic.AsyncAnthropic(api_key=key, base_url=url)


def _anthropic_text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _openai_client(key: str, url: str) -> Any:
    import openai

    return openai.AsyncOpenAI(api_key=key, base_url=url)


def _gemini_client(key: str, url: str) -> Any:
    import httpx2
    from google import genai

    # The async side (an async context manager), with a transport of its own: google-genai's
    # default one runs on asyncio only (docs/design.md §9.5), and --backend trio needs both.
    return genai.Client(
        api_key=key,
        http_options={
            "base_url": url,
            "async_client_args": {"transport": httpx2.AsyncHTTPTransport()},
        },
    ).aio


def _gemini_contents(history: list[dict[str, str]]) -> list[dict[str, Any]]:
    # Gemini calls the assistant "model".
    return [
        {
            "role": "model" if turn["role"] == "assistant" else turn["role"],
            "parts": [{"text": turn["content"]}],
        }
        for turn in history
    ]


def _gemini_errors() -> tuple[type[Exception], ...]:
    from google.genai import errors

    return (errors.APIError,)


def _sdk_errors(package: str) -> Callable[[], tuple[type[Exception], ...]]:
    def errors() -> tuple[type[Exception], ...]:
        error: type[Exception] = importlib.import_module(package).APIError
        return (error,)

    return errors


#: Every provider the demo can talk to, by its ``--provider`` name.
PROVIDERS: Final[Mapping[ProviderName, DemoProvider]] = {
    "anthropic": DemoProvider(
        package="anthropic",
        install="pip install llmfleet",
        key_var="ANTHROPIC_API_KEY",
        client=_anthropic_client,
        chat=lambda history: {"model": CHAT_MODEL, "max_tokens": 200, "messages": history},
        grade=lambda rubric, content: {
            "model": GRADING_MODEL,
            "max_tokens": 100,
            "system": [{"type": "text", "text": rubric, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": content}],
        },
        text=_anthropic_text,
        errors=_sdk_errors("anthropic"),
        summary="AsyncAnthropic",
    ),
    "openai": DemoProvider(
        package="openai",
        install="pip install 'llmfleet[openai]'",
        key_var="OPENAI_API_KEY",
        client=_openai_client,
        chat=lambda history: {
            "model": OPENAI_MODEL,
            "max_completion_tokens": 200,
            "messages": history,
        },
        grade=lambda rubric, content: {
            "model": OPENAI_MODEL,
            "max_completion_tokens": 100,
            "messages": [
                {"role": "system", "content": rubric},
                {"role": "user", "content": content},
            ],
        },
        text=lambda completion: completion.choices[0].message.content or "",
        errors=_sdk_errors("openai"),
        # The emulator serves OpenAI's routes under /v1, as api.openai.com does.
        emulator_path="/v1",
        summary="AsyncOpenAI, chat completions",
    ),
    "gemini": DemoProvider(
        package="google.genai",
        install="pip install 'llmfleet[gemini]'",
        key_var="GEMINI_API_KEY",
        client=_gemini_client,
        chat=lambda history: {
            "model": GEMINI_MODEL,
            "contents": _gemini_contents(history),
            "config": {"max_output_tokens": 200},
        },
        grade=lambda rubric, content: {
            "model": GEMINI_MODEL,
            "contents": content,
            "config": {"system_instruction": rubric, "max_output_tokens": 100},
        },
        text=lambda response: response.text or "",
        errors=_gemini_errors,
        summary="google.genai.Client, generate_content",
    ),
    "bedrock": DemoProvider(
        package="botocore",
        needs=("moto",),
        install="pip install 'llmfleet[bedrock-emulator]'",
        key_var="AWS_ACCESS_KEY_ID",
        client=bedrock.client,
        chat=lambda history: {
            "model": bedrock.CHAT_MODEL,
            "max_tokens": 200,
            "messages": history,
        },
        grade=lambda rubric, content: {
            "model": bedrock.GRADING_MODEL,
            "max_tokens": 100,
            "system": rubric,
            "messages": [{"role": "user", "content": content}],
        },
        text=_anthropic_text,
        errors=bedrock.errors,
        stand_in=bedrock.start,
        where=bedrock.where,
        emulator_only=(
            "runs against the embedded Bedrock stand-in only; for real Bedrock, pass "
            "llmfleet.providers.bedrock.BedrockClient(...) to open_fleet"
        ),
        summary=(
            "Amazon Bedrock batch inference through botocore, against a local stand-in and "
            "moto's S3; needs llmfleet[bedrock-emulator]"
        ),
    ),
}

#: What each scenario changes from :class:`DemoConfig`'s defaults (see :meth:`DemoConfig.preset`).
#: ``deadlines``: budgets of 4–10 s against batches that take 1–8 s, so some batches end too
#: late and the fleet has to escalate their calls to the direct route.
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
    :param provider: a key of :data:`PROVIDERS`: ``"anthropic"`` (``AsyncAnthropic``),
        ``"openai"`` (``AsyncOpenAI``, chat completions with :data:`OPENAI_MODEL`),
        ``"gemini"`` (``google.genai.Client``, ``generate_content`` with :data:`GEMINI_MODEL`) or
        ``"bedrock"`` (``BedrockClient``, against the Bedrock stand-in only).
    :param agents: chat agents; each makes ``turns`` calls one after another (direct route).
    :param turns: calls per chat agent.
    :param calls: calls in the grading burst (batch route).
    :param turnaround_s: how long the emulator takes to end a batch.
    :param window_s: the policy's ``batch_window_ms``, in seconds.
    :param grading_budget_ms: the grading calls' latency budget.
    :param deadline_action: the policy's ``deadline_action`` (docs/design.md §8).
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
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {tuple(PROVIDERS)}, got {self.provider!r}")
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
        emulator_only = PROVIDERS[self.provider].emulator_only
        if self.base_url is not None and emulator_only is not None:
            raise ValueError(f"provider {self.provider!r} {emulator_only}")
        if self.base_url is not None and not self.api_key:
            raise ValueError(
                f"a real endpoint (base_url) needs an API key ({PROVIDERS[self.provider].key_var})"
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

    @property
    def vendor(self) -> DemoProvider:
        """The row of :data:`PROVIDERS` this configuration talks to."""
        return PROVIDERS[self.provider]
