"""Every program in examples/ runs as written against the emulator (so they cannot rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def test_the_examples_are_there() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "fleet_client.py",
        "openai_agents_sdk.py",
        "pydantic_ai_agents.py",
    }


@pytest.mark.timeout(90)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_pools_its_calls(path: Path) -> None:
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    }
    result = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "batches_submitted=1 " in result.stdout, result.stdout
