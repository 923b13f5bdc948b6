"""``llmfleet demo`` end to end, the ``llmfleet`` command line, and the README's example.

The demo talks HTTP to the emulator on its own thread, so these tests run on real clocks (an
autojumping virtual clock would fire the SDK's timeouts while it waits on the socket).
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from llmfleet._cli import main
from llmfleet._demo import DemoConfig, report_json
from llmfleet._demo.render import print_report
from llmfleet._demo.run import run_demo
from llmfleet.emulator import EmulatorConfig, start_emulator

README = Path(__file__).resolve().parent.parent / "README.md"

# Small and fast: two size flushes at most, a window flush for the tail, ~1–2 s per run.
SMALL = DemoConfig(
    agents=2,
    turns=3,
    calls=30,
    turnaround_s=0.3,
    window_s=0.5,
    batch_min_size=10,
    batch_max_size=20,
    think_s=(0.01, 0.05),
    direct_latency_s=(0.01, 0.05),
    seed=7,
)
SMALL_ARGS = ["--agents", "2", "--turns", "2", "--calls", "30", "--turnaround", "0.3"]
SMALL_ARGS += ["--window", "0.5", "--json"]


# The deadline scenario, small: budgets of 1-2 s against batches of 0.3-2.5 s. With seed 0 the
# emulator's first two batches take 2.45 and 2.38 s, longer than any budget, so their calls
# must be escalated; its third takes 0.6 s, so some calls are answered by a batch.
SMALL_DEADLINES = DemoConfig.preset(
    "deadlines",
    agents=1,
    turns=2,
    calls=24,
    turnaround_s=(0.3, 2.5),
    grading_budget_ms=(1_000, 2_000),
    sync_max_latency_ms=500,
    chat_budget_ms=400,
    escalation_margin_ms=300,
    window_s=0.3,
    batch_min_size=8,
    batch_max_size=16,
    wave_gap_s=(0.1, 0.3),
    think_s=(0.01, 0.05),
    direct_latency_s=(0.01, 0.05),
    seed=0,
)
DEADLINE_ARGS = ["--scenario", "deadlines", "--agents", "1", "--turns", "2", "--calls", "24"]
DEADLINE_ARGS += ["--turnaround", "0.3-2.5", "--window", "0.3", "--budget", "1000-2000"]
DEADLINE_ARGS += ["--sync-max", "500", "--chat-budget", "400", "--margin", "300", "--json"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Real clocks on purpose: see the module docstring.
    return str(request.param)


def check_figures(data: dict[str, Any], *, agents: int, turns: int, calls: int) -> None:
    """What every demo run must show, read from its JSON report."""
    planned = {"direct": agents * turns, "batch": calls}
    assert data["calls"]["planned"] == planned
    assert data["calls"]["routed"] == planned
    assert data["calls"]["ended"] == planned  # nothing hangs: every caller got an outcome
    outcomes = data["outcomes"]["total"]
    assert sum(outcomes.values()) == agents * turns + calls
    assert data["batches"]["submitted"] >= 1
    assert sum(data["batches"]["flushes"].values()) == data["batches"]["submitted"]
    assert data["ok"] is True
    cost = data["cost"]["total"]
    assert Decimal(cost["paid"]) < Decimal(cost["list_price"])
    assert Decimal(data["cost"]["batch"]["paid"]) * 2 == Decimal(
        data["cost"]["batch"]["list_price"]
    )


def money(cost: dict[str, str]) -> tuple[Decimal, Decimal]:
    return Decimal(cost["list_price"]), Decimal(cost["paid"])


def add(*costs: dict[str, str]) -> tuple[Decimal, Decimal]:
    return (
        sum((Decimal(c["list_price"]) for c in costs), Decimal(0)),
        sum((Decimal(c["paid"]) for c in costs), Decimal(0)),
    )


def check_deadline_ledger(data: dict[str, Any]) -> None:
    """The bill of a run with escalations: per route, and the dropped results apart."""
    ledger, cost, escalations = data["ledger"], data["cost"], data["escalations"]
    assert ledger is not None
    assert ledger["matches"] is True
    # Escalated calls are billed as direct calls, and the fleet counts them there too.
    assert ledger["cost"]["direct"] == cost["direct"]
    # A batch result that came after its call escalated is billed on the batch route; the
    # fleet has it in escalation_cost, not in the batch route's cost.
    dropped = escalations["dropped_results"]
    assert money(ledger["cost"]["batch"]) == add(cost["batch"], dropped)
    assert money(ledger["unused_batch_results"]) == money(dropped)
    assert money(escalations["escalation_cost"]) == add(escalations["direct_calls"], dropped)
    assert money(data["spent"]) == money(ledger["cost"]["total"])
    # Net saving: the list price of every answer minus everything paid.
    assert Decimal(data["net_saving"]) == money(cost["total"])[0] - money(data["spent"])[1]
    assert Decimal(data["net_saving"]) == Decimal(data["batching_saving"]) - money(dropped)[1]
    assert ledger["batches_created"] == data["batches"]["submitted"]


def check_ledger(data: dict[str, Any]) -> None:
    ledger = data["ledger"]
    assert ledger is not None
    assert ledger["matches"] is True
    assert data["saving"] == ledger["saving"]  # exact decimal strings, not rounded floats
    assert data["cost"] == ledger["cost"]
    assert ledger["batches_created"] == data["batches"]["submitted"]


async def test_demo_runs_to_the_end() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    report = await run_demo(SMALL, console=console, live=True)
    data = report_json(report)
    json.dumps(data)  # JSON-ready as it is
    check_figures(data, agents=2, turns=3, calls=30)
    check_ledger(data)
    # The emulator answered the two marked prompts with errors; only their callers saw them.
    assert data["outcomes"]["batch"]["errored"] == 2
    assert data["outcomes"]["total"]["errored"] == 2
    assert len(data["handled_errors"]) == 2
    assert data["outcomes"]["direct"] == {"succeeded": 6}
    assert data["tokens"]["batch"]["cache_read_tokens"] > 0
    assert "grading (batch)" in out.getvalue()  # the live display ran

    printed = io.StringIO()
    print_report(report, Console(file=printed, width=120))
    text = printed.getvalue()
    assert "match the emulator's ledger exactly" in text
    assert f"${report.cost.saving.normalize():f}" in text


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cli_json(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *SMALL_ARGS, "--backend", backend]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["backend"] == backend
    assert data["target"] == "emulator"
    check_figures(data, agents=2, turns=2, calls=30)
    check_ledger(data)
    assert "api_key" not in data["config"]


def test_cli_human_report(capsys: pytest.CaptureFixture[str]) -> None:
    # stdout is captured, not a terminal: no live display, just the report.
    assert main(["demo", *SMALL_ARGS[:-1]]) == 0
    out = capsys.readouterr().out
    assert "Calls per route" in out
    assert "✓ The fleet's figures match the emulator's ledger exactly" in out
    assert "\x1b[" not in out  # no terminal control codes in a pipe


async def test_deadlines_escalate_keeps_every_budget() -> None:
    report = await run_demo(SMALL_DEADLINES)
    data = report_json(report)
    json.dumps(data)
    assert data["scenario"] == "deadlines"
    assert data["policy"]["deadline_action"] == "escalate"
    assert data["calls"]["ended"] == {"direct": 2, "batch": 24}
    # The promise, measured by each caller on its own clock: every call answered in time.
    budgets = data["budgets"]
    assert budgets["total"]["calls"] == 26
    assert budgets["total"]["kept"] == 26
    assert budgets["total"]["kept_percent"] == "100.0"
    assert budgets["batch"]["worst_wait_over_budget"] <= 1
    assert budgets["all_kept"] is True
    escalations = data["escalations"]
    assert escalations["count"] > 0  # the first batches take longer than any budget
    assert escalations["answered"] == escalations["count"]
    assert sum(budgets["fleet_misses"].values()) == 0
    assert budgets["fleet_hits"]["direct"] == escalations["count"]
    check_deadline_ledger(data)
    assert data["ok"] is True

    printed = io.StringIO()
    print_report(report, Console(file=printed, width=140))
    text = printed.getvalue()
    assert "Budgets, as each caller measured them" in text
    assert "✓ Every call got its answer within its budget" in text
    assert "net saving" in text
    assert "match the emulator's ledger exactly" in text


def test_deadlines_fail(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *DEADLINE_ARGS, "--deadline-action", "fail"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["policy"]["deadline_action"] == "fail"
    assert data["calls"]["ended"] == data["calls"]["planned"]  # every call ended
    budgets = data["budgets"]
    assert budgets["batch"]["deadline_exceeded"] > 0
    assert budgets["batch"]["deadline_exceeded"] == data["outcomes"]["total"]["failed"]
    assert budgets["direct"]["deadline_exceeded"] == 0  # the chat calls went direct
    assert budgets["all_kept"] is None  # "fail" promises an outcome, not an answer
    assert data["escalations"]["count"] == 0
    check_deadline_ledger(data)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_openai_provider(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("openai")
    assert main(["demo", *SMALL_ARGS, "--provider", "openai", "--backend", backend]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["provider"] == "openai"
    assert data["config"]["provider"] == "openai"
    check_figures(data, agents=2, turns=2, calls=30)
    check_ledger(data)
    assert data["outcomes"]["batch"]["errored"] == 2  # the markers work on OpenAI's routes too


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_gemini_provider(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("google.genai")
    assert main(["demo", *SMALL_ARGS, "--provider", "gemini", "--backend", backend]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["provider"] == "gemini"
    check_figures(data, agents=2, turns=2, calls=30)
    check_ledger(data)
    assert data["outcomes"]["batch"]["errored"] == 2  # the markers work on Gemini's routes too


def test_openai_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "openai" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main(["demo", "--provider", "openai", "--json"]) == 2
    captured = capsys.readouterr()
    assert "needs the openai package" in captured.err
    assert captured.out == ""


def test_base_url_needs_api_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    code = main(["demo", "--base-url", "http://127.0.0.1:9", "--json"])
    captured = capsys.readouterr()
    assert code != 0
    assert "ANTHROPIC_API_KEY" in captured.err
    assert captured.out == ""


def test_base_url_with_api_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An emulator started apart stands in for a real endpoint: the demo must use the key it is
    # given, never print it, and have no ledger to compare with.
    secret = "sk-ant-api03-do-not-print-me-0123456789"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    with start_emulator(EmulatorConfig(turnaround_s=0.3)) as emu:
        code = main(["demo", *SMALL_ARGS, "--base-url", emu.url])
        # The SDK sends the key as x-api-key or authorization; the emulator records it redacted.
        sent = [r.headers.get("x-api-key") or r.headers.get("authorization") for r in emu.requests]
    captured = capsys.readouterr()
    assert code == 0
    assert secret not in captured.out
    assert secret not in captured.err
    assert sent
    assert all(key == "[redacted]" for key in sent)  # a key went with every request
    data = json.loads(captured.out)
    assert data["target"] == emu.url
    assert data["ledger"] is None
    check_figures(data, agents=2, turns=2, calls=30)
    assert data["outcomes"]["batch"].get("errored", 0) == 0  # no markers to a real endpoint


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    options = ["--agents", "--calls", "--turnaround", "--json", "--base-url", "--seed"]
    options += ["--scenario", "--provider", "--deadline-action", "--budget", "--margin"]
    for option in options:
        assert option in out
    assert "ANTHROPIC_API_KEY" in out


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    assert main(["demo", "--calls", "-1"]) == 2
    assert "must be >= 0" in capsys.readouterr().err
    assert main(["demo", "--turnaround", "8-1"]) == 2
    assert "LOW <= HIGH" in capsys.readouterr().err
    assert main(["demo", "--deadline-action", "hope"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_demo_config_is_checked() -> None:
    with pytest.raises(ValueError, match="calls"):
        DemoConfig(calls=-1)
    with pytest.raises(ValueError, match="API key"):
        DemoConfig(base_url="https://api.anthropic.com")
    assert "secret" not in repr(DemoConfig(base_url="https://x", api_key="secret"))
    with pytest.raises(ValueError, match="turnaround_s"):
        DemoConfig(turnaround_s=(2.0, 1.0))
    with pytest.raises(ValueError, match="scenario"):
        DemoConfig.preset("nonsense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chat_budget_ms"):
        DemoConfig(chat_budget_ms=3_000, sync_max_latency_ms=2_000)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        DemoConfig(provider="openai", base_url="https://api.openai.com/v1")
    deadlines = DemoConfig.preset("deadlines", calls=10)
    assert deadlines.calls == 10
    assert deadlines.policy().sync_max_latency_ms == 2_000
    assert deadlines.policy().escalation_margin_ms == 500
    assert DemoConfig.preset("pooling") == DemoConfig()


# Every complete program in the README (fragments, which don't call anyio.run, are skipped).
README_BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    if "anyio.run(main)" in block
]


@pytest.mark.parametrize(
    ("index", "expect"),
    [(0, "batches_submitted=1"), (1, "batches_submitted=1"), (2, "batches_submitted=1")],
    ids=["anthropic-quickstart", "openai", "bedrock"],
)
def test_readme_examples_run(index: int, expect: str) -> None:
    """Each README example runs as written (so the page cannot rot)."""
    assert len(README_BLOCKS) == 3, "README.md should hold three runnable examples"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", README_BLOCKS[index]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout, result.stdout
