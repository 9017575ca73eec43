"""Analytics over the Postgres ledger, with ducto 1.0's names and rows.

Spend is what left balances: ``debit`` and ``settle`` entries (``-amount``). User analytics count
user accounts; ``spend_by_model`` counts users and teams; ``spend_by_member`` a team's members.
Windows are ``start <= ts < end`` (datetimes; naive ones are UTC).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..models import (
    AggregateStatsRow,
    DailySpendRow,
    SpendByMemberRow,
    SpendByModelRow,
    SpendByTeamRow,
    SpendByUserRow,
    TopUserRow,
)

SPEND = "kind IN ('debit', 'settle')"


def _utc(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


class LedgerQueries:
    """Runs the analytics queries of one namespace on a Postgres ledger."""

    def __init__(self, database_url: str, schema: str, namespace: str) -> None:
        self.database_url = database_url
        self.table = f"{schema}.ledger"
        self.namespace = namespace

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql, params).fetchall()

    def _where(self, start: datetime, end: datetime, kind: str | None = "u") -> tuple[str, list[Any]]:
        cond = f"namespace = %s AND {SPEND} AND ts >= %s AND ts < %s"
        params: list[Any] = [self.namespace, _utc(start), _utc(end)]
        if kind:
            cond += " AND account_kind = %s"
            params.append(kind)
        return cond, params

    def spend_by_user(self, start: datetime, end: datetime) -> list[SpendByUserRow]:
        """Spend and debit count per user, largest first."""
        cond, p = self._where(start, end)
        rows = self._rows(f"SELECT account_id, -SUM(amount), COUNT(*) FROM {self.table} WHERE {cond} "
                          "GROUP BY account_id ORDER BY 2 DESC, 1", *p)
        return [SpendByUserRow(user_id=r[0], total_spend=int(r[1]), transaction_count=r[2]) for r in rows]

    def spend_by_model(self, start: datetime, end: datetime) -> list[SpendByModelRow]:
        """Spend per model (users and teams; entries without a model are grouped under "")."""
        cond, p = self._where(start, end, None)
        rows = self._rows(f"SELECT COALESCE(model, ''), -SUM(amount), COUNT(*) FROM {self.table} WHERE {cond} "
                          "GROUP BY 1 ORDER BY 2 DESC, 1", *p)
        return [SpendByModelRow(model=r[0], total_spend=int(r[1]), transaction_count=r[2]) for r in rows]

    def top_users(self, limit: int, start: datetime, end: datetime) -> list[TopUserRow]:
        """The ``limit`` users who spent most."""
        return [TopUserRow(user_id=r.user_id, total_spend=r.total_spend)
                for r in self.spend_by_user(start, end)[: max(0, limit)]]

    def daily_spend(self, start: datetime, end: datetime) -> list[DailySpendRow]:
        """Spend per UTC day (users), oldest first; date as YYYY-MM-DD."""
        cond, p = self._where(start, end)
        rows = self._rows(f"SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD'), -SUM(amount), COUNT(*) "
                          f"FROM {self.table} WHERE {cond} GROUP BY 1 ORDER BY 1", *p)
        return [DailySpendRow(date=r[0], total_spend=int(r[1]), transaction_count=r[2]) for r in rows]

    def aggregate_stats(self, start: datetime, end: datetime) -> AggregateStatsRow:
        """Totals over the window: credits consumed, active users, average spend per active day."""
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
        """A team's spend per member, largest first."""
        cond, p = self._where(start, end, "t")
        rows = self._rows(f"SELECT member, -SUM(amount), COUNT(*) FROM {self.table} WHERE {cond} "
                          "AND account_id = %s GROUP BY member ORDER BY 2 DESC, 1", *p, team_id)
        return [SpendByMemberRow(user_id=r[0] or "", total_spend=int(r[1]), transaction_count=r[2]) for r in rows]

    def spend_by_team(self, limit: int, start: datetime, end: datetime) -> list[SpendByTeamRow]:
        """The ``limit`` team pools that spent most, largest first."""
        cond, p = self._where(start, end, "t")
        rows = self._rows(f"SELECT account_id, -SUM(amount), COUNT(*) FROM {self.table} WHERE {cond} "
                          "GROUP BY account_id ORDER BY 2 DESC, 1 LIMIT %s", *p, max(0, limit))
        return [SpendByTeamRow(team_id=r[0], total_spend=int(r[1]), transaction_count=r[2]) for r in rows]
