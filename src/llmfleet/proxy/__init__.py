"""``llmfleet proxy``: the provider's own HTTP API in front of one fleet, so that any process
in any language gets batch prices by changing its base URL (docs/design.md §13).

Needs the ``proxy`` extra (``pip install 'llmfleet[proxy]'``).
"""

from __future__ import annotations

from ._server import Proxy as Proxy
from ._server import ProxyConfig as ProxyConfig
from ._server import run_proxy as run_proxy
from ._server import serve_proxy as serve_proxy

__all__ = ["Proxy", "ProxyConfig", "run_proxy", "serve_proxy"]
