"""The one entry point for tests, lint, type checks, the demo and the benchmarks.

``python3 -m pip install nox && nox -s tests`` works on a fresh machine: each session builds
its own virtualenv from the dependency groups in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
import sys

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = False

PYPROJECT = nox.project.load_toml("pyproject.toml")
# Every supported Python that is on this machine; CI and a fresh machine may have only one.
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]
PYTHONS = [v for v in SUPPORTED if shutil.which(f"python{v}")] or [
    f"{sys.version_info.major}.{sys.version_info.minor}"
]


def install_group(session: nox.Session, *groups: str) -> None:
    """Install the project and the named dependency groups into the session's venv."""
    deps: list[str] = []
    for group in groups:
        deps += nox.project.dependency_groups(PYPROJECT, group)
    session.install("-e", ".", *deps)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and trio."""
    install_group(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS[-1])
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[-1])
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests and this file."""
    install_group(session, "typecheck")
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHONS[-1], default=False)
def demo(session: nox.Session) -> None:
    """The main job: a fleet of agents against the embedded emulator (no API key needed)."""
    session.install("-e", ".[emulator]")
    session.run("llmfleet", "demo", *session.posargs)
