"""What travels through Redis: a call's params, and its outcome as the SDK's own value or the
same typed llmfleet error it would be in one process."""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any, Final

from .. import errors
from ..errors import BatchResultError, FleetError, UnbatchableRequestError, excerpt

if TYPE_CHECKING:
    from ..providers import Provider

__all__ = ["dump_error", "dump_params", "dump_value", "load_outcome"]

# Response types are rebuilt only from the SDKs' own modules: a result stream is data, and
# naming a class in it must not import just anything.
_SDKS: Final = frozenset({"anthropic", "openai", "botocore"})
_ERRORS: Final = {name: getattr(errors, name) for name in errors.__all__}


def dump_params(params: dict[str, Any]) -> str:
    """The params as JSON, or :class:`UnbatchableRequestError` if JSON cannot carry them."""
    try:
        return json.dumps(params, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise UnbatchableRequestError(
            f"a call sent through the broker must be JSON ({exc}); pass plain dicts, lists, "
            "strings and finite numbers, or use submit_sync()"
        ) from None


def dump_value(provider: Provider, value: Any) -> str:
    """A response as JSON: the adapter's own encoding if it has one, else the SDK model's."""
    dump = getattr(provider, "dump_value", None)
    if dump is not None:
        return json.dumps({"k": "value", "a": dump(value)})
    kind = type(value)
    model_dump = getattr(value, "model_dump", None)
    if model_dump is None or kind.__module__.split(".")[0] not in _SDKS:
        raise TypeError(f"cannot send a {kind.__qualname__} through the broker")
    return json.dumps(
        {"k": "value", "t": f"{kind.__module__}:{kind.__qualname__}", "v": model_dump(mode="json")}
    )


def dump_error(exc: BaseException) -> str:
    """An error as JSON: its llmfleet type and fields, or the name and text of any other."""
    data: dict[str, Any] = {"k": "error", "t": type(exc).__name__, "m": str(exc)}
    if isinstance(exc, FleetError) and type(exc).__name__ in _ERRORS:
        data["f"] = {
            name: getattr(exc, name)
            for name in ("batch_id", "custom_id", "error_type", "message", "batch_size", "field")
            if isinstance(getattr(exc, name, None), (str, int))
        }
        if exc.__cause__ is not None:
            data["c"] = f"{type(exc.__cause__).__name__}: {excerpt(str(exc.__cause__), 200)}"
    else:
        data["o"] = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return json.dumps(data)


def load_outcome(provider: Provider, payload: str) -> tuple[Any, BaseException | None]:
    """``(value, None)`` or ``(None, error)`` from what :func:`dump_value` or
    :func:`dump_error` made."""
    data = json.loads(payload)
    if data["k"] == "value":
        if "a" in data:
            load = getattr(provider, "load_value", None)
            if load is None:
                raise TypeError(f"{provider.name} adapter cannot load an encoded value")
            return load(data["a"]), None
        module, _, name = data["t"].partition(":")
        if module.split(".")[0] not in _SDKS:
            raise TypeError(f"refusing to rebuild {data['t']!r} from the broker")
        kind: Any = importlib.import_module(module)
        for part in name.split("."):
            kind = getattr(kind, part)
        return kind.model_validate(data["v"]), None
    return None, _load_error(data)


def _load_error(data: dict[str, Any]) -> BaseException:
    cls = _ERRORS.get(data["t"])
    fields: dict[str, Any] = data.get("f", {})
    message: str = data["m"]
    error: BaseException
    if cls is None:
        # Not one of ours (a provider's error on the leader's direct route, say): the caller
        # gets a FleetError naming it, since the SDK's error cannot be rebuilt without its
        # HTTP response.
        return FleetError(f"{data.get('o', data['t'])}: {message}")
    if cls is errors.PolicyError:
        return cls(fields.get("field", "?"), message)
    if cls is errors.BatchRequestError:
        error = cls(
            fields.get("error_type", "?"),
            fields.get("message", message),
            batch_id=fields.get("batch_id", "?"),
            custom_id=fields.get("custom_id", "?"),
        )
    elif issubclass(cls, BatchResultError):
        # The message already ends with the ids: rebuild it as it was.
        rebuilt: BatchResultError = cls.__new__(cls)
        Exception.__init__(rebuilt, message)
        rebuilt.batch_id = fields.get("batch_id", "?")
        rebuilt.custom_id = fields.get("custom_id", "?")
        error = rebuilt
    elif cls is errors.BatchSubmitError:
        error = cls(message, batch_size=fields.get("batch_size", 0))
    else:
        error = cls(message)
    if "c" in data:
        error.__cause__ = FleetError(f"on the leader: {data['c']}")
    return error
