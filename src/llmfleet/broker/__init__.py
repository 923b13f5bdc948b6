"""One fleet across many processes and machines, on Redis: ``open_fleet(client,
broker="redis://...")``.

Needs the ``redis`` extra (``pip install 'llmfleet[redis]'``: coredis, which runs on anyio, so
asyncio and trio alike). The single-process fleet needs none of this.
"""

from __future__ import annotations

from ._fleet import BrokeredFleet as BrokeredFleet
from ._fleet import open_broker_fleet as open_broker_fleet

__all__ = ["BrokeredFleet", "open_broker_fleet"]
