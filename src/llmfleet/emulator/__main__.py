"""``python -m llmfleet.emulator``: serve the emulator from a shell until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import TYPE_CHECKING

from . import _serving
from ._config import DEFAULT_MODELS, EmulatorConfig

if TYPE_CHECKING:
    from types import FrameType


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmfleet.emulator",
        description=(
            "Serve an emulation of Anthropic's Messages and Message Batches APIs and of "
            "OpenAI's Chat Completions, Responses, Files and Batches APIs. Point each SDK at "
            "its base URL: Anthropic's has no /v1 (base_url=http://127.0.0.1:PORT), "
            "OpenAI's ends in /v1 (base_url=http://127.0.0.1:PORT/v1); likewise "
            "`llmfleet run --base-url`. The first line on stdout is the server's URL."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8787, help="0 for a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--turnaround",
        type=float,
        default=2.0,
        help="seconds until a batch ends; negative: never (default: %(default)s)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds a direct call takes (default: %(default)s)",
    )
    parser.add_argument(
        "--flex-latency",
        type=float,
        default=0.0,
        help="seconds before an OpenAI flex call (service_tier=flex) answers",
    )
    parser.add_argument(
        "--flex-unavailable",
        type=float,
        default=0.0,
        help="share of OpenAI flex calls refused with 429 resource_unavailable",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and outcomes")
    parser.add_argument(
        "--errored-ratio", type=float, default=0.0, help="share of batch items errored"
    )
    parser.add_argument(
        "--expired-ratio", type=float, default=0.0, help="share of batch items expired"
    )
    parser.add_argument(
        "--any-model",
        action="store_true",
        help="serve any model id (default: only current ones; another gets the API's 404)",
    )
    parser.add_argument("--access-log", action="store_true", help="log each request line")
    return parser


def _stop(signum: int, frame: FrameType | None) -> None:
    # SIGTERM ends the process the same clean way as Ctrl-C.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until interrupted; return the exit status (2 for a usage error or a
    missing ``emulator`` extra)."""
    args = _parser().parse_args(argv)
    try:
        _serving()
    except ImportError as exc:  # the emulator extra is missing: say what to install
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ._server import start_emulator

    try:
        config = EmulatorConfig(
            turnaround_s=None if args.turnaround < 0 else args.turnaround,
            direct_latency_s=args.latency,
            flex_latency_s=args.flex_latency,
            flex_unavailable_ratio=args.flex_unavailable,
            seed=args.seed,
            errored_ratio=args.errored_ratio,
            expired_ratio=args.expired_ratio,
            models=None if args.any_model else DEFAULT_MODELS,
        )
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        emulator = start_emulator(
            config, host=args.host, port=args.port, access_log=args.access_log
        )
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _stop)
    print(emulator.url, flush=True)  # alone on its line: scripts read it
    print(
        f"llmfleet emulator serving at {emulator.url} (Ctrl-C to stop)\n"
        f"  Anthropic SDK: base_url={emulator.url}  (no /v1)\n"
        f"  OpenAI SDK:    base_url={emulator.url}/v1\n"
        f'  google-genai:  http_options={{"base_url": "{emulator.url}"}}',
        file=sys.stderr,
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
