"""Running the demo: the emulator (or a real endpoint), the fleet, the agents, the figures.

Against the embedded emulator, the fleet's own cost figures are set beside the emulator's
ledger, which must agree to the last digit. The live display (``render``, rich) is imported
only when one is asked for.
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import anyio

from .._dispatcher import FleetDispatcher
from .._stats import Route
from ..emulator import EmulatorConfig, run_emulator
from ..pricing import Cost
from .agents import Tally, chat_agent, grader
from .config import EMULATOR_KEY
from .report import DEMO_ROUTES, DemoReport, EscalationFigures, LedgerFigures

if TYPE_CHECKING:
    from rich.console import Console

    from ..emulator import Emulator, Ledger
    from .config import DemoConfig
    from .render import LiveView

__all__ = ["run_demo"]


async def run_demo(
    config: DemoConfig, *, console: Console | None = None, live: bool = False
) -> DemoReport:
    """Run the demo to the end and return what it observed.

    :param console: where to print the introduction and, with ``live``, the progress display;
        ``None`` prints nothing.
    :param live: show a live progress display on ``console``.
    :raises ValueError: an invalid configuration.
    :raises RuntimeError: the provider's SDK is not installed (``openai`` for
        ``provider="openai"``).
    """
    vendor = config.vendor
    missing = vendor.missing(config.provider)
    if missing is not None:
        raise RuntimeError(f"the demo with {missing}")
    planned = {Route.DIRECT: config.agents * config.turns, Route.BATCH: config.calls}
    tally = Tally()
    async with AsyncExitStack() as stack:
        emulator: Emulator | None = None
        ledger_of: Ledger | None = None
        if config.base_url is None and vendor.stand_in is not None:
            # The provider's own stand-in in place of the emulator (Bedrock's, over moto).
            stand_in, url = await vendor.stand_in(stack, config)
            ledger_of, key, target = stand_in.ledger, EMULATOR_KEY, f"{config.provider} stand-in"
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
            url, key, target = emulator.url + vendor.emulator_path, EMULATOR_KEY, "emulator"
            ledger_of = emulator.ledger
        else:
            assert config.api_key is not None  # DemoConfig checked it
            url, key, target = config.base_url, config.api_key, config.base_url
        client = await stack.enter_async_context(vendor.client(key, url))
        fleet = FleetDispatcher(client, policy=config.policy(), on_result=tally.on_result)
        if console is not None:
            from .render import print_intro

            print_intro(console, config, url)
        start = anyio.current_time()
        view: LiveView | None = None
        if live and console is not None:
            from .render import LiveView

            view = LiveView(console, fleet.stats, planned)
            view.progress.start()
            stack.callback(view.progress.stop)
        async with anyio.create_task_group() as ui:
            if view is not None:
                ui.start_soon(view.run)
            async with fleet, anyio.create_task_group() as agents:
                for n in range(config.agents):
                    agents.start_soon(chat_agent, fleet, n, config, tally)
                agents.start_soon(grader, fleet, config, tally)
            ui.cancel_scope.cancel()
        elapsed = anyio.current_time() - start
        if view is not None:
            view.draw()  # the final counts, before the display stops
            view.progress.stop()
        ledger: LedgerFigures | None = None
        if ledger_of is not None:
            ledger = _ledger_figures(ledger_of, tally.unused_ids)
    stats = fleet.stats.snapshot()
    return DemoReport(
        config=config,
        backend=_backend_name(),
        target=target,
        elapsed_s=elapsed,
        stats=stats,
        planned=planned,
        ended={route: tally.ended[route] for route in DEMO_ROUTES},
        outcomes={route: dict(tally.outcomes[route]) for route in DEMO_ROUTES},
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


def _ledger_figures(bill: Ledger, unused_ids: set[str]) -> LedgerFigures:
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
