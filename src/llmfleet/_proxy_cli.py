"""The ``llmfleet proxy`` subcommand: its arguments and its handler (docs/design.md §13).

Kept out of ``llmfleet.proxy`` so that ``llmfleet --help`` works without the ``proxy`` extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any

__all__ = ["add_proxy"]

_TOKENS_VAR = "LLMFLEET_PROXY_TOKENS"


def _budget(text: str) -> float | None:
    if text.strip().lower() in ("none", "direct"):
        return None
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 ms or `none`, got {text}")
    return value


def _int(low: int) -> Any:
    def convert(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return convert


def add_proxy(commands: Any) -> None:
    # The policy's own defaults, so the command's cannot drift from the library's.
    from ._policy import RoutingPolicy

    policy = RoutingPolicy()
    """Add the ``proxy`` subparser to ``commands``."""
    proxy = commands.add_parser(
        "proxy",
        help="serve the provider's own HTTP API in front of one fleet, for any process or language",
        description=(
            "Serve Anthropic's (POST /v1/messages) or OpenAI's (POST /v1/chat/completions, "
            "/v1/responses) API and make each create call through one fleet, with the budget "
            "of its llmfleet-latency-budget-ms header (else --default-budget-ms). Every other "
            "request goes to the upstream unchanged. Clients send one of the proxy's tokens "
            f"(--auth-token, or {_TOKENS_VAR}, comma-separated) as their API key; the "
            "upstream key is read from ANTHROPIC_API_KEY or OPENAI_API_KEY and never leaves "
            "the proxy. SIGTERM or Ctrl-C drains: new calls get 503, the queue is flushed, "
            "every waiting client is answered, then the proxy exits."
        ),
    )
    proxy.add_argument("--provider", choices=("anthropic", "openai"), default="anthropic")
    proxy.add_argument(
        "--upstream",
        metavar="URL",
        help="the provider's origin, without /v1 (default: the provider's own API)",
    )
    proxy.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    proxy.add_argument("--port", type=_int(0), default=8788, help="default: %(default)s")
    proxy.add_argument(
        "--auth-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help=f"a token clients may send as their API key (repeat for more; or {_TOKENS_VAR})",
    )
    proxy.add_argument(
        "--default-budget-ms",
        type=_budget,
        default=None,
        metavar="MS",
        help="the budget of a call whose request names none (default: none, the direct route)",
    )
    proxy.add_argument(
        "--max-body-bytes",
        type=_int(1),
        default=32 * 1024 * 1024,
        metavar="N",
        help="larger request bodies get 413 (default: %(default)s)",
    )
    proxy.add_argument(
        "--journal", metavar="PATH", help="a journal: a restarted proxy pays nothing twice"
    )
    proxy.add_argument(
        "--broker", metavar="URL", help="redis://...: several replicas form one fleet"
    )
    proxy.add_argument(
        "--batch-size",
        type=_int(1),
        default=policy.batch_max_size,
        metavar="N",
        help="most calls a batch (default: %(default)s)",
    )
    proxy.add_argument(
        "--batch-min-size",
        type=_int(1),
        default=policy.batch_min_size,
        metavar="N",
        help="flush at this many (default: %(default)s)",
    )
    proxy.add_argument(
        "--window-ms",
        type=_int(1),
        default=policy.batch_window_ms,
        metavar="MS",
        help="longest a call waits to fill a batch (default: %(default)s)",
    )
    proxy.add_argument(
        "--sync-max-latency-ms",
        type=_int(0),
        default=policy.sync_max_latency_ms,
        metavar="MS",
        help="budgets up to this go direct (default: %(default)s)",
    )
    proxy.add_argument(
        "--poll-ms",
        type=_int(1),
        default=policy.poll_interval_ms,
        metavar="MS",
        help="first status check of a batch (default: %(default)s)",
    )
    proxy.set_defaults(handler=_proxy)


def _error(message: str) -> int:
    print(f"llmfleet proxy: error: {message}", file=sys.stderr)
    return 2


def _proxy(args: argparse.Namespace) -> int:
    missing = [
        m
        for m in ("starlette", "uvicorn", "prometheus_client")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        return _error(f"the proxy needs {', '.join(missing)}: pip install 'llmfleet[proxy]'")
    if args.provider == "openai" and importlib.util.find_spec("openai") is None:
        return _error("--provider openai needs the openai package: pip install 'llmfleet[openai]'")
    key_var = "OPENAI_API_KEY" if args.provider == "openai" else "ANTHROPIC_API_KEY"
    api_key = os.environ.get(key_var)
    if not api_key:
        return _error(f"set the upstream API key in the {key_var} environment variable")
    env_tokens = [t.strip() for t in os.environ.get(_TOKENS_VAR, "").split(",") if t.strip()]
    tokens = tuple(args.auth_token) + tuple(env_tokens)
    if not tokens:
        return _error(
            f"give clients a token: --auth-token TOKEN or {_TOKENS_VAR}=t1,t2 (clients send it "
            "as their API key)"
        )
    if api_key in tokens:
        return _error("a client token must not be the upstream API key")

    from ._policy import RoutingPolicy
    from .proxy import ProxyConfig, serve_proxy

    try:
        policy = RoutingPolicy(
            sync_max_latency_ms=args.sync_max_latency_ms,
            batch_window_ms=args.window_ms,
            batch_min_size=min(args.batch_min_size, args.batch_size),
            batch_max_size=args.batch_size,
            poll_interval_ms=args.poll_ms,
        )
        config = ProxyConfig(
            provider=args.provider,
            api_key=api_key,
            tokens=tokens,
            upstream=args.upstream,
            host=args.host,
            port=args.port,
            default_budget_ms=args.default_budget_ms,
            max_body_bytes=args.max_body_bytes,
            policy=policy,
            journal=args.journal,
            broker=args.broker,
        )
    except ValueError as exc:
        return _error(str(exc))

    def ready(url: str) -> None:
        base = url if args.provider == "anthropic" else url + "/v1"
        print(f"llmfleet proxy: serving {args.provider} on {base}", file=sys.stderr, flush=True)

    try:
        serve_proxy(config, ready=ready)
    except OSError as exc:
        return _error(f"cannot serve on {args.host}:{args.port}: {exc}")
    print("llmfleet proxy: drained, exiting", file=sys.stderr, flush=True)
    return 0
