"""The spend report: the ledger's analytics (daily spend, spend by model, top users, team pools and
their members) gathered for a window and rendered as ONE self-contained HTML page with inline SVG
charts — no script, no stylesheet or font fetched, so it can be mailed or archived as it is.

``ducto-redis report -o report.html`` makes it; :func:`gather` and :func:`render_html` are the
library's side (any object with the analytics methods of :class:`~ducto_redis.ledger.queries.LedgerQueries`
can be the source).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Protocol

from pydantic import BaseModel, Field

from ..models import (
    AggregateStatsRow,
    DailySpendRow,
    SpendByMemberRow,
    SpendByModelRow,
    SpendByTeamRow,
    TopUserRow,
)
from .svg import columns, esc, hbars

MAX_DAYS = 366


class SpendSource(Protocol):
    """Where the report's figures come from: a :class:`~ducto_redis.ledger.queries.LedgerQueries` on
    a ledger database (PostgreSQL, or a MemoryStore's SQLite file), or a store itself (its analytics:
    a RedisStore's PostgreSQL ledger, a MemoryStore's embedded one)."""

    def daily_spend(self, start: datetime, end: datetime) -> list[DailySpendRow]: ...
    def spend_by_model(self, start: datetime, end: datetime) -> list[SpendByModelRow]: ...
    def top_users(self, limit: int, start: datetime, end: datetime) -> list[TopUserRow]: ...
    def aggregate_stats(self, start: datetime, end: datetime) -> AggregateStatsRow: ...
    def spend_by_member(self, team_id: str, start: datetime, end: datetime) -> list[SpendByMemberRow]: ...
    def spend_by_team(self, limit: int, start: datetime, end: datetime) -> list[SpendByTeamRow]: ...


class TeamSpend(BaseModel):
    """A team pool's spend in the window, member by member."""

    team_id: str
    name: str = ""
    total_spend: int = 0
    members: list[SpendByMemberRow] = Field(default_factory=list)


class SpendReport(BaseModel):
    """Everything the page shows, as data (``ducto-redis report --json`` prints it)."""

    namespace: str
    start: datetime
    end: datetime
    generated_at: datetime
    stats: AggregateStatsRow
    daily: list[DailySpendRow]
    by_model: list[SpendByModelRow]
    top_users: list[TopUserRow]
    teams: list[TeamSpend]


def _days(start: datetime, end: datetime, rows: Sequence[DailySpendRow]) -> list[DailySpendRow]:
    """One row per UTC day of the window (days without spend at 0), at most a year of them."""
    found = {r.date: r for r in rows}
    first = start.astimezone(timezone.utc).date()
    last = (end.astimezone(timezone.utc) - timedelta(microseconds=1)).date()
    first = max(first, last - timedelta(days=MAX_DAYS - 1))
    out, day = [], first
    while day <= last:
        key = day.isoformat()
        out.append(found.get(key, DailySpendRow(date=key, total_spend=0, transaction_count=0)))
        day += timedelta(days=1)
    return out


