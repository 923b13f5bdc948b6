"""One fleet across many processes: :class:`BrokeredFleet` and :func:`open_broker_fleet`.

Each process routes its own calls. Direct calls stay in the process. A batch-route call is
added to the fleet's calls stream in Redis and its caller waits on a local slot, filled by the
process's listener from its own results stream. One process at a time leads (``_leader.py``):
it forms the fleet's batches under the same rules as one process, and answers every caller.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import secrets
import socket
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Generic, final, overload

import anyio
from typing_extensions import TypeVar

from .. import FleetDispatcher
from .._open import FleetContext
from .._policy import RoutingPolicy
from ..errors import BrokerError, FleetClosedError
from ..providers import Provider, adapter_for
from ._codec import dump_params, load_outcome
from ._leader import READ_BLOCK_MS, Leadership
from ._provider import LeaderProvider
from ._redis import BROKER_DOWN, BROKER_ERRORS, Keys, Scripts, check_name, connect, parse_url
from ._store import Lease, RedisBatchStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anthropic import AsyncAnthropic
    from anthropic.types import Message
    from anyio.abc import TaskGroup, TaskStatus

    # Optional dependencies: their types only, for type checkers.
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

    from .._stats import FleetStats, OnResult
    from ..pricing import PriceTable
    from ..providers.bedrock import BedrockClient

__all__ = ["BrokeredFleet", "open_broker_fleet"]

logger = logging.getLogger("llmfleet.broker")

_NUMBER: Final = (int, float)
#: How long a caller's cancel may take to reach the broker.
CANCEL_SEND_S: Final = 2.0
#: Pause between attempts to reach a broker that went away.
RECONNECT_PAUSE_S: Final = 0.25
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")
#: What the fleet's calls return, as for FleetDispatcher (typing only).
R_co = TypeVar("R_co", covariant=True, default=Any)


@final
class _Slot:
    __slots__ = ("error", "event", "payload")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.payload = ""
        self.error: BaseException | None = None


@final
class BrokeredFleet(Generic[R_co]):
    """A fleet shared by every process that opens it on the same broker and ``broker_name``.

    Same calls and results as :class:`~llmfleet.FleetDispatcher`: ``submit``, ``submit_sync``
    and ``submit_batch`` take the SDK's create arguments and return the SDK's own type on
    every route, typed like the dispatcher's (``BrokeredFleet[Message]`` over an
    ``AsyncAnthropic``). Get one from ``open_fleet(client, broker="redis://...")``.
    """

    # The response type follows the client's type (typing only: one __init__ runs).
    @overload
    def __init__(
        self: BrokeredFleet[Message],
        client: AsyncAnthropic | BedrockClient,
        *,
        broker: str,
        broker_name: str = "default",
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
        lease_ttl_ms: int = 10_000,
        broker_timeout_ms: int = 30_000,
    ) -> None: ...
    @overload
    def __init__(
        self: BrokeredFleet[ChatCompletion | Response],
        client: AsyncOpenAI,
        *,
        broker: str,
        broker_name: str = "default",
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
        lease_ttl_ms: int = 10_000,
        broker_timeout_ms: int = 30_000,
    ) -> None: ...
    @overload
    def __init__(
        self: BrokeredFleet[Any],
        client: Any,
        *,
        broker: str,
        broker_name: str = "default",
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
        lease_ttl_ms: int = 10_000,
        broker_timeout_ms: int = 30_000,
    ) -> None: ...
    def __init__(
        self,
        client: Any,
        *,
        broker: str,
        broker_name: str = "default",
        policy: RoutingPolicy | None = None,
        drain_timeout_ms: int | None = None,
        prices: PriceTable | None = None,
        on_result: OnResult | None = None,
        lease_ttl_ms: int = 10_000,
        broker_timeout_ms: int = 30_000,
    ) -> None:
        if policy is None:
            policy = RoutingPolicy()
        elif not isinstance(policy, RoutingPolicy):
            raise TypeError(f"policy must be a RoutingPolicy, got {type(policy).__name__}")
        for name, value, least in (
            ("lease_ttl_ms", lease_ttl_ms, 100),
            ("broker_timeout_ms", broker_timeout_ms, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least} (milliseconds), got {value!r}")
        self.policy = policy
        self._keys = Keys.of(check_name(broker_name))
        self._timeout = broker_timeout_ms / 1000
        #: This process's name in the fleet: results come back on its own stream.
        self.origin = "-".join(
            [_UNSAFE.sub("_", socket.gethostname())[:32], str(os.getpid()), secrets.token_hex(3)]
        )
        self._adapter = adapter_for(client)
        self._redis = connect(parse_url(broker), timeout_s=self._timeout)
        self._scripts = Scripts(self._redis)
        self._store = RedisBatchStore(self._redis, self._keys, self._scripts, Lease())
        self._provider = LeaderProvider(self._adapter, self._store, policy.batch_api_rpm)
        # Over the leader's provider (typed Any), answering with the client's type.
        self._local: FleetDispatcher[R_co] = FleetDispatcher(
            self._provider,
            policy=policy,
            drain_timeout_ms=drain_timeout_ms,
            prices=prices,
            on_result=on_result,
        )
        self._drain_timeout = None if drain_timeout_ms is None else drain_timeout_ms / 1000
        self._leadership = Leadership(
            redis=self._redis,
            keys=self._keys,
            scripts=self._scripts,
            store=self._store,
            provider=self._provider,
            fleet=self._local,
            policy=policy,
            origin=self.origin,
            ttl_s=lease_ttl_ms / 1000,
        )
        self._slots: dict[str, _Slot] = {}
        self._ids = itertools.count(1)
        self._state = "new"
        self._epoch = ""
        self._tg: TaskGroup | None = None
        self._answered: anyio.Event | None = None

    def __repr__(self) -> str:
        role = "leader" if self.leading else "member"
        waiting = len(self._slots)
        return f"<BrokeredFleet {self.origin} {role} state={self._state} waiting={waiting}>"

    # -- public API ---------------------------------------------------------------------

    @property
    def stats(self) -> FleetStats:
        """This process's view: its direct calls, and the batches it ran while it led."""
        return self._local.stats

    @property
    def closed(self) -> bool:
        """True once the fleet accepts no more calls from this process."""
        return self._state != "open"

    @property
    def leading(self) -> bool:
        """True while this process holds the lease and forms the fleet's batches."""
        return self._leadership.leading

    @property
    def terms_led(self) -> int:
        """How many times this process has taken the lease."""
        return self._leadership.terms

    @property
    def provider(self) -> Provider:
        """The adapter over the client this fleet was opened with."""
        return self._adapter

    @overload
    def client(
        self: BrokeredFleet[Message], *, latency_budget_ms: float | None = None
    ) -> AsyncAnthropic: ...
    @overload
    def client(
        self: BrokeredFleet[ChatCompletion | Response], *, latency_budget_ms: float | None = None
    ) -> AsyncOpenAI: ...
    @overload
    def client(self, *, latency_budget_ms: float | None = None) -> Any: ...
    def client(self, *, latency_budget_ms: float | None = None) -> Any:
        """An SDK client whose create calls go through this fleet: as
        :meth:`FleetDispatcher.client <llmfleet.FleetDispatcher.client>` (docs/design.md §12).
        """
        from .._transport import fleet_client

        return fleet_client(self, latency_budget_ms)

    async def submit(self, *, latency_budget_ms: float | None = None, **params: Any) -> R_co:
        """Make one create call, by whichever route its budget allows (same rules and
        errors as :meth:`FleetDispatcher.submit <llmfleet.FleetDispatcher.submit>`).

        :raises BrokerError: the broker could not carry a batch-route call.
        """
        if latency_budget_ms is None:
            return await self.submit_sync(**params)
        if isinstance(latency_budget_ms, bool) or not isinstance(latency_budget_ms, _NUMBER):
            raise TypeError(f"latency_budget_ms must be a number of ms, got {latency_budget_ms!r}")
        if not latency_budget_ms >= 0:
            raise ValueError(
                f"latency_budget_ms must be >= 0 (how long you can wait), got {latency_budget_ms}"
            )
        if latency_budget_ms <= self.policy.sync_max_latency_ms:
            return await self.submit_sync(**params)
        flex_max = self.policy.flex_max_latency_ms
        local = self._local
        if flex_max is not None and latency_budget_ms <= flex_max and local._flex_ok(params):
            # The flex tier is a synchronous call: it stays in this process, as the direct
            # route does (docs/design.md §2.3).
            self._check_open()
            flexed: R_co = await local._flex(params, latency_budget_ms / 1000)
            return flexed
        return await self._remote(params, float(latency_budget_ms))

    async def submit_sync(self, **params: Any) -> R_co:
        """Make the call on the direct route, now, from this process."""
        self._check_open()
        return await self._local.submit_sync(**params)

    async def submit_batch(self, **params: Any) -> R_co:
        """Put the call in the fleet's next batch and wait for its result."""
        return await self._remote(params, None)

    # -- the batch route through Redis ----------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "open":
            raise FleetClosedError(
                "the fleet is not open yet: use it as `async with open_fleet(...) as fleet:`"
                if self._state == "new"
                else "the fleet is closed: submit calls inside `async with open_fleet(...)`"
            )

    async def _remote(self, params: dict[str, Any], budget_ms: float | None) -> R_co:
        self._check_open()
        self._adapter.check(params)
        body = dump_params(params)
        call_id = f"{self.origin}.{next(self._ids)}"
        slot = self._slots[call_id] = _Slot()
        fields = {
            "t": "call",
            "id": call_id,
            "o": self.origin,
            "p": body,
            "b": "" if budget_ms is None else repr(budget_ms),
            # The submit's wall time, for leaders of earlier versions: a leader now reads the
            # arrival from the entry id, the Redis server's clock (_leader._arrival).
            "a": repr(time.time()),
        }
        try:
            with anyio.fail_after(self._timeout):
                await self._redis.xadd(self._keys.calls, fields)
        except BROKER_DOWN as exc:
            self._forget(call_id)
            raise BrokerError(
                f"could not send the call to the broker ({exc}); submit it again, or use "
                "submit_sync()"
            ) from exc
        except BaseException:
            # Cancelled mid-send: it may have arrived, so it is withdrawn like any other.
            self._leave(call_id)
            raise
        try:
            await slot.event.wait()
        except BaseException:
            self._leave(call_id)
            raise
        if slot.error is not None:
            raise slot.error
        value: R_co
        value, error = load_outcome(self._adapter, slot.payload)
        if error is not None:
            raise error
        return value

    def _forget(self, call_id: str) -> None:
        self._slots.pop(call_id, None)
        if not self._slots and self._answered is not None:
            self._answered.set()

    def _leave(self, call_id: str) -> None:
        """The caller left: withdraw its call (or drop its result) fleet-wide."""
        if call_id in self._slots:
            self._forget(call_id)
            if self._tg is not None:
                self._tg.start_soon(self._send_cancel, call_id)

    async def _send_cancel(self, call_id: str) -> None:
        with anyio.move_on_after(CANCEL_SEND_S, shield=True):
            try:
                await self._redis.xadd(
                    self._keys.calls, {"t": "cancel", "id": call_id, "o": self.origin}
                )
            except BROKER_ERRORS as exc:
                logger.debug("could not send the cancel of %s: %s", call_id, exc)

    def _fail_waiting(self, make_error: Any) -> None:
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.error = make_error()
            slot.event.set()
        if self._answered is not None:
            self._answered.set()

    # -- the listener -------------------------------------------------------------------

    async def _listen(self, *, task_status: TaskStatus[None]) -> None:
        key = self._keys.results(self.origin)
        last = "0-0"
        task_status.started()
        while True:
            try:
                reply = await self._redis.xread({key: last}, count=1000, block=READ_BLOCK_MS)
                entries = reply.get(key, ()) if reply else ()
                for entry in entries:
                    fields = entry.field_values
                    slot = self._slots.get(str(fields["id"]))
                    if slot is not None:
                        slot.payload = str(fields["r"])
                        self._forget(str(fields["id"]))
                        slot.event.set()
                if entries:
                    last = str(entries[-1].identifier)
                    await self._redis.xdel(key, [str(e.identifier) for e in entries])
                elif self._slots:
                    # Quiet while calls wait: make sure Redis still has the fleet.
                    await self._check_epoch()
            except BROKER_DOWN as exc:
                await self._recover(exc)

    async def _set_epoch(self) -> None:
        with anyio.fail_after(self._timeout):
            await self._redis.set(self._keys.epoch, secrets.token_hex(8), condition=_nx())
            self._epoch = str(await self._redis.get(self._keys.epoch))

    async def _check_epoch(self) -> None:
        with anyio.fail_after(self._timeout):
            epoch = await self._redis.get(self._keys.epoch)
        if epoch != self._epoch:
            logger.error("the broker lost the fleet's state: failing %d calls", len(self._slots))
            self._fail_waiting(
                lambda: BrokerError(
                    "the broker restarted and lost the fleet's calls (run Redis with "
                    "persistence to survive restarts); submit the call again"
                )
            )
            await self._set_epoch()

    async def _recover(self, exc: BaseException) -> None:
        """Wait for Redis to come back; fail the waiting calls if it takes too long, or if
        it came back without the fleet's state."""
        logger.warning("broker unreachable (%s); retrying", exc)
        give_up = anyio.current_time() + self._timeout
        while True:
            try:
                await self._check_epoch()
                return
            except BROKER_DOWN as again:
                if anyio.current_time() >= give_up:
                    why = (
                        f"the broker was unreachable for {self._timeout:g} s "
                        f"({type(again).__name__}: {again}); submit the call again"
                    )
                    if self._slots:
                        self._fail_waiting(partial(BrokerError, why))
                    give_up = anyio.current_time() + self._timeout
                await anyio.sleep(RECONNECT_PAUSE_S)


