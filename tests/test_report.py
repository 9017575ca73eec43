"""`ducto-redis report`: the ledger's spend analytics as one self-contained HTML page with charts."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner
from conftest import DATABASE_URL, REDIS_URL

from ducto_redis import CreditMetadata, MemoryStore, RedisStore
from ducto_redis.cli import ExitCode, cli
from ducto_redis.ledger.flusher import LedgerFlusher
from ducto_redis.models import AggregateStatsRow, DailySpendRow, SpendByMemberRow, TopUserRow
from ducto_redis.report import SpendReport, TeamSpend, gather, render_html, window

EVIL = '<script>alert("x")</script>'


def spend(store: RedisStore) -> str:
    for user, credits in (("ana", 1_000), ("ben", 1_000), (EVIL, 1_000)):
        store.add_credits(user, credits)
    store.charge("ana", 300, "chat", metadata=CreditMetadata(model="gpt-4o"))
    store.charge("ana", 20, "chat", metadata=CreditMetadata(model="gpt-4o-mini"))
    store.charge("ben", 120, "chat", metadata=CreditMetadata(model="gpt-4o"))
    store.charge(EVIL, 7, "chat", metadata=CreditMetadata(model=EVIL))
    team = store.create_team(name="Research & <Dev>", initial_balance=5_000)
    for member in ("chloe", "dan"):
        store.add_credits(member, 0)
        store.add_team_member(team.team_id, member)
    store.deduct_team(team.team_id, "chloe", 400, metadata=CreditMetadata(model="gpt-4o"))
    store.deduct_team(team.team_id, "dan", 50, metadata=CreditMetadata(model="gpt-4o"))
    LedgerFlusher(store, DATABASE_URL).drain()
    return team.team_id


class Page(HTMLParser):
    """What a browser would fetch or run: external references and scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[str] = []
        self.scripts = 0
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        self.svgs += tag == "svg"
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.fetches.append(value)


