"""llmfleet 0.1.0 (the asyncio-only prototype from PyPI), measured in its own venv.

The current llmfleet and 0.1.0 share the import name, so this script runs under the legacy
venv's python (``benchmarks/.venv-legacy``, made by ``nox -s bench``), imports only
``_common`` and ``_fake_client`` (standard library) from this folder, and prints JSON that
``run.py`` reads. It measures what the other scripts measure for the current llmfleet, the
same way:

- direct path: ``submit(latency_budget_ms=1000)`` and ``submit_sync`` vs the bare
  ``messages.create`` (fake client, SDK over ``MockTransport``, SDK over HTTP);
- bursts: N callers ``submit`` at once (fake batches end at once), at 0.1.0's best settings
  (``poll_interval_s=0``, a window long enough never to cut a batch) and at its defaults.
  0.1.0 flushes a partial batch only when its window runs out or at ``close()``, so the burst
  calls ``close()`` once every caller has enqueued: the tail leaves at once (its drain), not
  after the window;
- memory per queued item;
- ``--only http_burst`` (docs/design.md §5.4, against ``bench_http_burst.py``): ``--callers`` N
  callers ``submit`` at once through the real SDK against the emulator at ``--url``, in
  batches of 100 at the same best settings. 0.1.0 keeps one batch in flight: create, poll
  until it ended (no sleep between polls), download, then the next. It iterates
  ``batches.results(id)`` with ``async for``, but the SDK's ``results()`` is a coroutine
  resolving to the decoder, so the client is wrapped (:func:`iterable_results`).
- ``--only sdk_floor`` (against ``bench_sdk_floor.py``): the hand-written raw-SDK loop
  (``_sdk_hand.hand``, the same code the current llmfleet is compared with) and 0.1.0 at its
  best settings, paired round by round over HTTP (``--floor-cases N/size,...``);
  ``--one hand|legacy --n N --size S``: one run, for callgrind's instruction counts.

``.venv-legacy/bin/python benchmarks/legacy_runner.py --url URL [--quick] [--only PARTS]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from typing import TYPE_CHECKING, Any

import llmfleet
from _common import (
    Stopwatch,
    compare_calls,
    emit,
    log,
    mock_sdk_client,
    no_gc,
    sdk_client,
)
from _fake_client import REQUEST, FakeClient
from _sdk_hand import counted_run, hand, paired_batch
from llmfleet import FleetDispatcher, RoutingPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Generator

TIGHT_MS = 1_000
LOOSE_MS = 3_600_000


async def _yield() -> None:
    await asyncio.sleep(0)


# -- direct path ---------------------------------------------------------------------------


async def direct(kind: str, url: str, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    client: Any = (
        FakeClient()
        if kind == "fake"
        else (mock_sdk_client() if kind == "sdk" else sdk_client(url))
    )
    async with FleetDispatcher(client, policy=RoutingPolicy()) as fleet:
        create = client.messages.create

        async def bare() -> Any:
            return await create(**REQUEST)

        async def submit() -> Any:
            return await fleet.submit(latency_budget_ms=TIGHT_MS, **REQUEST)

        async def submit_sync() -> Any:
            return await fleet.submit_sync(**REQUEST)

        result = await compare_calls(
            {"bare": bare, "submit": submit, "submit_sync": submit_sync},
            calls=calls,
            rounds=rounds,
            paired=kind != "fake",
        )
    if kind != "fake":
        await client.close()
    return result


# -- bursts --------------------------------------------------------------------------------


async def spawn_baseline(n: int) -> tuple[float, float]:
    """(wall, cpu) for N asyncio tasks waiting on one Event (0.1.0's callers are such tasks)."""
    go = asyncio.Event()

    async def trivial() -> None:
        await go.wait()

    watch = Stopwatch()
    tasks = [asyncio.create_task(trivial()) for _ in range(n)]
    await asyncio.sleep(0)
    go.set()
    await asyncio.gather(*tasks)
    return watch.read()


async def burst(n: int, policy: RoutingPolicy, client: Any) -> dict[str, float]:
    async with FleetDispatcher(client, policy=policy) as fleet:
        watch = Stopwatch()
        tasks = [
            asyncio.create_task(fleet.submit(latency_budget_ms=LOOSE_MS, **REQUEST))
            for _ in range(n)
        ]
        await asyncio.sleep(0)  # every caller has run to its `await queue.put()` (no wait)
        await fleet.close()  # flush the partial tail now (0.1.0's drain), not at window end
        await asyncio.gather(*tasks)
        wall, cpu = watch.read()
    return {"wall_s": wall, "cpu_s": cpu, "batches": fleet.stats.batches_submitted}


def best_policy(max_size: int) -> RoutingPolicy:
    """0.1.0 at its fastest: no sleep between polls, a window that never cuts a batch."""
    return RoutingPolicy(
        batch_window_ms=600_000, batch_min_size=1, batch_max_size=max_size, poll_interval_s=0
    )


async def bursts(
    sizes: list[int], max_sizes: list[int], defaults_n: int, repeats: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"best": {}, "spawn": {}}
    for n in sizes:
        runs = []
        for _ in range(repeats):
            with no_gc():
                runs.append(await spawn_baseline(n))
        out["spawn"][str(n)] = {"wall_s": min(w for w, _ in runs), "cpu_s": min(c for _, c in runs)}
    for max_size in max_sizes:
        policy = best_policy(max_size)
        for n in sizes:
            log(f"legacy burst: N={n} batch_max_size={max_size}")
            # The O(batch²) result routing makes big batches slow: fewer repeats there.
            reps = repeats if n * max(1, min(n, max_size)) <= 10**8 else 1
            runs = []
            for _ in range(reps):
                with no_gc():
                    runs.append(await burst(n, policy, FakeClient(checkpoint=_yield)))
            out["best"][f"{n}/{max_size}"] = {
                "wall_s": min(r["wall_s"] for r in runs),
                "cpu_s": min(r["cpu_s"] for r in runs),
                "batches": runs[0]["batches"],
                "repeats": reps,
            }
    log(f"legacy burst: defaults, N={defaults_n}")
    with no_gc():
        out["defaults"] = {
            str(defaults_n): await burst(defaults_n, RoutingPolicy(), FakeClient(checkpoint=_yield))
        }
    return out


# -- a burst over HTTP ---------------------------------------------------------------------


class _With:
    """``obj`` with some attributes replaced; every other attribute is ``obj``'s."""

    def __init__(self, obj: Any, **replaced: Any) -> None:
        self._obj = obj
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)


