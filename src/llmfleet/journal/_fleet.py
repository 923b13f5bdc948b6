"""What a fleet does with a journal: the calls the dispatcher makes at its hook points.

The fleet (``llmfleet/_open.py``, ``llmfleet/_dispatcher.py``, ``llmfleet/_batch.py``) calls,
in order of a batch's life:

- :meth:`FleetJournal.opened` around the whole fleet, entered before its task group:
  :meth:`FleetJournal.open` (a bad journal fails ``async with`` with
  :class:`~llmfleet.JournalError`, unwrapped), then :meth:`FleetJournal.reconcile` before
  the fleet accepts calls: flushes whose create got no recorded answer are looked for at the
  provider, then every open flush with a batch id is handed back to be re-attached (never
  created again); :meth:`FleetJournal.aclose` once the fleet has ended;
- :meth:`FleetJournal.lookup` at submit: a call in a re-attached batch waits for it; a call
  whose result is stored is answered from it (:meth:`FleetJournal.answer`), with no request;
  else it is sent, and its key held (:meth:`FleetJournal.hold`) until its caller is answered;
- :meth:`FleetJournal.intent` before a create is sent, :meth:`FleetJournal.created` /
  :meth:`FleetJournal.void` after;
- :meth:`FleetJournal.stream` to read a batch's results: each page is stored before its
  callers are woken; :meth:`FleetJournal.finished` after the last line;
  :meth:`FleetJournal.settled` when the batch's task ends, however it ends.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from ..errors import (
    BatchRequestCanceledError,
    BatchRequestError,
    BatchRequestExpiredError,
    BatchResultMissingError,
    JournalError,
    excerpt,
)
from ._journal import Journal
from ._keys import KeyMaker
from ._store import FlushEntry, FlushRecord, StoredOutcome

if TYPE_CHECKING:
    import os
    from collections.abc import (
        AsyncGenerator,
        AsyncIterator,
        Awaitable,
        Callable,
        Iterable,
        Iterator,
        Sequence,
    )

    from ..providers import ItemResult, Provider
    from ._store import BatchRecordStore

__all__ = ["FleetJournal"]

logger = logging.getLogger("llmfleet")

#: A create sent just before the process died may reach the provider late: an intent this
#: recent (seconds) is looked for until it is this old before it is declared void.
RECONCILE_WINDOW_S: Final = 5.0
_RECONCILE_PAUSE_S: Final = 0.25
#: Attempts at a listing that fails for a passing reason (connection, 5xx, 429).
_RECONCILE_ATTEMPTS: Final = 5
#: Most result lines stored in one transaction.
_PAGE: Final = 1000


@final
class FleetJournal:
    """One fleet's use of a :class:`~llmfleet.Journal` (private: the dispatcher's side)."""

    def __init__(self, journal: Journal, provider: Provider) -> None:
        self.journal = journal
        self.provider = provider
        self._store: BatchRecordStore | None = None
        self._keys = KeyMaker()
        # Keys whose final result is stored: a filter (no false "no", rare false "yes",
        # checked against the store), not a set, so a long run's keys do not fill memory.
        self._final = KeyFilter()
        # Whether a key this process did not send can have a final result: one was stored
        # before the journal was opened, or a re-attached batch stores them (see
        # maybe_stored_before).
        self._stored_before = False
        self._known_ids: set[str] = set()
        self._open: list[FlushRecord] = []
        # Re-attached batches: custom_id -> key over all of them (custom_ids are unique
        # across fleets, so a line is stored under its key even if reconciling by count
        # paired a flush with a sibling's batch), the keys callers may wait for, and the
        # flushes not yet settled.
        self._attached_keys: dict[str, str] = {}
        self._waiting: dict[str, anyio.Event] = {}
        self._unsettled: set[str] = set()
        # Keys of the calls in flight in this fleet (one call per key at a time).
        self._held: set[str] = set()
        # Adapters that can, encode a response for the store and decode it back to the
        # SDK's own type; others store the value as it is (it must be JSON then).
        self._dump: Callable[[Any], Any] = getattr(provider, "dump_value", _same)
        self._load: Callable[[Any], Any] = getattr(provider, "load_value", _same)
        # The stored form of each response of the page being delivered, by the response's
        # id (see dumped()); set only while a page is delivered (with no await meanwhile).
        self._page_dumped: dict[int, StoredOutcome] = {}

    @classmethod
    def of(cls, journal: Journal | str | os.PathLike[str], provider: Provider) -> FleetJournal:
        """``journal`` (a :class:`~llmfleet.Journal`, or the path of one) as ``provider``'s
        fleet uses it."""
        return cls(journal if isinstance(journal, Journal) else Journal(journal), provider)

    # -- opening ------------------------------------------------------------------------

    @asynccontextmanager
    async def opened(
        self, acquire: Callable[[], Awaitable[None]]
    ) -> AsyncGenerator[list[FlushRecord]]:
        """Open the store and reconcile (:meth:`open`, :meth:`reconcile`); yield the flushes
        to re-attach; close the store on the way out, however the fleet ended."""
        await self.open()
        try:
            yield await self.reconcile(acquire)
        finally:
            await self.aclose()

    async def open(self) -> None:
        """Open the store and read what it holds.

        :raises JournalError: the journal cannot be used (the message says why).
        """
        store = await self.journal._open_store(self.provider.name)
        try:
            state = await store.load()
        except BaseException:
            await store.aclose()
            raise
        self._store = store
        self._final = KeyFilter(state.final_keys)
        self._open = list(state.open_flushes)
        self._stored_before = len(self._final) > 0 or bool(self._open)
        self._known_ids = set(state.known_batch_ids)
        if self._open:
            logger.info(
                "journal %s: %d results stored, %d batches to re-attach or reconcile",
                self.journal,
                len(self._final),
                len(self._open),
            )

    async def reconcile(self, acquire: Callable[[], Awaitable[None]]) -> list[FlushRecord]:
        """Settle every open flush before anything new is sent: look for the batch of each
        flush with no recorded id (by tag where the adapter tags creates, else by request
        count and creation time), record what was found or void it; return the flushes to
        re-attach (each with its batch id), oldest first.

        :param acquire: takes one request from the fleet's budget before each listing.
        :raises JournalError: the provider could not be asked (the journal is unchanged;
            open the fleet again later).
        """
        store = self._require()
        attach: list[FlushRecord] = []
        final_of: dict[str, set[str]] = {}
        for flush in self._open:
            final = await self._stored_final(flush)
            if len(final) == len(flush.entries):
                # Every result is stored already (the process died before marking it):
                # nothing to collect, and the provider may have deleted its files.
                await store.record_finished(flush.flush_id)
                continue
            if flush.batch_id is None:
                batch_id = await self._find(flush, acquire)
                if batch_id is None:
                    logger.info(
                        "journal: flush %s made no batch; its %d calls will be sent again",
                        flush.flush_id,
                        len(flush.entries),
                    )
                    await store.record_void(flush.flush_id)
                    continue
                logger.info("journal: flush %s found as batch %s", flush.flush_id, batch_id)
                await store.record_created(flush.flush_id, batch_id)
                self._known_ids.add(batch_id)
                flush = FlushRecord(
                    flush.flush_id, flush.tag, flush.created_after, flush.entries, batch_id
                )
            attach.append(flush)
            final_of[flush.flush_id] = final
        self._open = []
        for flush in attach:
            self._unsettled.add(flush.flush_id)
            for entry in flush.entries:
                self._attached_keys[entry.custom_id] = entry.key
                if entry.key not in final_of[flush.flush_id]:
                    self._waiting[entry.key] = anyio.Event()
        return attach

    async def _stored_final(self, flush: FlushRecord) -> set[str]:
        """The keys of ``flush`` whose final result the store holds (asked of the store: the
        filter may say yes wrongly)."""
        keys = [entry.key for entry in flush.entries if entry.key in self._final]
        found = await self._require().fetch_results(keys) if keys else {}
        return {key for key, outcome in found.items() if outcome.final}

    async def _find(self, flush: FlushRecord, acquire: Callable[[], Awaitable[None]]) -> str | None:
        provider = self.provider
        find_tagged = getattr(provider, "find_tagged", None)
        # The window is measured from the intent's wall time, and waited out on the event
        # loop's clock (which tests may run virtually).
        give_up = anyio.current_time() + max(
            0.0, flush.created_after + RECONCILE_WINDOW_S - time.time()
        )
        failures = 0
        while True:
            await acquire()
            try:
                if find_tagged is not None:
                    found: str | None = await find_tagged(
                        flush.tag, created_after=flush.created_after, exclude=self._known_ids
                    )
                else:
                    found = await provider.find_batch(
                        count=len(flush.entries),
                        created_after=flush.created_after,
                        exclude=self._known_ids,
                    )
            except Exception as exc:
                info = provider.classify(exc)
                failures += 1
                if info is None or failures >= _RECONCILE_ATTEMPTS:
                    raise JournalError(
                        f"could not ask the provider whether an interrupted batch create "
                        f"(flush {flush.flush_id}) made a batch ({type(exc).__name__}: {exc}); "
                        "nothing was sent. Open the fleet again when the provider answers"
                    ) from exc
                await anyio.sleep(max(_RECONCILE_PAUSE_S, info.retry_after or 0))
                continue
            if found is not None or anyio.current_time() >= give_up:
                return found
            await anyio.sleep(_RECONCILE_PAUSE_S)

    # -- submit -------------------------------------------------------------------------

    def key_of(self, params: dict[str, Any], idempotency_key: str | None) -> str:
        """The call's stable key (see :class:`~llmfleet.journal._keys.KeyMaker`)."""
        return self._keys.key(params, idempotency_key)

    async def lookup(
        self, params: dict[str, Any], idempotency_key: str | None
    ) -> tuple[str, StoredOutcome | None]:
        """The call's key and its final stored outcome, if it has one; a call whose batch was
        re-attached waits for that batch's result first.

        :raises ValueError: a call with the same key is in flight in this fleet.
        """
        key = self.key_of(params, idempotency_key)
        if key in self._held:
            raise ValueError(
                f"a call with idempotency_key {excerpt(key[4:])} is in flight already; "
                "wait for it, or give this call its own key"
            )
        pending = self._waiting.get(key)
        if pending is not None:
            # Its batch was re-attached: wait for its result rather than send it again.
            with self.hold(key):
                await pending.wait()
        return key, await self.stored(key)

    def answers(self, key: str) -> bool:
        """Whether a call with ``key`` would be answered without joining a queue: its final
        result is stored, or a re-attached batch carries it."""
        return key in self._final or key in self._waiting

    def maybe_stored_before(self, key: str) -> bool:
        """Whether a final result of ``key``, a key this process has not sent, may be stored
        (no false "no"; a "yes" is checked with :meth:`stored_final`). Such a result was
        stored before the journal was opened, or by a batch it re-attached: a first run
        (neither) asks no filter at all, which ``llmfleet run`` would ask once a line."""
        return self._stored_before and key in self._final

    async def stored_final(self, keys: Sequence[str]) -> dict[str, StoredOutcome]:
        """The final stored outcomes of those of ``keys`` that have one: one read for them
        all (``llmfleet run`` answers a page of journaled lines at once)."""
        found = await self._require().fetch_results(keys) if keys else {}
        return {key: outcome for key, outcome in found.items() if outcome.final}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """While a call with ``key`` is in flight: another with the same key is refused."""
        self._held.add(key)
        try:
            yield
        finally:
            self._held.discard(key)

    def pending(self, key: str) -> anyio.Event | None:
        """An event set once a re-attached batch has stored the call's result (or every
        re-attached batch has ended without one); ``None`` if no such batch carries it."""
        return self._waiting.get(key)

    def settled(self, flush: FlushRecord) -> None:
        """A batch's task has ended, whatever became of it. Once every re-attached batch
        has, calls still waiting go on (their results are not coming: they are sent)."""
        self._unsettled.discard(flush.flush_id)
        if not self._unsettled:
            waiting, self._waiting = self._waiting, {}
            for event in waiting.values():
                event.set()

    async def stored(self, key: str) -> StoredOutcome | None:
        """The call's final stored outcome, if it has one (read only when one exists)."""
        if key not in self._final:
            return None
        found = await self._require().fetch_results([key])
        outcome = found.get(key)
        return outcome if outcome is not None and outcome.final else None

    def answer(self, outcome: StoredOutcome) -> Any:
        """The value a stored outcome answers with, or raise the error it stands for (the
        same types a live batch gives)."""
        if outcome.kind == "succeeded":
            return self._load(outcome.value)
        ids = {"batch_id": outcome.batch_id, "custom_id": outcome.custom_id}
        if outcome.kind == "errored":
            raise BatchRequestError(outcome.error_type, outcome.message, **ids)
        if outcome.kind == "expired":
            raise BatchRequestExpiredError(
                "the batch expired before this call was processed; submit it again", **ids
            )
        if outcome.kind == "canceled":
            raise BatchRequestCanceledError(
                "the batch was canceled before this call was processed", **ids
            )
        raise BatchResultMissingError("the batch ended with no result for this call", **ids)

    # -- a batch's life -----------------------------------------------------------------

    async def intent(self, entries: Sequence[FlushEntry]) -> FlushRecord:
        """Record a flush before its create is sent; return its record (with its tag)."""
        flush = FlushRecord(
            flush_id="fl_" + secrets.token_hex(8),
            tag="lf_" + secrets.token_hex(16),
            created_after=time.time(),
            entries=tuple(entries),
        )
        await self._require().record_intent(flush)
        return flush

    # Shielded: these follow a create or a download already done (a fleet aborting right
    # then still records what the provider said; a write takes milliseconds).

    async def created(self, flush_id: str, batch_id: str) -> None:
        self._known_ids.add(batch_id)
        with anyio.CancelScope(shield=True):
            await self._require().record_created(flush_id, batch_id)

    async def void(self, flush_id: str) -> None:
        with anyio.CancelScope(shield=True):
            await self._require().record_void(flush_id)

    async def finished(self, flush_id: str) -> None:
        with anyio.CancelScope(shield=True):
            await self._require().record_finished(flush_id)

    async def stream(
        self,
        flush: FlushRecord,
        batch_id: str,
        lines: AsyncIterator[tuple[str, ItemResult]],
        deliver: Callable[[str, ItemResult], None],
        key_of: Callable[[str], str | None],
        forget: Callable[[str], None],
    ) -> None:
        """Read ``lines`` to the end; store each page of results in one transaction, then
        hand its lines to ``deliver``. ``key_of``: the journal key of a request of the batch
        whose result is not stored yet (else None); ``forget`` is told of each result once
        stored, and ``deliver`` then, so that neither names its key again (a stream read
        again after it broke off stores only the rest).

        A reader task takes lines as they come while the last page is being written, so a
        slow disk makes pages larger rather than the stream slower, and a line that drips
        in alone is stored (and delivered) at once.
        """
        store = self._require()
        flush_id = flush.flush_id
        attached = self._attached_keys
        send, receive = anyio.create_memory_object_stream[tuple[str, "ItemResult"]](_PAGE)

        broke: list[Exception] = []
        # Whether the page writer (below) waits for a line: then a line goes with send's
        # checkpoint first, so the writer takes its page before the next line is put (a
        # line that drips in alone is stored alone). While it writes, lines are put with no
        # checkpoint each (a trip through the event loop per line was a sixth of a large
        # run's CPU); a full buffer waits for it.
        writer_waits = True

        async def read() -> None:
            async with send, aclosing(lines) as stream:  # type: ignore[type-var]
                try:
                    async for line in stream:
                        if writer_waits:
                            await send.send(line)
                            continue
                        try:
                            send.send_nowait(line)
                        except anyio.WouldBlock:
                            await send.send(line)
                except Exception as exc:
                    # Raised once the lines read before it are stored and handed on, and
                    # as itself: the fleet tells a stream broken off (read again) from a
                    # failure by its type, which a task group's exception group would hide.
                    broke.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            async with receive:
                while True:
                    writer_waits = True
                    try:
                        first = await receive.receive()
                    except anyio.EndOfStream:
                        break
                    writer_waits = False
                    page = [first]
                    while len(page) < _PAGE:
                        try:
                            page.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    rows = []
                    dumped: dict[int, StoredOutcome] = {}
                    for custom_id, result in page:
                        key = key_of(custom_id) or attached.get(custom_id)
                        if key is not None:
                            outcome = self._outcome(batch_id, custom_id, result)
                            rows.append((key, outcome))
                            if outcome.kind == "succeeded":
                                dumped[id(result.value)] = outcome
                    await store.record_results(flush_id, rows)
                    for custom_id, _ in page:  # stored: not stored again if read again
                        forget(custom_id)
                    for key, outcome in rows:
                        if outcome.final:
                            self._final.add(key)
                        event = self._waiting.pop(key, None)
                        if event is not None:
                            event.set()
                    self._page_dumped = dumped
                    try:
                        for custom_id, result in page:
                            deliver(custom_id, result)
                    finally:
                        self._page_dumped = {}
        if broke:
            raise broke[0]

    def dumped(self, value: Any) -> str:
        """``value`` as the JSON text the journal stores (the adapter's ``dump_value``,
        encoded): while its page is delivered, the text just stored, not made again
        (``llmfleet run`` writes it)."""
        found = self._page_dumped.get(id(value))
        if found is not None:
            if found.encoded is not None:
                return found.encoded
            return json.dumps(found.value, ensure_ascii=False)
        return json.dumps(self._dump(value), ensure_ascii=False)

    def _outcome(self, batch_id: str, custom_id: str, result: ItemResult) -> StoredOutcome:
        if result.kind == "succeeded":
            value = result.value
            try:
                if not result.as_json:  # else stored as the provider sent it
                    value = self._dump(value)
                # Encoded once, here: the store keeps this text and llmfleet run writes it.
                text = json.dumps(value, ensure_ascii=False)
            except Exception as exc:  # an adapter bug: say so rather than lose the line
                raise JournalError(
                    f"cannot store the result of {custom_id} ({type(exc).__name__}: {exc})"
                ) from exc
            return StoredOutcome(
                "succeeded", value, batch_id=batch_id, custom_id=custom_id, encoded=text
            )
        return StoredOutcome(
            result.kind,
            error_type=result.error_type,
            message=result.message,
            batch_id=batch_id,
            custom_id=custom_id,
        )

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()

    def _require(self) -> BatchRecordStore:
        if self._store is None:
            raise JournalError("the journal is not open")
        return self._store


