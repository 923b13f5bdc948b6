"""docs/design.md §2.3: the flex route, the provider's slow synchronous tier at batch prices.
Virtual time, both backends, with a fake provider that has a flex tier."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmfleet import (
    DeadlineExceededError,
    PolicyError,
    ResultEvent,
    Route,
    RoutingPolicy,
    open_fleet,
)
from llmfleet.pricing import FLEX_DISCOUNT, Cost
from llmfleet.providers import ErrorKind

from fakes import FakeError, FakeMessage, FakeProvider, FlexFakeProvider, request

FLEX = "claude-haiku-4-5"  # the fake's flex model (priced: the cost figures are checked)
PLAIN = "claude-sonnet-4-5"  # a model without flex
# FakeMessage's usage (10 in, 5 out) at claude-haiku-4-5's list price ($1 / $5 per MTok).
LIST_PRICE = Decimal("0.000035")


def policy(**kw: Any) -> RoutingPolicy:
    base: dict[str, Any] = {
        "sync_max_latency_ms": 1_000,
        "flex_max_latency_ms": 600_000,
        "batch_min_size": 1,
        "batch_max_size": 100,
        "batch_window_ms": 5_000,
        "poll_interval_ms": 1_000,
        "poll_max_interval_ms": 4_000,
        "escalation_margin_ms": 2_000,
        "batch_api_rpm": None,
    }
    base.update(kw)
    return RoutingPolicy(**base)


def test_policy_validates_the_flex_band() -> None:
    assert RoutingPolicy().flex_max_latency_ms == 900_000  # OpenAI's suggested flex timeout
    assert RoutingPolicy(flex_max_latency_ms=None).flex_max_latency_ms is None
    for bad in (-1, 1.5, True, "900000"):
        with pytest.raises(PolicyError) as info:
            RoutingPolicy(flex_max_latency_ms=bad)  # type: ignore[arg-type]
        assert info.value.field == "flex_max_latency_ms"


@pytest.mark.parametrize(
    ("budget_ms", "model", "route"),
    [
        (500, FLEX, "direct"),  # within sync_max_latency_ms: direct, as always
        (1_001, FLEX, "flex"),  # just above it: the flex band
        (600_000, FLEX, "flex"),  # the band's top, inclusive
        (600_001, FLEX, "batch"),  # above the band: batched
        (60_000, PLAIN, "batch"),  # a model without flex: batched, as before
    ],
)
async def test_the_flex_band_routes_by_budget_and_model(
    budget_ms: int, model: str, route: str
) -> None:
    fake = FlexFakeProvider(turnaround=1.0)
    # No escalation margin: even a budget just above sync_max leaves time for a flex answer.
    async with open_fleet(fake, policy=policy(escalation_margin_ms=0)) as fleet:
        reply = await fleet.submit(latency_budget_ms=budget_ms, **request(model=model))
    assert isinstance(reply, FakeMessage)
    assert reply.route == route
    stats = fleet.stats
    assert stats.flex_calls == (route == "flex")
    assert len(fake.flex_calls) == (route == "flex")
    assert stats.sync_calls == (route == "direct")
    assert stats.batched_calls == (route == "batch")


async def test_a_caller_who_chose_a_tier_keeps_it() -> None:
    fake = FlexFakeProvider()
    async with open_fleet(fake, policy=policy()) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request(service_tier="priority"))
    assert isinstance(reply, FakeMessage)
    assert reply.route == "batch"
    assert fake.flex_calls == []


async def test_no_flex_band_and_no_flex_provider_mean_batches() -> None:
    fake = FlexFakeProvider()
    async with open_fleet(fake, policy=policy(flex_max_latency_ms=None)) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request())
    assert isinstance(reply, FakeMessage)
    assert reply.route == "batch"
    assert fake.flex_calls == []
    # A provider without a flex tier (Anthropic, Bedrock, a custom one) never routes there.
    plain = FakeProvider()
    async with open_fleet(plain, policy=policy()) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request())
    assert isinstance(reply, FakeMessage)
    assert reply.route == "batch"
    assert fleet.stats.flex_calls == 0


async def test_flex_is_counted_and_priced_on_its_own_route() -> None:
    events: list[ResultEvent] = []
    fake = FlexFakeProvider(flex_latency=30.0)
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy(), on_result=events.append) as fleet:
        await fleet.submit(latency_budget_ms=120_000, **request("a"))
        await fleet.submit(latency_budget_ms=500, **request("b"))  # direct, at list price
    stats = fleet.stats
    assert stats.flex_calls == 1
    assert stats.succeeded == 2
    assert stats.wait_ms(Route.FLEX).count == 1
    assert stats.wait_ms(Route.FLEX).max == pytest.approx(30_000, rel=0.01)
    assert stats.tokens[Route.FLEX].input_tokens == 10
    assert stats.cost[Route.FLEX] == Cost(LIST_PRICE, LIST_PRICE * FLEX_DISCOUNT)
    assert stats.cost[Route.DIRECT] == Cost(LIST_PRICE, LIST_PRICE)
    assert stats.saving == LIST_PRICE / 2
    assert stats.deadline_hits[Route.FLEX] == 1
    snap = stats.snapshot()
    assert snap.flex_calls == 1
    assert snap.cost[Route.FLEX] == stats.cost[Route.FLEX]
    assert snap.flex_fallbacks == dict.fromkeys(
        ("unavailable", "rate_limited", "error", "deadline"), 0
    )
    (flex_event,) = (e for e in events if e.route is Route.FLEX)
    assert flex_event.outcome == "succeeded"
    assert flex_event.cost == Cost(LIST_PRICE, LIST_PRICE / 2)
    # The SDK's own timeout is no shorter than OpenAI's suggested 15 minutes.
    assert fake.flex_calls[0][2] >= 900.0
    assert fake.flex_calls[0][0] - start == 0


async def test_flex_unavailable_goes_to_the_standard_tier_at_once() -> None:
    def unavailable(params: Any) -> None:
        raise FakeError(ErrorKind.RATE_LIMITED, "429 resource unavailable")

    events: list[ResultEvent] = []
    fake = FlexFakeProvider(flex_latency=0.25, on_flex=unavailable, direct_latency=0.5)
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy(), on_result=events.append) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request("x"))
    assert isinstance(reply, FakeMessage)
    assert reply.route == "direct"  # the caller gets the standard tier's answer
    assert len(fake.flex_calls) == 1
    # The standard call went out as soon as flex said no.
    assert fake.direct_calls[0][0] - start == pytest.approx(0.25)
    stats = fleet.stats
    assert stats.flex_calls == 1
    assert stats.flex_fallbacks["unavailable"] == 1
    assert stats.sync_calls == 0  # routed flex at submit; answered on the direct route
    assert stats.succeeded == 1
    assert stats.wait_ms(Route.DIRECT).count == 1
    assert stats.wait_ms(Route.FLEX).count == 0
    assert stats.cost[Route.DIRECT] == Cost(LIST_PRICE, LIST_PRICE)
    assert stats.flex_fallback_cost == Cost(LIST_PRICE, LIST_PRICE)
    assert stats.deadline_hits[Route.DIRECT] == 1
    # One event for the one call: its answer, on the direct route, waited for since submit.
    (event,) = events
    assert (event.route, event.outcome) == (Route.DIRECT, "succeeded")
    assert event.wait_s == pytest.approx(0.75)
    assert event.cost == Cost(LIST_PRICE, LIST_PRICE)


@pytest.mark.parametrize(
    ("kind", "message", "reason"),
    [
        (ErrorKind.RATE_LIMITED, "429 rate limit reached", "rate_limited"),
        (ErrorKind.SERVER, "500", "error"),
        (ErrorKind.CONNECTION, "dropped", "error"),
    ],
)
async def test_other_flex_failures_go_to_the_standard_tier_too(
    kind: ErrorKind, message: str, reason: str
) -> None:
    def fail(params: Any) -> None:
        raise FakeError(kind, message)

    fake = FlexFakeProvider(on_flex=fail)
    async with open_fleet(fake, policy=policy()) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request())
    assert isinstance(reply, FakeMessage)
    assert reply.route == "direct"
    assert fleet.stats.flex_fallbacks[reason] == 1
    assert sum(fleet.stats.flex_fallbacks.values()) == 1


async def test_a_bug_in_the_flex_call_is_raised_not_paid_for() -> None:
    def bug(params: Any) -> None:
        raise KeyError("bug")

    fake = FlexFakeProvider(on_flex=bug)
    async with open_fleet(fake, policy=policy()) as fleet:
        with pytest.raises(KeyError):
            await fleet.submit(latency_budget_ms=60_000, **request())
    assert fake.direct_calls == []
    assert fleet.stats.failed == 1


async def test_a_late_flex_call_is_cut_off_in_time_for_the_standard_tier() -> None:
    fake = FlexFakeProvider(flex_latency=600.0, direct_latency=0.5)
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy()) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request("slow"))
    took = anyio.current_time() - start
    assert isinstance(reply, FakeMessage)
    assert reply.route == "direct"
    # Cut off at deadline - direct p95 (none seen: 0) - margin 2 s = 58 s; answered 0.5 s on.
    assert fake.direct_calls[0][0] - start == pytest.approx(58.0)
    assert took == pytest.approx(58.5)
    stats = fleet.stats
    assert stats.flex_fallbacks["deadline"] == 1
    assert stats.deadline_hits[Route.DIRECT] == 1
    assert stats.cost[Route.FLEX] == Cost()  # the cut-off call reported no usage


async def test_the_cutoff_allows_for_the_learnt_direct_latency() -> None:
    fake = FlexFakeProvider(flex_latency=600.0, direct_latency=10.0)
    async with open_fleet(fake, policy=policy()) as fleet:
        await fleet.submit_sync(**request("learn"))  # the fleet sees a 10 s direct call
        start = anyio.current_time()
        await fleet.submit(latency_budget_ms=60_000, **request("slow"))
    # 60 - 10 (direct p95) - 2 (margin) = 48 s.
    assert fake.direct_calls[1][0] - start == pytest.approx(48.0)


async def test_deadline_action_fail_raises_at_the_deadline() -> None:
    fake = FlexFakeProvider(flex_latency=600.0)
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy(deadline_action="fail")) as fleet:
        with pytest.raises(DeadlineExceededError):
            await fleet.submit(latency_budget_ms=60_000, **request())
    assert anyio.current_time() - start == pytest.approx(60.0)
    assert fake.direct_calls == []
    assert fleet.stats.failed == 1


async def test_deadline_action_wait_waits_for_the_flex_answer() -> None:
    fake = FlexFakeProvider(flex_latency=600.0)
    start = anyio.current_time()
    async with open_fleet(fake, policy=policy(deadline_action="wait")) as fleet:
        reply = await fleet.submit(latency_budget_ms=60_000, **request())
    assert isinstance(reply, FakeMessage)
    assert reply.route == "flex"
    assert anyio.current_time() - start == pytest.approx(600.0)
    assert fleet.stats.deadline_misses[Route.FLEX] == 1


async def test_a_caller_who_leaves_cancels_the_flex_call() -> None:
    fake = FlexFakeProvider(flex_latency=600.0)
    async with open_fleet(fake, policy=policy()) as fleet:
        with anyio.move_on_after(5.0):
            await fleet.submit(latency_budget_ms=60_000, **request())
    assert fake.direct_calls == []
    assert fleet.stats.withdrawn == 1
    assert sum(fleet.stats.flex_fallbacks.values()) == 0


async def test_a_budget_no_batch_can_meet_goes_flex_rather_than_direct() -> None:
    fake = FlexFakeProvider(turnaround=3_600.0)
    pol = policy(flex_max_latency_ms=60_000, expected_turnaround_ms=3_600_000)
    async with open_fleet(fake, policy=pol) as fleet:
        reply = await fleet.submit(latency_budget_ms=600_000, **request())
        plain = await fleet.submit(latency_budget_ms=600_000, **request(model=PLAIN))
    assert isinstance(reply, FakeMessage)
    assert reply.route == "flex"
    assert isinstance(plain, FakeMessage)
    assert plain.route == "direct"  # no flex for this model: direct, as before
    assert fleet.stats.routed_by_deadline == 2
    assert fake.batches == {}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(
        st.tuples(
            st.integers(0, 900_000),  # budget, ms
            st.sampled_from([FLEX, PLAIN]),
            st.sampled_from(["ok", "unavailable", "slow"]),
        ),
        min_size=1,
        max_size=8,
    )
)
async def test_every_call_gets_one_outcome_and_flex_only_where_offered(
    calls: list[tuple[int, str, str]],
) -> None:
    def flex_answer(params: Any) -> Any:
        how = params["messages"][-1]["content"]
        if how == "unavailable":
            raise FakeError(ErrorKind.RATE_LIMITED, "resource unavailable")
        return None

    fake = FlexFakeProvider(
        flex_latency=0.0, on_flex=flex_answer, direct_latency=0.1, turnaround=30.0
    )
    slow_fake_latency = 1_000.0
    results: list[Any] = [None] * len(calls)

    async def one(i: int, budget: int, model: str, how: str) -> None:
        results[i] = await fleet.submit(latency_budget_ms=budget, **request(how, model=model))

    original = fake.call_flex

    async def call_flex(params: Any, *, sdk_timeout: float) -> Any:
        # The slow ones: a flex call that outlasts any budget.
        if params["messages"][-1]["content"] == "slow":
            await anyio.sleep(slow_fake_latency)
        return await original(params, sdk_timeout=sdk_timeout)

    fake.call_flex = call_flex  # type: ignore[method-assign]
    async with open_fleet(fake, policy=policy(batch_window_ms=1_000)) as fleet:
        async with anyio.create_task_group() as tg:
            for i, (budget, model, how) in enumerate(calls):
                tg.start_soon(one, i, budget, model, how)
    stats = fleet.stats
    assert all(isinstance(r, FakeMessage) for r in results)
    assert stats.succeeded == len(calls)
    outcomes = stats.succeeded + stats.errored + stats.failed + stats.withdrawn
    assert outcomes == len(calls)
    assert stats.sync_calls + stats.batched_calls + stats.flex_calls == len(calls)
    assert all(p["model"] == FLEX for _, p, _ in fake.flex_calls)
    # Flex for the flex model in the band, where the budget leaves time beyond the 2 s margin
    # (and the 0.1 s direct p95, once a direct call has been seen: budgets at the edge are
    # left out of the count's check below).
    expected_flex = sum(1 for b, m, _ in calls if m == FLEX and 2_100 < b <= 600_000)
    edge = sum(1 for b, m, _ in calls if m == FLEX and 1_000 < b <= 2_100)
    assert expected_flex <= stats.flex_calls <= expected_flex + edge


async def test_a_budget_with_no_time_for_flex_goes_direct() -> None:
    # 1.5 s of budget, 2 s of escalation margin: no flex answer could be waited for.
    fake = FlexFakeProvider()
    async with open_fleet(fake, policy=policy()) as fleet:
        reply = await fleet.submit(latency_budget_ms=1_500, **request())
    assert isinstance(reply, FakeMessage)
    assert reply.route == "direct"
    assert fake.flex_calls == []
    assert fleet.stats.flex_calls == 0
    assert fleet.stats.sync_calls == 1
