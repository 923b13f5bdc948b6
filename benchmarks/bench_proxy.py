"""What ``llmfleet proxy`` adds on the direct route: requests/s and latency through the proxy
against calling the upstream (the emulator) directly, in one run, as ratios.

Three processes: the emulator (``_emu_server.py``), the proxy (``llmfleet proxy``), and this
one, the client (raw ``httpx2`` over 127.0.0.1, the same request body each time, no budget: the
direct route). Latency: sequential calls alternating upstream/proxy one by one, medians.
Throughput: ``--concurrency`` callers for ``--seconds``, upstream then proxy then upstream again
(the two upstream runs bracket the proxy's). ``python benchmarks/bench_proxy.py [--quick]
[--json]``. Both servers share this machine's cores with the client: compare ratios within one
run only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx2

from _common import emit, log

if TYPE_CHECKING:
    from collections.abc import Iterator

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"
BODY = {
    "model": "claude-haiku-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "bench"}],
}
HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": TOKEN}


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    emu = subprocess.Popen(
        [sys.executable, str(HERE / "_emu_server.py"), "--turnaround", "0.02"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert emu.stdout is not None
    assert emu.stdin is not None
    upstream = emu.stdout.readline().strip()
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-bench-upstream")
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmfleet",
            "proxy",
            "--upstream",
            upstream,
            "--port",
            "0",
            "--auth-token",
            TOKEN,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proxy.stderr is not None
    line = proxy.stderr.readline()
    match = re.search(r"serving anthropic on (\S+)", line)
    try:
        assert match is not None, line
        yield upstream, match.group(1)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=30)
        emu.stdin.close()
        emu.wait(timeout=10)


async def latency(http: httpx2.AsyncClient, urls: dict[str, str], calls: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in urls}
    for i in range(calls + 20):  # the first 20 warm up
        order = list(urls) if i % 2 else list(reversed(urls))
        for name in order:
            start = time.perf_counter()
            answer = await http.post(urls[name] + "/v1/messages", json=BODY, headers=HEADERS)
            elapsed = time.perf_counter() - start
            assert answer.status_code == 200, answer.text
            if i >= 20:
                times[name].append(elapsed)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


async def throughput(url: str, concurrency: int, seconds: float) -> float:
    limits = httpx2.Limits(max_connections=concurrency)
    done = 0
    async with httpx2.AsyncClient(limits=limits, timeout=60) as http:
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await http.post(url + "/v1/messages", json=BODY, headers=HEADERS)
                assert answer.status_code == 200, answer.text
                done += 1

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(caller)
        return done / (time.perf_counter() - start)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with servers() as (upstream, proxy):
        urls = {"upstream": upstream, "proxy": proxy}
        log(f"upstream {upstream}, proxy {proxy}")
        async with httpx2.AsyncClient(timeout=60) as http:
            ms = await latency(http, urls, args.calls)
        rps = {
            "upstream_before": await throughput(upstream, args.concurrency, args.seconds),
            "proxy": await throughput(proxy, args.concurrency, args.seconds),
            "upstream_after": await throughput(upstream, args.concurrency, args.seconds),
        }
    upstream_rps = (rps["upstream_before"] + rps["upstream_after"]) / 2
    return {
        "plan": vars(args),
        "latency_ms": ms,
        "added_latency_ms": ms["proxy"] - ms["upstream"],
        "latency_ratio": ms["proxy"] / ms["upstream"],
        "rps": rps,
        "rps_ratio": rps["proxy"] / upstream_rps,
    }


def report(out: dict[str, Any]) -> str:
    ms, rps = out["latency_ms"], out["rps"]
    upstream_rps = (rps["upstream_before"] + rps["upstream_after"]) / 2
    return "\n".join(
        [
            "| route | median latency ms | requests/s |",
            "|---|---:|---:|",
            f"| upstream directly | {ms['upstream']:.2f} | {upstream_rps:.0f} |",
            f"| through the proxy | {ms['proxy']:.2f} | {rps['proxy']:.0f} |",
            f"| proxy / upstream | {out['latency_ratio']:.2f} | {out['rps_ratio']:.2f} |",
            "",
            f"Added latency per call: {out['added_latency_ms']:.2f} ms (median, sequential); "
            f"throughput with {out['plan']['concurrency']} concurrent callers.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw figures, one JSON line")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.quick:
        args.calls, args.seconds = 60, 1.5
    out = anyio.run(measure, args)
    if args.json:
        emit(out)
    else:
        print(report(out))


if __name__ == "__main__":
    main()
