"""The demo's callers: chat agents that wait on each answer, a grader that sends a burst.

Chat agents make one call at a time with a tight budget (the direct route); the grader submits
a burst of calls that can wait (the batch route), in irregular waves so that both flush
reasons show. Each caller measures its own wait against its budget in a :class:`Tally`.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Final, final

import anyio

from .._stats import ResultEvent, Route
from ..errors import BatchRequestError, DeadlineExceededError, FleetError
from ..pricing import Cost
from .report import BudgetFigures

if TYPE_CHECKING:
    from .._dispatcher import FleetDispatcher
    from .config import DemoConfig, DemoProvider

__all__ = ["Tally", "chat_agent", "grader"]

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
class Tally:
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


async def chat_agent(fleet: FleetDispatcher, n: int, config: DemoConfig, tally: Tally) -> None:
    """A user is waiting: one call at a time, each with a tight budget, keeping the history."""
    vendor = config.vendor
    rng = random.Random(f"{config.seed}/chat/{n}")
    errors: tuple[type[Exception], ...] = (*vendor.errors(), FleetError)
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
    vendor: DemoProvider,
    tally: Tally,
) -> None:
    errors: tuple[type[Exception], ...] = (FleetError, *vendor.errors())
    start = anyio.current_time()
    error: Exception | None = None
    try:
        params = vendor.grade(_RUBRIC, f"Answer #{n}: {answer}")
        await fleet.submit(latency_budget_ms=budget_ms, **params)
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


async def grader(fleet: FleetDispatcher, config: DemoConfig, tally: Tally) -> None:
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
                tg.start_soon(_grade, fleet, k, answer, budget, config.vendor, tally)
            n += wave
            if n < config.calls:
                gap = config.wave_gap_s or (config.window_s / 20, config.window_s / 6)
                await anyio.sleep(rng.uniform(*gap))
