"""The life of a batch (a job), shared by every vendor: ids, turnaround, cancel, expiry, the
outcome each request draws, and the controls a test uses.

A batch ends lazily: each read compares the wall clock with the batch's deadlines, so no
timers run and a given seed always gives the same ids, turnarounds, outcomes and result order.
A vendor subclasses :class:`JobBook` with its own :class:`Job` subclass and writes only what
its API shows: the results a batch ends with (:meth:`JobBook.finish`) and the JSON of a batch.
"""

from __future__ import annotations

import random
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Literal, TypeAlias, TypedDict, TypeVar

from ._config import draw
from ._core import EndKind, first_end, make_id

if TYPE_CHECKING:
    from ._config import EmulatorConfig
    from ._core import Core

__all__ = ["Clock", "Job", "JobBook", "Outcome"]

#: A batch's 24 hours: it expires when they run out.
DAY: Final = 24 * 3600.0
_ERRORED_MARKER: Final = re.compile(r"\[\[errored(?::([a-z_]+))?\]\]")
_EXPIRED_MARKER: Final = "[[expired]]"

#: What one request of a processed batch comes to, with the error code of an errored one
#: (``None``: the vendor's default).
Outcome: TypeAlias = "tuple[Literal['succeeded', 'errored', 'expired'], str | None]"
Phase = Literal["running", "canceling", "ended"]


class Clock(TypedDict):
    """A new batch's times, as :class:`Job` keywords."""

    created_at: float
    expires_at: float
    ends_at: float | None


@dataclass(slots=True, kw_only=True)
class Job:
    """A batch's identity and clock (``time.time()`` seconds); vendors add their requests."""

    id: str
    seq: int
    created_at: float
    expires_at: float
    #: When it ends on its own (``None``: never; a test ends it).
    ends_at: float | None
    phase: Phase = "running"
    cancel_initiated_at: float | None = None
    cancel_ends_at: float | None = None
    ended_at: float | None = None
    deleted: bool = False


J = TypeVar("J", bound=Job)


