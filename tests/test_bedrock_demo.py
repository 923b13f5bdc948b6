"""``llmfleet demo --provider bedrock``: the demo through the Bedrock adapter, against the
stand-in and moto's S3 (real HTTP, real clocks), on both backends."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from llmfleet._cli import main
from llmfleet._demo import DemoConfig, report_json
from llmfleet._demo.run import run_demo

from test_demo import check_figures, check_ledger

# Waves of 12 to 75 calls a few ms apart: the first 100 make one job (a size flush) long
# before the window runs out, whatever the machine's load; the 30 left are under Bedrock's
# minimum and go direct when their window does.
CONFIG = DemoConfig(
    provider="bedrock",
    agents=2,
    turns=2,
    calls=130,
    turnaround_s=0.3,
    window_s=1.0,
    batch_min_size=100,
    batch_max_size=100,
    wave_gap_s=(0.005, 0.01),
    think_s=(0.01, 0.05),
    direct_latency_s=(0.01, 0.05),
    seed=3,
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)  # real clocks: the stand-in serves from its own thread


async def test_bedrock_provider() -> None:
    report = await run_demo(CONFIG)
    data = json.loads(json.dumps(report_json(report)))
    assert data["provider"] == "bedrock"
    check_figures(data, agents=2, turns=2, calls=130)
    check_ledger(data)
    assert data["batches"]["submitted"] == 1
    assert data["batches"]["flushes"]["size"] == 1
    # The 30 calls under the minimum were answered directly, at the direct price.
    assert report.stats.below_min_batch == 30
    assert Decimal(data["cost"]["direct"]["paid"]) > 0


def test_bedrock_cli(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--agents", "1", "--turns", "1", "--calls", "5", "--window", "0.2", "--json"]
    assert main(["demo", *args, "--provider", "bedrock"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["provider"] == "bedrock"
    # Five calls never make a job of 100: every one went direct, and the bill agrees.
    assert data["batches"]["submitted"] == 0
    assert sum(data["outcomes"]["direct"].values()) == 6
    assert data["ledger"]["matches"] is True


def test_bedrock_demo_refuses_a_real_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--provider", "bedrock", "--base-url", "https://x", "--json"]) == 2
    assert "stand-in only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="stand-in only"):
        DemoConfig(provider="bedrock", base_url="https://x", api_key="k")
