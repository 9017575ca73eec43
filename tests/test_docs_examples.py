"""Every ```python example of README.md and docs/*.md runs, as a reader would paste it.

The blocks of one page run in order in one namespace (a later block may use what an earlier one
made). A block runs against the embedded store unless the line right above its fence says
otherwise: ``<!-- doctest: redis -->`` (the real Redis) or ``<!-- doctest: postgres -->`` (Redis and
PostgreSQL). ``<!-- doctest: skip -->`` is still recognised, only to be refused: every example runs
(issue 17), so an example that needs something is given it (a server marker, an in-process ASGI
client) rather than skipped. The page's settings come from the
environment: ``DUCTO_REDIS_URL`` points at a closed port for embedded-only pages (an example that
reaches for a server fails loudly), and at the test Redis, with a namespace and a ledger schema of
the test's own, when a block says ``redis`` or ``postgres``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import DATABASE_URL, REDIS_URL, drop_namespace, new_namespace

from ducto_redis.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARK = re.compile(r"<!--\s*doctest:\s*(skip|redis|postgres)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int  # of the fence
    kind: str  # memory | redis | postgres | skip
    code: str


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        found.append(Block(page, text.count("\n", 0, m.start()) + 1, mark.group(1) if mark else "memory",
                           m.group(1)))
    return found


def test_the_examples_are_found_and_marked() -> None:
    every = [b for page in PAGES for b in blocks(page)]
    assert len(every) >= 8 and (ROOT / "README.md") in {b.page for b in every}
    assert {b.kind for b in every} <= {"memory", "redis", "postgres", "skip"}


def test_no_example_is_skipped() -> None:
    skipped = [f"{b.page.relative_to(ROOT)}:{b.line}" for page in PAGES for b in blocks(page) if b.kind == "skip"]
    assert not skipped, f"every example runs; make these runnable instead of skipping them: {skipped}"


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_every_python_example_of_the_page_runs(page: Path, monkeypatch: pytest.MonkeyPatch,
                                               redis_client: Any) -> None:
    page_blocks = [b for b in blocks(page) if b.kind != "skip"]
    kinds = {b.kind for b in page_blocks}
    namespace, schema = new_namespace(), "t_" + uuid.uuid4().hex[:10]
    for var in ("DUCTO_DATABASE_URL", "DUCTO_AUTO_BATCH_MS", "DUCTO_SHARDS"):
        monkeypatch.delenv(var, raising=False)
    if kinds & {"redis", "postgres"}:
        monkeypatch.setenv("DUCTO_REDIS_URL", REDIS_URL)
        monkeypatch.setenv("DUCTO_NAMESPACE", namespace)
    else:
        monkeypatch.setenv("DUCTO_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing to reach
    if "postgres" in kinds:
        monkeypatch.setenv("DUCTO_DATABASE_URL", DATABASE_URL)
        monkeypatch.setenv("DUCTO_LEDGER_SCHEMA", schema)
    scope: dict[str, Any] = {"__name__": f"docs_example_{page.stem}"}
    commands = dict(cli.commands)  # an example may add a command to the CLI (docs/cli.md)
    try:
        for b in page_blocks:
            code = compile(b.code, f"{page.relative_to(ROOT)}:{b.line}", "exec")
            try:
                exec(code, scope)
            except Exception as exc:
                raise AssertionError(f"the example at {page.relative_to(ROOT)} line {b.line} failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
    finally:
        cli.commands.clear()
        cli.commands.update(commands)
        for value in scope.values():  # stop what an example started (flushers, connections)
            if hasattr(value, "stop_flusher") and not isinstance(value, type):
                value.stop_flusher()
        if kinds & {"redis", "postgres"}:
            drop_namespace(redis_client, namespace)
        if "postgres" in kinds:
            import psycopg

            with psycopg.connect(DATABASE_URL, autocommit=True) as c:
                c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_points_somewhere() -> None:
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", dest.read_text(encoding="utf-8"),
                                                            flags=re.S), re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page.name}: {target}")
    assert not broken