class _Results:
    """Awaitable (the SDK's shape: the decoder) and async-iterable (its lines, for 0.1.0)."""

    def __init__(self, pending: Coroutine[Any, Any, Any]) -> None:
        self._pending = pending

    def __await__(self) -> Generator[Any, None, Any]:
        return self._pending.__await__()

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for line in await self._pending:
            yield line


def iterable_results(client: Any) -> Any:
    """``client`` whose ``messages.batches.results(id)`` 0.1.0 can iterate with ``async for``."""
    batches = client.messages.batches

    def results(batch_id: str, **kwargs: Any) -> _Results:
        return _Results(batches.results(batch_id, **kwargs))

    return _With(client, messages=_With(client.messages, batches=_With(batches, results=results)))


async def http_burst(url: str, callers: int) -> dict[str, float]:
    client = sdk_client(url)
    result = await burst(callers, best_policy(100), iterable_results(client))
    await client.close()
    return {"callers": callers, **result}


async def legacy_floor(client: Any, n: int, size: int) -> None:
    """0.1.0 doing ``_sdk_hand.hand``'s work: N callers, batches of ``size``, best settings."""
    await burst(n, best_policy(size), iterable_results(client))


FLOOR_VARIANTS = {"hand": hand, "legacy": legacy_floor}


def one(url: str, variant: str, n: int, size: int, *, callgrind: bool = False) -> None:
    """One run of ``variant`` at N calls (``size`` 0: one batch), after a warm-up of 10."""
    asyncio.run(counted_run(FLOOR_VARIANTS[variant], url, n, size, callgrind=callgrind))


# -- memory --------------------------------------------------------------------------------


def make_requests(n: int) -> list[dict[str, Any]]:
    """N distinct requests (what the callers hold; not counted as the fleet's memory)."""
    return [
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": f"question number {i}"}],
        }
        for i in range(n)
    ]


