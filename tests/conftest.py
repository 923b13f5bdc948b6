"""Shared fixtures: every async test runs on asyncio and trio, each with a virtual clock.

Modules that talk to a real server over HTTP override ``anyio_backend`` with real clocks: an
auto-jumping clock would fire the HTTP client's timeouts while it waits on the socket.
"""

from __future__ import annotations

import signal
from typing import Any

import looptime
import pytest
import trio.testing

# A shell starts a background job with SIGINT ignored, and a child process inherits that: the
# tests that press Ctrl-C on a `llmfleet run` child would then see it run on to the end. Give
# the children the default (Python turns it into KeyboardInterrupt), as a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param == "trio":
        return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}
    return "asyncio", {"loop_factory": looptime.new_event_loop}
