"""The emulator's modules: no import cycle, a core that needs no HTTP server, and a clear
message (not a traceback) when the ``emulator`` extra is missing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llmfleet

PACKAGE = Path(llmfleet.__file__).resolve().parent / "emulator"
SRC = str(PACKAGE.parent.parent)

# Makes starlette and uvicorn look uninstalled: their import fails as a missing module's does.
BLOCK_EXTRA = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("starlette", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def run_without_extra(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_EXTRA + code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def imports_of(path: Path) -> set[str]:
    """The sibling modules ``path`` imports (``from ._x import ...``), type-only ones too."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {
        node.module
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in modules
    }


def test_no_import_cycle() -> None:
    graph = {path.stem: imports_of(path) for path in PACKAGE.glob("*.py")}
    assert graph["_state"] >= {"_core", "_anthropic", "_openai"}  # the parse sees imports
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_block_hides_the_extra() -> None:
    result = run_without_extra("import starlette")
    assert result.returncode != 0
    assert "No module named 'starlette'" in result.stderr


def test_state_and_config_import_without_the_extra() -> None:
    code = """
from llmfleet.emulator import EmulatorConfig, Fault, Ledger
from llmfleet.emulator._state import State

state = State(EmulatorConfig(turnaround_s=None))
batch = state.anthropic.create_batch(
    {"requests": [{"custom_id": "a", "params": {
        "model": "claude-haiku-4-5", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]}}]}
)
print(batch["processing_status"], "starlette" in sys.modules, "uvicorn" in sys.modules)
try:
    from llmfleet.emulator import run_emulator
except ImportError as exc:
    print("ImportError:", exc)
"""
    result = run_without_extra(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "in_progress False False"
    assert lines[1].startswith("ImportError: serving the llmfleet emulator needs ")
    assert lines[1].endswith("pip install 'llmfleet[emulator]'")


@pytest.mark.parametrize("argv", [[], ["--port", "0", "--turnaround", "1"]])
def test_main_without_the_extra_says_what_to_install(argv: list[str]) -> None:
    code = "import runpy; runpy.run_module('llmfleet.emulator', run_name='__main__')"
    result = run_without_extra(code, *argv)
    assert result.returncode == 2
    assert "pip install 'llmfleet[emulator]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_main_help_without_the_extra() -> None:
    code = "import runpy; runpy.run_module('llmfleet.emulator', run_name='__main__')"
    result = run_without_extra(code, "--help")
    assert result.returncode == 0, result.stderr
    assert "--turnaround" in result.stdout
