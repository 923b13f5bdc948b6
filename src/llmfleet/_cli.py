"""The ``llmfleet`` console script (DESIGN §10). Subcommands: ``demo`` (``run`` comes later, §9).

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
    from collections.abc import Sequence

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


def _parser() -> argparse.ArgumentParser:
    from . import __version__

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
            "Start the embedded emulator of Anthropic's API, run chat agents with tight "
            "latency budgets (direct route) beside a grading burst with loose ones (batch "
            "route), show live progress, and end with a report: routes, batches and flush "
            "reasons, waits, tokens, cost at list price vs paid, and the emulator's own bill "
            "for comparison. No API key needed."
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
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="how long the emulator takes to end a batch (default: %(default)s)",
    )
    demo.add_argument(
        "--window",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="the policy's batch window: longest a call waits in the queue (default: %(default)s)",
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
            "a real Anthropic-compatible endpoint instead of the emulator; the API key is read "
            "from ANTHROPIC_API_KEY (required). Real batches, real (small) charges"
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
    api_key: str | None = None
    if args.base_url is not None:
        api_key = os.environ.get("ANTHROPIC_API_KEY")
        if not api_key:
            return _error(
                "--base-url needs an API key in the ANTHROPIC_API_KEY environment variable "
                "(without --base-url the demo runs against the embedded emulator, no key needed)"
            )

    import anyio
    from rich.console import Console

    from ._demo import DemoConfig, DemoReport, print_report, report_json, run_demo

    try:
        config = DemoConfig(
            agents=args.agents,
            turns=args.turns,
            calls=args.calls,
            turnaround_s=args.turnaround,
            window_s=args.window,
            seed=args.seed,
            base_url=args.base_url,
            api_key=api_key,
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
