"""Stable keys for calls (docs/journal.md): the same request maps to the same key on a rerun."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["KeyMaker", "params_hash"]

#: Longest ``idempotency_key`` accepted.
MAX_KEY_CHARS: Final = 256


def _default(value: Any) -> Any:
    # An SDK model among the params (a pydantic object) hashes as its JSON; anything else
    # (the SDKs' NOT_GIVEN sentinels) as its type's name, which is stable across runs.
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return f"<{type(value).__name__}>"


def params_hash(params: Mapping[str, Any]) -> str:
    """A hash of a request's canonical form (JSON, sorted keys, no whitespace)."""
    canonical = json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@final
class KeyMaker:
    """Gives each call its key: ``key:<idempotency_key>`` when the caller gave one, else
    ``hash:<params hash>-<n>`` for the n-th call with those params in this fleet, so identical
    requests stay independent calls yet map to the same keys when the run is repeated."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def key(self, params: Mapping[str, Any], idempotency_key: str | None) -> str:
        """The call's key.

        :raises TypeError: ``idempotency_key`` is not a string.
        :raises ValueError: it is empty or longer than 256 characters.
        """
        if idempotency_key is not None:
            return "key:" + check_key(idempotency_key)
        digest = params_hash(params)
        n = self._seen.get(digest, 0) + 1
        self._seen[digest] = n
        return f"hash:{digest}-{n}"


def check_key(idempotency_key: object) -> str:
    """``idempotency_key`` if it is a usable key (else ``TypeError``/``ValueError``)."""
    if not isinstance(idempotency_key, str):
        raise TypeError(f"idempotency_key must be a string, got {type(idempotency_key).__name__}")
    if not 1 <= len(idempotency_key) <= MAX_KEY_CHARS:
        raise ValueError(
            f"idempotency_key must have 1 to {MAX_KEY_CHARS} characters, got {len(idempotency_key)}"
        )
    return idempotency_key