def _nx() -> Any:
    from coredis.tokens import PureToken

    return PureToken.NX


def open_broker_fleet(
    client: Any, **options: Any
) -> AbstractAsyncContextManager[BrokeredFleet[Any]]:
    """``open_fleet(client, broker=...)``: see :func:`llmfleet.open_fleet` (which types it by
    the client). Options are checked here, before the block is entered."""
    return FleetContext(_run(BrokeredFleet(client, **options)))


@asynccontextmanager
async def _run(fleet: BrokeredFleet[Any]) -> AsyncIterator[BrokeredFleet[Any]]:
    # What leaves the block leaves it as itself: coredis's client owns a task group, which
    # would wrap an exception raised through it in an ExceptionGroup, so it is raised after.
    error: BaseException | None = None
    async with fleet._redis:
        try:
            async with _serve(fleet):
                yield fleet
        except BaseException as exc:
            error = exc
    if error is not None:
        try:
            raise error
        finally:
            error = None


@asynccontextmanager
async def _serve(fleet: BrokeredFleet[Any]) -> AsyncIterator[None]:
    try:
        await fleet._set_epoch()
        with anyio.fail_after(fleet._timeout):
            await fleet._scripts.load()
    except BROKER_DOWN as exc:
        raise BrokerError(
            f"cannot reach the broker ({type(exc).__name__}: {exc}); is Redis running?"
        ) from None
    body_error: BaseException | None = None
    async with fleet._local:
        async with anyio.create_task_group() as tg:
            fleet._tg = tg
            await tg.start(fleet._listen)
            await tg.start(fleet._leadership.run)
            fleet._state = "open"
            try:
                yield
            except BaseException as exc:
                body_error = exc
                fleet._state = "closed"
                for call_id in list(fleet._slots):
                    fleet._leave(call_id)
                fleet._fail_waiting(
                    lambda: FleetClosedError(
                        "the fleet closed because the `async with` block raised; this call "
                        "was not answered. Submit it again"
                    )
                )
                with anyio.CancelScope(shield=True):
                    await fleet._leadership.stop()
            else:
                fleet._state = "closed"
                # Normal exit: every caller of this process gets its outcome from whoever
                # leads; this process leads on meanwhile if it holds the lease.
                fleet._answered = anyio.Event()
                if fleet._slots:
                    limit = math.inf if fleet._drain_timeout is None else fleet._drain_timeout
                    with anyio.move_on_after(limit):
                        await fleet._answered.wait()
                    for call_id in list(fleet._slots):
                        fleet._leave(call_id)
                    fleet._fail_waiting(
                        lambda: FleetClosedError(
                            "the fleet closed after drain_timeout_ms; this call was not "
                            "answered. Submit it again"
                        )
                    )
                await fleet._leadership.stop()
            # The listener and the lease loop stop; cancels being sent finish (shielded,
            # bounded by CANCEL_SEND_S).
            tg.cancel_scope.cancel()
        if body_error is not None:
            # Raised inside the local fleet's block, so that it aborts too (docs/design.md §5).
            try:
                raise body_error
            finally:
                body_error = None
