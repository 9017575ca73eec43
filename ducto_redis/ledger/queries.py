"""Analytics over the ledger, with ducto 1.0's names and rows; each query written once, for
PostgreSQL and for SQLite alike (see ``database.py``).

The rule, the same for every method: **spend** is what left a balance for usage — ``debit`` and
``settle`` entries with a negative amount (``-amount`` each; a call wholly covered by a plan's free
allowance moved no credits and is not spend). ``spend_by_user``, ``spend_by_model``, ``top_users``,
``daily_spend`` and ``aggregate_stats`` count **user accounts' spend only**: a team pool's debits are
the team's spend, reported by ``spend_by_member`` (per member) and ``spend_by_team`` (the pools that
spent most). That is ducto 1.0's rule (its analytics count type ``usage``, never ``team_usage``), so
the figures of a workload are ducto's, and the five agree with each other
(``aggregate_stats.total_credits_consumed`` is the sum of ``spend_by_user``, of ``spend_by_model``
and of ``daily_spend``). Windows are ``start <= ts < end`` (datetimes; naive ones are UTC); days are
UTC days.
"""

from __future__ import annotations

from datetime import datetime

from ..models import (
    AggregateStatsRow,
    DailySpendRow,
    SpendByMemberRow,
    SpendByModelRow,
    SpendByTeamRow,
    SpendByUserRow,
    TopUserRow,
)
from .database import LedgerDatabase, ts_param

SPEND = "namespace = ? AND kind IN ('debit', 'settle') AND amount < 0 AND ts >= ? AND ts < ?"
USER_SPEND = SPEND + " AND account_kind = 'u'"
DAY = "substr(CAST(ts AS TEXT), 1, 10)"

SPEND_BY_USER = (f"SELECT account_id, -SUM(amount), COUNT(*) FROM {{table}} WHERE {USER_SPEND} "
                 "GROUP BY account_id ORDER BY 2 DESC, 1")
SPEND_BY_MODEL = (f"SELECT COALESCE(model, ''), -SUM(amount), COUNT(*) FROM {{table}} WHERE {USER_SPEND} "
                  "GROUP BY COALESCE(model, '') ORDER BY 2 DESC, 1")
DAILY_SPEND = (f"SELECT {DAY}, -SUM(amount), COUNT(*) FROM {{table}} WHERE {USER_SPEND} "
               f"GROUP BY {DAY} ORDER BY 1")
SPEND_BY_MEMBER = (f"SELECT COALESCE(member, ''), -SUM(amount), COUNT(*) FROM {{table}} WHERE {SPEND} "
                   "AND account_kind = 't' AND account_id = ? GROUP BY COALESCE(member, '') ORDER BY 2 DESC, 1")
TEAM_NAME = ("SELECT metadata FROM {table} WHERE namespace = ? AND account_kind = 't' AND account_id = ? "
             "AND kind = 'credit' AND tx_type = 'team_created' ORDER BY ts LIMIT 1")
SPEND_BY_TEAM = (f"SELECT account_id, -SUM(amount), COUNT(*) FROM {{table}} WHERE {SPEND} AND account_kind = 't' "
                 "GROUP BY account_id ORDER BY 2 DESC, 1 LIMIT ?")


class LedgerQueries:
    """The analytics of one namespace on a ledger database (PostgreSQL or SQLite)."""

    def __init__(self, db: LedgerDatabase, namespace: str) -> None:
        self.db = db
        self.namespace = namespace

    def _spend(self, sql: str, start: datetime, end: datetime, *more: str | int) -> list[tuple[str, int, int]]:
        rows = self.db.rows(sql, (self.namespace, ts_param(start), ts_param(end), *more))
        return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]

    def spend_by_user(self, start: datetime, end: datetime) -> list[SpendByUserRow]:
        """Spend and debit count per user, largest first."""
        return [SpendByUserRow(user_id=u, total_spend=s, transaction_count=n)
                for u, s, n in self._spend(SPEND_BY_USER, start, end)]

    def spend_by_model(self, start: datetime, end: datetime) -> list[SpendByModelRow]:
        """Spend per model of users' debits (entries without a model are grouped under "")."""
        return [SpendByModelRow(model=m, total_spend=s, transaction_count=n)
                for m, s, n in self._spend(SPEND_BY_MODEL, start, end)]

    def top_users(self, limit: int, start: datetime, end: datetime) -> list[TopUserRow]:
        """The ``limit`` users who spent most."""
        return [TopUserRow(user_id=r.user_id, total_spend=r.total_spend)
                for r in self.spend_by_user(start, end)[: max(0, limit)]]

    def daily_spend(self, start: datetime, end: datetime) -> list[DailySpendRow]:
        """Users' spend per UTC day, oldest first; date as YYYY-MM-DD."""
        return [DailySpendRow(date=d, total_spend=s, transaction_count=n)
                for d, s, n in self._spend(DAILY_SPEND, start, end)]

    def aggregate_stats(self, start: datetime, end: datetime) -> AggregateStatsRow:
        """Totals over the window: credits consumed, active users, average spend per active day,
        the model and the user that spent most."""
        users = self.spend_by_user(start, end)
        days = self.daily_spend(start, end)
        models = [m for m in self.spend_by_model(start, end) if m.model]
        total = sum(u.total_spend for u in users)
        return AggregateStatsRow(
            total_credits_consumed=total,
            active_users=len(users),
            avg_daily_spend=(total // len(days)) if days else 0,
            top_model=models[0].model if models else "",
            top_user=users[0].user_id if users else "",
        )

    def spend_by_member(self, team_id: str, start: datetime, end: datetime) -> list[SpendByMemberRow]:
        """A team pool's spend per member, largest first."""
        return [SpendByMemberRow(user_id=u, total_spend=s, transaction_count=n)
                for u, s, n in self._spend(SPEND_BY_MEMBER, start, end, team_id)]

    def spend_by_team(self, limit: int, start: datetime, end: datetime) -> list[SpendByTeamRow]:
        """The ``limit`` team pools that spent most (all their members together), largest first."""
        return [SpendByTeamRow(team_id=t, total_spend=s, transaction_count=n)
                for t, s, n in self._spend(SPEND_BY_TEAM, start, end, max(0, limit))]

    def team_name(self, team_id: str) -> str:
        """A team's name, as the entry that created its pool holds it ("" for a team the ledger does
        not know): the report names teams without asking Redis."""
        row = next(self.db.dict_rows(TEAM_NAME, (self.namespace, team_id)), None)
        meta = row["metadata"] if row else None
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""
