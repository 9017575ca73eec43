"""The backend table (conftest.py) marks its parameters: ``-m memory`` runs the embedded stores, sync
and async, and needs no Redis; ``-m async`` the async stores, ``-m redis`` those on a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def pytest_run(*args: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if redis_url is not None:
        env["DUCTO_TEST_REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, cwd=TESTS.parent, env=env, timeout=600)


def collected(marker: str) -> set[str]:
    r = pytest_run("--collect-only", "-m", marker, str(TESTS / "test_balances_and_holds.py"))
    assert r.returncode == 0, r.stdout + r.stderr
    return {line.split("[", 1)[1].split("]")[0] for line in r.stdout.splitlines() if "::" in line and "[" in line}


def test_each_marker_picks_its_backends_of_the_table() -> None:
    assert collected("memory") == {"memory", "memory-async"}
    assert collected("async") == {"memory-async", "redis-async"}
    assert collected("redis") == {"redis", "cluster", "redis-async"}


def test_the_memory_backends_run_without_a_redis() -> None:
    r = pytest_run("-m", "memory", str(TESTS / "test_balances_and_holds.py"), str(TESTS / "test_teams.py"),
                   redis_url="redis://127.0.0.1:9/0")  # the discard port: nothing answers
    assert r.returncode == 0 and " passed" in r.stdout and "error" not in r.stdout.lower(), r.stdout[-2000:]
