"""RoutingPolicy (docs/design.md §3): defaults, validation naming the field, frozen, kw-only."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from llmfleet import FleetError, PolicyError, RoutingPolicy

FIELDS = (
    "sync_max_latency_ms",
    "batch_window_ms",
    "batch_min_size",
    "batch_max_size",
    "poll_interval_ms",
    "poll_max_interval_ms",
    "max_queued",
)
# docs/design.md §5.4: the shared request budget for the batch endpoints (None = no limit).
ALL_FIELDS = (
    *FIELDS,
    "batch_api_rpm",
    # The fields of docs/design.md §8: what the latency budget promises.
    "deadline_action",
    "expected_turnaround_ms",
    "escalation_margin_ms",
    "flex_max_latency_ms",
)


def test_defaults_match_design() -> None:
    policy = RoutingPolicy()
    assert dataclasses.asdict(policy) == {
        "sync_max_latency_ms": 5_000,
        "batch_window_ms": 30_000,
        "batch_min_size": 10,
        "batch_max_size": 100,
        "poll_interval_ms": 1_000,
        "poll_max_interval_ms": 60_000,
        "max_queued": 100_000,
        "batch_api_rpm": 50,
        "deadline_action": "escalate",
        "expected_turnaround_ms": None,
        "escalation_margin_ms": 2_000,
        "flex_max_latency_ms": 900_000,
    }


def test_fields_are_exactly_the_designed_ones() -> None:
    assert tuple(f.name for f in dataclasses.fields(RoutingPolicy)) == ALL_FIELDS


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "50"])
def test_bad_batch_api_rpm_names_the_field(bad: Any) -> None:
    with pytest.raises(PolicyError, match="batch_api_rpm") as info:
        RoutingPolicy(batch_api_rpm=bad)
    assert info.value.field == "batch_api_rpm"
    assert "None for no limit" in str(info.value)


def test_batch_api_rpm_none_means_no_limit() -> None:
    assert RoutingPolicy(batch_api_rpm=None).batch_api_rpm is None


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"batch_window_ms": 0}, id="window-0-flushes-at-once"),
        pytest.param({"sync_max_latency_ms": 0}, id="sync-max-0"),
        pytest.param({"batch_min_size": 1, "batch_max_size": 1}, id="min-max-1"),
        pytest.param({"batch_min_size": 100_000, "batch_max_size": 100_000}, id="min-max-limit"),
        pytest.param({"poll_interval_ms": 1, "poll_max_interval_ms": 1}, id="poll-1-1"),
        pytest.param({"poll_interval_ms": 500, "poll_max_interval_ms": 500}, id="poll-equal"),
        pytest.param({"max_queued": 1}, id="max-queued-1"),
    ],
)
def test_edge_values_are_accepted(kwargs: dict[str, Any]) -> None:
    policy = RoutingPolicy(**kwargs)
    for name, value in kwargs.items():
        assert getattr(policy, name) == value


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(-1, id="negative"),
        pytest.param(True, id="bool-true"),
        pytest.param(False, id="bool-false"),
        pytest.param(1.5, id="float"),
        pytest.param(1000.0, id="integral-float"),
        pytest.param("10", id="str"),
        pytest.param(None, id="none"),
    ],
)
def test_bad_value_of_any_field_names_it(field: str, bad: object) -> None:
    kwargs: dict[str, Any] = {field: bad}
    with pytest.raises(PolicyError) as excinfo:
        RoutingPolicy(**kwargs)
    assert excinfo.value.field == field
    assert field in str(excinfo.value)
    assert repr(bad) in str(excinfo.value) or str(bad) in str(excinfo.value)


@pytest.mark.parametrize(
    ("kwargs", "field", "says"),
    [
        pytest.param(
            {"batch_min_size": 20, "batch_max_size": 10},
            "batch_min_size",
            "batch_max_size",
            id="min-over-max",
        ),
        pytest.param({"batch_max_size": 100_001}, "batch_max_size", "100,000", id="max-over-limit"),
        pytest.param(
            {"batch_min_size": 10, "batch_max_size": 1_000_000},
            "batch_max_size",
            "100,000",
            id="max-far-over-limit",
        ),
        pytest.param({"batch_min_size": 0}, "batch_min_size", ">= 1", id="min-0"),
        pytest.param(
            {"batch_min_size": 0, "batch_max_size": 0}, "batch_min_size", ">= 1", id="min-max-0"
        ),
        pytest.param({"poll_interval_ms": 0}, "poll_interval_ms", ">= 1", id="poll-0"),
        pytest.param(
            {"poll_interval_ms": 2_000, "poll_max_interval_ms": 1_999},
            "poll_max_interval_ms",
            "poll_interval_ms",
            id="poll-max-under-interval",
        ),
        pytest.param(
            {"poll_interval_ms": 70_000}, "poll_max_interval_ms", "70000", id="poll-over-default"
        ),
        pytest.param({"max_queued": 0}, "max_queued", ">= 1", id="max-queued-0"),
        pytest.param({"sync_max_latency_ms": -5_000}, "sync_max_latency_ms", ">= 0", id="neg"),
    ],
)
def test_out_of_range_names_field_and_why(kwargs: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(PolicyError) as excinfo:
        RoutingPolicy(**kwargs)
    error = excinfo.value
    assert error.field == field
    assert field in str(error)
    assert says in str(error)


def test_policy_error_is_a_value_error_and_a_fleet_error() -> None:
    with pytest.raises(ValueError, match="batch_max_size") as excinfo:
        RoutingPolicy(batch_max_size=0)
    assert isinstance(excinfo.value, PolicyError)
    assert isinstance(excinfo.value, FleetError)


@pytest.mark.parametrize("field", FIELDS)
def test_frozen(field: str) -> None:
    policy = RoutingPolicy()
    before = getattr(policy, field)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(policy, field, before + 1)
    assert getattr(policy, field) == before


def test_keyword_only() -> None:
    policy_class: Any = RoutingPolicy
    with pytest.raises(TypeError, match="positional"):
        policy_class(5_000)


def test_equal_and_hashable_by_value() -> None:
    a = RoutingPolicy(batch_min_size=3, batch_max_size=7)
    b = RoutingPolicy(batch_min_size=3, batch_max_size=7)
    assert a == b
    assert hash(a) == hash(b)
    assert a != RoutingPolicy(batch_min_size=3, batch_max_size=8)
    assert dataclasses.replace(a, batch_max_size=8) == RoutingPolicy(
        batch_min_size=3, batch_max_size=8
    )


def test_replace_validates_too() -> None:
    with pytest.raises(PolicyError) as excinfo:
        dataclasses.replace(RoutingPolicy(), batch_min_size=1_000)
    assert excinfo.value.field == "batch_min_size"


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("deadline_action", "retry"),
        ("deadline_action", None),
        ("expected_turnaround_ms", -1),
        ("expected_turnaround_ms", 1.5),
        ("escalation_margin_ms", -5),
    ],
)
def test_bad_deadline_fields_name_the_field(field: str, bad: Any) -> None:
    with pytest.raises(PolicyError, match=field) as info:
        RoutingPolicy(**{field: bad})
    assert info.value.field == field
