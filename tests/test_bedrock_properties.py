"""G1–G7 of docs/design.md §4 on the Bedrock adapter: the bodies of
``test_dispatcher_properties`` (exact flush instants against the pure model, every caller its
own result), played through botocore over real HTTP to the Bedrock stand-in and moto's S3.

Virtual time, both backends, as for the other adapters: botocore is synchronous and normally
runs in a worker thread, during which an auto-jumping clock would jump (a window would run out
while a create is on the wire). Here the adapter runs botocore in line (``bedrock_env.inline``):
each request blocks the loop for its few milliseconds of real time, in which virtual time
stands still. The thread hop itself is exercised, in real time, by ``test_bedrock.py`` and
``test_bedrock_reliability.py``. Fewer examples than the in-process adapters: every batch is
six HTTP requests (put, create, poll, job, manifest, output).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import BEDROCK, Kind
from test_dispatcher_properties import (
    batches_respect_the_byte_limit_g2,
    burst_in_one_tick_coalesces_g6,
    matches_the_model_and_keeps_g1_to_g7,
    over,
    scenarios,
)

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.timeout(120)]


@over(BEDROCK)
@given(scenarios())
async def test_bedrock_matches_the_model_and_keeps_g1_to_g7(
    kind: Kind, scenario: dict[str, Any]
) -> None:
    await matches_the_model_and_keeps_g1_to_g7(kind, scenario)


@over(BEDROCK)
@given(n=st.integers(1, 60), max_size=st.integers(1, 50), data=st.data())
async def test_bedrock_coalesces_a_burst_in_one_tick_g6(
    kind: Kind, n: int, max_size: int, data: st.DataObject
) -> None:
    await burst_in_one_tick_coalesces_g6(kind, n, max_size, data)


@over(BEDROCK)
@given(sizes=st.lists(st.integers(100, 900), min_size=1, max_size=40))
async def test_bedrock_respects_the_byte_limit_g2(kind: Kind, sizes: list[int]) -> None:
    await batches_respect_the_byte_limit_g2(kind, sizes)
