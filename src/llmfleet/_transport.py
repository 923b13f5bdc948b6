"""The fleet behind an SDK client: :class:`FleetTransport`, :func:`latency_budget` and the
client that :meth:`FleetDispatcher.client` makes (docs/design.md §12).

The SDK builds each request as it always does and hands it to its ``httpx2`` client; the
transport at the bottom of that client decodes it (``_decode``), makes the create call through
the fleet, and answers in the provider's own wire shape, so the SDK parses, types and raises as
it would against the provider.
"""

from __future__ import annotations

import contextvars
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, final

import httpx2

from ._decode import BUDGET_HEADER, NO_BUDGET, Routed, decode_request, encode_status_error
from ._decode import encode_value as _encode_value
from .errors import FleetError, FleetUsageError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._decode import Budget
    from ._dispatcher import FleetDispatcher
    from .broker import BrokeredFleet

__all__ = ["FleetTransport", "latency_budget"]

_BUDGET: contextvars.ContextVar[Budget] = contextvars.ContextVar(
    "llmfleet_latency_budget", default=NO_BUDGET
)


@contextmanager
def latency_budget(ms: float | None) -> Iterator[None]:
    """Within the block, create calls made through a fleet client (:meth:`FleetDispatcher.client`,
    :class:`FleetTransport`) have this latency budget, unless a request's
    ``llmfleet-latency-budget-ms`` header says otherwise. ``None``: the direct route.

    The budget is a context variable: tasks started inside the block (on asyncio and trio)
    inherit it; the blocks nest.

    :raises ValueError: a negative budget.
    """
    if ms is not None:
        if isinstance(ms, bool) or not isinstance(ms, (int, float)):
            raise TypeError(f"latency_budget takes a number of ms or None, got {ms!r}")
        if not 0 <= ms < float("inf"):
            raise ValueError(f"latency_budget must be >= 0 ms (or None: direct), got {ms}")
    token = _BUDGET.set(ms)
    try:
        yield
    finally:
        _BUDGET.reset(token)


