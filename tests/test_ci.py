"""CI runs the README's one test command, and that command stops on any ruff or mypy finding.

`.ci/run` runs exactly the README's test command (both are read here and compared); the command
runs ruff, then mypy strict, then pytest, joined by ``&&``; and on a copy of the project the lint
part of that very command (the README's text, not a copy of it) passes as it stands and fails on
one injected ruff finding or one injected mypy finding in ``tests/``, before pytest could start.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# README: the test command"
IGNORED = (".venv", ".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
           "*.egg-info", "build", "dist")


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Run the checks and the tests"):]
    block = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert block and "\n" not in block.group(1), "the README's test command is one line in a sh block"
    return block.group(1).strip()


def ci_test_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == MARKER)
    return lines[at + 1].strip()


def steps() -> list[str]:
    return [s.strip() for s in readme_test_command().split(" && ")]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    assert ci_test_command() == readme_test_command()


def test_the_test_command_runs_ruff_and_mypy_before_pytest() -> None:
    tools = [s.split()[0] for s in steps()]
    assert tools == ["python3", ".venv/bin/pip", ".venv/bin/ruff", ".venv/bin/mypy", ".venv/bin/python"]
    assert steps()[2:] == [".venv/bin/ruff check .", ".venv/bin/mypy", ".venv/bin/python -m pytest -q"]


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project's files in a temporary folder, its ``.venv`` this test run's environment."""
    copy = tmp_path_factory.mktemp("ci") / "project"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(*IGNORED))
    (copy / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


def run_lint(copy: Path) -> subprocess.CompletedProcess[str]:
    """The README command's steps after the install, with pytest swapped for a marker: the lint part."""
    lint = " && ".join([*steps()[2:-1], "echo PYTEST-WOULD-RUN"])
    return subprocess.run(["bash", "-c", lint], cwd=copy, capture_output=True, text=True, timeout=600)


def test_the_lint_step_passes_on_the_project_as_it_is(project_copy: Path) -> None:
    r = run_lint(project_copy)
    assert r.returncode == 0 and "PYTEST-WOULD-RUN" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(("source", "finding"), [
    ("import os\n", "F401"),  # an unused import, for ruff
    ('"""Injected."""\n\n\ndef answer() -> int:\n    return "forty-two"\n', "[return-value]"),  # a wrong type, for mypy
], ids=["ruff", "mypy"])
def test_the_lint_step_fails_on_a_finding_before_pytest_runs(project_copy: Path, source: str, finding: str) -> None:
    injected = project_copy / "tests" / "ci_injected_finding.py"
    injected.write_text(source, encoding="utf-8")
    try:
        r = run_lint(project_copy)
    finally:
        injected.unlink()
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "ci_injected_finding.py" in out and finding in out, out
    assert "PYTEST-WOULD-RUN" not in out
