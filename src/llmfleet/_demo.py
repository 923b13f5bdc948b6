"""``llmfleet demo``: a fleet of agents with mixed budgets, and what it cost (DESIGN §10).

Chat agents make one call at a time with a tight budget (the direct route); a grader submits a
burst of calls that can wait minutes (the batch route), in irregular waves so that both flush
reasons show. Against the embedded emulator, the fleet's own cost figures are then set beside
the emulator's ledger, which must agree to the last digit.

Needs the ``emulator`` extra (``starlette``, ``uvicorn``, ``rich``).
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, final

import anthropic
import anyio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._dispatcher import FleetDispatcher
from ._policy import RoutingPolicy
from ._stats import ResultEvent, Route
from .emulator import EmulatorConfig, run_emulator
from .errors import BatchRequestError, FleetError
from .pricing import Cost

if TYPE_CHECKING:
    from rich.console import Console

    from ._stats import FleetStats, Percentiles, StatsSnapshot
    from .emulator import Emulator

__all__ = ["DemoConfig", "DemoReport", "print_report", "report_json", "run_demo"]

CHAT_MODEL: Final = "claude-haiku-4-5"
GRADING_MODEL: Final = "claude-sonnet-4-6"
#: The key the SDK sends to the emulator, which accepts any.
EMULATOR_KEY: Final = "llmfleet-demo-not-a-real-key"

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


@final
@dataclass(frozen=True, kw_only=True, slots=True)
class DemoConfig:
    """What the demo runs. Times are seconds unless named ``_ms``.

    :param agents: chat agents; each makes ``turns`` calls one after another (direct route).
    :param turns: calls per chat agent.
    :param calls: calls in the grading burst (batch route).
    :param turnaround_s: how long the emulator takes to end a batch.
    :param window_s: the policy's ``batch_window_ms``, in seconds.
    :param base_url: a real endpoint instead of the emulator (then ``api_key`` is required).
    :param api_key: the key for ``base_url``; never printed.
    """

    agents: int = 3
    turns: int = 5
    calls: int = 200
    turnaround_s: float = 3.0
    window_s: float = 2.0
    batch_min_size: int = 50
    batch_max_size: int = 100
    chat_budget_ms: int = 2_000
    grading_budget_ms: int = 600_000
    #: Pause between a chat agent's turns (drawn uniformly from this range).
    think_s: tuple[float, float] = (0.2, 0.6)
    #: How long the emulator takes to answer a direct call (drawn uniformly).
    direct_latency_s: tuple[float, float] = (0.1, 0.4)
    #: Grading prompts that come back errored (emulator only).
    errored: int = 2
    seed: int = 0
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("agents", "turns", "calls", "errored", "chat_budget_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("turnaround_s", "window_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if self.base_url is not None and not self.api_key:
            raise ValueError("a real endpoint (base_url) needs an API key (ANTHROPIC_API_KEY)")

    @property
    def emulated(self) -> bool:
        """The demo runs against the embedded emulator."""
        return self.base_url is None

    def policy(self) -> RoutingPolicy:
        """The routing policy: small batches and short polls, so batching shows in seconds."""
        return RoutingPolicy(
            sync_max_latency_ms=5_000,
            batch_window_ms=round(self.window_s * 1000),
            batch_min_size=self.batch_min_size,
            batch_max_size=self.batch_max_size,
            poll_interval_ms=250,
            poll_max_interval_ms=1_000,
        )


@final
@dataclass(frozen=True, slots=True)
class LedgerFigures:
    """What the emulator billed: cost per route (``"direct"``, ``"batch"``) and batches made."""

    cost: dict[Route, Cost]
    batches_created: int

    @property
    def total(self) -> Cost:
        return sum(self.cost.values(), Cost())


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

    @property
    def cost(self) -> Cost:
        """The fleet's cost over both routes."""
        return sum(self.stats.cost.values(), Cost())

    @property
    def saving_percent(self) -> Decimal:
        """Saving as a percentage of the list price, to two places."""
        cost = self.cost
        if not cost.list_price:
            return Decimal(0)
        return (cost.saving / cost.list_price * 100).quantize(Decimal("0.01"))

    @property
    def ledger_matches(self) -> bool | None:
        """The fleet's cost equals the ledger's on each route, exactly; ``None`` without one."""
        if self.ledger is None:
            return None
        return all(self.stats.cost[route] == self.ledger.cost[route] for route in Route)

    @property
    def all_ended(self) -> bool:
        """Every planned call ended (with a result or an exception)."""
        return self.ended == self.planned

    @property
    def ok(self) -> bool:
        """Every call ended and, against the emulator, the figures match the ledger."""
        return self.all_ended and self.ledger_matches is not False


