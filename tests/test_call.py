"""A call's lifecycle table, checked moves, and a batch that starts from an existing id."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest

from llmfleet import FleetDispatcher, RoutingPolicy
from llmfleet._call import (
    DONE,
    GONE,
    NEW,
    PENDING,
    QUEUED,
    SENT,
    TRANSITIONS,
    Call,
    CallState,
    IllegalTransitionError,
)

from fakes import FakeMessage, FakeProvider, request

# The lifecycle of docs/design.md §5, written out pair by pair so the table cannot drift
# unnoticed: NEW -> QUEUED -> SENT -> DONE, leaving (GONE) from any pending state, escalating
# from any pending state, failing (DONE) by deadline or abort before a flush.
EXPECTED = {
    ("NEW", "QUEUED"),
    ("NEW", "ESCALATED"),
    ("NEW", "DONE"),
    ("NEW", "GONE"),
    ("QUEUED", "SENT"),
    ("QUEUED", "ESCALATED"),
    ("QUEUED", "DONE"),
    ("QUEUED", "GONE"),
    ("SENT", "ESCALATED"),
    ("SENT", "DONE"),
    ("SENT", "GONE"),
    ("ESCALATED", "DONE"),
    ("ESCALATED", "GONE"),
}


def _call(state: CallState) -> Call:
    call = Call("lf_test_1", {}, None, 10, "m", anyio.Event())
    call.state = state
    return call


def test_table_is_the_documented_lifecycle() -> None:
    table = {(a.name, b.name) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == EXPECTED
    assert set(TRANSITIONS) == set(CallState)
    assert not TRANSITIONS[DONE]
    assert not TRANSITIONS[GONE]
    assert {NEW, QUEUED, SENT} == PENDING


@pytest.mark.parametrize(
    ("source", "target"),
    list(itertools.product(CallState, CallState)),
    ids=lambda s: s.name,
)
def test_every_move_is_checked(source: CallState, target: CallState) -> None:
    call = _call(source)
    if (source.name, target.name) in EXPECTED:
        call.move(target)
        assert call.state is target
    else:
        with pytest.raises(IllegalTransitionError, match=f"{source.name} -> {target.name}"):
            call.move(target)
        assert call.state is source  # an illegal move changes nothing


def test_a_call_walks_its_happy_path_and_then_cannot_move() -> None:
    call = _call(NEW)
    for state in (QUEUED, SENT, DONE):
        call.move(state)
    for state in CallState:
        with pytest.raises(IllegalTransitionError):
            call.move(state)


def test_release_lets_go_of_request_and_result() -> None:
    call = _call(DONE)
    call.request, call.value, call.error = {"big": "request"}, object(), None
    call.params = {"messages": []}
    call.release()
    assert (call.request, call.value, call.error, call.params) == (None, None, None, {})


# The three moves every batched call makes are checked inline where they happen, not by
# Call.move(): each against its one legal source state. These hold them to the table.


@pytest.mark.parametrize("state", list(CallState), ids=lambda s: s.name)
async def test_a_flush_only_sends_queued_calls(state: CallState) -> None:
    fleet = FleetDispatcher(FakeProvider(), policy=RoutingPolicy())
    async with fleet:
        call = _call(state)
        if state is QUEUED:
            assert fleet.stats._enqueue(fleet.policy.max_queued)
            fleet._start_batch([call], "drain")
            assert call.state is SENT
            assert call.batch is not None
            fleet._outcomes.resolve(call, "succeeded", value=None)
        else:
            assert (state.name, "SENT") not in EXPECTED  # the table agrees
            with pytest.raises(IllegalTransitionError, match=f"{state.name} -> SENT"):
                fleet._start_batch([call], "drain")
            assert call.state is state  # an illegal move changes nothing
            assert call.batch is None


@pytest.mark.parametrize("state", list(CallState), ids=lambda s: s.name)
def test_only_a_new_call_enters_the_queue(state: CallState) -> None:
    fleet = FleetDispatcher(FakeProvider(), policy=RoutingPolicy())
    call = _call(state)
    fleet._accept(call)
    if state is NEW:
        assert call.state is QUEUED
        assert [len(q) for q in fleet._queues.values()] == [1]
    else:
        # A call that escalated or left before the flusher took it is not queued.
        assert call.state is state
        assert not fleet._queues


@pytest.mark.parametrize("state", list(CallState), ids=lambda s: s.name)
async def test_only_a_sent_call_is_resolved(state: CallState) -> None:
    fleet = FleetDispatcher(FakeProvider(), policy=RoutingPolicy())
    call = _call(state)
    answer = FakeMessage("lf_test_1", "x", "batch")
    fleet._outcomes.resolve(call, "succeeded", value=answer)
    if state is SENT:
        assert (call.state, call.value, call.done.is_set()) == (DONE, answer, True)
        assert fleet.stats.succeeded == 1
    else:
        # Escalated, left, or answered already: the batch's result is not its outcome.
        assert (call.state, call.value, call.done.is_set()) == (state, None, False)
        assert fleet.stats.succeeded == 0


async def test_a_batch_can_start_from_an_existing_batch_id() -> None:
    # The seam a durable journal re-attaches through: the batch exists at the provider
    # already, so the fleet waits for it and delivers its results without creating it.
    fake = FakeProvider(turnaround=5.0)
    texts = ["x", "y"]
    custom_ids = [f"lf_journal_{i}" for i in range(len(texts))]
    batch_id = await fake.create_batch(
        [(cid, request(t)) for cid, t in zip(custom_ids, texts, strict=True)]
    )
    fleet = FleetDispatcher(fake, policy=RoutingPolicy())
    results: dict[str, Any] = {}
    async with fleet:
        t0 = anyio.current_time()
        calls = []
        for cid, text in zip(custom_ids, texts, strict=True):
            call = Call(cid, request(text), None, 10, "", anyio.Event())
            call.move(QUEUED)
            assert fleet.stats._enqueue(fleet.policy.max_queued)
            calls.append(call)
        fleet._start_batch(calls, "drain", batch_id=batch_id)
        for call in calls:
            await call.done.wait()
            results[call.custom_id] = call.value
        took = anyio.current_time() - t0
    assert len(fake.creates) == 1  # only the one made before the fleet opened
    assert all(isinstance(v, FakeMessage) for v in results.values())
    assert [v.text for v in results.values()] == texts
    # Answered once the provider's batch ended (at 5 s), seen on the board's polls.
    assert 5.0 <= took < 10.0
    assert {bid for _, bid in fake.polls} == {batch_id}
    stats = fleet.stats
    assert (stats.succeeded, stats.in_flight_batches, stats.queued) == (2, 0, 0)
    assert stats.api_requests.get("create", 0) == 0
