"""Leadership: one process at a time holds the lease and serves every process's batch calls.

The leader reads the calls stream through a consumer group and submits each call into its
own local fleet (over :class:`~llmfleet.broker._provider.LeaderProvider`), one task per call,
then delivers the outcome to the calling process's results stream. A call's stream entry stays
pending until its outcome is delivered, so a successor finds every call a dead leader left:
those in a recorded batch are answered by re-attaching to it, the rest are submitted again.

Each call is queued with the instant it was added to the stream, not the instant this leader
read it, so its window and its deadline count from its caller's submit whoever leads
(docs/design.md §9.3). That instant is the entry id's, stamped by the Redis server's clock;
the leader maps it onto its own clock by reading the server's time (``_sync_clock``), so the
clocks of the callers' machines never enter it.
"""

from __future__ import annotations

import json
import logging
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final, cast, final

import anyio

# The one-process fleet's timings: a 404 this soon after create is the provider's lag (the
# board's grace), the poll interval's growth, and after an unanswered create how long to keep
# looking for the batch it may have made (the create gate's window and first pause).
from .._board import _BACKOFF, NOT_FOUND_GRACE_S
from .._create_gate import RECONCILE_FIRST_S, RECONCILE_WINDOW_S
from ..errors import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultError,
    BatchResultMissingError,
)
from ..providers import ErrorKind
from ._codec import dump_error, dump_value
from ._provider import CURRENT, Served
from ._redis import BROKER_DOWN, BROKER_ERRORS, GROUP
from ._store import LEADER_LOST

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    import coredis
    from anyio.abc import TaskGroup, TaskStatus
    from coredis.response.types import StreamEntry

    from .. import FleetDispatcher
    from .._policy import RoutingPolicy
    from ..providers import ItemResult
    from ._provider import LeaderProvider
    from ._redis import Keys, Scripts
    from ._store import FlushRecord, RedisBatchStore, StoredCall

__all__ = ["Leadership"]

logger = logging.getLogger("llmfleet.broker")

#: Entries read from the calls stream at once (a burst lands in one read, so in one flush).
READ_COUNT: Final = 1000
#: How long a read blocks; also how soon a leader notices it should stop reading.
READ_BLOCK_MS: Final = 1000


