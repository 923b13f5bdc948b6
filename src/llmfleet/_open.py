"""The fleet's life: :func:`open_fleet`, and how a fleet opens, drains and aborts
(docs/design.md §1, §5.7).

:func:`open_fleet` picks the kind of fleet (one process, with or without a journal, or one
across processes on a broker) and returns the context manager that runs it.
:func:`run_dispatcher` is that context manager for a :class:`~llmfleet.FleetDispatcher`
(whose own ``async with`` enters it too): it opens the journal if there is one, starts the
fleet's task group (status board, deadline timers, flusher, re-attached batches), and on
leaving drains on a normal exit or aborts, in the order §5.7 sets out. The routing, the
flusher and the abort's steps it calls live in ``_dispatcher``.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Generic, NoReturn, final, overload

import anyio
from typing_extensions import TypeVar

from ._batch import BatchContext, back_off
from ._board import StatusBoard
from ._budget import Priority
from ._call import Call
from ._create_gate import CreateGate
from ._dispatcher import FleetDispatcher
from ._timers import backend_clock
from ._wake import wake_factory
from .errors import FleetUsageError

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator
    from types import TracebackType

    from anthropic import AsyncAnthropic
    from anthropic.types import Message
    from anyio.abc import TaskStatus

    # Optional dependencies: their types only, for type checkers.
    from google.genai.client import AsyncClient as GenaiAsyncClient
    from google.genai.client import Client as GenaiClient
    from google.genai.types import GenerateContentResponse
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

    from ._policy import RoutingPolicy
    from ._stats import OnResult
    from .broker import BrokeredFleet
    from .journal import FlushRecord, Journal
    from .pricing import PriceTable
    from .providers.bedrock import BedrockClient

__all__ = ["FleetContext", "open_fleet", "run_dispatcher"]

logger = logging.getLogger("llmfleet")

T_co = TypeVar("T_co", covariant=True)
R = TypeVar("R", default=Any)

#: What misusing :func:`open_fleet`'s return value raises (see :class:`FleetContext`).
NOT_ENTERED: Final = (
    "open_fleet() returns an async context manager, not a fleet: use `async with "
    "open_fleet(client) as fleet:` in an async function, and call fleet.submit(...) inside "
    "the block"
)


@final
class FleetContext(AbstractAsyncContextManager[T_co], Generic[T_co]):
    """What :func:`open_fleet` returns: an async context manager whose ``async with`` runs
    the fleet and yields it.

    Its ``__aenter__``/``__aexit__`` are those of the context manager it wraps. Used any
    other way (awaited, entered with a plain ``with``, or asked for ``submit`` before
    ``async with``) it raises :class:`~llmfleet.FleetUsageError` saying how to use it, not
    the bare ``AttributeError``/``TypeError`` Python would give. Type checkers flag those
    uses on their own: the raising methods exist at run time only.
    """

    __slots__ = ("_cm",)

    def __init__(self, cm: AbstractAsyncContextManager[T_co]) -> None:
        self._cm = cm

    async def __aenter__(self) -> T_co:
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._cm.__aexit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return f"<FleetContext of {self._cm!r}: use `async with`>"

    if not TYPE_CHECKING:

        def __await__(self) -> NoReturn:
            raise FleetUsageError(NOT_ENTERED)

        def __enter__(self) -> NoReturn:
            raise FleetUsageError(NOT_ENTERED)

        def __exit__(self, *exc_info: object) -> None:  # never reached: __enter__ raises
            pass

        def __getattr__(self, name: str) -> NoReturn:
            # Only for names this class lacks, e.g. `open_fleet(client).submit`. Private and
            # special names stay a plain AttributeError, so that probing (hasattr, copy,
            # pickle) sees an ordinary object.
            if name.startswith("_"):
                raise AttributeError(
                    f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
                )
            raise FleetUsageError(f"{NOT_ENTERED} (got `.{name}` on the context manager)")


@asynccontextmanager
async def run_dispatcher(fleet: FleetDispatcher[R]) -> AsyncIterator[FleetDispatcher[R]]:
    """Run ``fleet`` for the length of an ``async with`` block (once per dispatcher)."""
    if fleet._entered:
        raise RuntimeError("a FleetDispatcher can be entered once; make a new one")
    fleet._entered = True
    journal = fleet._journal
    if journal is None:
        async with _run_open(fleet, []) as opened:
            yield opened
        return
    # Open the journal, and settle interrupted creates before anything is sent; it is
    # closed once the fleet has ended, however it ends.
    async with journal.opened(partial(fleet._budget.acquire, Priority.CREATE)) as reattach:
        async with _run_open(fleet, reattach) as opened:
            yield opened


@asynccontextmanager
async def _run_open(
    fleet: FleetDispatcher[R], reattach: list[FlushRecord]
) -> AsyncIterator[FleetDispatcher[R]]:
    clock = fleet._clock = backend_clock()
    fleet._outcomes.set_clock(clock)
    deadlines = fleet._deadlines
    deadlines.clock = clock
    fleet._idle = idle = anyio.Event()
    fleet._new_event = wake_factory()  # the running backend's waiter: one per batched call
    stats = fleet._stats
    on_error = partial(back_off, stats, fleet._budget)
    board = StatusBoard(fleet.provider, fleet._budget, fleet.policy, stats._api_request, on_error)
    fleet._ctx = BatchContext(
        provider=fleet.provider,
        policy=fleet.policy,
        budget=fleet._budget,
        stats=stats,
        outcomes=fleet._outcomes,
        gate=CreateGate(fleet.provider, fleet._budget, stats, on_error, clock),
        board=board,
        clock=clock,
        turnaround=deadlines.turnaround,
        on_end=fleet._batch_ended,
        journal=fleet._journal,
    )
    send, receive = anyio.create_memory_object_stream[Call](math.inf)
    body_error: BaseException | None = None
    background = anyio.CancelScope()

    async def run_background(*, task_status: TaskStatus[None]) -> None:
        # The status board and the deadline timers: they serve the batches and calls in
        # flight, and stop once the last one is done.
        with background:
            async with anyio.create_task_group() as inner:
                await inner.start(board.run)
                await inner.start(deadlines.timers.run)
                task_status.started()

    # Shielded once the fleet aborts: the task group's exit then waits for the fleet's own
    # tasks (cancelled, each cleanup bounded by ABORT_GRACE_S) without being interrupted by
    # a cancellation from outside, so the body's exception is what leaves this block. Callers
    # that share an outer task group with the fleet fail with FleetClosedError during the
    # abort, which cancels that group while this exit runs; unshielded, the exit would raise
    # Cancelled and the body's exception would be lost.
    with anyio.CancelScope() as guard:
        async with anyio.create_task_group() as tg:
            fleet._tg = deadlines.tg = tg
            fleet._send = send
            fleet._receive = receive
            await tg.start(run_background)
            await tg.start(fleet._flusher, receive)
            for flush in reattach:
                fleet._start_batch([], "reattach", batch_id=flush.batch_id, flush=flush)
            fleet._state = "open"
            why = "because the `async with` block raised"
            try:
                yield fleet
            except BaseException as exc:
                # Exit by exception or outer cancellation: abort, and re-raise the body's
                # own exception after the task group, so it is not wrapped in a group.
                body_error = exc
            else:
                fleet._close()
                try:
                    with anyio.move_on_after(
                        math.inf if fleet._drain_timeout is None else fleet._drain_timeout
                    ):
                        await idle.wait()
                except BaseException as exc:
                    # Cancelled from outside while draining: abort like a body that was.
                    body_error = exc
                    why = "because it was cancelled while draining"
                else:
                    if not idle.is_set():
                        logger.warning("drain timeout: cancelling %d batches", len(fleet._batches))
                        why = "after drain_timeout_ms"
            if body_error is not None or not idle.is_set():
                guard.shield = True
                await fleet._abort(why)
                tg.cancel_scope.cancel()
            else:
                # Every batch has ended: the board and the timers have nothing left to serve.
                background.cancel()
    if body_error is not None:
        try:
            raise body_error
        finally:
            body_error = None
    # Every caller's outcome is in its slot, but the callers woken by the last results have
    # not run yet. One checkpoint lets them run before the code after `async with` does, so
    # "the block returns when every caller has its outcome" holds for what callers record.
    await anyio.lowlevel.checkpoint()


# -- open_fleet: typed by the client (its calls return the SDK's own type) and by broker= ----
# (the one-process fleet, or one across processes: src/llmfleet/broker/).
@overload
def open_fleet(
    client: AsyncAnthropic | BedrockClient,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    broker: None = None,
) -> AbstractAsyncContextManager[FleetDispatcher[Message]]: ...
@overload
def open_fleet(
    client: AsyncOpenAI,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    broker: None = None,
) -> AbstractAsyncContextManager[FleetDispatcher[ChatCompletion | Response]]: ...
@overload
def open_fleet(
    client: GenaiClient | GenaiAsyncClient,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    broker: None = None,
) -> AbstractAsyncContextManager[FleetDispatcher[GenerateContentResponse]]: ...
@overload
def open_fleet(
    client: Any,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    broker: None = None,
) -> AbstractAsyncContextManager[FleetDispatcher[Any]]: ...
@overload
def open_fleet(
    client: AsyncAnthropic | BedrockClient,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    broker: str,
    broker_name: str = "default",
    lease_ttl_ms: int = 10_000,
    broker_timeout_ms: int = 30_000,
) -> AbstractAsyncContextManager[BrokeredFleet[Message]]: ...
@overload
def open_fleet(
    client: AsyncOpenAI,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    broker: str,
    broker_name: str = "default",
    lease_ttl_ms: int = 10_000,
    broker_timeout_ms: int = 30_000,
) -> AbstractAsyncContextManager[BrokeredFleet[ChatCompletion | Response]]: ...
@overload
def open_fleet(
    client: Any,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    broker: str,
    broker_name: str = "default",
    lease_ttl_ms: int = 10_000,
    broker_timeout_ms: int = 30_000,
) -> AbstractAsyncContextManager[BrokeredFleet[Any]]: ...


def open_fleet(
    client: Any,
    *,
    policy: RoutingPolicy | None = None,
    drain_timeout_ms: int | None = None,
    prices: PriceTable | None = None,
    on_result: OnResult | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    broker: str | None = None,
    **broker_options: Any,
) -> AbstractAsyncContextManager[FleetDispatcher[Any] | BrokeredFleet[Any]]:
    """Open a fleet over ``client``: an async context manager yielding a :class:`FleetDispatcher`.

    Use it as ``async with open_fleet(client) as fleet:``; awaited, entered with a plain
    ``with`` or used as the fleet itself, it raises :class:`~llmfleet.FleetUsageError`
    saying so. For type checkers the fleet's calls return the client's own type
    (``anthropic.types.Message`` for ``AsyncAnthropic`` and ``BedrockClient``,
    ``ChatCompletion | Response`` for ``AsyncOpenAI``, ``Any`` for another provider).

    The fleet owns a task group (the flusher and one task per in-flight batch) that lives as
    long as the ``async with`` block. On normal exit new calls are refused, the queue is
    flushed at once (reason ``drain``) and the block returns when every caller has its
    outcome. On exit by exception or cancellation, queued callers get
    :class:`~llmfleet.FleetClosedError`, in-flight batches are cancelled with the provider
    (shielded, bounded by a few seconds), and the body's exception propagates as itself,
    even when the callers share an outer task group with the fleet and their
    ``FleetClosedError`` cancels that group meanwhile.

    :param client: ``anthropic.AsyncAnthropic`` or any :class:`~llmfleet.providers.Provider`.
    :param policy: routing and flushing rules (:class:`~llmfleet.RoutingPolicy`).
    :param drain_timeout_ms: on normal exit, wait at most this long for in-flight batches;
        then cancel them with the provider and fail their callers with ``FleetClosedError``.
        ``None`` (default) waits for every batch to end.
    :param prices: the price table for cost figures (default: list prices).
    :param on_result: called with a :class:`~llmfleet.ResultEvent` as each call ends.
    :param journal: a :class:`~llmfleet.Journal` or the path of one (an SQLite file): the
        fleet records every batch before creating it and every result as it arrives, and
        on opening re-attaches to the batches an earlier fleet left running (they are never
        created again) and answers calls whose result is stored (docs/journal.md).
    :param broker: a Redis URL (``"redis://host:6379/0"``, needs ``llmfleet[redis]``): the
        fleet spans every process that opens it there (see the README, "One fleet across
        processes"); it yields a :class:`~llmfleet.broker.BrokeredFleet`. Its options:
        ``broker_name`` (fleets sharing one Redis), ``lease_ttl_ms`` (how soon a dead
        leader's work is taken over), ``broker_timeout_ms`` (how long calls wait for an
        unreachable Redis before :class:`~llmfleet.BrokerError`).
    :raises TypeError: no adapter knows this client, or an option is misplaced.
    :raises JournalError: the journal cannot be used (at ``async with``).
    """
    if broker is not None:
        if journal is not None:
            raise TypeError(
                "open_fleet(broker=...) keeps its batch records in Redis; pass journal= only to a"
                " one-process fleet"
            )
        from .broker import open_broker_fleet

        return open_broker_fleet(
            client,
            broker=broker,
            policy=policy,
            drain_timeout_ms=drain_timeout_ms,
            prices=prices,
            on_result=on_result,
            **broker_options,
        )
    if broker_options:
        raise TypeError(f"{', '.join(sorted(broker_options))}: only with open_fleet(broker=...)")
    fleet = FleetDispatcher(
        client,
        policy=policy,
        drain_timeout_ms=drain_timeout_ms,
        prices=prices,
        on_result=on_result,
        journal=journal,
    )
    return FleetContext(run_dispatcher(fleet))
