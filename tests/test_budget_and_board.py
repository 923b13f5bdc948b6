"""Issue 7: batch-endpoint traffic within a shared request budget, whatever the number of
batches in flight. Virtual time, both backends, against a fake that enforces the limit."""

from __future__ import annotations

from collections import deque
from contextlib import aclosing
from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from llmfleet import RoutingPolicy, open_fleet
from llmfleet._budget import Priority, RequestBudget
from llmfleet.providers import BatchStatus, ErrorKind, ItemResult

from fakes import FakeError, FakeProvider, request

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator


class LimitedProvider(FakeProvider):
    """A fake whose batch endpoints answer 429 beyond ``rpm`` requests in any 60 s."""

    def __init__(self, rpm: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rpm = rpm
        self.times: list[float] = []
        self.refused: list[float] = []
        self._window: deque[float] = deque()

    def hit(self) -> None:
        now = anyio.current_time()
        while self._window and self._window[0] <= now - 60:
            self._window.popleft()
        if len(self._window) >= self.rpm:
            self.refused.append(now)
            raise FakeError(ErrorKind.RATE_LIMITED, "429", retry_after=5.0)
        self._window.append(now)
        self.times.append(now)

    async def create_batch(self, requests: Any) -> str:
        self.hit()
        return await super().create_batch(requests)

    async def poll(self, batch_id: str) -> BatchStatus:
        self.hit()
        return await super().poll(batch_id)

    async def list_page(self, cursor: str | None) -> Any:
        self.hit()
        return await super().list_page(cursor)

    async def results(self, batch_id: str) -> AsyncGenerator[tuple[str, ItemResult]]:
        self.hit()
        async with aclosing(super().results(batch_id)) as lines:
            async for line in lines:
                yield line

    async def cancel(self, batch_id: str) -> None:
        self.hit()
        await super().cancel(batch_id)

    def busiest_minute(self) -> int:
        """Most requests in any 60-second window (windows start at each request)."""
        times = sorted(self.times)
        best, j = 0, 0
        for i, start in enumerate(times):
            while j < len(times) and times[j] < start + 60:
                j += 1
            best = max(best, j - i)
        return best


EACH_ALONE: dict[str, Any] = {"batch_min_size": 1, "batch_max_size": 1, "batch_window_ms": 0}


async def test_500_batches_in_an_hour_stay_within_50_requests_a_minute() -> None:
    fake = LimitedProvider(rpm=50, turnaround=600.0)
    policy = RoutingPolicy(
        **EACH_ALONE, poll_interval_ms=1_000, poll_max_interval_ms=60_000, batch_api_rpm=50
    )
    results: list[Any] = []
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:

        async def one(i: int) -> None:
            results.append(await fleet.submit_batch(**request(f"r{i}")))

        for i in range(500):
            tg.start_soon(one, i)
    elapsed = anyio.current_time() - start
    assert len(results) == 500
    assert fake.refused == []  # the provider never had to say 429
    assert fake.busiest_minute() <= 50
    assert len(fake.batches) == 500
    # 500 creates + 500 result downloads at 50 a minute is 20 minutes; status refreshes
    # are shared by every batch, so the whole run fits in the simulated hour.
    assert elapsed < 3600
    requests = fleet.stats.api_requests
    assert requests["create"] == 500
    assert requests["results"] == 500
    # Status: list pages once more than two batches are in flight, never a poll per batch.
    assert requests.get("status", 0) + requests.get("list", 0) < 200
    assert fleet.stats.budget_wait_s > 0


async def test_listing_pages_to_older_batches_and_skips_other_clients() -> None:
    fake = FakeProvider(turnaround=30.0, list_page_size=3)
    policy = RoutingPolicy(**EACH_ALONE, poll_interval_ms=1_000, batch_api_rpm=None)
    out: dict[int, Any] = {}
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:

        async def one(i: int) -> None:
            out[i] = await fleet.submit_batch(**request(f"mine-{i}"))

        for i in range(4):
            tg.start_soon(one, i)
        await anyio.sleep(0.5)
        # Another client of the same account creates batches after ours: the listing's
        # first pages hold only theirs.
        for k in range(7):
            await fake.create_batch([(f"theirs-{k}", request(f"theirs-{k}"))])
    assert sorted(out) == [0, 1, 2, 3]
    assert all(out[i].text == f"mine-{i}" for i in out)
    # Paged past the foreign batches (cursor given), and polled no batch one by one.
    assert any(cursor is not None for _, cursor in fake.list_pages)
    assert fleet.stats.api_requests.get("status", 0) == 0


async def test_one_or_two_batches_are_retrieved_not_listed() -> None:
    fake = FakeProvider(turnaround=5.0)
    policy = RoutingPolicy(**EACH_ALONE, batch_api_rpm=None)
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:
        for i in range(2):
            tg.start_soon(partial(fleet.submit_batch, **request(f"x{i}")))
    assert fake.list_pages == []
    assert fleet.stats.api_requests["status"] >= 2


async def test_a_429_storm_pauses_every_requester_and_loses_nothing() -> None:
    storm_until = 30.0
    fake = FakeProvider(turnaround=2.0)
    start = anyio.current_time()
    seen_429: list[float] = []

    def storm(*_: Any) -> None:
        now = anyio.current_time()
        if now - start < storm_until:
            seen_429.append(now - start)
            raise FakeError(ErrorKind.RATE_LIMITED, "slow down", retry_after=10.0)

    fake.on_poll = storm
    fake.on_results = storm
    policy = RoutingPolicy(**EACH_ALONE, poll_interval_ms=500, batch_api_rpm=1000)
    out: list[Any] = []
    async with open_fleet(fake, policy=policy) as fleet, anyio.create_task_group() as tg:

        async def one(i: int) -> None:
            out.append(await fleet.submit_batch(**request(f"s{i}")))

        for i in range(20):
            tg.start_soon(one, i)
    assert len(out) == 20
    assert fleet.stats.rate_limited == len(seen_429)
    # After each 429 the whole budget pauses for its retry-after: no two 429s closer than
    # 10 s apart (each would have been a request made during the pause).
    gaps = [b - a for a, b in pairwise(seen_429)]
    assert all(gap >= 10.0 for gap in gaps), gaps
    assert len(seen_429) <= 4


async def test_budget_grants_by_priority_and_never_more_than_the_limit() -> None:
    budget = RequestBudget(per_minute=2)
    order: list[str] = []
    start = anyio.current_time()
    await budget.acquire(Priority.STATUS)
    await budget.acquire(Priority.STATUS)

    async def want(name: str, priority: int) -> None:
        await budget.acquire(priority)
        order.append(f"{name}@{anyio.current_time() - start:g}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(want, "status", Priority.STATUS)
        await anyio.sleep(1)
        tg.start_soon(want, "results", Priority.RESULTS)
        await anyio.sleep(1)
        tg.start_soon(want, "cancel", Priority.CANCEL)
    # Slots free at 60 s (two) and 120 s: the cancel, then the results download, then status.
    assert order == ["cancel@60", "results@60", "status@120"]


async def test_a_status_refresh_waits_behind_creates_only_so_long() -> None:
    # A backlog of creates far above the budget must not hold every refresh back until the
    # last create is sent (batches ending meanwhile would go unseen): after its patience a
    # refresh goes before creates, still after result downloads.
    budget = RequestBudget(per_minute=1, status_patience_s=60.0)
    order: list[str] = []
    start = anyio.current_time()
    await budget.acquire(Priority.CANCEL)

    async def want(name: str, priority: int) -> None:
        await budget.acquire(priority)
        order.append(f"{name}@{anyio.current_time() - start:g}")

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(want, "create", Priority.CREATE)
        await anyio.sleep(1)
        tg.start_soon(want, "status", Priority.STATUS)
        await anyio.sleep(100)
        tg.start_soon(want, "results", Priority.RESULTS)
    # At 60 s the refresh has waited 59 s: a create goes. At 120 s the download first (it
    # outranks an overdue refresh), then the refresh at 180 s, then the other creates.
    assert order == [
        "create@60",
        "results@120",
        "status@180",
        "create@240",
        "create@300",
        "create@360",
    ]


async def test_budget_pause_holds_every_requester() -> None:
    budget = RequestBudget(per_minute=None)
    start = anyio.current_time()
    budget.pause(7.5)
    await budget.acquire(Priority.CANCEL)
    assert anyio.current_time() - start == pytest.approx(7.5)


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    budget = RequestBudget(per_minute=1)
    start = anyio.current_time()
    await budget.acquire(Priority.STATUS)
    got: list[float] = []

    async def waiter() -> None:
        await budget.acquire(Priority.STATUS)
        got.append(anyio.current_time() - start)

    async with anyio.create_task_group() as tg:
        with anyio.move_on_after(5):
            await budget.acquire(Priority.CANCEL)  # first in line, then gives up
        tg.start_soon(waiter)
    assert got == [60.0]
