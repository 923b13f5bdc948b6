"""The fleet end to end (docs/design.md §1–§6): the real ``anthropic`` SDK over loopback HTTP to the
emulator, on asyncio and trio.

These tests run on real clocks: the emulator serves from its own thread, and a virtual clock
would fire the HTTP client's timeouts while it waits on a socket. Times are kept small
(turnarounds of 0.05–0.3 s, polls every 20–100 ms).
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import math
import time
import traceback
import warnings
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import anthropic
import anyio
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message

from llmfleet import (
    BatchRequestError,
    BatchRequestExpiredError,
    BatchSubmitError,
    FleetDispatcher,
    Route,
    open_fleet,
)
from llmfleet.emulator import EmulatorConfig, Fault, run_emulator
from llmfleet.pricing import Cost

if TYPE_CHECKING:
    from llmfleet.emulator import Emulator

from e2e import CANCELLED, KEY, MODEL, Outcomes, params, policy, text_of, until

pytestmark = [pytest.mark.timeout(30)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


def create_bodies(emu: Emulator) -> list[list[str]]:
    """The user texts of each batch create the emulator received, in arrival order."""
    return [
        [r["params"]["messages"][-1]["content"] for r in request.body["requests"]]
        for request in emu.requests
        if request.endpoint == "batch_create"
    ]


def cancel_requests(emu: Emulator, batch_id: str) -> int:
    return sum(
        1
        for r in emu.requests
        if r.endpoint == "batch_cancel" and r.path == f"/v1/messages/batches/{batch_id}/cancel"
    )


async def call(
    fleet: FleetDispatcher,
    text: str,
    out: Outcomes,
    *,
    route: str = "batch",
    leave_after: float | None = None,
) -> None:
    """One caller: record its result, its error, or :data:`CANCELLED` under ``text``, once."""
    assert text not in out
    with anyio.move_on_after(math.inf if leave_after is None else leave_after) as scope:
        try:
            if route == "batch":
                out[text] = await fleet.submit_batch(**params(text))
            elif route == "sync":
                out[text] = await fleet.submit_sync(**params(text))
            else:
                out[text] = await fleet.submit(latency_budget_ms=60_000, **params(text))
        except Exception as exc:
            out[text] = exc
    if scope.cancelled_caught:
        assert text not in out
        out[text] = CANCELLED


async def test_both_routes_return_the_same_sdk_message_type() -> None:
    """docs/design.md §1: submit() returns ``anthropic.types.Message`` on both routes."""
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy()) as fleet,
    ):
        direct = await fleet.submit(latency_budget_ms=None, **params("same text"))
        also_direct = await fleet.submit(latency_budget_ms=500, **params("same text"))
        batched = await fleet.submit(latency_budget_ms=60_000, **params("same text"))
    for message in (direct, also_direct, batched):
        assert type(message) is Message
        assert text_of(message) == "same text"
        assert message.model == MODEL
    # Same fields, same values except the ids and the tier: the caller can't tell the route.
    assert direct.model_dump().keys() == batched.model_dump().keys()
    assert direct.usage.input_tokens == batched.usage.input_tokens
    assert (direct.usage.service_tier, batched.usage.service_tier) == ("standard", "batch")
    assert emu.counts["messages"] == 2
    assert emu.counts["batch_create"] == 1
    assert (fleet.stats.sync_calls, fleet.stats.batched_calls) == (2, 1)
    assert fleet.stats.batches_submitted == 1


async def test_burst_coalesces_into_ceil_n_over_max_batches() -> None:
    """docs/design.md §4 G6: 23 calls submitted in one tick → ⌈23/5⌉ = 5 batches, in FIFO order."""
    n, size = 23, 5
    texts = [f"burst {i}" for i in range(n)]
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=size, batch_max_size=size)) as fleet,
        anyio.create_task_group() as tg,
    ):
        for text in texts:
            tg.start_soon(call, fleet, text, out)
    assert {text: text_of(out[text]) for text in texts} == {text: text for text in texts}
    assert emu.counts["batch_create"] == math.ceil(n / size) == len(emu.batches)
    assert sorted(len(body) for body in create_bodies(emu)) == [3, 5, 5, 5, 5]
    # FIFO within and across batches (G5). custom_ids count submits in arrival order (trio
    # runs a burst's tasks in no set order, so the texts' order says nothing).
    numbers = [[int(cid.rsplit("_", 1)[1]) for cid in b.custom_ids] for b in emu.batches.values()]
    assert list(itertools.chain(*sorted(numbers))) == list(range(1, n + 1))
    assert dict(fleet.stats.flushes) == {"size": 4, "window": 1, "drain": 0, "deadline": 0}
    assert fleet.stats.succeeded == n


async def test_window_flushes_a_short_queue() -> None:
    """docs/design.md §4 G3: two calls, far below batch_min_size, leave after the 100 ms window."""
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_window_ms=100)) as fleet,
    ):
        start = time.time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, fleet, "one", out)
            tg.start_soon(call, fleet, "two", out)
    [create] = [r for r in emu.requests if r.endpoint == "batch_create"]
    assert 0.1 <= create.time - start < 0.5
    assert [sorted(body) for body in create_bodies(emu)] == [["one", "two"]]
    assert dict(fleet.stats.flushes) == {"size": 0, "window": 1, "drain": 0, "deadline": 0}
    assert (text_of(out["one"]), text_of(out["two"])) == ("one", "two")


async def test_errored_and_expired_items_fail_only_their_callers() -> None:
    """docs/design.md §5 results: errored → BatchRequestError(error_type, message), expired →
    BatchRequestExpiredError, for those callers only; the others get their messages."""
    texts = ["fine", "boom [[errored]]", "bad [[errored:invalid_request_error]]", "[[expired]]"]
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=4)) as fleet,
        anyio.create_task_group() as tg,
    ):
        for text in texts:
            tg.start_soon(call, fleet, text, out)
    [(batch_id, batch)] = emu.batches.items()
    assert text_of(out["fine"]) == "fine"
    assert sorted(batch.results.values()) == ["errored", "errored", "expired", "succeeded"]
    boom, bad, expired = out[texts[1]], out[texts[2]], out[texts[3]]
    assert type(boom) is BatchRequestError
    assert (boom.error_type, boom.message) == (
        "api_error",
        "Internal server error (injected by the llmfleet emulator).",
    )
    assert type(bad) is BatchRequestError
    assert bad.error_type == "invalid_request_error"
    assert type(expired) is BatchRequestExpiredError
    for error, result in ((boom, "errored"), (bad, "errored"), (expired, "expired")):
        assert error.batch_id == batch_id
        assert batch.results[error.custom_id] == result
    stats = fleet.stats
    assert (stats.succeeded, stats.errored, stats.expired, stats.failed) == (1, 2, 1, 0)


async def test_caller_cancelled_while_queued_never_reaches_the_server() -> None:
    """docs/design.md §5 caller cancelled, phase *queued*: withdrawn, its text in no create."""
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_window_ms=200)) as fleet,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(call, fleet, "stays", out)
        tg.start_soon(partial(call, fleet, "leaves early", out, leave_after=0.05))
        tg.start_soon(call, fleet, "stays too", out)
    assert out["leaves early"] == CANCELLED
    assert [sorted(body) for body in create_bodies(emu)] == [["stays", "stays too"]]
    assert not any("leaves early" in repr(r.body) for r in emu.requests)
    assert (text_of(out["stays"]), text_of(out["stays too"])) == ("stays", "stays too")
    assert (fleet.stats.withdrawn, fleet.stats.succeeded, fleet.stats.queued) == (1, 2, 0)


async def test_all_callers_of_an_in_flight_batch_leave_so_it_is_cancelled() -> None:
    """docs/design.md §5 caller cancelled, phase *polling*: when the last live caller leaves, the
    fleet cancels the batch with the provider; while one caller stays, it does not."""
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=None)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=3)) as fleet,
        anyio.create_task_group() as tg,
    ):
        # A batch of three; one caller leaves: the batch must run on for the other two.
        tg.start_soon(partial(call, fleet, "a1", out, leave_after=0.2))
        tg.start_soon(call, fleet, "a2", out)
        tg.start_soon(call, fleet, "a3", out)
        await until(lambda: len(emu.batches) == 1)
        [first] = emu.batches
        await until(lambda: out.get("a1") == CANCELLED)
        await anyio.sleep(0.15)  # a few polls
        assert emu.batches[first].processing_status == "in_progress"
        assert cancel_requests(emu, first) == 0
        emu.end_batch(first)
        await until(lambda: len(out) == 3)

        # A batch of three whose callers all leave while it is polled: cancelled.
        for text in ("b1", "b2", "b3"):
            tg.start_soon(partial(call, fleet, text, out, leave_after=0.3))
        await until(lambda: len(emu.batches) == 2)
        [second] = set(emu.batches) - {first}
        await until(lambda: cancel_requests(emu, second) == 1)
    assert (text_of(out["a2"]), text_of(out["a3"])) == ("a2", "a3")
    assert [out[t] for t in ("a1", "b1", "b2", "b3")] == [CANCELLED] * 4
    assert emu.batches[second].results == dict.fromkeys(emu.batches[second].custom_ids, "canceled")
    assert cancel_requests(emu, first) == 0
    assert fleet.stats.results_dropped == 1  # a1's result arrived after it left
    assert sorted(e.result for e in emu.ledger.entries) == ["canceled"] * 3 + ["succeeded"] * 3


async def test_normal_exit_drains_the_queue_and_waits_for_every_caller() -> None:
    """docs/design.md §5 normal exit: queued calls are flushed at once (reason ``drain``), and the
    block returns only when every caller has its outcome."""
    texts = [f"drain {i}" for i in range(4)]
    out: Outcomes = {}
    async with anyio.create_task_group() as tg:
        async with (
            run_emulator(EmulatorConfig(turnaround_s=0.1)) as emu,
            AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        ):
            start = anyio.current_time()
            async with open_fleet(client, policy=policy(batch_window_ms=30_000)) as fleet:
                for text in texts:
                    tg.start_soon(call, fleet, text, out)
                await until(lambda: fleet.stats.queued == len(texts))
            # Every caller has its outcome as soon as the block returns.
            assert {t: text_of(out[t]) for t in texts} == {t: t for t in texts}
            assert anyio.current_time() - start < 5  # not the 30 s window
            assert dict(fleet.stats.flushes) == {"size": 0, "window": 0, "drain": 1, "deadline": 0}
            assert fleet.closed


async def test_stats_tokens_and_cost_equal_the_emulator_ledger_exactly() -> None:
    """docs/design.md §6: tokens and cost per route equal the provider's bill, to the last Decimal
    digit; the batch route is paid at half the list price."""
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
        open_fleet(client, policy=policy(batch_min_size=5)) as fleet,
    ):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(
                    partial(call, fleet, f"direct {i} " + "d" * 37 * i, out, route="sync")
                )
            for i in range(4):
                tg.start_soon(call, fleet, f"batched {i} " + "b" * (53 * i), out)
            tg.start_soon(call, fleet, "this one [[errored]]", out)
        # Prompt caching on both routes: a cache write, then reads.
        # (The emulator's cache is shared by the routes: a different prefix for each.)
        for submit, prefix in ((fleet.submit_sync, "S" * 4_000), (fleet.submit_batch, "T" * 4_000)):
            system = [{"type": "text", "text": prefix, "cache_control": {"type": "ephemeral"}}]
            for i in range(2):
                await submit(system=system, **params(f"{prefix[0]} cached {i}"))
    stats, ledger = fleet.stats, emu.ledger
    assert stats.tokens[Route.DIRECT] == ledger.usage(route="direct")
    assert stats.cost[Route.DIRECT] == ledger.total(route="direct")
    assert stats.tokens[Route.BATCH] == ledger.usage(route="batch")
    assert stats.cost[Route.BATCH] == ledger.total(route="batch")
    direct, batch = stats.cost[Route.DIRECT], stats.cost[Route.BATCH]
    assert direct.paid == direct.list_price > 0
    assert batch.paid == batch.list_price / 2 > 0
    assert stats.tokens[Route.DIRECT].cache_read_tokens > 0
    assert stats.tokens[Route.BATCH].cache_write_tokens > 0
    assert stats.snapshot().saving == batch.list_price - batch.paid
    assert isinstance(batch.paid, Decimal)
    assert ledger.total() == direct + batch
    assert ledger.total() != Cost()


async def test_api_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    """docs/design.md §5: the API key is in no recorded request, exception, repr or DEBUG log
    record, over every path that builds a message: direct errors, refused and ambiguous creates,
    failed polls, errored items, a cut stream, cancellation."""
    caplog.set_level(logging.DEBUG, logger="llmfleet")
    errors: list[BaseException] = []
    out: Outcomes = {}
    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0) as client,
        open_fleet(client, policy=policy(batch_min_size=2, batch_max_size=2)) as fleet,
    ):
        emu.add_fault(Fault("messages", "status", status=401))
        emu.add_fault(Fault("batch_create", "status", status=403))
        emu.add_fault(Fault("batch_create", "accept_then_drop", nth=2))
        emu.add_fault(Fault("batch_retrieve", "status", status=500, times=2))
        emu.add_fault(Fault("batch_results", "cut_stream"))
        for round_ in range(2):
            async with anyio.create_task_group() as tg:
                for i in range(4):
                    marker = " [[errored]]" if i % 2 else ""
                    tg.start_soon(call, fleet, f"batch {round_} {i}{marker}", out)
                    tg.start_soon(partial(call, fleet, f"direct {round_} {i}", out, route="sync"))
                # Callers that leave: queued, and on the direct route mid-call.
                tg.start_soon(partial(call, fleet, f"leaves {round_}", out, leave_after=0.001))
                emu.add_fault(Fault("messages", "slow", delay_s=0.3))
                tg.start_soon(
                    partial(call, fleet, f"slow {round_}", out, route="sync", leave_after=0.1)
                )
        errors.extend(v for v in out.values() if isinstance(v, BaseException))
        try:
            await fleet.submit_batch(**params("x"), stream=True)
        except Exception as exc:
            errors.append(exc)
        seen = [repr(fleet), repr(fleet.stats), repr(fleet.provider), repr(fleet.stats.snapshot())]
    assert any(isinstance(e, anthropic.AuthenticationError) for e in errors)
    assert any(isinstance(e, BatchSubmitError) for e in errors)
    assert any(isinstance(e, BatchRequestError) for e in errors)
    for error in errors:
        seen.extend(traceback.format_exception(error))
        seen.extend(repr(e) for e in (error, error.__cause__, error.__context__))
    seen.extend(repr(r) for r in emu.requests)
    seen.extend(str(r.headers) for r in emu.requests)
    assert {r.headers.get("authorization") for r in emu.requests} == {"[redacted]"}
    assert caplog.records, "the fleet logged nothing at DEBUG"
    seen.append(caplog.text)
    for record in caplog.records:
        seen.append(record.getMessage())
        seen.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            seen.extend(traceback.format_exception(record.exc_info[1]))
    leaks = [text for text in seen if KEY in text or "SECRET" in text]
    assert leaks == []
    gc.collect()  # see pytestmark


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_results_stream_is_closed_when_the_fleet_stops_reading() -> None:
    """docs/design.md §5 results, phase *results*: reading stops after the last caller's line; every
    generator under the results stream must be closed then, not left to the garbage
    collector (trio reports those with a ResourceWarning, an error under this suite)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with (
            run_emulator(EmulatorConfig(turnaround_s=0.05)) as emu,
            AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
            open_fleet(client, policy=policy(batch_min_size=2)) as fleet,
            anyio.create_task_group() as tg,
        ):
            out: Outcomes = {}
            tg.start_soon(call, fleet, "one", out)
            tg.start_soon(call, fleet, "two", out)
        gc.collect()
    assert (text_of(out["one"]), text_of(out["two"])) == ("one", "two")
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_prepare_keeps_the_request_as_json_and_refuses_what_a_batch_cannot_carry() -> None:
    from llmfleet.errors import UnbatchableRequestError
    from llmfleet.providers.anthropic import AnthropicProvider

    p = AnthropicProvider(AsyncAnthropic(api_key=KEY, base_url="http://127.0.0.1:9"))
    request = params("snapshot")
    size, prepared = p.prepare("lf_0123abcd_1", request)
    # The snapshot is the encoded request: what the caller changes later is not sent.
    assert json.loads(prepared) == request
    request["messages"][0]["content"] = "changed"
    assert json.loads(prepared)["messages"][0]["content"] != "changed"
    # Its size bounds its entry in the batch body.
    entry = f'{{"custom_id":"lf_0123abcd_1","params":{prepared}}},'
    assert size >= len(entry.encode())
    bad_params: list[tuple[dict[str, Any], str]] = [
        ({"metadata": {"k": object()}}, "JSON"),
        ({"metadata": {"user_id": math.nan}}, "JSON"),
        ({"max_tokens": 0}, "max_tokens=0"),
    ]
    for bad, why in bad_params:
        with pytest.raises(UnbatchableRequestError, match=why):
            p.prepare("lf_0123abcd_2", {**params("x"), **bad})
    cyclic = params("x")
    cyclic["metadata"] = {"self": cyclic}
    with pytest.raises(UnbatchableRequestError, match="JSON"):
        p.prepare("lf_0123abcd_3", cyclic)