@final
class FleetTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport that sends an SDK's create calls through a fleet.

    Anthropic's ``POST /v1/messages`` and OpenAI's ``POST …/chat/completions`` and
    ``POST …/responses`` become fleet calls with the request's budget, which comes, first to
    last, from its ``llmfleet-latency-budget-ms`` header, from :func:`latency_budget`, from
    ``latency_budget_ms`` here; none means the direct route. Every other request goes on to the
    provider unchanged through ``passthrough``. Most code wants :meth:`FleetDispatcher.client`,
    which builds the SDK client around this transport; use this to build your own
    ``httpx2.AsyncClient`` (its requests must be the SDK's own, with the fleet's base URL and
    key).

    What the caller sees: the SDK's own object on success; on the direct route, the
    provider's own error response (the SDK raises its own class for it, or its connection
    error); a batched call's failure raises llmfleet's typed error (a
    :class:`~llmfleet.BatchResultError`, :class:`~llmfleet.BatchSubmitError` ...), made to be
    also an instance of the SDK's base error (``anthropic.AnthropicError``,
    ``openai.OpenAIError``) so that the SDK hands it on as it is rather than as a connection
    error to retry.

    :param fleet: an open fleet (or brokered fleet) over ``AsyncAnthropic`` or ``AsyncOpenAI``.
    :param latency_budget_ms: the budget of a call that names none.
    :param passthrough: where other requests go (default: the ``httpx2`` client of the fleet's
        own SDK client).
    """

    def __init__(
        self,
        fleet: FleetDispatcher[Any] | BrokeredFleet[Any],
        *,
        latency_budget_ms: float | None = None,
        passthrough: httpx2.AsyncClient | None = None,
    ) -> None:
        provider = fleet.provider
        if provider.name not in ("anthropic", "openai"):
            raise FleetUsageError(
                f"a fleet client needs a fleet over AsyncAnthropic or AsyncOpenAI, not "
                f"{provider.name}: call fleet.submit(...) instead"
            )
        if latency_budget_ms is not None and not 0 <= latency_budget_ms < float("inf"):
            raise ValueError(f"latency_budget_ms must be >= 0 or None, got {latency_budget_ms}")
        if passthrough is None:
            sdk = getattr(provider, "_client", None)
            passthrough = getattr(sdk, "_client", None)
            if not isinstance(passthrough, httpx2.AsyncClient):
                raise FleetUsageError(
                    "cannot find the fleet's own httpx2 client: pass "
                    "passthrough=httpx2.AsyncClient()"
                )
        self._fleet = fleet
        self._default = latency_budget_ms
        self._passthrough = passthrough
        self._provider = provider.name
        self._sdk_error: type[Exception] = _sdk_base_error(provider.name)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        url = request.url
        try:
            routed = decode_request(
                self._provider, request.method, url.path, url.query, request.headers, body
            )
        except ValueError as exc:
            raise _mixed(exc, self._sdk_error) from None
        if routed is None:
            return await self._pass(request)
        budget = routed.budget
        if budget is NO_BUDGET:
            budget = _BUDGET.get()
            if budget is NO_BUDGET:
                budget = self._default
        assert not isinstance(budget, type(NO_BUDGET))
        if routed.stream and (budget is None or budget <= self._fleet.policy.sync_max_latency_ms):
            # A tight budget streams from the provider itself.
            return await self._pass(request)
        return await self._call(routed, budget)

    async def _pass(self, request: httpx2.Request) -> httpx2.Response:
        if BUDGET_HEADER in request.headers:
            del request.headers[BUDGET_HEADER]
        return await self._passthrough.send(request, stream=True)

    async def _call(self, routed: Routed, budget: float | None) -> httpx2.Response:
        try:
            value = await self._fleet.submit(latency_budget_ms=budget, **routed.params)
        except (FleetError, TypeError, ValueError) as exc:
            # The fleet's refusals, and a call the SDK refused before sending it (a parameter
            # it does not know): the caller's own error, not a connection error.
            raise _mixed(exc, self._sdk_error) from exc.__cause__
        except Exception as exc:
            answer = encode_status_error(exc)
            if answer is None:
                raise
            status, headers, content = answer
            return httpx2.Response(status, headers=headers, content=content)
        if routed.stream:
            return httpx2.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=_stream_body(routed, value),
            )
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, content=_encode_value(value)
        )


def _stream_body(routed: Routed, value: Any) -> bytes:
    # The stream a provider would have sent for this whole result (llmfleet/_sse).
    from . import _sse

    data = value.to_dict(mode="json")
    if routed.endpoint == "/v1/messages":
        events = _sse.anthropic_message_events(data)
    elif routed.endpoint == "/v1/chat/completions":
        events = _sse.openai_chat_chunks(data, include_usage=routed.include_usage)
    else:
        events = _sse.openai_response_events(data)
    return b"".join(events)


def _sdk_base_error(provider: str) -> type[Exception]:
    # The SDK is imported already: its client made the fleet.
    if provider == "anthropic":
        error: type[Exception] = sys.modules["anthropic"].AnthropicError
    else:
        error = sys.modules["openai"].OpenAIError
    return error


_MIXED: Final[dict[tuple[type[Exception], type[Exception]], type[Exception]]] = {}


def _mixed(exc: Exception, sdk_error: type[Exception]) -> Exception:
    """``exc`` as an instance of a subclass of both its own class and the SDK's base error
    (same attributes, message and traceback), which the SDK raises to its caller unwrapped and
    unretried, and which ``except`` clauses for either class catch."""
    cls = type(exc)
    mixed = _MIXED.get((cls, sdk_error))
    if mixed is None:
        mixed = type(cls.__name__, (cls, sdk_error), {"__module__": cls.__module__})
        _MIXED[cls, sdk_error] = mixed
    new = mixed.__new__(mixed)
    new.__dict__.update(exc.__dict__)
    new.args = exc.args
    new.__traceback__ = exc.__traceback__
    return new


def fleet_client(
    fleet: FleetDispatcher[Any] | BrokeredFleet[Any], latency_budget_ms: float | None
) -> Any:
    """The SDK client of :meth:`FleetDispatcher.client`: a copy of the fleet's own client (its
    base URL, key, headers, timeout) whose requests go through a :class:`FleetTransport`."""
    sdk = getattr(fleet.provider, "_client", None)
    transport = FleetTransport(fleet, latency_budget_ms=latency_budget_ms)
    assert sdk is not None  # FleetTransport checked it
    http = httpx2.AsyncClient(transport=transport, timeout=sdk.timeout)
    # No retries on this side: the fleet's own client retries the direct route, and a batched
    # call sent again would be billed again (docs/design.md §12).
    return sdk.copy(http_client=http, max_retries=0)
