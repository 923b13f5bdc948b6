"""``llmfleet demo --provider bedrock``: the demo through the Bedrock adapter, against the
stand-in and moto's S3 (real HTTP, real clocks), on both backends."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from llmfleet._cli import main
from llmfleet._demo import DemoConfig

from test_demo import check_figures, check_ledger

# One job of 100 records (the size flush), and a tail under Bedrock's minimum that goes direct
# when its window runs out.
ARGS = ["--agents", "2", "--turns", "2", "--calls", "130", "--turnaround", "0.3"]
ARGS += ["--window", "0.5", "--json"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_bedrock_provider(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *ARGS, "--provider", "bedrock", "--backend", backend]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["provider"] == "bedrock"
    check_figures(data, agents=2, turns=2, calls=130)
    check_ledger(data)
    assert data["batches"]["submitted"] == 1
    # The 30 calls under the minimum were answered directly, at the direct price.
    assert Decimal(data["cost"]["direct"]["paid"]) > 0
    assert data["outcomes"]["direct"]["succeeded"] >= 2 * 2 + 30 - 2


def test_bedrock_demo_refuses_a_real_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--provider", "bedrock", "--base-url", "https://x", "--json"]) == 2
    assert "stand-in only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="stand-in only"):
        DemoConfig(provider="bedrock", base_url="https://x", api_key="k")
