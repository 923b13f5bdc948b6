"""Helpers shared by the benchmark scripts, the legacy runner included.

No anyio and no current llmfleet here: ``legacy_runner.py`` imports this module from the
legacy venv (llmfleet 0.1.0, asyncio only). Every script prints one JSON document on stdout
(progress goes to stderr); ``run.py`` reads them and prints the tables.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "MESSAGE_JSON",
    "Stopwatch",
    "callgrind_mark",
    "callgrind_on",
    "compare_calls",
    "emit",
    "instructions_per_item",
    "log",
    "mock_sdk_client",
    "no_gc",
    "percentile",
    "sdk_client",
]

#: What the in-process transport answers to ``POST /v1/messages``: a minimal real Message.
MESSAGE_JSON = json.dumps(
    {
        "id": "msg_01bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
).encode()


class Stopwatch:
    """Wall time and this process's CPU time since it was made (or :meth:`restart`)."""

    __slots__ = ("cpu0", "wall0")

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def read(self) -> tuple[float, float]:
        """``(wall, cpu)`` seconds elapsed."""
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


async def _paired(
    variants: dict[str, Callable[[], Awaitable[Any]]], calls: int, baseline: str
) -> dict[str, dict[str, float]]:
    names = list(variants)
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    wall_clock, cpu_clock = time.perf_counter, time.process_time
    with no_gc():
        for i in range(calls + len(names)):  # the first round of each is a warm-up
            k = i % len(names)
            for name in names[k:] + names[:k]:
                fn = variants[name]
                w0, c0 = wall_clock(), cpu_clock()
                await fn()
                c1, w1 = cpu_clock(), wall_clock()
                if i >= len(names):
                    walls[name].append(w1 - w0)
                    cpus[name].append(c1 - c0)
    return _overheads(walls, cpus, baseline, statistics.median)


def _overheads(
    walls: dict[str, list[float]],
    cpus: dict[str, list[float]],
    baseline: str,
    pick: Callable[[list[float]], float],
) -> dict[str, dict[str, float]]:
    """Each variant's figure (``pick`` of its samples) and its overhead over ``baseline``."""
    base_wall, base_cpu = pick(walls[baseline]), pick(cpus[baseline])
    out: dict[str, dict[str, float]] = {}
    for name in walls:
        wall, cpu = pick(walls[name]), pick(cpus[name])
        out[name] = {
            "wall_us": wall * 1e6,
            "cpu_us": cpu * 1e6,
            "overhead_cpu_us": (cpu - base_cpu) * 1e6,
            "overhead_wall_us": (wall - base_wall) * 1e6,
            "overhead_pct": 100 * (cpu - base_cpu) / base_wall,
            "median_wall_us": statistics.median(walls[name]) * 1e6,
        }
    return out


class no_gc:
    """Collect, then keep the cyclic GC off for the block.

    Timed sections run without the cyclic GC: how often it runs, and what a run costs, depends
    on everything else alive in the process (a 100k-task burst makes full collections that
    dwarf the work measured), so with it on, repeats differ by 2× on this machine. Allocation
    differences show in the memory benchmarks instead.
    """

    def __enter__(self) -> None:
        gc.collect()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        gc.enable()


def callgrind_on() -> None:
    """Under ``valgrind --tool=callgrind --instr-atstart=no``: start counting now (after the
    imports and the warm-up, which then run at valgrind's uninstrumented speed). The guest
    must keep running while ``callgrind_control`` talks to it: poll, do not block."""
    proc = subprocess.Popen(
        ["callgrind_control", "-i", "on", str(os.getpid())], stdout=subprocess.DEVNULL
    )
    while proc.poll() is None:
        time.sleep(0.01)


def callgrind_mark() -> None:
    """A part boundary: callgrind runs with ``--dump-before=time_tzset``, so each call ends
    one dump file (a C function nothing else in the measured code calls)."""
    time.tzset()


