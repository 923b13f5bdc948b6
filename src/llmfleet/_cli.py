"""The ``llmfleet`` console script (docs/design.md §10). Subcommands: ``demo`` (``run`` later, §9).

The demo's dependencies (the ``emulator`` extra) are imported only when it runs, so
``llmfleet --help`` works on a bare install.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["main"]


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text}")
    return value


def _range(parse: Callable[[str], float]) -> Callable[[str], float | tuple[float, float]]:
    """An argument type for ``X`` or a range ``LOW-HIGH``, each checked by ``parse``."""

    def convert(text: str) -> float | tuple[float, float]:
        low, sep, high = text.partition("-")
        if not sep:
            return parse(text)
        a, b = parse(low), parse(high)
        if a > b:
            raise argparse.ArgumentTypeError(f"a range LOW-HIGH needs LOW <= HIGH, got {text}")
        return (a, b)

    return convert


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from ._demo.config import PROVIDERS

    parser = argparse.ArgumentParser(
        prog="llmfleet",
        description=(
            "Pool many agents' LLM calls into the providers' Batch APIs, per call, by latency "
            "budget."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run a fleet of agents against the embedded emulator and report what it cost",
        description=(
            "Start the embedded emulator of Anthropic's (or OpenAI's) API, run chat agents with "
            "tight latency budgets (direct route) beside a grading burst with loose ones (batch "
            "route), show live progress, and end with a report: routes, batches and flush "
            "reasons, waits, tokens, cost at list price vs paid, and the emulator's own bill "
            "for comparison. No API key needed. Scenario 'deadlines' gives the grading calls "
            "budgets of seconds against batches that sometimes take longer, and reports how "
            "the fleet kept them (escalations) and what that cost."
        ),
    )
    demo.add_argument(
        "--scenario",
        choices=("pooling", "deadlines"),
        default="pooling",
        help=(
            "pooling: grading budgets of minutes, every grading call batched; deadlines: "
            "budgets of 4-10 s against batch turnarounds of 1-8 s (default: %(default)s)"
        ),
    )
    demo.add_argument(
        "--provider",
        choices=tuple(PROVIDERS),
        default="anthropic",
        help=(
            "the API the fleet talks to: "
            + ", ".join(f"{name} ({p.summary})" for name, p in PROVIDERS.items())
            + " (default: %(default)s)"
        ),
    )
    demo.add_argument(
        "--agents", type=_count, default=3, metavar="N", help="chat agents (default: %(default)s)"
    )
    demo.add_argument(
        "--turns",
        type=_count,
        default=5,
        metavar="N",
        help="calls per chat agent (default: %(default)s)",
    )
    demo.add_argument(
        "--calls",
        type=_count,
        default=200,
        metavar="N",
        help=(
            "calls in the grading burst (default: %(default)s); a burst of thousands makes "
            "many batches, whose status checks wait on the fleet's batch-API request budget"
        ),
    )
    demo.add_argument(
        "--turnaround",
        type=_range(_seconds),
        metavar="SECONDS|LOW-HIGH",
        help=(
            "how long the emulator takes to end a batch, or a range each batch's turnaround is "
            "drawn from (default: 3 for pooling, 1-8 for deadlines)"
        ),
    )
    demo.add_argument(
        "--window",
        type=_seconds,
        metavar="SECONDS",
        help=(
            "the policy's batch window: longest a call waits in the queue (default: 2 for "
            "pooling, 1 for deadlines)"
        ),
    )
    demo.add_argument(
        "--budget",
        type=_range(_count),
        metavar="MS|LOW-HIGH",
        help=(
            "the grading calls' latency budget in ms, or a range each call's is drawn from "
            "(default: 600000 for pooling, 4000-10000 for deadlines)"
        ),
    )
    demo.add_argument(
        "--chat-budget",
        type=_count,
        metavar="MS",
        help="the chat calls' latency budget in ms, at most --sync-max (default: 2000)",
    )
    demo.add_argument(
        "--sync-max",
        type=_count,
        metavar="MS",
        help=(
            "the policy's sync_max_latency_ms: budgets up to this go direct (default: 5000 for "
            "pooling, 2000 for deadlines)"
        ),
    )
    demo.add_argument(
        "--deadline-action",
        choices=("escalate", "wait", "fail"),
        default="escalate",
        help=(
            "what a batched call's budget promises: escalate (sent down the direct route near "
            "its deadline), wait (the budget only picks the route), fail (DeadlineExceededError "
            "at the deadline) (default: %(default)s)"
        ),
    )
    demo.add_argument(
        "--margin",
        type=_count,
        metavar="MS",
        help=("the policy's escalation_margin_ms (default: 2000 for pooling, 500 for deadlines)"),
    )
    demo.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed for the run (default: 0)"
    )
    demo.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop anyio runs on (default: %(default)s)",
    )
    demo.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (money as exact decimal strings), no live display",
    )
    demo.add_argument(
        "--base-url",
        metavar="URL",
        help=(
            "a real endpoint instead of the emulator; the API key is read from "
            + ", ".join(
                f"{p.key_var} with --provider {name}"
                for name, p in PROVIDERS.items()
                if p.emulator_only is None
            )
            + ", required. Real batches, real (small) charges"
        ),
    )
    demo.set_defaults(handler=_demo)
    return parser


def _error(message: str) -> int:
    print(f"llmfleet: error: {message}", file=sys.stderr)
    return 2


def _demo(args: argparse.Namespace) -> int:
    missing = [m for m in ("rich", "starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        return _error(f"the demo needs {', '.join(missing)}: pip install 'llmfleet[emulator]'")
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        return _error("--backend trio needs trio: pip install trio")
    from ._demo.config import PROVIDERS

    provider = PROVIDERS[args.provider]
    needed = provider.missing(args.provider)
    if needed is not None:
        return _error(needed)
    if args.base_url is not None and provider.emulator_only is not None:
        return _error(
            f"--provider {args.provider} takes no --base-url: it {provider.emulator_only}"
        )
    key_var = provider.key_var
    api_key: str | None = None
    if args.base_url is not None:
        api_key = os.environ.get(key_var)
        if not api_key:
            return _error(
                f"--base-url needs an API key in the {key_var} environment variable "
                "(without --base-url the demo runs against the embedded emulator, no key needed)"
            )

    import anyio
    from rich.console import Console

    from ._demo import DemoConfig, DemoReport, report_json
    from ._demo.render import print_report
    from ._demo.run import run_demo

    # Options left out take the scenario's values (_demo.SCENARIOS).
    chosen = {
        "turnaround_s": args.turnaround,
        "window_s": args.window,
        "grading_budget_ms": args.budget,
        "sync_max_latency_ms": args.sync_max,
        "chat_budget_ms": args.chat_budget,
        "escalation_margin_ms": args.margin,
    }
    try:
        config = DemoConfig.preset(
            args.scenario,
            provider=args.provider,
            agents=args.agents,
            turns=args.turns,
            calls=args.calls,
            deadline_action=args.deadline_action,
            seed=args.seed,
            base_url=args.base_url,
            api_key=api_key,
            **{name: value for name, value in chosen.items() if value is not None},
        )
        config.policy()  # a window that makes an invalid policy fails here, not mid-run
    except ValueError as exc:
        return _error(str(exc))

    console = Console()
    # No live display when stdout is a file or a pipe: it would only fill it with redraws.
    live = not args.json and console.is_terminal

    async def run() -> DemoReport:
        return await run_demo(config, console=None if args.json else console, live=live)

    try:
        report = anyio.run(run, backend=args.backend)
    except KeyboardInterrupt:
        return _error("interrupted") + 128  # 130, as a shell reports SIGINT
    if args.json:
        json.dump(report_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report, console)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmfleet`` command line; return the exit status (never raises ``SystemExit``).

    :param argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    code: int = args.handler(args)
    return code