# -- the agents -----------------------------------------------------------------------------


@final
class _Tally:
    """The callers' side of the run: what ended, and the errors callers handled."""

    def __init__(self) -> None:
        self.ended: Counter[Route] = Counter()
        self.handled: list[str] = []
        self.outcomes: dict[Route, Counter[str]] = {route: Counter() for route in Route}

    def on_result(self, event: ResultEvent) -> None:
        self.outcomes[event.route][event.outcome] += 1


def _text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


async def _chat_agent(fleet: FleetDispatcher, n: int, config: DemoConfig, tally: _Tally) -> None:
    """A user is waiting: one call at a time, each with a tight budget, keeping the history."""
    rng = random.Random(f"{config.seed}/chat/{n}")
    history: list[dict[str, str]] = []
    for turn in range(config.turns):
        if turn:
            await anyio.sleep(rng.uniform(*config.think_s))
        history.append({"role": "user", "content": rng.choice(_QUESTIONS)})
        try:
            reply = await fleet.submit(
                latency_budget_ms=config.chat_budget_ms,
                model=CHAT_MODEL,
                max_tokens=200,
                messages=list(history),
            )
        except (anthropic.APIError, FleetError) as exc:
            # The direct route raises the SDK's own errors, as messages.create would.
            tally.handled.append(f"chat agent {n}, turn {turn}: {type(exc).__name__}: {exc}")
            history.pop()
        else:
            history.append({"role": "assistant", "content": _text(reply)})
        finally:
            tally.ended[Route.DIRECT] += 1


