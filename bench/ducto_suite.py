"""Run ducto 1.0's own test suite against ducto-redis, on MemoryStore and on RedisStore, and count.

    python bench/ducto_suite.py --ducto /path/to/ducto            # both backends
    python bench/ducto_suite.py --ducto /path/to/ducto --backend memory --check

``--ducto`` is a checkout of apoorwv/ducto (1.0 is commit 7877861); its tests in ``python/tests/``
(``SUITE``: test_store, test_manager, test_engine, test_expr, test_config) run unchanged, in a pytest
of their own, with ``bench/ducto_shim.py`` mapping every ``ducto.*`` import to ducto-redis. On the
``redis`` backend each ``MemoryStore()`` of the tests is a ``RedisStore`` on ``--redis-url`` in a
fresh namespace (deleted afterwards), its ledger in PostgreSQL at ``--database-url`` in a schema
made for the run (dropped afterwards). No line of ducto is copied into this project.

Prints, per backend, the tests passed of those collected, any file that failed to import, and every
failing test. ``--check`` also compares the failing tests with the ones
``docs/differences-from-ducto.md`` lists (each with the deliberate difference it proves): exit 1
when a test fails that the page does not list, or the page lists one that passes, or a file does
not import, or fewer than ``--min-percent`` pass.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ("test_store.py", "test_manager.py", "test_engine.py", "test_expr.py", "test_config.py")
DIFFERENCES = ROOT / "docs" / "differences-from-ducto.md"
BACKENDS = ("memory", "redis")

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


@dataclass
class SuiteRun:
    """The outcome of ducto's suite on one backend."""

    backend: str
    outcomes: dict[str, str] = field(default_factory=dict)  # test id -> passed | failed | skipped
    import_errors: list[str] = field(default_factory=list)  # test files that did not import
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(1 for o in self.outcomes.values() if o == "passed")

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def failing(self) -> list[str]:
        return sorted(t for t, o in self.outcomes.items() if o != "passed")

    @property
    def percent(self) -> float:
        return 100.0 * self.passed / self.total if self.total else 0.0


@contextlib.contextmanager
def ledger_schema(database_url: str) -> Iterator[str]:
    """A fresh PostgreSQL ledger schema for the run (migrated as an operator would), dropped after."""
    import psycopg

    from ducto_redis.ledger.flusher import migrate

    schema = "ducto_suite_" + uuid.uuid4().hex[:10]
    migrate(database_url, schema)
    try:
        yield schema
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run_suite(ducto: Path, backend: str, redis_url: str, database_url: str) -> SuiteRun:
    """Run the five test files of the ducto checkout at ``ducto`` on ``backend``."""
    tests = ducto / "python" / "tests"
    missing = [f for f in SUITE if not (tests / f).is_file()]
    if missing:
        raise SystemExit(f"ducto_suite: {tests} lacks {', '.join(missing)}: is --ducto a checkout of apoorwv/ducto?")
    with contextlib.ExitStack() as stack:
        schema = stack.enter_context(ledger_schema(database_url)) if backend == "redis" else ""
        return _run(tests, backend, redis_url, database_url, schema)


def _run(tests: Path, backend: str, redis_url: str, database_url: str, schema: str) -> SuiteRun:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n", encoding="utf-8")  # none of ducto's own pytest settings
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "DUCTO_SUITE_BACKEND": backend,
            "DUCTO_SUITE_REDIS_URL": redis_url,
            "DUCTO_SUITE_DATABASE_URL": database_url,
            "DUCTO_SUITE_LEDGER_SCHEMA": schema,
            "DUCTO_SUITE_REPORT": str(report),
        }
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "ducto_shim", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "-c", str(ini), "--rootdir", str(tests),
               *(str(tests / f) for f in SUITE)]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tests, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        seconds = time.perf_counter() - start
        if not report.is_file():
            raise SystemExit(f"ducto_suite: pytest wrote no report on {backend}; run it by hand: {' '.join(cmd)}")
        raw: dict[str, str] = json.loads(report.read_text(encoding="utf-8"))
    run = SuiteRun(backend, seconds=seconds)
    for test_id, outcome in raw.items():
        name = test_id.split("/")[-1]
        if outcome == "import error":
            run.import_errors.append(name)
        else:
            run.outcomes[name] = outcome
    return run


def documented_failures(page: Path = DIFFERENCES) -> set[str]:
    """The ducto test ids (``test_file.py::...``) the differences page lists as deliberately failing."""
    if not page.is_file():
        return set()
    return set(re.findall(r"`(test_\w+\.py::[\w:\[\]-]+)`", page.read_text(encoding="utf-8")))


def problems(run: SuiteRun, documented: set[str], min_percent: float) -> list[str]:
    """What keeps ``run`` from meeting the bar (empty when it does)."""
    out = [f"{run.backend}: {f} does not import" for f in run.import_errors]
    if run.percent < min_percent:
        out.append(f"{run.backend}: {run.percent:.1f} % pass, below {min_percent} %")
    out += [f"{run.backend}: {t} fails but the differences page does not list it"
            for t in run.failing if t not in documented]
    out += [f"{run.backend}: {t} is listed as a difference but passes"
            for t in sorted(documented) if run.outcomes.get(t) == "passed"]
    return out


def summary(runs: list[SuiteRun]) -> str:
    """A markdown table of the runs, then each backend's failing tests."""
    lines = ["| backend | passed | collected | % | files not importing | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r.backend} | {r.passed} | {r.total} | {r.percent:.1f} | {len(r.import_errors)} "
                     f"| {r.seconds:.0f} |")
    for r in runs:
        lines.append(f"\n{r.backend}: {len(r.failing)} failing")
        lines += [f"- `{t}` ({r.outcomes[t]})" for t in r.failing]
        lines += [f"- {f}: does not import" for f in r.import_errors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ducto", required=True, type=Path, help="a checkout of apoorwv/ducto")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--redis-url", default=os.environ.get("DUCTO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--database-url", help="the redis backend's PostgreSQL ledger (a schema of its own)",
                        default=os.environ.get("DUCTO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--check", action="store_true", help="exit 1 unless the failures are the documented ones")
    parser.add_argument("--min-percent", type=float, default=95.0)
    parser.add_argument("--json", action="store_true", help="print the outcomes as JSON instead")
    parser.add_argument("--write", action="store_true", help="write the figures into bench/RESULTS.md")
    args = parser.parse_args(argv)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    runs = [run_suite(args.ducto.resolve(), b, args.redis_url, args.database_url) for b in backends]
    if args.json:
        print(json.dumps({r.backend: {"outcomes": r.outcomes, "import_errors": r.import_errors} for r in runs},
                         indent=1))
    else:
        print(summary(runs))
    if args.write:
        from results import write_section

        command = f"python bench/ducto_suite.py --ducto PATH --backend {args.backend}" + (" --check" * args.check)
        write_section("ducto 1.0's own test suite", command,
                      "PATH: a checkout of apoorwv/ducto at 7877861. Each failing test is a difference "
                      "docs/differences-from-ducto.md lists.", summary(runs))
    if not args.check:
        return 0
    documented = documented_failures()
    found = [p for r in runs for p in problems(r, documented, args.min_percent)]
    for p in found:
        print(f"CHECK: {p}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
