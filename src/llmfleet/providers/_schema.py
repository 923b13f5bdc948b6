"""What a create call's params may hold, as the provider publishes it (docs/design.md §2.1).

A provider validates a batch as a whole: one request with no ``max_tokens`` or a misspelt
``temperatur`` makes Anthropic refuse the whole batch create, and OpenAI fail the whole batch.
So each adapter checks a request here, in ``prepare`` (at submit, before the request joins a
batch): refused, the bad call fails alone with :class:`~llmfleet.InvalidRequestError`, and its
batch goes out without it.

The parameter names, and which are required, come from the installed SDK's own request types
(the ``TypedDict`` each create call is typed with), so they follow the SDK the caller uses. The
checks beyond names are the basic ones the APIs document: types of the required fields, a
non-empty list of messages with known roles, positive token limits.
"""

from __future__ import annotations

import difflib
import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, final

import typing_extensions

from ..errors import InvalidRequestError

__all__ = [
    "Schema",
    "anthropic_messages",
    "bedrock_claude",
    "check_chat",
    "check_leaked",
    "check_messages",
    "check_responses",
    "openai_chat",
    "openai_responses",
    "schema_of",
    "wire_body",
]

#: llmfleet's own keyword arguments, which are never API parameters: what to do instead.
LEAKED: Final[dict[str, str]] = {
    "latency_budget_ms": (
        "latency_budget_ms is an argument of submit(), not an API parameter: submit_batch() "
        "always batches and submit_sync() always calls directly; drop it, or call "
        "submit(latency_budget_ms=...) to let the budget choose the route"
    ),
    "idempotency_key": (
        "idempotency_key is an argument of submit() and submit_batch() (it names the call in "
        "the fleet's journal), not an API parameter, and this call does not take it "
        "(submit_sync() never uses the journal); drop it"
    ),
}
#: The SDK's per-request HTTP options: a batch is one HTTP request for all its calls.
_OPTIONS: Final = ("extra_headers", "extra_query", "timeout")
# What to add for a missing required parameter.
_ADD: Final[dict[str, str]] = {
    "model": "model='<model id>'",
    "max_tokens": "max_tokens=<the most tokens to generate, >= 1>",
    "messages": "messages=[{'role': 'user', 'content': '...'}]",
    "anthropic_version": "anthropic_version='bedrock-2023-05-31'",
}
_REQUIRED_MARKS: Final = frozenset(
    {typing_extensions.Required, getattr(typing, "Required", typing_extensions.Required)}
)
_ANTHROPIC_ROLES: Final = ("user", "assistant")
_CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
_LIST: Final = (list, tuple)


@final
@dataclass(frozen=True, slots=True)
class Schema:
    """The top-level parameters of one create call."""

    #: The call, for messages (``"messages.create"``).
    call: str
    #: Where the names come from, for messages (``"anthropic 2.17.0"``).
    source: str
    #: Every parameter name the call takes (request options apart).
    known: frozenset[str]
    #: The required ones, in the order the SDK declares them.
    required: tuple[str, ...]
    #: The same, as a set.
    required_set: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "required_set", frozenset(self.required))


def schema_of(call: str, source: str, params_type: Any) -> Schema:
    """The schema a ``TypedDict`` of create params declares (``Required[...]`` keys are
    required; the SDKs write their annotations as strings, so they are resolved first)."""
    names: dict[str, Any] = dict(params_type.__annotations__)
    try:
        hints = typing_extensions.get_type_hints(params_type, include_extras=True)
        marked = {
            k for k, hint in hints.items() if typing_extensions.get_origin(hint) in _REQUIRED_MARKS
        }
    except Exception:  # an annotation that does not resolve: read its text instead
        marked = {
            k
            for k, a in names.items()
            if _text(a).startswith(("Required[", "typing_extensions.Required["))
        }
    marked |= set(getattr(params_type, "__required_keys__", ()))
    return Schema(call, source, frozenset(names), tuple(k for k in names if k in marked))


def _text(annotation: Any) -> str:
    return str(getattr(annotation, "__forward_arg__", annotation))


@functools.cache
def anthropic_messages() -> Schema:
    """``anthropic.AsyncAnthropic().messages.create``, as the installed SDK types it."""
    import anthropic
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

    return schema_of(
        "messages.create", f"anthropic {anthropic.__version__}", MessageCreateParamsNonStreaming
    )


