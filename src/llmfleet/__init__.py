"""llmfleet: pool many agents' LLM calls into the providers' Batch APIs, per call.

Each caller says how long it can wait; tight budgets go straight to the provider, loose ones
are pooled into batches billed at half price. See :func:`open_fleet`.
"""

from __future__ import annotations

from ._dispatcher import FleetDispatcher as FleetDispatcher
from ._open import open_fleet as open_fleet
from ._policy import RoutingPolicy as RoutingPolicy
from ._stats import FleetStats as FleetStats
from ._stats import Percentiles as Percentiles
from ._stats import ResultEvent as ResultEvent
from ._stats import Route as Route
from ._stats import StatsSnapshot as StatsSnapshot
from ._transport import FleetTransport as FleetTransport
from ._transport import latency_budget as latency_budget
from .errors import BatchRequestCanceledError as BatchRequestCanceledError
from .errors import BatchRequestError as BatchRequestError
from .errors import BatchRequestExpiredError as BatchRequestExpiredError
from .errors import BatchResultError as BatchResultError
from .errors import BatchResultMissingError as BatchResultMissingError
from .errors import BatchSubmitError as BatchSubmitError
from .errors import BrokerError as BrokerError
from .errors import DeadlineExceededError as DeadlineExceededError
from .errors import FleetClosedError as FleetClosedError
from .errors import FleetError as FleetError
from .errors import FleetUsageError as FleetUsageError
from .errors import InvalidRequestError as InvalidRequestError
from .errors import JournalError as JournalError
from .errors import PolicyError as PolicyError
from .errors import UnbatchableRequestError as UnbatchableRequestError
from .journal import Journal as Journal

__version__ = "0.2.0.dev0"

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
    "FleetDispatcher",
    "FleetError",
    "FleetStats",
    "FleetTransport",
    "FleetUsageError",
    "InvalidRequestError",
    "Journal",
    "JournalError",
    "Percentiles",
    "PolicyError",
    "ResultEvent",
    "Route",
    "RoutingPolicy",
    "StatsSnapshot",
    "UnbatchableRequestError",
    "latency_budget",
    "open_fleet",
]