async def memory(n: int) -> dict[str, float]:
    """Bytes per queued item: (growth with N callers queued − growth with N idle tasks) / N."""
    requests = make_requests(n)
    # Parked on one shared future: a task's own cost, nothing per waiter beyond a callback.
    go: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def idle(params: dict[str, Any]) -> None:
        await go

    with no_gc():
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.create_task(idle(p)) for p in requests]
        await asyncio.sleep(0)
        idle_bytes = tracemalloc.get_traced_memory()[0] - before
        go.set_result(None)
        await asyncio.gather(*tasks)
        del tasks
        # Let the loop run the last callbacks that still hold the idle tasks, then collect:
        # freed during the next measurement, they would offset it.
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()

        fake = FakeClient()
        policy = RoutingPolicy(
            batch_window_ms=3_600_000, batch_min_size=1, batch_max_size=n + 1, poll_interval_s=0
        )
        async with FleetDispatcher(fake, policy=policy) as fleet:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            tasks = [
                asyncio.create_task(fleet.submit(latency_budget_ms=LOOSE_MS, **p)) for p in requests
            ]
            await asyncio.sleep(0)  # every caller runs to its `await fut`
            # 0.1.0's collector takes queued items one `wait_for(get())` at a time.
            while fleet._queue.qsize():  # noqa: ASYNC110 - 0.1.0 offers no event
                await asyncio.sleep(0.01)
            queued_bytes = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            assert fleet._flusher_task is not None
            fleet._flusher_task.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "n": n,
        "idle_task_bytes": idle_bytes / n,
        "queued_caller_bytes": queued_bytes / n,
        "per_item_bytes": (queued_bytes - idle_bytes) / n,
        "params_copy_bytes": 0.0,  # 0.1.0 keeps the caller's dict: no copy
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="direct,burst,memory", help="and/or http_burst")
    parser.add_argument("--callers", type=int, default=10_000, help="http_burst's callers")
    parser.add_argument("--floor-cases", default="2000/100,2000/2000", help="sdk_floor: N/size")
    parser.add_argument("--floor-rounds", type=int, default=3)
    parser.add_argument("--one", choices=sorted(FLOOR_VARIANTS), help="one run, for callgrind")
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--callgrind", action="store_true", help="--one under callgrind")
    parser.add_argument("--size", type=int, default=0)
    args = parser.parse_args()
    if args.one:
        one(args.url, args.one, args.n, args.size, callgrind=args.callgrind)
        return
    assert llmfleet.__version__ == "0.1.0", f"expected llmfleet 0.1.0, got {llmfleet.__version__}"
    only = set(args.only.split(","))
    quick = args.quick
    out: dict[str, Any] = {"version": llmfleet.__version__}
    if "direct" in only:
        plan = {
            "fake": (5_000 if quick else 20_000, 5 if quick else 9),
            "sdk": (200 if quick else 1_000, 5 if quick else 11),
            "http": (100 if quick else 300, 5 if quick else 11),
        }
        out["direct"] = {}
        for kind, (calls, rounds) in plan.items():
            log(f"legacy direct: {kind}")
            out["direct"][kind] = asyncio.run(direct(kind, args.url, calls, rounds))
    if "burst" in only:
        sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
        out["burst"] = asyncio.run(
            bursts(sizes, [100, 10_000], 200 if quick else 1_000, 3 if quick else 5)
        )
    if "memory" in only:
        log("legacy memory")
        out["memory"] = asyncio.run(memory(10_000))
    if "http_burst" in only:
        log(f"legacy http burst: N={args.callers}")
        out["http_burst"] = asyncio.run(http_burst(args.url, args.callers))
    if "sdk_floor" in only:
        out["sdk_floor"] = {}
        for case in args.floor_cases.split(","):
            n, size = (int(x) for x in case.split("/"))
            log(f"legacy sdk floor: n={n} size={size}")
            out["sdk_floor"][f"batch_{n}_{size}"] = asyncio.run(
                paired_batch(args.url, n, size, args.floor_rounds, FLOOR_VARIANTS)
            )
    emit(out)


if __name__ == "__main__":
    main()