def gather(source: SpendSource, namespace: str, start: datetime, end: datetime, *, top: int = 10,
           team_ids: Sequence[str] = (), team_name: Callable[[str], str] = lambda _id: "") -> SpendReport:
    """The report's figures for ``[start, end)``: the ``top`` users, and the given teams (or the
    three pools that spent most when none is given), each with its members."""
    teams = ([SpendByTeamRow(team_id=t) for t in team_ids] if team_ids
             else source.spend_by_team(3, start, end))
    team_spend = []
    for t in teams:
        members = source.spend_by_member(t.team_id, start, end)
        team_spend.append(TeamSpend(team_id=t.team_id, name=team_name(t.team_id),
                                    total_spend=sum(m.total_spend for m in members), members=members))
    return SpendReport(
        namespace=namespace, start=start, end=end, generated_at=datetime.now(timezone.utc),
        stats=source.aggregate_stats(start, end),
        daily=_days(start, end, source.daily_spend(start, end)),
        by_model=source.spend_by_model(start, end),
        top_users=source.top_users(top, start, end),
        teams=team_spend,
    )


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:760px;color:#111827;
padding:0 1rem}
h1{font-size:1.4rem;margin-bottom:.2rem}h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #e5e7eb}
.sub{color:#6b7280;margin-top:0}.tiles{display:flex;gap:.8rem;flex-wrap:wrap}
.tile{border:1px solid #e5e7eb;border-radius:6px;padding:.6rem .9rem;min-width:130px}
.tile b{display:block;font-size:1.2rem}.tile span{color:#6b7280;font-size:.8rem}
details{margin:.4rem 0 1rem}table{border-collapse:collapse;font-size:.85rem}
td,th{padding:.15rem .7rem;border-bottom:1px solid #f0f0f0;text-align:left}td.n,th.n{text-align:right}
.empty{color:#6b7280}svg{max-width:100%;height:auto}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f'<th class="n">{esc(h)}</th>' if i else f"<th>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="n">{v:,}</td>' if isinstance(v, int) else f"<td>{esc(v)}</td>"
                                    for v in row) + "</tr>" for row in rows)
    return f"<details><summary>the figures</summary><table><tr>{head}</tr>{body}</table></details>"


def _day(d: datetime) -> str:
    return d.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def render_html(report: SpendReport) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, nothing fetched)."""
    s = report.stats
    tiles = [("credits spent by users", f"{s.total_credits_consumed:,}"), ("active users", f"{s.active_users:,}"),
             ("average per active day", f"{s.avg_daily_spend:,}"), ("top model", s.top_model or "—"),
             ("top user", s.top_user or "—")]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Spend report — {esc(report.namespace)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Spend report · {esc(report.namespace)}</h1>",
        f'<p class="sub">{esc(_day(report.start))} to {esc(_day(report.end))} · from the ledger · made '
        f"{esc(_day(report.generated_at))}</p>",
        '<div class="tiles">' + "".join(f"<div class=\"tile\"><b>{esc(v)}</b><span>{esc(k)}</span></div>"
                                        for k, v in tiles) + "</div>",
        "<h2>Daily spend</h2>",
        columns([d.date for d in report.daily], [d.total_spend for d in report.daily], title="Daily spend (users)"),
        _table(("day", "credits", "debits"), [(d.date, d.total_spend, d.transaction_count) for d in report.daily]),
        "<h2>Spend by model</h2>",
        hbars([m.model or "(no model)" for m in report.by_model], [m.total_spend for m in report.by_model],
              title="Spend by model (users)"),
        _table(("model", "credits", "debits"),
               [(m.model or "(no model)", m.total_spend, m.transaction_count) for m in report.by_model]),
        f"<h2>Top {len(report.top_users)} users</h2>",
        hbars([u.user_id for u in report.top_users], [u.total_spend for u in report.top_users], title="Top users"),
        _table(("user", "credits"), [(u.user_id, u.total_spend) for u in report.top_users]),
    ]
    if not report.teams:
        parts.append('<h2>Teams</h2><p class="empty">No team pool spent in this window.</p>')
    for t in report.teams:
        label = f"{t.name} ({t.team_id})" if t.name else t.team_id
        parts += [
            f"<h2>Team {esc(label)}: {t.total_spend:,} credits</h2>",
            hbars([m.user_id for m in t.members], [m.total_spend for m in t.members], title=f"Members of {label}"),
            _table(("member", "credits", "debits"), [(m.user_id, m.total_spend, m.transaction_count)
                                                     for m in t.members]),
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def window(days: int | None, start: date | None, end: date | None,
           now: datetime | None = None) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC: from the dates given (end inclusive), else the last ``days`` days up to now."""
    now = now or datetime.now(timezone.utc)
    stop = (datetime.combine(end, datetime.min.time(), timezone.utc) + timedelta(days=1)) if end else now
    if start:
        return datetime.combine(start, datetime.min.time(), timezone.utc), stop
    first = (stop - timedelta(days=days or 30)).date() + timedelta(days=1)
    return datetime.combine(first, datetime.min.time(), timezone.utc), stop


__all__ = ["SpendReport", "SpendSource", "TeamSpend", "gather", "render_html", "window"]
