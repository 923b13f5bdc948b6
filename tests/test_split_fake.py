"""The split of a batch refused because of some of its requests (docs/design.md §5.2, §5.5),
over the fake provider in virtual time: who is sent again, when, and who is not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from llmfleet import BatchRequestError, BatchSubmitError, RoutingPolicy, open_fleet
from llmfleet.providers import ErrorKind, ItemResult

from fakes import FakeError, FakeMessage, FakeProvider, request, text_of

if TYPE_CHECKING:
    from llmfleet import FleetDispatcher

POLICY = RoutingPolicy(
    batch_window_ms=1_000,
    batch_min_size=5,
    batch_max_size=5,
    poll_interval_ms=1_000,
    poll_max_interval_ms=1_000,
)
Outcomes = dict[str, object]


async def submit(fleet: FleetDispatcher, text: str, out: Outcomes) -> None:
    with anyio.CancelScope() as scope:
        out[f"scope {text}"] = scope
        try:
            out[text] = await fleet.submit_batch(**request(text))
        except Exception as exc:
            out[text] = exc


class FailsValidation(FakeProvider):
    """Its first batch fails validation on the requests whose text holds ``bad`` (errored)
    and runs nothing of the others (unsent); later batches run."""

    def __init__(self) -> None:
        super().__init__(turnaround=10.0)
        self.outcome = self._outcome

    def _outcome(self, custom_id: str, params: dict[str, Any]) -> ItemResult:
        text = text_of(params)
        if len(self.batches) == 1:
            if "bad" in text:
                return ItemResult("errored", error_type="invalid", message=f"{text} is bad")
            return ItemResult("errored", error_type="invalid", message="failed", unsent=True)
        return ItemResult("succeeded", value=FakeMessage(custom_id, text, "batch"))


async def test_unsent_calls_go_again_after_the_batch_ended_and_only_for_callers_waiting() -> None:
    """The bad call is errored; the unsent ones are sent again in one new batch, created only
    once the first has ended (never in two live batches), without the caller that left."""
    fake = FailsValidation()
    out: Outcomes = {}
    texts = ["a", "bad", "c", "d", "e"]
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(submit, fleet, text, out)
        await anyio.sleep(5)  # the first batch is running
        scope = out["scope d"]
        assert isinstance(scope, anyio.CancelScope)
        scope.cancel()  # "d" leaves
    (t1, first, ids1), (t2, second, ids2) = fake.creates
    assert len(ids1) == 5
    assert t2 >= t1 + fake.batches[first].turnaround
    sent_again = {text_of(params) for _, params in fake.batches[second].requests}
    assert sent_again == {"a", "c", "e"}
    assert set(ids2) < set(ids1)
    assert [m.text for t in "ace" if isinstance(m := out[t], FakeMessage)] == list("ace")
    bad = out["bad"]
    assert isinstance(bad, BatchRequestError)
    assert "bad is bad" in str(bad)
    assert "d" not in out  # it left: no outcome recorded for it
    assert fake.cancels == []
    stats = fleet.stats.snapshot()
    assert (stats.succeeded, stats.errored, stats.batches_submitted) == (3, 1, 2)
    assert stats.in_flight_batches == 0


class RefusesNamed(FakeProvider):
    """Refuses a create holding a request whose text holds ``bad``, naming the first one as
    Anthropic does (``refused``)."""

    def __init__(self) -> None:
        super().__init__(turnaround=10.0, on_create=self._check)
        self.attempts: list[list[str]] = []

    def _check(self, requests: list[tuple[str, dict[str, Any]]]) -> None:
        texts = [text_of(params) for _, params in requests]
        self.attempts.append(texts)
        for i, text in enumerate(texts):
            if "bad" in text:
                raise FakeError(ErrorKind.FATAL, f"requests.{i}.params.messages: {text}")

    def refused(self, exc: BaseException) -> tuple[int, str] | None:
        if isinstance(exc, FakeError):
            index, _, why = str(exc).removeprefix("requests.").partition(".")
            return int(index), why
        return None


@pytest.mark.parametrize("with_refused", [True, False], ids=["names-it", "names-none"])
async def test_a_create_refused_for_named_requests_goes_again_without_them(
    with_refused: bool,
) -> None:
    """With ``refused``: each bad request fails alone, the rest is created once, answered.
    Without it (an adapter that cannot tell), the whole batch fails as before."""
    fake = RefusesNamed()
    if not with_refused:
        fake.refused = lambda exc: None  # type: ignore[method-assign]
    out: Outcomes = {}
    texts = ["bad 1", "b", "bad 2", "d", "e"]
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(submit, fleet, text, out)
    errors = {t: out[t] for t in texts if isinstance(out[t], BatchSubmitError)}
    if with_refused:
        # (The callers' order is the scheduler's: compare the sets each create held.)
        first, second, third = (set(attempt) for attempt in fake.attempts)
        assert first == set(texts)
        assert len(second) == 4
        assert second < first
        assert third == {"b", "d", "e"}
        assert set(errors) == {"bad 1", "bad 2"}
        assert "params.messages: bad 2" in str(errors["bad 2"])
        assert [m.text for t in "bde" if isinstance(m := out[t], FakeMessage)] == list("bde")
        assert fleet.stats.batches_submitted == 1
    else:
        assert [set(attempt) for attempt in fake.attempts] == [set(texts)]
        assert set(errors) == set(texts)
        assert fleet.stats.batches_submitted == 0


async def test_callers_of_a_batch_sent_again_all_leaving_cancel_it() -> None:
    """The batch sent again counts only its own callers: when they all leave, it is cancelled
    at the provider (nobody pays for unwanted work), although the bad caller of the first
    round was answered and never left."""
    fake = FailsValidation()
    out: Outcomes = {}
    texts = ["a", "bad", "c", "d", "e"]
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(submit, fleet, text, out)
        await anyio.sleep(15)  # the first batch ended at 11 s; the second is running
        assert len(fake.creates) == 2
        for text in "acde":
            scope = out[f"scope {text}"]
            assert isinstance(scope, anyio.CancelScope)
            scope.cancel()
    _, second, _ = fake.creates[1]
    assert [batch_id for _, batch_id in fake.cancels] == [second]
    assert isinstance(out["bad"], BatchRequestError)
    assert fleet.stats.withdrawn == 4


async def test_callers_left_after_a_split_all_leaving_cancel_the_batch() -> None:
    """After a create refused for a named request, the batch made of the rest counts only
    their callers: when they all leave, it is cancelled at the provider."""
    fake = RefusesNamed()
    out: Outcomes = {}
    texts = ["bad 1", "b", "c", "d", "e"]
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(submit, fleet, text, out)
        await anyio.sleep(5)  # the batch of the other four is running
        assert len(fake.creates) == 1
        for text in "bcde":
            scope = out[f"scope {text}"]
            assert isinstance(scope, anyio.CancelScope)
            scope.cancel()
    (_, batch_id, _) = fake.creates[0]
    assert [cancelled for _, cancelled in fake.cancels] == [batch_id]
    assert isinstance(out["bad 1"], BatchSubmitError)


@pytest.mark.parametrize("unsent_results", [True, False])
async def test_a_created_batch_lets_go_of_its_requests_unless_they_may_go_again(
    unsent_results: bool,
) -> None:
    """A provider whose results are never ``unsent`` (``unsent_results = False``) will
    never have a request sent again once its batch exists: each call lets go of it then.
    Otherwise the request is kept, for the batch that may run nothing of it."""
    fake = FakeProvider(turnaround=10.0)
    if not unsent_results:
        fake.unsent_results = False  # type: ignore[attr-defined]
    out: Outcomes = {}
    async with open_fleet(fake, policy=POLICY) as fleet, anyio.create_task_group() as tg:
        for text in "abcde":
            tg.start_soon(submit, fleet, text, out)
        await anyio.sleep(5)  # created, not ended
        (batch,) = fleet._batches
        assert batch.id is not None
        kept = [call.request is not None for call in batch.calls.values()]
        assert kept == [unsent_results] * 5
    assert [m.text for t in "abcde" if isinstance(m := out[t], FakeMessage)] == list("abcde")
