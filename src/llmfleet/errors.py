"""Every exception llmfleet raises.

::

    FleetError
    ├── PolicyError (also ValueError)
    ├── UnbatchableRequestError (also ValueError)
    │   └── InvalidRequestError          (field: the request breaks the provider's schema)
    ├── FleetClosedError
    ├── FleetUsageError (also TypeError) (open_fleet() or a fleet used without `async with`)
    ├── BatchSubmitError
    ├── DeadlineExceededError            (deadline_action="fail": the budget ran out)
    ├── JournalError                     (a journal file is corrupt, foreign, or in use)
    ├── BrokerError                      (open_fleet(broker=...): Redis failed or lost the fleet)
    └── BatchResultError                 (carries batch_id, custom_id)
        ├── BatchRequestError            (errored: error_type, message)
        ├── BatchRequestExpiredError
        ├── BatchRequestCanceledError
        └── BatchResultMissingError

Messages say what went wrong and what to do about it. They never contain the API key, and never
more of a request's content than a short excerpt marked as truncated (:func:`excerpt`).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BatchRequestCanceledError",
    "BatchRequestError",
    "BatchRequestExpiredError",
    "BatchResultError",
    "BatchResultMissingError",
    "BatchSubmitError",
    "BrokerError",
    "DeadlineExceededError",
    "FleetClosedError",
    "FleetError",
    "FleetUsageError",
    "InvalidRequestError",
    "JournalError",
    "PolicyError",
    "UnbatchableRequestError",
]

_EXCERPT_CHARS: Final = 40


def excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """A short, clearly marked excerpt of ``text`` for an error message."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… [truncated, {len(text)} chars]"


class FleetError(Exception):
    """Base class of every error llmfleet raises."""


class PolicyError(FleetError, ValueError):
    """A :class:`~llmfleet.RoutingPolicy` field is out of range (the message names it)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"RoutingPolicy.{field}: {reason}")


class UnbatchableRequestError(FleetError, ValueError):
    """The request cannot go where it was routed (e.g. ``stream=True``, too large for a batch)."""


class InvalidRequestError(UnbatchableRequestError):
    """The request breaks the provider's published schema (a missing or unknown parameter, a
    wrong type): ``field`` names where (``"max_tokens"``, ``"messages.0.role"``). Refused at
    submit, alone, before it could join a batch (a batch holding it would be refused whole)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"{field}: {reason}")


class FleetClosedError(FleetError):
    """The fleet is closed, or closed before this call could be sent or answered."""


class FleetUsageError(FleetError, TypeError):
    """The fleet was used the wrong way, e.g. :func:`~llmfleet.open_fleet`'s context manager
    awaited, entered with a plain ``with``, or called without ``async with``; the message says
    the right way."""


class BatchSubmitError(FleetError):
    """The provider refused the batch this call was in; ``__cause__`` is the SDK's error."""

    def __init__(self, message: str, *, batch_size: int) -> None:
        self.batch_size = batch_size
        super().__init__(message)


class DeadlineExceededError(FleetError):
    """The call's latency budget ran out before its result came (``deadline_action="fail"``).

    Retry with a longer budget, use ``deadline_action="escalate"``, or call ``submit_sync``.
    """


class JournalError(FleetError):
    """A journal cannot be used: the file is corrupt, not a journal, written by a newer
    llmfleet or for another provider, or in use by another process (the message says which,
    and what to do)."""


class BrokerError(FleetError):
    """The fleet's broker (Redis, ``open_fleet(broker=...)``) could not carry this call: it was
    unreachable for longer than ``broker_timeout_ms``, or it restarted and lost the fleet's
    state. The call may or may not have run; submit it again."""


class BatchResultError(FleetError):
    """The batch ran, but this call's result is not a message."""

    def __init__(self, message: str, *, batch_id: str, custom_id: str) -> None:
        self.batch_id = batch_id
        self.custom_id = custom_id
        super().__init__(f"{message} (batch {batch_id}, custom_id {custom_id})")


class BatchRequestError(BatchResultError):
    """The provider answered this call with an error (``error_type``, ``message``)."""

    def __init__(self, error_type: str, message: str, *, batch_id: str, custom_id: str) -> None:
        self.error_type = error_type
        self.message = message
        super().__init__(
            f"the provider answered {error_type}: {message}", batch_id=batch_id, custom_id=custom_id
        )


class BatchRequestExpiredError(BatchResultError):
    """The batch expired before this call was processed; submit it again or use a direct call."""


class BatchRequestCanceledError(BatchResultError):
    """The batch was canceled before this call was processed."""


class BatchResultMissingError(BatchResultError):
    """The batch ended but its results have no line for this call."""