@functools.cache
def bedrock_claude() -> Schema:
    """A Claude request body on Bedrock (InvokeModel's body, a batch record's ``modelInput``):
    the Messages parameters without ``model`` (the model id travels beside the body), with
    ``anthropic_version`` and ``anthropic_beta``."""
    base = anthropic_messages()
    required = ("anthropic_version", *(k for k in base.required if k != "model"))
    known = (base.known - {"model"}) | {"anthropic_version", "anthropic_beta"}
    return Schema("a Claude body on Bedrock", base.source, known, required)


@functools.cache
def openai_chat() -> Schema:
    """``openai.AsyncOpenAI().chat.completions.create``, as the installed SDK types it.

    :raises ImportError: the ``openai`` package is not installed.
    """
    import openai
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

    return schema_of(
        "chat.completions.create",
        f"openai {openai.__version__}",
        CompletionCreateParamsNonStreaming,
    )


@functools.cache
def openai_responses() -> Schema:
    """``openai.AsyncOpenAI().responses.create``, as the installed SDK types it.

    :raises ImportError: the ``openai`` package is not installed.
    """
    import openai
    from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming

    return schema_of(
        "responses.create", f"openai {openai.__version__}", ResponseCreateParamsNonStreaming
    )


# -- checks --------------------------------------------------------------------------------


def check_leaked(params: Mapping[str, Any]) -> None:
    """Refuse llmfleet's own keyword arguments passed where they land in the API params (on
    any route: no API takes them).

    :raises InvalidRequestError: ``latency_budget_ms`` or ``idempotency_key`` is in params.
    """
    # Two lookups: this runs on the direct route's hot path too.
    if "latency_budget_ms" in params:
        raise InvalidRequestError("latency_budget_ms", LEAKED["latency_budget_ms"])
    if "idempotency_key" in params:
        raise InvalidRequestError("idempotency_key", LEAKED["idempotency_key"])


def wire_body(
    params: Mapping[str, Any], schema: Schema, unset: tuple[object, ...] = ()
) -> Mapping[str, Any]:
    """The JSON body the SDK would send for ``params``: values that are one of the ``unset``
    markers (the SDK's ``NOT_GIVEN``, ``omit``) dropped, ``extra_body`` merged in (its keys
    are the caller's to vouch for: parameters newer than the SDK). ``params`` itself when
    nothing changes.

    :raises InvalidRequestError: a name the call does not take, an SDK request option (a batch
        cannot carry it), an ``extra_body`` that is not a dict.
    """
    # The common case, in C: known names only, and no marker among the values (the SDKs'
    # markers are falsy, so values that are all truthy hold none). Every batched call runs it.
    if params.keys() <= schema.known and (not unset or _no_marker(params, unset)):
        return params
    markers = tuple({type(marker) for marker in unset})
    extra: Any = None
    body: dict[str, Any] = {}
    for key, value in params.items():
        if key not in schema.known:
            if key != "extra_body":
                _refuse_unknown(key, schema)
            extra = value
        elif not isinstance(value, markers):
            body[key] = value
    if extra is not None and not isinstance(extra, Mapping):
        raise InvalidRequestError(
            "extra_body",
            f"must be a dict of body fields to add, got {type(extra).__name__}",
        )
    if extra:
        body.update(extra)
    return body


def _no_marker(params: Mapping[str, Any], unset: tuple[object, ...]) -> bool:
    values = params.values()
    try:
        if all(values):
            return True
    except Exception:  # a value with no truth value (an array): look at each value
        pass
    return not any(value is marker for value in values for marker in unset)


