"""The optional extras (pyproject.toml): what each brings, and the message when one is missing.

``bedrock`` is what production needs (botocore), never the mock server the stand-in runs on;
``bedrock-emulator`` brings that; ``trio`` the second backend. A missing extra's module is
named with the extra to install, not a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import llmfleet
from llmfleet._demo import PROVIDERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the metadata is the same on every Python
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SRC = str(Path(llmfleet.__file__).resolve().parents[1])


def pyproject() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data


def distribution(requirement: str) -> str:
    """``moto[server,s3]>=5.1`` -> ``moto``."""
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match is not None, requirement
    return match.group().lower()


def expand(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install, with llmfleet's own extras expanded."""
    extras: dict[str, list[str]] = pyproject()["project"]["optional-dependencies"]
    found: set[str] = set()
    for requirement in requirements:
        name = distribution(requirement)
        if name != "llmfleet":
            found.add(name)
            continue
        inner = re.search(r"\[([^\]]*)\]", requirement)
        for extra in inner.group(1).split(",") if inner else []:
            assert extra.strip() in extras, f"{requirement}: no extra {extra!r}"
            found |= expand(extras[extra.strip()])
    return found


def test_bedrock_extra_has_no_mock_server() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    assert expand(extras["bedrock"]) == {"boto3", "botocore"}
    # The stand-in's S3 comes with its own extra, which brings the adapter and the emulator.
    assert expand(extras["bedrock-emulator"]) >= {"botocore", "moto", "starlette", "uvicorn"}
    assert "moto" not in expand(extras["emulator"])


def test_trio_extra() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    assert extras["trio"] == ["trio>=0.30"]


def test_test_group_installs_every_extra() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    group = [r for r in pyproject()["dependency-groups"]["test"] if isinstance(r, str)]
    assert expand(group) >= expand([f"llmfleet[{','.join(extras)}]"])


def test_the_demos_install_hints_name_an_extra_that_brings_what_is_missing() -> None:
    for name, row in PROVIDERS.items():
        hint = re.fullmatch(r"pip install '?(llmfleet(\[[a-z,-]+\])?)'?", row.install)
        assert hint is not None, (name, row.install)
        # Import names to distribution names: `google.genai` is google-genai's.
        modules = {m.replace("_", "-").replace(".", "-") for m in (row.package, *row.needs)}
        assert expand([hint.group(1)]) | {"anthropic"} >= modules, name


# Makes botocore and boto3 look uninstalled: their import fails as a missing module's does.
BLOCK_BOTOCORE = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("botocore", "boto3"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def run_without_botocore(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_BOTOCORE + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_the_block_hides_botocore() -> None:
    result = run_without_botocore("import botocore.session")
    assert result.returncode != 0
    assert "No module named 'botocore'" in result.stderr


def test_bedrock_without_botocore_says_what_to_install() -> None:
    code = """
from llmfleet import open_fleet  # the rest of llmfleet needs no botocore
try:
    from llmfleet.providers.bedrock import BedrockClient
except ModuleNotFoundError as exc:
    print(exc.name)
    print(exc)
"""
    result = run_without_botocore(code)
    assert result.returncode == 0, result.stderr
    name, message = result.stdout.splitlines()
    assert name == "botocore"
    assert message == (
        "the Bedrock adapter (llmfleet.providers.bedrock) needs botocore: "
        "pip install 'llmfleet[bedrock]'"
    )