@final
class Leadership:
    """Takes the lease when it is free, leads while it holds it, and steps down cleanly."""

    def __init__(
        self,
        *,
        redis: coredis.Redis[str],
        keys: Keys,
        scripts: Scripts,
        store: RedisBatchStore,
        provider: LeaderProvider,
        fleet: FleetDispatcher,
        policy: RoutingPolicy,
        origin: str,
        ttl_s: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._store = store
        self._lease = store.lease
        self._provider = provider
        self._fleet = fleet
        self._policy = policy
        self._origin = origin
        self._ttl = ttl_s
        self._scope: anyio.CancelScope | None = None
        self._lead_scope: anyio.CancelScope | None = None
        # Calls being served, by call id: the scope a caller's cancel fires.
        self._serving: dict[str, anyio.CancelScope] = {}
        # Calls whose callers left before the leader served them (their outcome is dropped).
        self._dropped: set[str] = set()
        #: Terms this process has led (a takeover test reads it).
        self.terms = 0
        # The Redis server's clock minus this process's (anyio.current_time), in seconds:
        # how an entry id's stamp becomes an instant of this process (None: not measured).
        self._offset: float | None = None

    @property
    def leading(self) -> bool:
        return self._lease.active

    # -- the lease -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        with anyio.CancelScope() as self._scope:
            task_status.started()
            while True:
                value: Any = None
                try:
                    with anyio.fail_after(self._ttl):
                        value = await self._scripts.acquire(
                            keys=[self._keys.lease, self._keys.fence],
                            args=[self._origin, int(self._ttl * 1000)],
                        )
                except BROKER_DOWN as exc:
                    logger.debug("lease: %s", exc)
                if isinstance(value, str):
                    await self._lead(value)
                # A released lease is taken at once; a dead leader's runs out within ttl:
                # look again well within that.
                await self._released(self._ttl / 3)

    async def _released(self, longest: float) -> None:
        """Wait until the lease is released (its holder leaves a notice as it lets go: the
        release script) or ``longest`` seconds have passed."""
        end = anyio.current_time() + longest
        while True:
            left = end - anyio.current_time()
            if left < 0.01:  # BLPOP's 0 would block for ever
                await anyio.sleep(max(left, 0))
                return
            block = min(left, READ_BLOCK_MS / 1000)
            try:
                with anyio.fail_after(block + self._ttl):
                    notice = await self._redis.blpop([self._keys.released], timeout=block)
            except BROKER_DOWN as exc:
                logger.debug("waiting for the lease: %s", exc)
                await anyio.sleep(max(left, 0))
                return
            if notice:
                return

    async def stop(self) -> None:
        """Step down (if leading) without cancelling any batch: they are the successor's."""
        if self._lease.active:
            self._lease.active = False
            # A create already sent gets its batch id recorded first, so the successor
            # re-attaches to it rather than looking for it.
            with anyio.move_on_after(self._ttl, shield=True):
                await self._provider.creates_done()
        if self._lead_scope is not None:
            self._lead_scope.cancel()
        if self._scope is not None:
            self._scope.cancel()

    def _lose(self, why: object) -> None:
        if self._lease.active:
            logger.warning("stepping down as the fleet's leader: %s", why)
        self._lease.active = False
        if self._lead_scope is not None:
            self._lead_scope.cancel()

    async def _lead(self, value: str) -> None:
        self._lease.value = value
        self._lease.active = True
        self._provider.new_term()
        self.terms += 1
        logger.info("%s leads the fleet (lease %s)", self._origin, value)
        try:
            async with anyio.create_task_group() as tg:
                self._lead_scope = tg.cancel_scope
                tg.start_soon(self._renew)
                try:
                    await self._sync_clock()
                    await self._take_over(tg)
                    await self._consume(tg)
                except LEADER_LOST as exc:
                    self._lose(exc)
        finally:
            self._lease.active = False
            self._lead_scope = None
            self._serving.clear()
            self._dropped.clear()
            with anyio.move_on_after(1.0, shield=True):
                try:
                    await self._scripts.release(
                        keys=[self._keys.lease, self._keys.released],
                        args=[value, int(self._ttl * 1000)],
                    )
                except BROKER_ERRORS:
                    pass  # it runs out on its own

    async def _renew(self) -> None:
        last = anyio.current_time()
        while True:
            await anyio.sleep(self._ttl / 3)
            try:
                with anyio.fail_after(self._ttl / 3):
                    kept: Any = await self._scripts.renew(
                        keys=[self._keys.lease], args=[self._lease.value, int(self._ttl * 1000)]
                    )
            except BROKER_DOWN as exc:
                # Redis may be back in a moment; the lease is ours until it may have run out.
                if anyio.current_time() - last > self._ttl * 0.6:
                    self._lose(f"could not renew the lease ({exc})")
                    return
                continue
            if kept != 1:
                self._lose("the lease ran out and was taken")
                return
            last = anyio.current_time()
            try:
                with anyio.fail_after(self._ttl / 3):
                    await self._sync_clock()  # the two clocks drift apart slowly
            except BROKER_DOWN as exc:
                logger.debug("could not read the broker's clock: %s", exc)

    async def _sync_clock(self) -> None:
        """Measure the Redis server's clock against this process's (to within half a round
        trip), so that a call's entry id tells when it arrived (:meth:`_arrival`)."""
        before = anyio.current_time()
        now_ms: Any = await self._scripts.now_ms(keys=[self._keys.calls])
        after = anyio.current_time()
        self._offset = int(now_ms) / 1000 - (before + after) / 2

    def _arrival(self, entry_id: str) -> float:
        """When the call in stream entry ``entry_id`` arrived, on this process's clock.

        The entry id's milliseconds are the Redis server's time when the caller's XADD ran
        (just after its submit), and the offset comes from the same server's clock: no two
        machines' clocks are compared. Never later than now (Redis keeps entry ids growing
        even if its clock steps back, and a call cannot arrive in the future); a call read
        long after it arrived (no leader meanwhile) has spent its window and is flushed at
        once."""
        now = anyio.current_time()
        if self._offset is None:
            return now
        try:
            stamp = int(entry_id.split("-", 1)[0]) / 1000
        except ValueError:
            return now
        return min(now, stamp - self._offset)

    # -- taking over -----------------------------------------------------------------------

    async def _take_over(self, tg: TaskGroup) -> None:
        """Re-attach to the batches a previous leader recorded, reconcile its unanswered
        creates before any new create, and serve again the calls it left unanswered."""
        try:
            await self._redis.xgroup_create(self._keys.calls, GROUP, identifier="0", mkstream=True)
        except BROKER_ERRORS as exc:
            if "BUSYGROUP" not in str(exc) and "already exists" not in str(exc):
                raise
        attached: set[str] = set()
        for flush in await self._store.load():
            if flush.batch_id is None:
                found = await self._reconcile(flush)
                if found is None:
                    logger.info("flush %s made no batch: its calls are sent again", flush.flush_id)
                    await self._store.record_void(flush.flush_id)
                    continue
                await self._store.record_created(flush, found)
            logger.info("re-attaching to batch %s (%d calls)", flush.batch_id, len(flush.calls))
            attached.update(call.entry_id for call in flush.calls)
            tg.start_soon(self._reattach_or_step_down, flush)
        start = "0-0"
        while True:
            reply: Any = await self._redis.xautoclaim(
                self._keys.calls, GROUP, self._origin, min_idle_time=0, start=start, count=1000
            )
            start, entries = reply[0], reply[1]
            for entry in entries:
                if entry.identifier not in attached:
                    await self._handle(entry, tg)
            if start == "0-0":
                break

    async def _reconcile(self, flush: FlushRecord) -> str | None:
        """The batch an unanswered create made, if it made one: by its tag where the adapter
        tags its creates, else by size and time."""
        exclude = await self._store.known_batch_ids()
        give_up = anyio.current_time() + RECONCILE_WINDOW_S
        delay = RECONCILE_FIRST_S
        provider = self._provider
        tagged = bool(flush.tag) and hasattr(provider.inner, "find_tagged")
        while True:
            try:
                # Through the wrapper: a list request counts in the fleet's budget too.
                if tagged:
                    found = await provider.find_tagged(
                        flush.tag, created_after=flush.created_after, exclude=exclude
                    )
                else:
                    found = await provider.find_batch(
                        count=len(flush.calls), created_after=flush.created_after, exclude=exclude
                    )
            except Exception as exc:
                if provider.classify(exc) is None or isinstance(exc, LEADER_LOST):
                    raise
                found = None
            # A create sent just before its sender died may land late: keep looking a while.
            if found is not None or anyio.current_time() >= give_up:
                return found
            await anyio.sleep(delay)
            delay = min(delay * 2, RECONCILE_WINDOW_S / 4)

    async def _reattach_or_step_down(self, flush: FlushRecord) -> None:
        try:
            await self._reattach(flush)
        except LEADER_LOST as exc:
            self._lose(exc)
        except Exception as exc:
            # Not a rule above (a bug, an error the adapter cannot classify): the record
            # stays, for the next term to try again; this one ends rather than the fleet.
            logger.exception("re-attaching to batch %s failed", flush.batch_id)
            self._lose(exc)

    async def _reattach(self, flush: FlushRecord) -> None:
        """Poll a recorded batch to its end and deliver its results (never re-create it)."""
        assert flush.batch_id is not None
        batch_id = flush.batch_id
        calls = {call.custom_id: call for call in flush.calls}
        provider = self._provider
        delay = self._policy.poll_interval_ms / 1000
        longest = self._policy.poll_max_interval_ms / 1000
        began = anyio.current_time()
        failure: BaseException | None = None
        while True:
            try:
                status = await provider.poll(batch_id)
            except Exception as exc:
                info = provider.classify(exc)
                if info is None or isinstance(exc, LEADER_LOST):
                    raise
                late = anyio.current_time() - began > NOT_FOUND_GRACE_S
                if info.kind is ErrorKind.FATAL or (info.kind is ErrorKind.NOT_FOUND and late):
                    failure = exc
                    break
                await anyio.sleep(max(delay, info.retry_after or 0))
            else:
                if status.ended:
                    break
                await anyio.sleep(delay)
            delay = min(delay * _BACKOFF, longest)
        # Once the results come, they are all delivered even if this leader steps down
        # meanwhile (shielded, bounded by the lease's ttl): the batch is done with, and its
        # record closed, rather than left for a successor to fetch again.
        with anyio.CancelScope(shield=True) as delivering:
            delivering.deadline = anyio.current_time() + self._ttl
            await self._deliver_all(flush, batch_id, calls, failure)

    async def _deliver_all(
        self,
        flush: FlushRecord,
        batch_id: str,
        calls: dict[str, StoredCall],
        failure: BaseException | None,
    ) -> None:
        if failure is None:
            lines = cast("AsyncGenerator[tuple[str, ItemResult]]", self._provider.results(batch_id))
            async with aclosing(lines):
                async for custom_id, item in lines:
                    call = calls.pop(custom_id, None)
                    if call is not None:
                        await self._deliver(call, self._encode(batch_id, custom_id, item))
        for custom_id, call in calls.items():
            error: BatchResultError = BatchResultMissingError(
                "the batch ended with no result for this call",
                batch_id=batch_id,
                custom_id=custom_id,
            )
            if failure is not None:
                error = BatchResultError(
                    f"could not get this call's result ({type(failure).__name__}: {failure})",
                    batch_id=batch_id,
                    custom_id=custom_id,
                )
            await self._deliver(call, dump_error(error))
        await self._store.record_finished(flush.flush_id)

    def _encode(self, batch_id: str, custom_id: str, item: ItemResult) -> str:
        if item.kind == "succeeded":
            return dump_value(self._provider.inner, item.value)
        error: BatchResultError
        if item.kind == "errored":
            error = BatchRequestError(
                item.error_type, item.message, batch_id=batch_id, custom_id=custom_id
            )
        elif item.kind == "expired":
            error = BatchRequestExpiredError(
                "the batch expired before this call was processed; submit it again",
                batch_id=batch_id,
                custom_id=custom_id,
            )
        else:
            error = BatchRequestCanceledError(
                "the batch was canceled before this call was processed",
                batch_id=batch_id,
                custom_id=custom_id,
            )
        return dump_error(error)

    async def _deliver(self, call: StoredCall, payload: str) -> None:
        if call.call_id in self._dropped:
            self._dropped.discard(call.call_id)
            payload = ""
        await self._store.deliver(call, payload)

    # -- serving calls ---------------------------------------------------------------------

    async def _consume(self, tg: TaskGroup) -> None:
        while True:
            reply = await self._redis.xreadgroup(
                GROUP,
                self._origin,
                streams={self._keys.calls: ">"},
                count=READ_COUNT,
                block=READ_BLOCK_MS,
            )
            if reply:
                for entry in reply.get(self._keys.calls, ()):
                    await self._handle(entry, tg)

    async def _handle(self, entry: StreamEntry, tg: TaskGroup) -> None:
        fields = entry.field_values
        call_id = str(fields.get("id", ""))
        if fields.get("t") == "cancel":
            scope = self._serving.get(call_id)
            if scope is not None:
                scope.cancel()
            else:
                self._dropped.add(call_id)
            await self._store.deliver((call_id, str(entry.identifier), str(fields["o"])), "")
            return
        scope = self._serving[call_id] = anyio.CancelScope()
        tg.start_soon(self._serve, str(entry.identifier), fields, scope, name=f"serve {call_id}")

    async def _serve(self, entry_id: str, fields: Any, scope: anyio.CancelScope) -> None:
        call_id, origin = str(fields["id"]), str(fields["o"])
        served = Served(call_id, entry_id, origin)
        CURRENT.set(served)
        payload = ""
        try:
            with scope:
                if call_id in self._dropped:
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()
                params = json.loads(fields["p"])
                try:
                    value = await self._submit(params, fields, entry_id)
                    payload = dump_value(self._provider.inner, value)
                except Exception as exc:
                    if not self._lease.active:
                        # Refused because this leader is stepping down (no create without the
                        # lease): not the call's outcome. It stays pending for the successor.
                        return
                    payload = dump_error(exc)
            # Here the call has its outcome, or its caller left (payload ""): either way the
            # entry leaves the pending list. Shielded: a leader stepping down still hands
            # over what it holds (a lost lease makes these writes fail at once instead).
            self._dropped.discard(call_id)
            with anyio.CancelScope(shield=True) as delivering:
                delivering.deadline = anyio.current_time() + self._ttl
                await self._store.deliver(served_call(served), payload)
                await self._provider.finished(served)
        except LEADER_LOST as exc:
            self._lose(exc)
        except BaseException:
            # Cancelled from outside its own scope: the term is ending (a step-down, or the
            # process's fleet cancelled). Marked before the cancellation unwinds further, so
            # the batch this call leaves is not cancelled at the provider: it is the
            # successor's to re-attach (only a caller's own cancel withdraws a call).
            self._lease.active = False
            raise
        finally:
            self._serving.pop(call_id, None)

    async def _submit(self, params: dict[str, Any], fields: Any, entry_id: str) -> Any:
        # The window and the budget count from the caller's submit, not from this read
        # (whichever leader reads it).
        budget = fields.get("b", "")
        return await self._fleet._submit_arrived(
            params,
            arrival=self._arrival(entry_id),
            budget_ms=None if budget == "" else float(budget),
        )


def served_call(served: Served) -> tuple[str, str, str]:
    return (served.call_id, served.entry_id, served.origin)