async def _grade(
    fleet: FleetDispatcher, n: int, answer: str, config: DemoConfig, tally: _Tally
) -> None:
    try:
        await fleet.submit(
            latency_budget_ms=config.grading_budget_ms,
            model=GRADING_MODEL,
            max_tokens=100,
            system=[{"type": "text", "text": _RUBRIC, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": f"Answer #{n}: {answer}"}],
        )
    except BatchRequestError as exc:
        # One errored item fails its own caller only; the rest of its batch is unaffected.
        tally.handled.append(f"grade #{n}: {exc.error_type} (batch {exc.batch_id})")
    except (FleetError, anthropic.APIError) as exc:
        # Any other outcome (a refused batch, an expired item, an escalated call's SDK error)
        # is likewise this caller's own business.
        tally.handled.append(f"grade #{n}: {type(exc).__name__}: {exc}")
    finally:
        tally.ended[Route.BATCH] += 1


async def _grader(fleet: FleetDispatcher, config: DemoConfig, tally: _Tally) -> None:
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
                tg.start_soon(_grade, fleet, k, answer, config, tally)
            n += wave
            if n < config.calls:
                await anyio.sleep(rng.uniform(config.window_s / 20, config.window_s / 6))


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
    """
    planned = {Route.DIRECT: config.agents * config.turns, Route.BATCH: config.calls}
    tally = _Tally()
    async with AsyncExitStack() as stack:
        emulator: Emulator | None = None
        if config.base_url is None:
            low, high = config.direct_latency_s
            emulator = await stack.enter_async_context(
                run_emulator(
                    EmulatorConfig(
                        turnaround_s=config.turnaround_s,
                        direct_latency_s=lambda rng: rng.uniform(low, high),
                        seed=config.seed,
                    )
                )
            )
            url, key, target = emulator.url, EMULATOR_KEY, "emulator"
        else:
            assert config.api_key is not None  # DemoConfig checked it
            url, key, target = config.base_url, config.api_key, config.base_url
        client = await stack.enter_async_context(
            anthropic.AsyncAnthropic(api_key=key, base_url=url)
        )
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
                    agents.start_soon(_chat_agent, fleet, n, config, tally)
                agents.start_soon(_grader, fleet, config, tally)
            ui.cancel_scope.cancel()
        elapsed = anyio.current_time() - start
        if view is not None:
            view.draw()  # the final counts, before the display stops
            view.progress.stop()
        ledger: LedgerFigures | None = None
        if emulator is not None:
            bill = emulator.ledger
            ledger = LedgerFigures(
                cost={route: bill.total(route=route.value) for route in Route},
                batches_created=bill.batches_created,
            )
    return DemoReport(
        config=config,
        backend=_backend_name(),
        target=target,
        elapsed_s=elapsed,
        stats=fleet.stats.snapshot(),
        planned=planned,
        ended={route: tally.ended[route] for route in Route},
        outcomes={route: dict(tally.outcomes[route]) for route in Route},
        handled=tally.handled,
        ledger=ledger,
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


def _print_intro(console: Console, config: DemoConfig, url: str) -> None:
    where = (
        f"the emulator at {url} (batches end after {config.turnaround_s:g} s)"
        if config.emulated
        else f"{url} (a real endpoint: real batches, real money)"
    )
    console.print(
        f"[bold]llmfleet demo[/bold]: {config.agents} chat agents × {config.turns} turns "
        f"(budget {config.chat_budget_ms / 1000:g} s → direct) and a grading burst of "
        f"{config.calls} calls (budget {config.grading_budget_ms / 60_000:g} min → batch), "
        f"against {where}.",
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


def report_json(report: DemoReport) -> dict[str, Any]:
    """The report as JSON-ready data: money as exact decimal strings, waits in ms."""
    s = report.stats
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
            "saving": str(total.saving),
            "matches": report.ledger_matches,
        }
    return {
        "ok": report.ok,
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
        "tokens": {route.value: asdict(s.tokens[route]) for route in Route},
        "cost": {
            **{route.value: _cost_json(s.cost[route]) for route in Route},
            "total": _cost_json(report.cost),
        },
        "saving": str(report.cost.saving),
        "saving_percent": str(report.saving_percent),
        "unpriced_calls": s.unpriced_calls,
        "ledger": ledger,
    }


def _policy_line(policy: RoutingPolicy) -> str:
    return (
        f"direct up to {policy.sync_max_latency_ms / 1000:g} s budgets; batches of "
        f"{policy.batch_min_size}–{policy.batch_max_size} calls or after a "
        f"{policy.batch_window_ms / 1000:g} s window; polls every "
        f"{policy.poll_interval_ms / 1000:g} s, slowing to {policy.poll_max_interval_ms / 1000:g} s"
    )


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

    money = Table(title="Cost (USD, exact)", title_justify="left")
    for name in ("route", "list price", "paid", "saving"):
        money.add_column(name, justify="left" if name == "route" else "right")
    if report.ledger is not None:
        money.add_column("ledger list", justify="right")
        money.add_column("ledger charged", justify="right")
    rows: list[tuple[str, Cost, Cost | None]] = [
        (
            route.value,
            s.cost[route],
            report.ledger.cost[route] if report.ledger is not None else None,
        )
        for route in Route
    ]
    rows.append(("total", report.cost, report.ledger.total if report.ledger else None))
    for name, cost, billed in rows:
        cells = [name, _usd(cost.list_price), _usd(cost.paid), _usd(cost.saving)]
        if billed is not None:
            cells += [_usd(billed.list_price), _usd(billed.paid)]
        money.add_row(*cells, style="bold" if name == "total" else None)
    console.print(money)

    console.print(
        f"Saving: [bold]{_usd(report.cost.saving)}[/bold] "
        f"({report.saving_percent}% of the list price {_usd(report.cost.list_price)}).",
        highlight=False,
    )
    if s.unpriced_calls:
        console.print(f"{s.unpriced_calls} calls had no known price: their tokens are counted.")
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
    if report.ledger_matches is None:
        console.print("No ledger to compare with: the demo ran against a real endpoint.")
    elif report.ledger_matches:
        console.print(
            "[bold green]✓ The fleet's figures match the emulator's ledger exactly[/bold green] "
            "(list price and charged, per route, compared as Decimals).",
            highlight=False,
        )
    else:
        console.print(
            "[bold red]✗ The fleet's figures do NOT match the emulator's ledger[/bold red] "
            "(see the last two columns above).",
            highlight=False,
        )