class JobBook(ABC, Generic[J]):
    """One vendor's batches, behind the core's lock.

    :param scope: put in the seeds of the vendor's ids (``"openai/"``), so that two vendors'
        ids differ; ``""`` for the first vendor, whose ids predate the others.
    """

    def __init__(self, core: Core, *, scope: str) -> None:
        self.core = core
        self._lock = core.lock
        self._scope = scope
        self._jobs: dict[str, J] = {}
        core.on_refresh(self._refresh_all)

    @property
    def config(self) -> EmulatorConfig:
        return self.core.config

    def new_id(self, prefix: str, kind: str, n: int) -> str:
        """The id of the ``n``-th object of a kind (``"batch"``, ``"file"``)."""
        return make_id(prefix, f"{self.config.seed}/{self._scope}{kind}/{n}")

    # -- creating and finding ---------------------------------------------------------------

    def next_seq(self) -> int:
        """The number of the next batch (1-based, in creation order)."""
        return len(self._jobs) + 1

    def clock(self, job_id: str, now: float) -> Clock:
        """A new batch's ``created_at``, ``expires_at`` and ``ends_at`` (its turnaround drawn
        from the config), as :class:`Job` keywords."""
        turnaround = draw(
            self.config.turnaround_s, random.Random(f"{self.config.seed}/{job_id}/turnaround")
        )
        return {
            "created_at": now,
            "expires_at": now + DAY,
            "ends_at": None if turnaround is None else now + turnaround,
        }

    def add(self, job: J, now: float) -> None:
        """Hold a new batch (a billable object in the ledger) and bring it up to date."""
        self._jobs[job.id] = job
        self.core.ledger._count_batch()
        self.refresh(job, now)

    def find(self, job_id: str) -> J | None:
        """The batch, unless there is none or it was deleted."""
        job = self._jobs.get(job_id)
        return None if job is None or job.deleted else job

    def newest_first(self) -> list[J]:
        """Every batch not deleted, newest first, up to date."""
        now = time.time()
        live = sorted((j for j in self._jobs.values() if not j.deleted), key=lambda j: -j.seq)
        for job in live:
            self.refresh(job, now)
        return live

    def seq_of(self, job_id: str) -> int | None:
        """A batch's number (deleted ones too: a page cursor may name one)."""
        job = self._jobs.get(job_id)
        return None if job is None else job.seq

    # -- the life of a batch ----------------------------------------------------------------

    def refresh(self, job: J, now: float) -> None:
        """End the batch if one of its deadlines has passed (the earliest decides how)."""
        if job.phase == "ended":
            return
        at, how = first_end(job.expires_at, job.ends_at, job.cancel_ends_at)
        if now >= at:
            self._end(job, at, how)

    def _refresh_all(self) -> None:
        with self._lock:
            now = time.time()
            for job in self._jobs.values():
                self.refresh(job, now)

    def _end(self, job: J, at: float, how: EndKind) -> None:
        self.finish(job, at, how)
        job.phase = "ended"
        job.ended_at = at

    @abstractmethod
    def finish(self, job: J, at: float, how: EndKind) -> None:
        """Give every request of ``job`` its result and bill it: the batch ends at ``at``,
        processed, cancelled or expired. Called under the lock, once per batch."""

    def start_cancel(self, job: J, now: float) -> None:
        """Turn a running batch ``canceling``; it ends after the config's ``cancel_delay_s``.
        A canceling or ended batch is left as it is."""
        self.refresh(job, now)
        if job.phase != "running":
            return
        job.phase = "canceling"
        job.cancel_initiated_at = now
        delay = draw(
            self.config.cancel_delay_s, random.Random(f"{self.config.seed}/{job.id}/cancel")
        )
        job.cancel_ends_at = now + (delay or 0.0)

    def outcome(self, job_id: str, custom_id: str, text: str) -> Outcome:
        """What a request of a processed batch comes to: the markers ``[[errored]]``
        (``[[errored:code]]``) and ``[[expired]]`` in its last user ``text`` decide, else a
        draw against the config's ``errored_ratio`` and ``expired_ratio``."""
        marker = _ERRORED_MARKER.search(text)
        if marker is not None:
            return "errored", marker.group(1)
        if _EXPIRED_MARKER in text:
            return "expired", None
        rng = random.Random(f"{self.config.seed}/{job_id}/{custom_id}/outcome")
        value = rng.random()
        if value < self.config.errored_ratio:
            return "errored", None
        if value < self.config.errored_ratio + self.config.expired_ratio:
            return "expired", None
        return "succeeded", None

    # -- controls (from the test's thread) --------------------------------------------------

    def control(self, job_id: str, now: float | None = None) -> J:
        """The batch (deleted ones too), up to date.

        :raises KeyError: no batch has that id.
        """
        job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        self.refresh(job, time.time() if now is None else now)
        return job

    def end_now(self, job_id: str, how: Literal["process", "expire"] = "process") -> J:
        """End the batch now: with the outcomes its requests would have had (a canceling batch
        ends cancelled), or with ``how="expire"`` as its 24 hours running out would. An ended
        batch is left as it is.

        :raises KeyError: no batch has that id.
        """
        with self._lock:
            now = time.time()
            job = self.control(job_id, now)
            if job.phase != "ended":
                if how == "expire":
                    self._end(job, now, "expire")
                else:
                    self._end(job, now, "cancel" if job.phase == "canceling" else "process")
            return job

    def end_all_now(self) -> list[str]:
        """End every batch still running or canceling, as :meth:`end_now`; their ids."""
        with self._lock:
            ids = [j.id for j in self._jobs.values() if j.phase != "ended"]
            for job_id in ids:
                self.end_now(job_id)
            return ids
