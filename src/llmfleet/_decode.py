"""From an HTTP request to a fleet call, and from a fleet outcome back to HTTP
(docs/design.md §12).

Pure functions, no I/O: :class:`~llmfleet.FleetTransport` uses them for the SDK clients that
:meth:`FleetDispatcher.client` makes, and an HTTP server in front of a fleet can use the same
ones. A request is either *routed* (one create call the fleet pools: Anthropic's
``POST /v1/messages``, OpenAI's ``POST …/chat/completions`` and ``POST …/responses``) or
*passed through* to the provider unchanged (everything else: listing models, counting tokens,
files, a request with a query string other than Anthropic's ``beta=true``, an Anthropic
request that names betas in ``anthropic-beta``, a body that is not a JSON object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BUDGET_HEADER",
    "DIRECT",
    "NO_BUDGET",
    "Routed",
    "decode_request",
    "encode_status_error",
    "encode_value",
    "endpoint_of",
    "parse_budget",
]

#: The request header that carries a call's latency budget, in milliseconds (``none`` or
#: ``direct``: no budget, the direct route). Never sent on to the provider.
BUDGET_HEADER: Final = "llmfleet-latency-budget-ms"

Endpoint: TypeAlias = Literal["/v1/messages", "/v1/chat/completions", "/v1/responses"]


@final
class _NoBudget:
    """The request said nothing about its budget (the next source decides)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_BUDGET"


NO_BUDGET: Final = _NoBudget()
#: A budget that says "the direct route": no waiting.
DIRECT: Final = None

Budget: TypeAlias = "float | _NoBudget | None"

# Path suffixes of the routed endpoints, per provider. The SDKs put the API version in the
# path (Anthropic) or in the base URL (OpenAI), behind any prefix the base URL has.
_ROUTES: Final[dict[str, tuple[tuple[str, Endpoint], ...]]] = {
    "anthropic": (("/v1/messages", "/v1/messages"),),
    "openai": (
        ("/chat/completions", "/v1/chat/completions"),
        ("/responses", "/v1/responses"),
    ),
}
_DIRECT_WORDS: Final = frozenset({"none", "direct", "null"})


@final
@dataclass(frozen=True, slots=True)
class Routed:
    """A create call the fleet can pool.

    :ivar endpoint: which create call (``/v1/messages``, ``/v1/chat/completions``,
        ``/v1/responses``).
    :ivar params: the request body: the create call's keyword arguments, less ``stream``
        (and OpenAI's ``stream_options``, chat's and Responses').
    :ivar stream: the caller asked for a server-sent event stream.
    :ivar include_usage: OpenAI chat: ``stream_options.include_usage`` was set.
    :ivar budget: the budget the request's header gave (:data:`NO_BUDGET` if none).
    """

    endpoint: Endpoint
    params: dict[str, Any]
    stream: bool
    include_usage: bool
    budget: Budget


def parse_budget(value: str | None) -> Budget:
    """The budget a :data:`BUDGET_HEADER` value gives.

    :raises ValueError: not a number of milliseconds >= 0, nor ``none``.
    """
    if value is None:
        return NO_BUDGET
    text = value.strip().lower()
    if text in _DIRECT_WORDS:
        return DIRECT
    try:
        ms = float(text)
    except ValueError:
        ms = -1.0
    if not 0 <= ms < float("inf"):
        raise ValueError(
            f"the {BUDGET_HEADER} header must be a number of milliseconds >= 0 (or `none` for "
            f"the direct route), got {value!r}"
        )
    return ms


def endpoint_of(provider: str, path: str) -> Endpoint | None:
    """The create call a request path names (whatever its method and body), or ``None``."""
    return next((e for suffix, e in _ROUTES.get(provider, ()) if path.endswith(suffix)), None)


def decode_request(
    provider: str, method: str, path: str, query: bytes, headers: Mapping[str, str], body: bytes
) -> Routed | None:
    """The fleet call an HTTP request makes, or ``None`` to pass it through unchanged.

    :param provider: the fleet's provider name (``anthropic`` or ``openai``).
    :param headers: the request's headers, looked up by lower-case name.
    :raises ValueError: the budget header is malformed (see :func:`parse_budget`).
    """
    if method != "POST":
        return None
    if provider == "anthropic":
        # A beta call (`client.beta.messages.create`: `?beta=true`) is an ordinary one unless
        # it names betas, which the fleet's requests would not carry: those go direct.
        if "anthropic-beta" in headers or query not in (b"", b"beta=true"):
            return None
    elif query:
        return None
    endpoint = endpoint_of(provider, path)
    if endpoint is None:
        return None
    try:
        params = json.loads(body)
    except ValueError:
        return None  # the provider says what is wrong with it
    if not isinstance(params, dict):
        return None
    budget = parse_budget(headers.get(BUDGET_HEADER))
    stream = params.pop("stream", False) is True
    include_usage = False
    if provider == "openai":
        # Options of the stream only: a batch line, or a call without a stream, may not
        # carry them.
        options = params.pop("stream_options", None)
        if endpoint == "/v1/chat/completions":
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return Routed(endpoint, params, stream, include_usage, budget)


def encode_value(value: Any) -> bytes:
    """The JSON body of a successful create call: the SDK object as the provider sent it."""
    data = value.to_dict(mode="json") if hasattr(value, "to_dict") else value
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# Headers that describe the body as it came off the wire: the body handed on is decoded.
_WIRE_HEADERS: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def encode_status_error(exc: BaseException) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """The provider's own answer behind an SDK status error (``anthropic.APIStatusError``,
    ``openai.APIStatusError``): its status, headers and body, so that the SDK on the other side
    raises the same error class with the same body. ``None`` for any other exception.

    The headers say ``x-should-retry: false``: the fleet's own client already retried it.
    """
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None)
    if response is None or not isinstance(status, int):
        return None
    try:
        body: bytes = response.content
    except Exception:  # a stream never read: say what the SDK said
        body = json.dumps({"error": {"message": str(exc)}}).encode()
    headers = [
        (name, value)
        for name, value in response.headers.items()
        if name.lower() not in _WIRE_HEADERS and name.lower() != "x-should-retry"
    ]
    headers.append(("x-should-retry", "false"))
    return status, headers, body
