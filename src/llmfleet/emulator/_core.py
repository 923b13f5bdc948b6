"""The emulator's shared core: the errors it answers with, the requests it records, the faults
it injects, the rate limit, the ledger and the clock of direct calls.

Every vendor (``_anthropic``, ``_openai``) keeps its state behind the core's one re-entrant
lock: the HTTP handlers (on the server's thread) and the test's control calls (on the test's
thread) both go through it. Nothing here knows HTTP (that is ``_wire``) or any vendor.
"""

from __future__ import annotations

import math
import random
import string
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final, Literal, final

from ._config import ENDPOINTS, EmulatorConfig, Fault, draw
from ._ledger import Ledger, LedgerEntry, ResultType

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmfleet.pricing import TokenUsage

__all__ = [
    "ApiError",
    "Core",
    "RecordedRequest",
    "first_end",
    "make_id",
    "redact",
    "rfc3339",
]

_BASE62: Final = string.digits + string.ascii_letters
_REDACTED: Final = "[redacted]"
_SECRET_HEADERS: Final = frozenset({"x-api-key", "authorization"})


class ApiError(Exception):
    """An error the API answers with: status, ``error.type``, message, and the optional
    ``param`` and ``code`` of vendors whose error bodies carry them. Each vendor's dialect
    (``_wire.Dialect``) decides the body's shape."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = dict(headers or {})
        self.param = param
        self.code = code


@final
@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request the emulator received, with secrets redacted.

    ``headers`` are lower-cased; ``x-api-key`` and ``authorization`` read ``[redacted]``.
    ``body`` is the decoded JSON body, or ``None`` when there was none (or it was not JSON).
    ``endpoint`` is the endpoint name (see :data:`Endpoint`), ``None`` for an unknown route.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    #: Wall-clock arrival time (``time.time()``).
    time: float
    endpoint: str | None


def rfc3339(t: float) -> str:
    """``time.time()`` seconds as RFC 3339 UTC with a ``Z``, like the API writes them."""
    stamp = datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def make_id(prefix: str, key: str) -> str:
    """An API-looking id (``msgbatch_01…``), a pure function of ``key``."""
    rng = random.Random(key)
    return prefix + "01" + "".join(rng.choice(_BASE62) for _ in range(22))


EndKind = Literal["process", "cancel", "expire"]


def first_end(
    expires_at: float, ends_at: float | None, cancel_ends_at: float | None
) -> tuple[float, EndKind]:
    """The earliest of a batch's coming ends, and how it would end then."""
    ends: list[tuple[float, EndKind]] = [(expires_at, "expire")]
    if ends_at is not None:
        ends.append((ends_at, "process"))
    if cancel_ends_at is not None:
        ends.append((cancel_ends_at, "cancel"))
    return min(ends, key=lambda end: end[0])


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased headers with the credentials replaced."""
    return {
        k.lower(): (_REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()
    }


@dataclass(slots=True)
class _Armed:
    fault: Fault
    base: int
    fired: int = 0


class Core:
    """What every vendor shares: the lock, the config, the requests, faults and ledger."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        #: The server's URL, for the absolute URLs some replies carry (set once it is bound).
        self.base_url = ""
        #: The one lock every vendor's state lives behind.
        self.lock = threading.RLock()
        self._counts: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        # Requests per (endpoint, minute since start), and the batch-endpoint limit's window.
        self._started = time.time()
        self._per_minute: dict[tuple[str, int], int] = {}
        self._batch_window: list[float] = []
        self.rate_limited = 0
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Armed] = []
        self._request_ids = 0
        self._refreshers: list[Callable[[], None]] = []
        self.ledger = Ledger(refresh=self.refresh_all)
        for fault in config.faults:
            self.add_fault(fault)

    # -- requests, counts and faults --------------------------------------------------------

    def arrive(
        self,
        endpoint: str | None,
        *,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: Any,
    ) -> Fault | None:
        """Record a request, count it, and return the fault it triggers, if any."""
        with self.lock:
            self._requests.append(
                RecordedRequest(method, path, query, redact(headers), body, time.time(), endpoint)
            )
            if endpoint is None:
                return None
            self._counts[endpoint] += 1
            call = self._counts[endpoint]
            now = time.time()
            minute = (endpoint, int((now - self._started) // 60))
            self._per_minute[minute] = self._per_minute.get(minute, 0) + 1
            limited = self._over_batch_limit(endpoint, now)
            if limited is not None:
                return limited
            for armed in self._faults:
                fault = armed.fault
                if fault.endpoint != endpoint:
                    continue
                if fault.nth is not None and not (
                    fault.nth <= call - armed.base < fault.nth + fault.times
                ):
                    continue
                armed.fired += 1
                if armed.fired >= fault.times:
                    self._faults.remove(armed)
                return fault
            return self.config.random_fault(endpoint, call)  # type: ignore[arg-type]

    def _over_batch_limit(self, endpoint: str, now: float) -> Fault | None:
        """A 429 for a batch-endpoint request beyond ``config.batch_rpm`` in 60 s, else None."""
        limit = self.config.batch_rpm
        if limit is None or not endpoint.startswith("batch_"):
            return None
        window = self._batch_window
        while window and window[0] <= now - 60:
            window.pop(0)
        if len(window) < limit:
            window.append(now)
            return None
        self.rate_limited += 1
        wait = max(1, math.ceil(window[0] + 60 - now))
        return Fault(
            endpoint,  # type: ignore[arg-type]
            "status",
            status=429,
            retry_after=wait,
            message=f"Number of batch API requests exceeds the rate limit of {limit} per minute.",
        )

    def per_minute(self) -> dict[tuple[str, int], int]:
        """Requests per ``(endpoint, minute since start)``."""
        with self.lock:
            return dict(self._per_minute)

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self._faults.append(_Armed(fault, self._counts[fault.endpoint]))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    @property
    def faults(self) -> tuple[Fault, ...]:
        with self.lock:
            return tuple(a.fault for a in self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self._requests)

    @property
    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self._counts)

    def request_id(self) -> str:
        with self.lock:
            self._request_ids += 1
            n = self._request_ids
        return make_id("req_", f"{self.config.seed}/req/{n}")

    # -- time and money ---------------------------------------------------------------------

    def direct_latency(self, scope: str, n: int, *, flex: bool = False) -> float:
        """Seconds the ``n``-th direct call of a vendor (ids under ``scope``) waits; a flex
        call (OpenAI's ``service_tier="flex"``) waits ``flex_latency_s`` instead."""
        rng = random.Random(f"{self.config.seed}/{scope}latency/{n}")
        latency = self.config.flex_latency_s if flex else self.config.direct_latency_s
        return draw(latency, rng) or 0.0

    def flex_unavailable(self, scope: str, n: int) -> bool:
        """Whether the ``n``-th flex call is refused for want of capacity
        (``flex_unavailable_ratio``, drawn from the seed: reproducible)."""
        ratio = self.config.flex_unavailable_ratio
        return bool(ratio) and random.Random(f"{self.config.seed}/{scope}flex/{n}").random() < ratio

    def bill(
        self,
        route: Literal["direct", "batch", "flex"],
        *,
        batch_id: str | None,
        custom_id: str | None,
        message_id: str | None,
        model: str,
        result: ResultType,
        usage: TokenUsage,
        at: float | None = None,
    ) -> None:
        """Enter one answered call or ended batch item in the ledger, priced by the config."""
        self.ledger._add(
            LedgerEntry(
                route=route,
                batch_id=batch_id,
                custom_id=custom_id,
                message_id=message_id,
                model=model,
                result=result,
                usage=usage,
                cost=self.config.prices.cost(
                    model, usage, batch=route == "batch", flex=route == "flex"
                ),
                time=time.time() if at is None else at,
            )
        )

    def on_refresh(self, refresh: Callable[[], None]) -> None:
        """Have :meth:`refresh_all` (and so every read of the ledger) call ``refresh``: a
        vendor's way to end the batches whose time has come."""
        with self.lock:
            self._refreshers.append(refresh)

    def refresh_all(self) -> None:
        """End every batch, of every vendor, whose time has come."""
        with self.lock:
            for refresh in self._refreshers:
                refresh()
