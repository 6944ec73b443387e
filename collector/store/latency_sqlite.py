"""The latency tables of the store (schema step 7): when each record's ingest transaction
committed, for the capture-to-commit delay (``collector/latency.py``, issue 10).

Every ingest transaction that stores records writes one ``ingest_commits`` row and tags its
records with that row's id (``records.commit_id``); the row's ``committed_ms`` is set by the
transaction's last statement, on the collector's clock, just before COMMIT
(``stamp_commit``). So every record of one transaction has the same commit time, taken after
the checks, the duplicate look-ups, the inserts and VEE, and it costs one tiny row per
transaction instead of an ``UPDATE`` of every record (on PostgreSQL that would write every
record row twice). A record's commit time is ``ingest_commits.committed_ms`` of its
``commit_id``; records stored before this step (or written outside ``Ingestor``, without a
stamp) have none (NULL) and are left out of the figures.

Percentiles are nearest-rank (the smallest delay with at least p % of the delays at or below
it: the ``ceil(p·n/100)``-th smallest) and computed by the database with window functions,
in the same SQL on SQLite and PostgreSQL, so every collector on one database answers the
same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = ["MIGRATION", "LatencyRow", "SqliteLatency", "latency_of", "open_commit", "stamp_commit"]

#: SQLite DDL; collector.store.postgres_schema translates it for PostgreSQL.
MIGRATION: list[str] = [
    """CREATE TABLE ingest_commits (
        id INTEGER PRIMARY KEY,
        committed_ms INTEGER)""",
    "CREATE INDEX ingest_commits_by_time ON ingest_commits (committed_ms)",
    "ALTER TABLE records ADD COLUMN commit_id INTEGER",
    "CREATE INDEX records_by_commit ON records (commit_id)",
]

#: the quantiles reported (percent)
QUANTILES = (50, 95, 99)


class LatencyRow(NamedTuple):
    """Capture-to-commit delays (ms) of the records committed in a window: of one gateway,
    or of the whole fleet (``gateway_id`` None)."""

    gateway_id: str | None
    count: int
    p50_ms: int
    p95_ms: int
    p99_ms: int
    max_ms: int


async def open_commit(db: Any) -> int:
    """A new ``ingest_commits`` row (commit time not yet known), in the caller's
    transaction; returns its id, for the records of the transaction."""
    async with db.execute(
        "INSERT INTO ingest_commits (committed_ms) VALUES (NULL) RETURNING id"
    ) as cur:
        row = await cur.fetchone()
    return int(row[0])


async def stamp_commit(db: Any, commit_id: int, committed_ms: int) -> None:
    """Set the commit time of the transaction's records (its last statement)."""
    await db.execute(
        "UPDATE ingest_commits SET committed_ms = ? WHERE id = ?", (committed_ms, commit_id)
    )


def _rank(p: int) -> str:
    # nearest rank, 1-based: ceil(p * n / 100) in integer arithmetic (n >= 1, so >= 1)
    return f"MAX(CASE WHEN rn = ({p} * n + 99) / 100 THEN delay END)"


# Commits of the window first, then their records (records_by_commit), also for one gateway:
# the cost is the records committed in the window, not the gateway's whole history (which
# SQLite would scan by the primary key). SQLite keeps the order of a CROSS JOIN; PostgreSQL
# plans it as any inner join.
_DELAYS = (
    "SELECT r.gateway_id AS gw, c.committed_ms - r.captured_ms AS delay"
    " FROM ingest_commits c CROSS JOIN records r"
    " WHERE r.commit_id = c.id AND c.committed_ms >= ? AND c.committed_ms < ?"
)
_FIGURES = f"COUNT(*), {', '.join(_rank(p) for p in QUANTILES)}, MAX(delay)"


class SqliteLatency:
    """Exact capture-to-commit figures from the store (its read connection)."""

    def __init__(self, db: Any) -> None:
        self._db = db

    async def _rows(self, sql: str, params: Iterable = ()) -> list:
        async with self._db.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def fleet(self, start_ms: int, end_ms: int) -> LatencyRow:
        """All records committed in [start_ms, end_ms)."""
        rows = await self._rows(
            f"WITH d AS ({_DELAYS}), ranked AS (SELECT delay, ROW_NUMBER() OVER"
            " (ORDER BY delay) AS rn, COUNT(*) OVER () AS n FROM d)"
            f" SELECT {_FIGURES} FROM ranked",
            (start_ms, end_ms),
        )
        return _row(None, rows[0] if rows else (0, None, None, None, None))

    async def gateways(
        self,
        start_ms: int,
        end_ms: int,
        gateway_id: str | None = None,
        limit: int | None = None,
        after: tuple[int, str] | None = None,
    ) -> list[LatencyRow]:
        """Per gateway (or of ``gateway_id`` only), worst p99 first (then by gateway id);
        ``after``: (p99_ms, gateway_id) of the last row of the previous page."""
        where, params = "", [start_ms, end_ms]
        if gateway_id is not None:
            where = " AND r.gateway_id = ?"
            params.append(gateway_id)
        having = ""
        if after is not None:
            having = " WHERE p99 < ? OR (p99 = ? AND gw > ?)"
            params += [after[0], after[0], after[1]]
        tail = ""
        if limit is not None:
            tail = " LIMIT ?"
        sql = (
            f"WITH d AS ({_DELAYS}{where}), ranked AS (SELECT gw, delay, ROW_NUMBER() OVER"
            " (PARTITION BY gw ORDER BY delay) AS rn, COUNT(*) OVER (PARTITION BY gw) AS n"
            " FROM d), figures AS (SELECT gw, COUNT(*) AS cnt, "
            + ", ".join(f"{_rank(p)} AS p{p}" for p in QUANTILES)
            + ", MAX(delay) AS mx FROM ranked GROUP BY gw)"
            f" SELECT gw, cnt, p50, p95, p99, mx FROM figures{having}"
            f" ORDER BY p99 DESC, gw{tail}"
        )
        if limit is not None:
            params.append(limit)
        return [_row(gw, rest) for gw, *rest in await self._rows(sql, params)]


def _row(gateway_id: str | None, values: Any) -> LatencyRow:
    count, p50, p95, p99, top = values
    if not count:
        return LatencyRow(gateway_id, 0, 0, 0, 0, 0)
    return LatencyRow(gateway_id, int(count), int(p50), int(p95), int(p99), int(top))


def latency_of(store: Any) -> SqliteLatency:
    """The latency reads of ``store`` (a SqliteStore or a PgStore), on its read connection."""
    return SqliteLatency(store._db)
