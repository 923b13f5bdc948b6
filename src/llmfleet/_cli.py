"""The ``llmfleet`` console script (docs/design.md §10). Subcommands: ``demo`` and ``run``.

The demo's dependencies (the ``emulator`` extra) are imported only when it runs, so
``llmfleet --help`` works on a bare install.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import TYPE_CHECKING, Any

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
    _add_run(commands)
    _add_proxy(commands)
    return parser


def _add_proxy(commands: Any) -> None:
    from ._proxy_cli import add_proxy

    add_proxy(commands)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_run(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run a file of requests through batches, resumably, and write their results",
        description=(
            "Send every request of REQUESTS (JSONL, one per line: "
            '{"custom_id": "...", "params": {...create arguments...}}) through the '
            "providers' Batch APIs and write one result line per request line to --out, in "
            "input order, each with its input line number. Blank lines are skipped: no output "
            "line (the report counts them). Bad lines get an error line in the output; the "
            "rest run. The endpoint is checked once before anything is sent. A journal "
            "records each batch before it is created and each result as it arrives: if the "
            "run dies (Ctrl-C, kill -9, a reboot), run the same command again and it "
            "re-attaches to its batches and sends nothing twice. Exit status: 0 every line "
            "succeeded, 1 some did not, 2 a usage error or an endpoint that cannot be used, "
            "130 interrupted."
        ),
    )
    run.add_argument("requests", metavar="REQUESTS", help="the input file (JSONL)")
    run.add_argument("-o", "--out", required=True, metavar="OUT", help="the output file (JSONL)")
    run.add_argument(
        "--journal",
        metavar="PATH",
        help="the journal (SQLite) that makes the run resumable (default: OUT.journal)",
    )
    run.add_argument(
        "--provider",
        choices=("anthropic", "openai"),
        default="anthropic",
        help="the API: anthropic (messages) or openai (chat completions or responses, by "
        "params) (default: %(default)s)",
    )
    run.add_argument(
        "--base-url",
        metavar="URL",
        help="the API's base URL (default: the SDK's): Anthropic's has no /v1 (the emulator: "
        "http://127.0.0.1:PORT), OpenAI's ends in /v1 (the emulator: "
        "http://127.0.0.1:PORT/v1); the key is read from ANTHROPIC_API_KEY or OPENAI_API_KEY",
    )
    run.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        metavar="N",
        help="most requests per batch (default: the largest the provider takes: Anthropic "
        "100,000 requests / 256 MB, OpenAI 50,000 / 200 MB; a batch is cut at the byte limit "
        "too)",
    )
    run.add_argument(
        "--max-lines",
        type=_positive,
        default=None,
        metavar="N",
        help="most lines read and not yet answered (queued or in a batch in flight); memory "
        "grows with this, not with the input (default: two batches' worth)",
    )
    run.add_argument(
        "--window",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="longest a request waits to fill a batch (default: 60 while the input is read, "
        "and the input's last lines go at once)",
    )
    run.add_argument(
        "--poll",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="first status check of a batch, then x1.5 up to 60 s (default: %(default)s)",
    )
    run.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop anyio runs on (default: %(default)s)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress display, the report only (progress, on stderr: lines read, "
        "submitted, processing at the provider, answered; each batch in flight with its "
        "provider status; time elapsed, requests a second, time left, money so far. One "
        "updating line on a terminal, a plain line at each change and at least every minute "
        "otherwise)",
    )
    run.set_defaults(handler=_run)


def _error(message: str) -> int:
    print(f"llmfleet: error: {message}", file=sys.stderr)
    return 2


_NEEDS_TRIO = "--backend trio needs trio: pip install 'llmfleet[trio]'"


def _trio_installed() -> bool:
    try:
        import trio  # noqa: F401
    except ImportError:
        return False
    return True


def _demo(args: argparse.Namespace) -> int:
    missing = [m for m in ("rich", "starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        return _error(f"the demo needs {', '.join(missing)}: pip install 'llmfleet[emulator]'")
    if args.backend == "trio" and not _trio_installed():
        return _error(_NEEDS_TRIO)
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


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.backend == "trio" and not _trio_installed():
        return _error(_NEEDS_TRIO)
    if args.provider == "openai" and importlib.util.find_spec("openai") is None:
        return _error("--provider openai needs the openai package: pip install 'llmfleet[openai]'")
    key_var = "OPENAI_API_KEY" if args.provider == "openai" else "ANTHROPIC_API_KEY"
    api_key = os.environ.get(key_var)
    if not api_key:
        return _error(f"set the API key in the {key_var} environment variable")
    requests, out = Path(args.requests), Path(args.out)
    if not requests.is_file():
        return _error(f"cannot read {requests}: no such file")
    if out.resolve() == requests.resolve():
        return _error("--out must not be the input file")

    import time

    import anyio

    from .errors import JournalError
    from .journal import SQLiteStore
    from .journal._run import RunConfig, RunReport, format_report, journal_path_for, run_requests
    from .journal._runcheck import check_endpoint, for_cli
    from .journal._runview import PlainProgress, Progress, TerminalProgress

    journal = Path(args.journal) if args.journal else journal_path_for(out)
    config = RunConfig(
        requests=requests,
        out=out,
        journal=journal,
        batch_size=args.batch_size,
        window_s=args.window,
        poll_s=args.poll,
        max_lines=args.max_lines,
    )
    try:
        config.policy()
    except ValueError as exc:
        return _error(str(exc))
    print(f"llmfleet run: {requests} -> {out} (journal {journal})", file=sys.stderr, flush=True)
    progress: Progress | None = None
    if not args.no_progress:
        kind = TerminalProgress if sys.stderr.isatty() else PlainProgress
        progress = kind(sys.stderr, time.monotonic)

    async def main() -> RunReport | str:
        if journal.exists():
            # A journal that cannot be used is said before any request (the run checks it
            # again when it opens it for good).
            store = SQLiteStore(journal, provider=args.provider)
            await store.open()
            await store.aclose()
        client = _client(args.provider, api_key, args.base_url)
        async with client:
            # Once, before anything is read or sent: an endpoint that cannot answer is said
            # now, in words, rather than by each request failing (or retrying) later.
            base_url = (args.base_url or str(client.base_url)).rstrip("/")
            ok, said = await check_endpoint(client, args.provider, base_url, key_var)
            if not ok:
                return said or f"{base_url} cannot be used"
            if said is not None:
                print(f"llmfleet run: warning: {said}", file=sys.stderr, flush=True)
            return await run_requests(client, config, progress)

    try:
        try:
            result = anyio.run(main, backend=args.backend)
        finally:
            if progress is not None:
                progress.close()  # a terminal's progress line ends before anything else
    except BaseException as exc:
        # On trio, Ctrl-C and errors raised in a task come wrapped in exception groups.
        if _find(exc, KeyboardInterrupt) is not None:
            print(
                "llmfleet run: interrupted; batches in flight keep running. Run the same "
                "command again to collect them (nothing is sent twice)",
                file=sys.stderr,
            )
            return 130
        found = _find(exc, (JournalError, OSError))
        if found is None:
            raise
        return _error(for_cli(str(found)))
    if isinstance(result, str):
        return _error(result)
    print(format_report(result, config))
    return 0 if result.ok else 1


def _find(
    exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException | None:
    """``exc`` if it is a ``kind``, else the first ``kind`` inside it (exception groups)."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find(inner, kind)
        if found is not None:
            return found
    return None


def _client(provider: str, api_key: str, base_url: str | None) -> Any:
    if provider == "openai":
        import openai

        return openai.AsyncOpenAI(api_key=api_key, base_url=base_url)
    import anthropic

    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmfleet`` command line; return the exit status (never raises ``SystemExit``).

    :param argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``llmfleet demo --json | head -1``): stop quietly, as the
        # Python docs advise (signal module, "Note on SIGPIPE"). What is still buffered goes
        # to devnull, so the interpreter's flush at exit fails no more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code
