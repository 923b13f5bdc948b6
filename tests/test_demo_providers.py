"""The demo's provider table: what a row needs installed, and a row that has a stand-in of its
own instead of the emulator (Bedrock's)."""

from __future__ import annotations

import dataclasses

import pytest

from llmfleet._demo import PROVIDERS, DemoConfig


def test_a_row_names_each_module_it_lacks() -> None:
    row = dataclasses.replace(PROVIDERS["bedrock"], package="anyio", needs=("llmfleet_absent",))
    assert row.missing("bedrock") == (
        "--provider bedrock needs the llmfleet_absent package: "
        "pip install 'llmfleet[bedrock-emulator]'"
    )
    row = dataclasses.replace(row, package="llmfleet_absent_sdk")
    assert row.missing("bedrock") == (
        "--provider bedrock needs llmfleet_absent_sdk, llmfleet_absent: "
        "pip install 'llmfleet[bedrock-emulator]'"
    )
    assert dataclasses.replace(row, package="anyio", needs=()).missing("bedrock") is None


def test_only_the_bedrock_row_is_emulator_only_and_has_its_own_stand_in() -> None:
    own = {name for name, row in PROVIDERS.items() if row.stand_in is not None}
    only = {name for name, row in PROVIDERS.items() if row.emulator_only is not None}
    assert own == only == {"bedrock"}
    with pytest.raises(ValueError, match="stand-in only"):
        DemoConfig(provider="bedrock", base_url="https://example.invalid", api_key="k")
    # The others take a real endpoint.
    real = DemoConfig(provider="openai", base_url="https://example.invalid", api_key="k")
    assert not real.emulated


def test_the_introduction_names_the_stand_in_and_moto() -> None:
    bedrock, anthropic = PROVIDERS["bedrock"], PROVIDERS["anthropic"]
    where = bedrock.where("http://127.0.0.1:1 http://127.0.0.1:2", "1–2")
    assert where == (
        "the Bedrock stand-in at http://127.0.0.1:1, S3 from moto at http://127.0.0.1:2 "
        "(jobs end after 1–2 s, 100 records at least)"
    )
    assert anthropic.where("http://127.0.0.1:1", "3") == (
        "the emulator at http://127.0.0.1:1 (batches end after 3 s)"
    )