async def test_a_status_listing_asks_for_the_batches_in_flight_not_a_full_page() -> None:
    """docs/design.md §5 poll: the first page of a status refresh is sized by the batches this
    adapter has in flight (twice as many, plus a margin), not the endpoint's 1,000: in an
    organisation with many batches the SDK would otherwise build a model for every row."""
    from llmfleet.providers.anthropic import _STATUS_SLACK, AnthropicProvider

    async with (
        run_emulator(EmulatorConfig(turnaround_s=60.0)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        provider = AnthropicProvider(client)
        request = [{"custom_id": "a", "params": params("old")}]
        old = 2 * 3 + _STATUS_SLACK + 10
        for _ in range(old):  # other batches of the organisation
            await client.messages.batches.create(requests=request)  # type: ignore[arg-type]
        ours = []
        for i in range(3):
            _, body = provider.prepare(f"c{i}", params(f"q{i}"))
            ours.append(await provider.create_batch([(f"c{i}", body)]))
        rows, cursor = await provider.list_page(None)
        assert len(rows) == 2 * 3 + _STATUS_SLACK
        assert cursor is not None  # more below: the board pages on if it misses one of ours
        assert set(ours) <= {batch_id for batch_id, _ in rows}
        await provider.cancel(ours[0])  # no longer in flight here
        rows, _ = await provider.list_page(None)
        assert len(rows) == 2 * 2 + _STATUS_SLACK
        # Later pages are full ones.
        rows, _ = await provider.list_page(cursor)
        assert len(rows) == old + 3 - (2 * 3 + _STATUS_SLACK)


async def test_raw_results_carry_what_results_carry_as_the_api_sent_it() -> None:
    """The adapter's ``raw_results`` (``llmfleet run`` reads a batch so) yields the same
    lines as ``results``: each succeeded one the message JSON the SDK's own object is built
    from (so the journal keeps the same response either way), the others alike."""
    from llmfleet.providers.anthropic import AnthropicProvider

    async with (
        run_emulator(EmulatorConfig(turnaround_s=0.0)) as emu,
        AsyncAnthropic(api_key=KEY, base_url=emu.url) as client,
    ):
        provider = AnthropicProvider(client)
        texts = ["one", "two [[errored]]", "three é ✓", "four"]
        batch_id = await provider.create_batch(
            [(f"c{i}", json.dumps(params(text))) for i, text in enumerate(texts)]
        )
        with anyio.fail_after(5):
            # The emulator's batch state: polled over HTTP, as the fleet does (no Event).
            while not (await provider.poll(batch_id)).ended:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        built = {cid: result async for cid, result in provider.results(batch_id)}
        raw = {cid: result async for cid, result in provider.raw_results(batch_id)}
    assert sorted(raw) == sorted(built) == ["c0", "c1", "c2", "c3"]
    for cid, result in raw.items():
        sdk = built[cid]
        assert (result.kind, result.error_type, result.message) == (
            sdk.kind,
            sdk.error_type,
            sdk.message,
        )
        if result.kind == "succeeded":
            assert result.as_json
            assert type(result.value) is dict
            assert Message.model_validate(result.value) == sdk.value
            assert provider.load_value(result.value) == sdk.value
            assert provider.tokens_of(result.value) == provider.tokens_of(sdk.value)
    assert raw["c1"].kind == "errored"
    assert raw["c2"].value["content"][0]["text"] == "three é ✓"


async def test_a_create_body_goes_out_a_slice_at_a_time_with_its_exact_length() -> None:
    """A batch create's body is encoded a slice of requests at a time as the client sends it,
    under its exact Content-Length (not a chunked upload): a batch near the 256 MB limit is
    never held whole in memory. The emulator receives every request as prepared."""
    import httpx2

    from llmfleet.providers.anthropic import AnthropicProvider

    pieces: list[int] = []
    headers: list[httpx2.Headers] = []

    class Counted(httpx2.AsyncByteStream):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        async def __aiter__(self) -> Any:
            async for piece in self._inner:
                pieces.append(len(piece))
                yield piece

    class Recording(httpx2.AsyncBaseTransport):
        def __init__(self) -> None:
            self._inner = httpx2.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            if request.method == "POST" and request.url.path == "/v1/messages/batches":
                headers.append(request.headers)
                request.stream = Counted(request.stream)
            return await self._inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self._inner.aclose()

    n = 2_500
    texts = [f"q{i} é ✓" for i in range(n)]
    async with (
        run_emulator(EmulatorConfig(turnaround_s=60.0)) as emu,
        AsyncAnthropic(
            api_key=KEY,
            base_url=emu.url,
            http_client=anthropic.DefaultAsyncHttpxClient(transport=Recording()),
        ) as client,
    ):
        provider = AnthropicProvider(client)
        requests = [provider.prepare(f"c{i}", params(text))[1] for i, text in enumerate(texts)]
        await provider.create_batch([(f"c{i}", body) for i, body in enumerate(requests)])
    assert create_bodies(emu) == [texts]
    [sent] = headers
    assert "transfer-encoding" not in sent
    assert int(sent["content-length"]) == sum(pieces)
    # Many slices, none of them near the whole.
    assert len(pieces) >= 3
    assert max(pieces) < sum(pieces) / 2