def test_the_report_is_one_self_contained_page_of_the_ledgers_spend(ledger_store: RedisStore,
                                                                    tmp_path: Path) -> None:
    team_id = spend(ledger_store)
    out = tmp_path / "report.html"
    args = ["--redis-url", REDIS_URL, "--namespace", ledger_store.settings.namespace, "--database-url", DATABASE_URL,
            "--ledger-schema", ledger_store.settings.ledger_schema]
    r = CliRunner().invoke(cli, ["report", "-o", str(out), *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "447 credits spent by 3 users, 3 models, 1 teams" in r.output
    page = out.read_text(encoding="utf-8")
    parsed = Page()
    parsed.feed(page)
    assert parsed.fetches == [] and parsed.scripts == 0  # nothing fetched, nothing run
    assert parsed.svgs == 4  # daily spend, by model, top users, the team's members
    assert EVIL not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "Research &amp; &lt;Dev&gt;" in page and team_id in page
    for label, credits in (("ana", 320), ("ben", 120), ("chloe", 400), ("dan", 50)):
        assert re.search(rf"<title>{label}: {credits:,} credits</title>", page), label
    # by model: users' spend, the analytics' one rule (ana 300 + ben 120); the pool's 450 is the team's, above
    assert re.search(r"<title>gpt-4o: 420 credits</title>", page)
    assert "<h2>Team Research &amp; &lt;Dev&gt; (" + team_id + "): 450 credits</h2>" in page
    assert f"<title>{datetime.now(timezone.utc).date().isoformat()}: 447 credits</title>" in page  # today's column


def test_the_report_as_json_and_for_a_chosen_team(ledger_store: RedisStore) -> None:
    team_id = spend(ledger_store)
    args = ["--redis-url", REDIS_URL, "--namespace", ledger_store.settings.namespace, "--database-url", DATABASE_URL,
            "--ledger-schema", ledger_store.settings.ledger_schema]
    r = CliRunner().invoke(cli, ["report", "--json", "--team", team_id, "--days", "2", *args], catch_exceptions=False)
    data = json.loads(r.output)
    assert data["stats"]["total_credits_consumed"] == 447 and data["stats"]["top_user"] == "ana"
    assert [(t["team_id"], t["name"], t["total_spend"]) for t in data["teams"]] == [(team_id, "Research & <Dev>", 450)]
    assert [m["user_id"] for m in data["teams"][0]["members"]] == ["chloe", "dan"]
    assert len(data["daily"]) == 2 and sum(d["total_spend"] for d in data["daily"]) == 447


def embedded_spend(store: MemoryStore) -> str:
    store.add_credits("ana", 1_000)
    store.charge("ana", 300, "chat", metadata=CreditMetadata(model="gpt-4o"))
    store.charge("ben", 5, "chat")  # refused (no credits): not spend
    team = store.create_team(name="Research & <Dev>", initial_balance=5_000)
    store.add_team_member(team.team_id, "chloe")
    store.deduct_team(team.team_id, "chloe", 400, metadata=CreditMetadata(model="gpt-4o"))
    return team.team_id


def test_the_report_reads_a_memorystores_ledger_file_without_redis_or_postgresql(tmp_path: Path) -> None:
    ledger = tmp_path / "app.sqlite"
    team_id = embedded_spend(MemoryStore(ledger_file=str(ledger)))
    env = {"DUCTO_DATABASE_URL": None, "DUCTO_LEDGER_FILE": None, "DUCTO_REDIS_URL": "redis://127.0.0.1:1/0"}
    r = CliRunner().invoke(cli, ["report", "--json", "--ledger-file", str(ledger)], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["stats"]["total_credits_consumed"] == 300 and data["stats"]["top_user"] == "ana"
    assert [(m["model"], m["total_spend"]) for m in data["by_model"]] == [("gpt-4o", 300)]
    # the team, its name read from the ledger (no Redis next to a file), its member
    assert [(t["team_id"], t["name"], t["total_spend"]) for t in data["teams"]] == [(team_id, "Research & <Dev>", 400)]
    assert [(m["user_id"], m["total_spend"]) for m in data["teams"][0]["members"]] == [("chloe", 400)]
    # DUCTO_LEDGER_FILE serves when no database URL is set; the HTML page the same
    out = tmp_path / "report.html"
    r = CliRunner().invoke(cli, ["report", "-o", str(out)], env={**env, "DUCTO_LEDGER_FILE": str(ledger)},
                           catch_exceptions=False)
    assert r.exit_code == 0 and "300 credits spent by 1 users, 1 models, 1 teams" in r.output, r.output
    assert "Research &amp; &lt;Dev&gt;" in out.read_text(encoding="utf-8")


def test_a_missing_ledger_file_is_one_line_and_exit_7(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["report", "--ledger-file", str(tmp_path / "nope.sqlite")],
                           env={"DUCTO_DATABASE_URL": None})
    assert r.exit_code == ExitCode.NO_FILE and "cannot read ledger file" in r.output
    assert not (tmp_path / "nope.sqlite").exists()  # nothing created in its place


def test_a_store_is_a_source_of_the_report_its_embedded_ledger_answering() -> None:
    store = MemoryStore()
    team_id = embedded_spend(store)
    now = datetime.now(timezone.utc)
    data = gather(store, "ducto", now.replace(hour=0, minute=0, second=0, microsecond=0), now + timedelta(minutes=1),
                  team_name=lambda t: store.get_team_balance(t).name)
    assert (data.stats.total_credits_consumed, [u.user_id for u in data.top_users]) == (300, ["ana"])
    assert [(t.team_id, t.name, t.total_spend) for t in data.teams] == [(team_id, "Research & <Dev>", 400)]
    assert store.spend_by_team(5, now - timedelta(days=1), now + timedelta(minutes=1))[0].total_spend == 400


def test_days_without_spend_are_drawn_at_zero() -> None:
    start, end = window(None, date(2026, 11, 1), date(2026, 11, 7))
    report = SpendReport(namespace="n", start=start, end=end, generated_at=end, stats=AggregateStatsRow(),
                         daily=[], by_model=[], top_users=[TopUserRow(user_id="u", total_spend=5)],
                         teams=[TeamSpend(team_id="t", members=[SpendByMemberRow(user_id="m", total_spend=3)])])
    from ducto_redis.report import _days

    report.daily = _days(start, end, [DailySpendRow(date="2026-11-03", total_spend=9, transaction_count=1)])
    assert [(d.date, d.total_spend) for d in report.daily] == [
        ("2026-11-01", 0), ("2026-11-02", 0), ("2026-11-03", 9), ("2026-11-04", 0), ("2026-11-05", 0),
        ("2026-11-06", 0), ("2026-11-07", 0)]
    page = render_html(report)
    assert page.count("<rect") == 7 + 1 + 1 and "nothing in this window" in page  # no model spend


def test_the_window_is_the_last_days_or_the_dates_given() -> None:
    now = datetime(2026, 11, 30, 15, 0, tzinfo=timezone.utc)
    assert window(7, None, None, now) == (datetime(2026, 11, 24, tzinfo=timezone.utc), now)
    assert window(30, date(2026, 11, 1), date(2026, 11, 30), now) == (
        datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc))
