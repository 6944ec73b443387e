"""The insight tables of the store (schema step 8): customers' alert rules and the alerts
they raised (``collector/insight``).

A rule is never deleted, only ended (``deleted_ms``), so an alert always names the rule that
raised it. An alert's identity is ``(rule_id, day)``: a rule raises at most one alert per local
day, whichever collector evaluates it first and however often the data behind it is delivered
(``INSERT ... ON CONFLICT DO NOTHING`` on both SQLite and PostgreSQL).

The store classes have no ``insight`` property (``collector/store/sqlite.py`` is shared):
``insight_of(store)`` builds the accessor on the store's read connection and its write
transaction, the same two things ``store.bills`` is built on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

__all__ = ["MIGRATION", "AlertRow", "RuleRow", "SqliteInsight", "insight_of"]

#: SQLite DDL; collector.store.postgres_schema translates it for PostgreSQL.
MIGRATION: list[str] = [
    """CREATE TABLE insight_rules (
        id INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        service_point TEXT NOT NULL,
        params TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        deleted_ms INTEGER)""",
    "CREATE INDEX insight_rules_by_account ON insight_rules (account_id, id)",
    """CREATE TABLE insight_alerts (
        id INTEGER PRIMARY KEY,
        rule_id INTEGER NOT NULL REFERENCES insight_rules (id),
        account_id TEXT NOT NULL,
        service_point TEXT NOT NULL,
        kind TEXT NOT NULL,
        day TEXT NOT NULL,
        value TEXT NOT NULL,
        unit TEXT NOT NULL,
        message TEXT NOT NULL,
        raised_ms INTEGER NOT NULL,
        UNIQUE (rule_id, day))""",
    "CREATE INDEX insight_alerts_by_account ON insight_alerts (account_id, id)",
]


class RuleRow(NamedTuple):
    id: int
    account_id: str
    kind: str
    service_point: str
    params: str  # JSON object (decimals as strings)
    created_ms: int
    deleted_ms: int | None


class AlertRow(NamedTuple):
    id: int
    rule_id: int
    account_id: str
    service_point: str
    kind: str
    day: str  # local date (ISO) the alert is for
    value: str  # the measured figure (exact decimal)
    unit: str
    message: str
    raised_ms: int


_RULE = "id, account_id, kind, service_point, params, created_ms, deleted_ms"
_ALERT = "id, rule_id, account_id, service_point, kind, day, value, unit, message, raised_ms"


class SqliteInsight:
    """Rule and alert reads and writes on the store's connections."""

    def __init__(self, db: Any, write: Callable[[], Any]) -> None:
        self._db = db
        self._write = write

    async def _rows(self, sql: str, params: Iterable = ()) -> list:
        async with self._db.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def add_rule(
        self, account_id: str, kind: str, service_point: str, params: str, now_ms: int
    ) -> RuleRow:
        async with (
            self._write() as db,
            db.execute(
                "INSERT INTO insight_rules (account_id, kind, service_point, params, created_ms)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (account_id, kind, service_point, params, now_ms),
            ) as cur,
        ):
            row = await cur.fetchone()
        return RuleRow(int(row[0]), account_id, kind, service_point, params, now_ms, None)

    async def end_rule(self, account_id: str, rule_id: int, now_ms: int) -> bool:
        """End (soft-delete) a rule of the account; False if there is no such live rule."""
        async with (
            self._write() as db,
            db.execute(
                "UPDATE insight_rules SET deleted_ms = ? WHERE id = ? AND account_id = ?"
                " AND deleted_ms IS NULL",
                (now_ms, rule_id, account_id),
            ) as cur,
        ):
            return bool(cur.rowcount)

    async def rules(self, account_id: str | None = None) -> list[RuleRow]:
        """Live rules (of one account, or of all), by id."""
        if account_id is None:
            rows = await self._rows(
                f"SELECT {_RULE} FROM insight_rules WHERE deleted_ms IS NULL ORDER BY id"
            )
        else:
            rows = await self._rows(
                f"SELECT {_RULE} FROM insight_rules WHERE account_id = ? AND deleted_ms IS NULL"
                " ORDER BY id",
                (account_id,),
            )
        return [RuleRow(*r) for r in rows]

    async def rules_of(self, account_ids: Iterable[str]) -> list[RuleRow]:
        """Live rules of these accounts, by id (the ingest hook: the accounts it touched)."""
        wanted = sorted(set(account_ids))
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        rows = await self._rows(
            f"SELECT {_RULE} FROM insight_rules WHERE account_id IN ({marks})"
            " AND deleted_ms IS NULL ORDER BY id",
            wanted,
        )
        return [RuleRow(*r) for r in rows]

    async def raise_alerts(self, alerts: Iterable[tuple]) -> int:
        """Insert alerts (AlertRow fields without id); an existing (rule, day) is kept as it
        is. Returns how many were new."""
        rows = list(alerts)
        if not rows:
            return 0
        new = 0
        async with self._write() as db:
            for row in rows:
                async with db.execute(
                    "INSERT INTO insight_alerts (rule_id, account_id, service_point, kind, day,"
                    " value, unit, message, raised_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (rule_id, day) DO NOTHING",
                    row,
                ) as cur:
                    new += max(cur.rowcount, 0)
        return new

    async def alerts(self, account_id: str, after: int = 0, limit: int = 100) -> list[AlertRow]:
        """The account's alerts in the order they were raised, from id ``after`` on."""
        rows = await self._rows(
            f"SELECT {_ALERT} FROM insight_alerts WHERE account_id = ? AND id > ?"
            " ORDER BY id LIMIT ?",
            (account_id, after, limit),
        )
        return [AlertRow(*r) for r in rows]


def insight_of(store: Any) -> SqliteInsight:
    """The insight tables of ``store`` (a SqliteStore or a PgStore)."""
    return SqliteInsight(store._db, store._write)
