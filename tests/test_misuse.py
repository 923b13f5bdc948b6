"""Misuse that must say what to do (docs/design.md §1): ``open_fleet()`` or a
:class:`FleetDispatcher` used without ``async with`` raises :class:`FleetUsageError` naming
the right form, not Python's bare ``AttributeError``/``TypeError``; and the live stats view
and its snapshot have the same public names.

The misuses below are type errors too: each ``type: ignore`` is needed (mypy's
``warn_unused_ignores`` checks that), so a type checker flags them before they run.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from llmfleet import (
    FleetDispatcher,
    FleetError,
    FleetStats,
    FleetUsageError,
    RoutingPolicy,
    StatsSnapshot,
)
from llmfleet import open_fleet as open_fleet_fn

from fakes import FakeProvider, request

HINT = "use `async with open_fleet(client) as fleet:`"


def open_fleet(**options: Any) -> AbstractAsyncContextManager[FleetDispatcher[Any]]:
    return open_fleet_fn(FakeProvider(), **options)


async def test_awaiting_open_fleet_says_use_async_with() -> None:
    with pytest.raises(FleetUsageError, match="async context manager") as caught:
        await open_fleet()  # type: ignore[misc]
    assert HINT in str(caught.value)
    # Still the TypeError Python raised before, for code that catches that.
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, FleetError)


def test_plain_with_on_open_fleet_says_use_async_with() -> None:
    with (
        pytest.raises(FleetUsageError, match="async context manager") as caught,
        open_fleet(),  # type: ignore[attr-defined]
    ):
        pass
    assert HINT in str(caught.value)


async def test_open_fleet_used_as_the_fleet_says_use_async_with() -> None:
    fleet = open_fleet()
    with pytest.raises(FleetUsageError, match="async context manager") as caught:
        await fleet.submit(**request("x"))  # type: ignore[attr-defined]
    assert HINT in str(caught.value)
    assert "`.submit`" in str(caught.value)
    with pytest.raises(FleetUsageError, match="async context manager"):
        _ = fleet.stats  # type: ignore[attr-defined]
    # The wrapped context manager was never entered: nothing to clean up, no warning.


async def test_broker_fleet_misuse_says_use_async_with() -> None:
    # Made, not entered: no Redis is reached.
    cm = open_fleet_fn(FakeProvider(), broker="redis://127.0.0.1:9/0")
    assert isinstance(cm, AbstractAsyncContextManager)
    with pytest.raises(FleetUsageError, match="async context manager"):
        await cm  # type: ignore[misc]
    with pytest.raises(FleetUsageError, match="async context manager"):
        await cm.submit_batch(**request("x"))  # type: ignore[attr-defined]


def test_plain_with_on_a_dispatcher_says_use_async_with() -> None:
    with (
        pytest.raises(FleetUsageError, match="FleetDispatcher is an async context manager") as c,
        FleetDispatcher(FakeProvider()),  # type: ignore[attr-defined]
    ):
        pass
    assert "async with FleetDispatcher(client) as fleet:" in str(c.value)


async def test_open_fleet_is_still_an_ordinary_async_context_manager() -> None:
    cm = open_fleet()
    assert isinstance(cm, AbstractAsyncContextManager)
    # Probing private and special names is a plain AttributeError, as on any object.
    assert not hasattr(cm, "__wrapped__")
    assert not hasattr(cm, "_private")
    with pytest.raises(AttributeError) as caught:
        _ = cm.__missing__  # type: ignore[attr-defined]
    assert not isinstance(caught.value, FleetUsageError)
    assert copy.copy(cm) is not cm
    assert "async with" in repr(cm)
    async with cm as fleet:
        assert isinstance(fleet, FleetDispatcher)
        assert (await fleet.submit_sync(**request("x"))).text == "x"


def public_names(cls: type) -> set[str]:
    names = {name for name in dir(cls) if not name.startswith("_")}
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return names


def test_live_stats_and_snapshot_have_the_same_public_names() -> None:
    # The live view's own methods: snapshot() makes the other; wait_ms is a method on the
    # live view (per route) and a mapping on the snapshot.
    live = public_names(FleetStats) - {"snapshot"}
    assert live == public_names(StatsSnapshot)


async def test_live_saving_is_the_snapshots() -> None:
    policy = RoutingPolicy(batch_window_ms=1_000, batch_min_size=1, poll_interval_ms=100)
    async with open_fleet(policy=policy) as fleet:
        await fleet.submit_batch(**request("x"))
        await fleet.submit_sync(**request("y"))
    # Half price on the batch route: a saving, the same live and frozen.
    assert fleet.stats.saving > 0
    assert fleet.stats.saving == fleet.stats.snapshot().saving