def instructions_per_item(
    command: list[str],
    n: int,
    *,
    env: dict[str, str] | None = None,
    parts: tuple[int, int] = (2, 3),
) -> float:
    """Instructions per item of ``command + ["--n", N, "--callgrind"]``: a process that,
    after its warm-up, calls :func:`callgrind_on`, then :func:`callgrind_mark`, a run of
    N / 10 items, a mark, a run of N items and a mark. The figure is (I(N) - I(N / 10)) /
    (N - N / 10) between the marks, so a run's fixed costs cancel out. Counted, not timed:
    repeatable to a fraction of a percent on a loaded machine (what else runs there does not
    change this process's count).

    :param parts: the dump files (callgrind's ``.K``, one per mark) that hold the N / 10 and
        the N run: a process that marks a phase within each run (a mark before it and one
        after) counts that phase alone with ``(2, 4)``.
    """
    env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                "--dump-before=time_tzset",
                f"--callgrind-out-file={out}",
                *command,
                "--n",
                str(n),
                "--callgrind",
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        counts = []
        for i in parts:  # .1: from callgrind_on to the first mark
            with open(f"{out}.{i}") as f:
                counts.append(next(int(x.split()[1]) for x in f if x.startswith("summary:")))
    return (counts[1] - counts[0]) / (n - max(1, n // 10))


def log(*parts: object) -> None:
    """Progress, on stderr (stdout carries the JSON result)."""
    print(*parts, file=sys.stderr, flush=True)


def emit(data: dict[str, Any]) -> None:
    """Print the script's result: one JSON document on stdout."""
    json.dump(data, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def mock_sdk_client() -> Any:
    """``AsyncAnthropic`` over httpx2's ``MockTransport``: the real SDK, no socket.

    The handler answers every request with :data:`MESSAGE_JSON`; SDK retries are off.
    """
    import anthropic
    import httpx2

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, content=MESSAGE_JSON, headers={"content-type": "application/json"}
        )

    return anthropic.AsyncAnthropic(
        api_key="bench",
        base_url="http://in-process.invalid",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )


def sdk_client(url: str) -> Any:
    """``AsyncAnthropic`` against the emulator at ``url`` (real HTTP on 127.0.0.1)."""
    import anthropic

    return anthropic.AsyncAnthropic(api_key="bench", base_url=url, max_retries=0)


async def compare_calls(
    variants: dict[str, Callable[[], Awaitable[Any]]],
    *,
    calls: int,
    rounds: int,
    baseline: str = "bare",
    paired: bool = False,
) -> dict[str, dict[str, float]]:
    """Time sequential calls of each variant, interleaved round by round.

    Each round times ``calls`` back-to-back calls of every variant (the order rotates each
    round; one warm-up round is discarded), without the cyclic GC, in wall time and in this
    process's CPU time. Per variant, the fastest round's figure (the least disturbed by other
    processes on the machine), and the overhead over ``baseline`` as the difference.

    ``paired``: for calls of a millisecond or more (an HTTP stack), whose CPU cost drifts by
    ±15 % between rounds on a shared machine, far above a wrapper's few µs. Variants then
    alternate call by call (order rotating), each call timed on its own, and each figure is
    the median over all calls: a drift hits every variant alike, and the timer's own cost
    (< 1 µs) is the same in each, so it cancels in the overhead.

    The overhead of a wrapper is CPU work in this process, so ``overhead_cpu_us`` measures it
    even when the call waits on a server in another process (whose time and jitter only the
    wall figures see); ``overhead_pct`` is that CPU overhead as a share of the bare call's wall
    time per call.

    :return: ``{name: {"wall_us", "cpu_us", "overhead_cpu_us", "overhead_wall_us",
        "overhead_pct", "median_wall_us"}}``.
    """
    if paired:
        return await _paired(variants, calls * rounds, baseline)
    names = list(variants)
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = variants[name]
            with no_gc():
                watch = Stopwatch()
                for _ in range(calls):
                    await fn()
                wall, cpu = watch.read()
            if r:
                walls[name].append(wall / calls)
                cpus[name].append(cpu / calls)
    return _overheads(walls, cpus, baseline, min)
