"""The one entry point for tests, lint, type checks, the demo and the benchmarks.

``python3 -m pip install nox uv && nox -s tests`` works on a fresh machine: each session builds
its own virtualenv from the dependency groups in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = False

PYPROJECT = nox.project.load_toml("pyproject.toml")
# The Python running nox always counts; other supported versions only where an interpreter
# really runs (a pyenv shim for a version that is not selected exists but fails).
CURRENT = f"{sys.version_info.major}.{sys.version_info.minor}"
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


def _runs(version: str) -> bool:
    exe = shutil.which(f"python{version}")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-c", "pass"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


PYTHONS = [v for v in SUPPORTED if v == CURRENT or _runs(v)]


def install_group(session: nox.Session, *groups: str) -> None:
    """Install the project and the named dependency groups into the session's venv."""
    deps: list[str] = []
    for group in groups:
        deps += nox.project.dependency_groups(PYPROJECT, group)
    session.install("-e", ".", *deps)


def ensure_redis_server(session: nox.Session) -> None:
    """The broker tests start their own ``redis-server`` processes: install Debian's package
    when it is missing and this session may (root with apt-get, as in CI); otherwise say so
    (those tests then skip, or fail under ``CI=true``)."""
    if shutil.which("redis-server"):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "update", "-qq", external=True)
        session.run(
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "redis-server",
            external=True,
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )
    else:
        session.warn(
            "redis-server is not installed: the broker tests will skip "
            "(Debian: sudo apt-get install redis-server)"
        )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and trio. Its services set themselves up: the emulators and
    moto's S3 start inside the tests, and redis-server is installed here when missing."""
    ensure_redis_server(session)
    install_group(session, "test")
    # One pytest worker per core (pytest-xdist); work-stealing evens out the long
    # multi-process tests. Arguments given after `--` replace these.
    session.run("pytest", *(session.posargs or ["-n", "auto", "--dist", "worksteal"]))


@nox.session(python=CURRENT)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=CURRENT)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests and this file."""
    install_group(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session(python=CURRENT, default=False)
def demo(session: nox.Session) -> None:
    """The main job: a fleet of agents against the embedded emulator (no API key needed)."""
    session.install("-e", ".[emulator]")
    session.run("llmfleet", "demo", *session.posargs)


@nox.session(python=CURRENT, default=False)
def bench(session: nox.Session) -> None:
    """The benchmarks, side by side with llmfleet 0.1.0 (``-- --quick``: about 2 minutes).

    0.1.0 shares our import name, so it gets its own venv (``benchmarks/.venv-legacy``, kept
    between runs, git-ignored) with the same ``anthropic`` as this session.
    """
    install_group(session, "bench")
    anthropic_version = session.run(
        "python", "-c", "import anthropic; print(anthropic.__version__)", silent=True
    )
    legacy = Path("benchmarks", ".venv-legacy").absolute()
    legacy_python = legacy / "bin" / "python"
    if not legacy_python.exists():
        session.run(sys.executable, "-m", "venv", str(legacy), external=True)
    session.run(
        str(legacy_python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "llmfleet==0.1.0",
        f"anthropic=={str(anthropic_version).strip()}",
        external=True,
    )
    session.run(
        "python", "benchmarks/run.py", "--legacy-python", str(legacy_python), *session.posargs
    )


@nox.session(python=CURRENT, default=False)
def soak(session: nox.Session) -> None:
    """The soak (docs/design.md §10): 100,000 calls from 1,000 agents against the emulator with
    random faults, on asyncio and trio (``-- -k asyncio`` for one); prints what it measured.

    The suite runs the same test at 10,000 calls; ``LLMFLEET_SOAK_SIZE`` sets the size there.
    """
    install_group(session, "test", "bench")  # bench: psutil, to sample memory
    session.run(
        "pytest",
        "tests/test_soak.py",
        "-s",
        *session.posargs,
        env={"LLMFLEET_SOAK_SIZE": "100000"},
    )
