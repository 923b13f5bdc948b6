"""The request encoder the adapters use (``llmfleet.providers._json``): the same text as
``json.dumps`` with compact separators, and a clear refusal of what JSON cannot carry."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmfleet.providers._json import encode

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_same_text_as_json_dumps(value: Any) -> None:
    assert encode(value) == json.dumps(value, separators=(",", ":"), allow_nan=False)


def test_ascii_only_so_its_length_bounds_any_encoding() -> None:
    assert encode({"q": "naïve 🤖"}) == '{"q":"na\\u00efve \\ud83e\\udd16"}'


@pytest.mark.parametrize("value", [{"x": object()}, {"x": {1, 2}}, {(1, 2): "tuple key"}])
def test_values_json_cannot_carry_are_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused(number: float) -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode({"temperature": number})


def test_a_cycle_is_a_value_error_not_a_crash() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError, match="circular"):
        encode(cyclic)