def _same(value: Any) -> Any:
    return value


@final
class KeyFilter:
    """A set of keys that answers ``key in filter`` with no false "no" and rare false "yes"
    (a scalable Bloom filter: about 2.4 bytes a key, one false "yes" in ~10^5 lookups), so
    that the keys of a million stored results take a few MB rather than a few hundred. A
    "yes" is always checked against the store (:meth:`FleetJournal.stored`)."""

    __slots__ = ("_count", "_layers")

    #: Keys the first layer holds at its error rate; each next layer holds twice as many.
    FIRST: Final = 1 << 14
    #: Bits a key, and bits set per key (k = 13 bits * ln 2 ~ 9 would be optimal; 6 costs
    #: fewer hash bits per lookup for a false-yes rate of about 1e-4 a layer).
    BITS: Final = 20
    HASHES: Final = 6

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._layers: list[tuple[bytearray, int]] = []  # (bits, capacity)
        self._count = 0
        for key in keys:
            self.add(key)

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def _halves(key: str) -> tuple[int, int]:
        # The string's own hash (cached on it; salted per process, as the filter is): its
        # two halves make the k spots, h1 + i * h2 (double hashing).
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        return h & 0xFFFFFFFF, (h >> 32) | 1

    def add(self, key: str) -> None:
        layers = self._layers
        capacity = sum(c for _, c in layers)
        if self._count >= capacity:
            size = KeyFilter.FIRST << len(layers)
            layers.append((bytearray(size * KeyFilter.BITS // 8), size))
        bits, _ = layers[-1]
        h1, h2 = self._halves(key)
        nbits = len(bits) * 8
        for i in range(KeyFilter.HASHES):
            spot = (h1 + i * h2) % nbits
            bits[spot >> 3] |= 1 << (spot & 7)
        self._count += 1

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        # A key not held stops at its first clear bit (most do, at once), rather than every
        # spot of every layer being made first.
        h1, h2 = self._halves(key)
        for bits, _ in self._layers:
            size = len(bits) * 8
            for i in range(KeyFilter.HASHES):
                spot = (h1 + i * h2) % size
                if not bits[spot >> 3] >> (spot & 7) & 1:
                    break
            else:
                return True
        return False
