"""``llmfleet demo``: a fleet of agents with mixed budgets, and what it cost (docs/design.md §10).

Chat agents make one call at a time with a tight budget (the direct route); a grader submits a
burst of calls that can wait (the batch route). Against the embedded emulator, the fleet's own
cost figures are then set beside the emulator's ledger, which must agree to the last digit.

Two scenarios:

- ``pooling`` (the default): grading budgets of minutes, so every grading call is batched.
- ``deadlines`` (docs/design.md §8): grading budgets of seconds, and a batch turnaround drawn
  per batch that sometimes exceeds them, so the fleet must keep its promise by flushing early,
  routing direct and escalating; the report adds each caller's own measure of its budget, the
  escalations and what they cost against what batching saved.

Either runs against any provider of :data:`~.config.PROVIDERS` (the emulator serves them all).

The modules, each needing only what it imports:

- ``config``: scenarios, :class:`DemoConfig`, the provider table (no SDK, no extra);
- ``report``: the figures, :class:`DemoReport` and its JSON (no extra);
- ``agents``: the chat agents and the grader;
- ``run``: :func:`~.run.run_demo` (needs the ``emulator`` extra's server);
- ``render``: the live display and the report's tables (needs rich, in the ``emulator`` extra).
"""

from __future__ import annotations

from .config import PROVIDERS as PROVIDERS
from .config import SCENARIOS as SCENARIOS
from .config import DemoConfig as DemoConfig
from .config import DemoProvider as DemoProvider
from .report import BudgetFigures as BudgetFigures
from .report import DemoReport as DemoReport
from .report import EscalationFigures as EscalationFigures
from .report import LedgerFigures as LedgerFigures
from .report import report_json as report_json

__all__ = [
    "PROVIDERS",
    "SCENARIOS",
    "BudgetFigures",
    "DemoConfig",
    "DemoProvider",
    "DemoReport",
    "EscalationFigures",
    "LedgerFigures",
    "report_json",
]