def _refuse_unknown(key: str, schema: Schema) -> None:
    if key in LEAKED:
        raise InvalidRequestError(key, LEAKED[key])
    if key in _OPTIONS:
        raise InvalidRequestError(
            key,
            f"{key} is an option of the SDK's HTTP request, which a batch cannot carry (one "
            "request sends the whole batch); drop it, or send this call with submit_sync()",
        )
    close = difflib.get_close_matches(key, sorted(schema.known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InvalidRequestError(
        key,
        f"not a parameter of {schema.call} ({schema.source}){hint}; the provider would refuse "
        "the request, and a batch holding it. Fix the name; for a parameter newer than the "
        "SDK, pass it in extra_body={...}",
    )


def check_messages(body: Mapping[str, Any], schema: Schema) -> None:
    """An Anthropic Messages body (or a Claude body on Bedrock): required fields, the model,
    ``max_tokens``, the messages and the system prompt.

    :raises InvalidRequestError: naming the first field at fault.
    """
    # Every batched call runs this: the common case (plain dicts, lists, strings and ints)
    # is decided in a few C-level steps; anything else takes the full path, which names the
    # field at fault.
    max_tokens = body.get("max_tokens")
    messages = body.get("messages")
    system = body.get("system")
    if (
        body.keys() >= schema.required_set
        and type(max_tokens) is int
        and max_tokens >= 1
        and type(messages) is list
        and messages
        and (system is None or type(system) is str or type(system) is list)
        and ("model" not in schema.required_set or (type(body["model"]) is str and body["model"]))
    ):
        for message in messages:
            if type(message) is not dict or message.get("role") not in _ANTHROPIC_ROLES:
                break
            content = message.get("content")
            if type(content) is not str and type(content) is not list:
                break
        else:
            return
    _check_messages(body, schema)


def _check_messages(body: Mapping[str, Any], schema: Schema) -> None:
    _require(body, schema)
    if "model" in schema.required:
        _model(body)
    max_tokens = body["max_tokens"]
    if max_tokens == 0 and not isinstance(max_tokens, bool):
        raise InvalidRequestError(
            "max_tokens",
            "max_tokens=0 is not allowed inside a batch; use max_tokens >= 1 or submit_sync()",
        )
    _positive_int(body, "max_tokens", required=True)
    _messages(body["messages"], _ANTHROPIC_ROLES, content=True)
    system = body.get("system")
    if system is not None and not isinstance(system, (str, *_LIST)):
        raise InvalidRequestError(
            "system",
            f"must be a string or a list of text blocks, got {type(system).__name__}",
        )


def check_chat(body: Mapping[str, Any], schema: Schema) -> None:
    """An OpenAI Chat Completions body: the model, the messages, the token limits.

    :raises InvalidRequestError: naming the first field at fault.
    """
    _require(body, schema)
    _model(body)
    _messages(body["messages"], _CHAT_ROLES, content=False)
    _positive_int(body, "max_completion_tokens")
    _positive_int(body, "max_tokens")


def check_responses(body: Mapping[str, Any], schema: Schema) -> None:
    """An OpenAI Responses body: the model (a batch needs one, though a direct call may take
    it from a stored prompt), the input, the token limit.

    :raises InvalidRequestError: naming the first field at fault.
    """
    _require(body, schema)
    if "model" not in body:
        raise InvalidRequestError(
            "model", "a batch needs every request's model (one batch, one model); add model=..."
        )
    _model(body)
    if "input" in body:
        given = body["input"]
        if not isinstance(given, (str, *_LIST)) or not given:
            raise InvalidRequestError(
                "input", "must be a string or a non-empty list of input items"
            )
    _positive_int(body, "max_output_tokens")


def _require(body: Mapping[str, Any], schema: Schema) -> None:
    if body.keys() >= schema.required_set:
        return
    for key in schema.required:
        if key not in body:
            add = _ADD.get(key, f"{key}=...")
            raise InvalidRequestError(key, f"required by {schema.call} and missing; add {add}")


def _model(body: Mapping[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "model", f"must be a model id (a non-empty string), got {model!r:.60}"
        )


def _positive_int(body: Mapping[str, Any], key: str, *, required: bool = False) -> None:
    value = body.get(key)
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(key, f"must be an integer >= 1, got {value!r:.60}")


def _messages(messages: object, roles: tuple[str, ...], *, content: bool) -> None:
    if not isinstance(messages, _LIST):
        raise InvalidRequestError(
            "messages", f"must be a list of messages, got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidRequestError("messages", "must hold at least one message")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(
                f"messages.{i}",
                f"must be a dict with 'role' and 'content', got {type(message).__name__}",
            )
        role = message.get("role")
        if role not in roles:
            raise InvalidRequestError(
                f"messages.{i}.role",
                f"must be one of {', '.join(map(repr, roles))}, got {role!r:.60}",
            )
        if content:
            if "content" not in message:
                raise InvalidRequestError(f"messages.{i}.content", "required and missing")
            if not isinstance(message["content"], (str, *_LIST)):
                raise InvalidRequestError(
                    f"messages.{i}.content",
                    "must be a string or a list of content blocks, "
                    f"got {type(message['content']).__name__}",
                )
