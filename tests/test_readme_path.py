"""The README's road from the demo to production, run command by command as a newcomer types it:
a worker charging on the real Redis, the ledger flushed into PostgreSQL, Redis and the ledger
reconciled, a spend report rendered (and whatever the README adds to that road).

The install line is left out (the fresh-clone check and `.ci/run` install); the `export` lines are
honoured, except that the namespace and the ledger schema are the test's own.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from conftest import DATABASE_URL, REDIS_URL, drop_namespace, new_namespace

ROOT = Path(__file__).resolve().parent.parent


def road() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From the demo to production"):]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's road to production has a sh block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def argv(line: str, cwd: Path) -> list[str]:
    out: list[str] = []
    for word in shlex.split(line):
        if word == ".venv/bin/python":
            out.append(sys.executable)
        elif word == ".venv/bin/ducto-redis":
            out += [sys.executable, "-m", "ducto_redis.cli"]
        elif (ROOT / word).exists() and "/" in word:
            out.append(str(ROOT / word))
        else:
            out.append(word)
    return out


def test_the_readme_road_from_a_worker_to_the_ledger_runs(tmp_path: Path, redis_client: Any) -> None:
    namespace, schema = new_namespace(), "t_" + uuid.uuid4().hex[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUCTO_")}
    ran = []
    try:
        for line in road():
            if line.startswith("python3 -m venv"):
                continue
            if line.startswith("export "):
                for assignment in shlex.split(line)[1:]:
                    name, _, value = assignment.partition("=")
                    env[name] = value
                env.update(DUCTO_REDIS_URL=REDIS_URL, DUCTO_DATABASE_URL=DATABASE_URL, DUCTO_NAMESPACE=namespace,
                           DUCTO_LEDGER_SCHEMA=schema)
                continue
            r = subprocess.run(argv(line, tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, (line, r.stdout, r.stderr)
            ran.append((line, r.stdout))
        assert any("worker.py" in line for line, _ in ran)
        flushed = next(out for line, out in ran if "flush" in line)
        assert re.search(r"flushed [1-9]\d* entries", flushed)
        assert any("reconcile" in line and "0 drift" in out for line, out in ran)
        report = next(tmp_path / word for line, _ in ran if " report" in line for word in shlex.split(line)
                      if word.endswith(".html"))
        page = report.read_text(encoding="utf-8")
        assert page.count("<svg") >= 4 and "gpt-4o" in page and "Research" in page  # charts, models, the team
    finally:
        drop_namespace(redis_client, namespace)
        import psycopg

        with psycopg.connect(DATABASE_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
