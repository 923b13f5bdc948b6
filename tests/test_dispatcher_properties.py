"""G1–G7 of docs/design.md §4 on the real dispatcher, in virtual time, on asyncio and trio.

Generated arrival schedules (with bursts and cancellations) are played against
``open_fleet(provider)``; the batches the provider receives must be exactly the batches the
pure model cuts, at exactly the same instants, and every caller must get the result of its
own request and no other.

Each property runs against every provider of :mod:`adapters`: the in-memory ``FakeProvider``,
and the real Anthropic, OpenAI and Gemini adapters over their SDKs, talking to the emulator's
ASGI app in process (so the virtual clock still drives the fleet). The bodies are written once; a
property has two entry points only because the adapters, over HTTP, get fewer examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest
import sniffio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfleet import BatchRequestError, RoutingPolicy, open_fleet
from llmfleet._flush import ENVELOPE_BYTES

from adapters import ADAPTERS, ERRORED, FAKE, Kind, Recorder, index_of
from model import Item, simulate

PROPERTY = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Property = Callable[..., Any]


def over(*kinds: Kind) -> Callable[[Property], Property]:
    """Run a property against ``kinds`` (parametrized), with their number of examples."""
    (examples,) = {kind.max_examples for kind in kinds}

    def decorate(test: Property) -> Property:
        test = settings(PROPERTY, max_examples=examples)(test)
        marked: Property = pytest.mark.parametrize("kind", kinds, ids=str)(test)
        return marked

    return decorate


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    max_size = draw(st.integers(1, 8))
    min_size = draw(st.integers(1, max_size))
    # Arrivals on even ms and windows of 0 or an odd number of ms: a window never runs out at
    # the very instant of another arrival, a tie whose order §4 leaves open.
    window_ms = draw(st.one_of(st.just(0), st.integers(0, 20).map(lambda k: 2 * k + 1)))
    n = draw(st.integers(1, 40))
    arrivals: list[int] = []
    t = 0
    for _ in range(n):
        if draw(st.booleans()):
            t += 2 * draw(st.integers(1, 12))
        arrivals.append(t)
    cancels = draw(st.lists(st.one_of(st.none(), st.integers(0, 80)), min_size=n, max_size=n))
    errored = draw(st.sets(st.integers(0, n - 1), max_size=n // 4))
    return {
        "policy": RoutingPolicy(
            sync_max_latency_ms=0,
            batch_min_size=min_size,
            batch_max_size=max_size,
            batch_window_ms=window_ms,
            poll_interval_ms=7,
            poll_max_interval_ms=20,
            # The flush rule in isolation: creates are not held back by the request budget,
            # so each batch is created at the instant it is cut.
            batch_api_rpm=None,
        ),
        "arrivals": arrivals,
        "cancels": cancels,
        "errored": errored,
        "turnaround": draw(st.integers(0, 50)) / 1000,
    }


async def matches_the_model_and_keeps_g1_to_g7(kind: Kind, scenario: dict[str, Any]) -> None:
    policy: RoutingPolicy = scenario["policy"]
    arrivals: list[int] = scenario["arrivals"]
    cancels: list[int | None] = scenario["cancels"]
    errored: set[int] = scenario["errored"]

    def text(index: int) -> str:
        return f"call-{index} {ERRORED}" if index in errored else f"call-{index}"

    results: dict[int, Any] = {}
    cancelled: set[int] = set()
    order: list[int] = []
    # Milliseconds since the start; cancels land at .5 ms so they never tie with a flush.
    scale = 1000.0

    async with kind.open(scenario["turnaround"]) as provider:
        async with open_fleet(provider, policy=policy) as fleet:
            start = anyio.current_time()

            async def caller(index: int) -> None:
                cancel = cancels[index]
                with anyio.CancelScope() as scope:
                    if cancel is not None:
                        scope.deadline = start + (arrivals[index] + cancel + 0.5) / scale
                    try:
                        # submit_batch() does not yield before the call is queued, so this is
                        # the order of arrival (trio runs the tasks of one tick in random order).
                        order.append(index)
                        results[index] = await fleet.submit_batch(**kind.request(text(index)))
                    except BatchRequestError as exc:
                        results[index] = exc
                if scope.cancelled_caught:
                    cancelled.add(index)

            async with anyio.create_task_group() as tg:
                for index, at in enumerate(arrivals):
                    # Calls at the same instant are started in one tick (a burst): no checkpoint.
                    if index == 0 or at != arrivals[index - 1]:
                        await anyio.sleep_until(start + at / scale)
                    tg.start_soon(caller, index)
            # Leave the block only after every call ended: no drain flush in this property.

    # Rebuild what the fleet sent: (time since start, batch of call indexes).
    by_id = {
        cid: index_of(sent_text)
        for create in provider.creates
        for cid, sent_text in zip(create.ids, create.texts, strict=True)
    }
    # Batches cut at one instant are created concurrently (a slow create never delays the
    # next flush), so the provider may see them in any order: order them by their cut.
    rank = {index: n for n, index in enumerate(order)}
    sent = sorted(
        (
            (round((create.at - start) * scale, 6), [by_id[cid] for cid in create.ids])
            for create in provider.creates
        ),
        key=lambda cut: (cut[0], rank[cut[1][0]]),
    )
    # The same schedule through the pure model.
    assert sorted(order) == list(range(len(arrivals)))
    items = []
    for i in order:
        cancel = cancels[i]
        items.append(
            Item(i, float(arrivals[i]), 100, None if cancel is None else arrivals[i] + cancel + 0.5)
        )
    run = simulate(
        items,
        min_size=policy.batch_min_size,
        max_size=policy.batch_max_size,
        window=float(policy.batch_window_ms),
    )
    expected = [(f.at, [i.index for i in f.items]) for f in run.flushes]
    assert [batch for _, batch in sent] == [batch for _, batch in expected]
    # Exact on trio; looptime keeps asyncio's clock in whole microseconds, so a deadline that
    # falls between two ticks is met on the next one.
    slack_ms = 0.0 if sniffio.current_async_library() == "trio" else 0.001
    for (sent_at, _), (model_at, _) in zip(sent, expected, strict=True):
        assert model_at <= sent_at <= model_at + slack_ms

    flushed = [i for _, batch in sent for i in batch]
    # G1: sent at most once; a call never sent was withdrawn by its cancelled caller.
    assert len(flushed) == len(set(flushed))
    for i in range(len(arrivals)):
        assert (i in flushed) or (i in cancelled)
    # G2, G5 on what the provider got.
    assert all(1 <= len(batch) <= policy.batch_max_size for _, batch in sent)
    assert flushed == [i for i in order if i in flushed]
    # G3: every call left the queue by arrival + window.
    for flushed_at, batch in sent:
        assert all(flushed_at <= arrivals[i] + policy.batch_window_ms + slack_ms for i in batch)
    # G7: each caller that stayed got its own result (or its own error), and no other.
    batch_of = provider.batch_of
    for i, value in results.items():
        if i in errored:
            assert isinstance(value, BatchRequestError)
            assert (value.error_type, value.message) == kind.error(i)
            assert by_id[value.custom_id] == i
            assert value.batch_id == batch_of[value.custom_id]
        else:
            reply_text, custom_id = kind.reply(value)
            assert reply_text == f"call-{i}"
            if custom_id is not None:
                assert by_id[custom_id] == i
    assert set(results) | cancelled == set(range(len(arrivals)))
    stats = fleet.stats
    assert stats.queued == 0
    assert stats.in_flight_batches == 0
    assert stats.batches_submitted == len(sent)


@over(FAKE)
@given(scenarios())
async def test_dispatcher_matches_the_model_and_keeps_g1_to_g7(
    kind: Kind, scenario: dict[str, Any]
) -> None:
    await matches_the_model_and_keeps_g1_to_g7(kind, scenario)


@over(*ADAPTERS)
@given(scenarios())
async def test_adapters_match_the_model_and_keep_g1_to_g7(
    kind: Kind, scenario: dict[str, Any]
) -> None:
    await matches_the_model_and_keeps_g1_to_g7(kind, scenario)


async def burst_in_one_tick_coalesces_g6(
    kind: Kind, n: int, max_size: int, data: st.DataObject
) -> None:
    min_size = data.draw(st.integers(1, max_size))
    policy = RoutingPolicy(batch_min_size=min_size, batch_max_size=max_size, batch_window_ms=1_000)
    async with kind.open(0.01) as provider:
        async with open_fleet(provider, policy=policy) as fleet, anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(partial(fleet.submit_batch, **kind.request(f"b{i}")))
    assert len(provider.creates) == math.ceil(n / max_size)


@over(FAKE)
@given(n=st.integers(1, 300), max_size=st.integers(1, 50), data=st.data())
async def test_burst_in_one_tick_coalesces_g6(
    kind: Kind, n: int, max_size: int, data: st.DataObject
) -> None:
    await burst_in_one_tick_coalesces_g6(kind, n, max_size, data)


@over(*ADAPTERS)
# Smaller bursts: a batch costs the OpenAI adapter eight requests over HTTP in process.
@given(n=st.integers(1, 100), max_size=st.integers(1, 50), data=st.data())
async def test_adapters_coalesce_a_burst_in_one_tick_g6(
    kind: Kind, n: int, max_size: int, data: st.DataObject
) -> None:
    await burst_in_one_tick_coalesces_g6(kind, n, max_size, data)


async def batches_respect_the_byte_limit_g2(kind: Kind, sizes: list[int]) -> None:
    limit = 2_000
    policy = RoutingPolicy(batch_min_size=5, batch_max_size=10, batch_window_ms=10)
    async with kind.open(0.01) as inner:
        # The fleet cuts by the byte limit the provider declares, with the provider's own
        # count of each request's bytes.
        provider = Recorder(inner, max_batch_bytes=limit)
        async with open_fleet(provider, policy=policy) as fleet, anyio.create_task_group() as tg:
            for i, size in enumerate(sizes):
                tg.start_soon(partial(fleet.submit_batch, **kind.request("x" * size + str(i))))
    for create in provider.creates:
        body = ENVELOPE_BYTES + sum(provider.prepare(cid, p)[0] for cid, p in create.requests)
        assert 1 <= len(create.ids) <= 10
        assert body <= limit
    assert len(provider.sent_ids) == len(sizes)


@over(FAKE)
@given(sizes=st.lists(st.integers(100, 900), min_size=1, max_size=40))
async def test_batches_respect_the_byte_limit_g2(kind: Kind, sizes: list[int]) -> None:
    await batches_respect_the_byte_limit_g2(kind, sizes)


@over(*ADAPTERS)
@given(sizes=st.lists(st.integers(100, 900), min_size=1, max_size=40))
async def test_adapters_respect_the_byte_limit_g2(kind: Kind, sizes: list[int]) -> None:
    await batches_respect_the_byte_limit_g2(kind, sizes)


pytestmark = pytest.mark.filterwarnings("error")
