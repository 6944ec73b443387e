"""The fleet tables of the SQLite store and the reads the HTTP API needs.

``fleet_gateways`` and ``fleet_meters`` hold each gateway's and meter's state as a JSON
document (``collector.fleet.state``): the state grows fields more often than it is queried
by column, and it is read whole at start. Readings and bills are read from their own tables
with keyset pagination (``after`` the last key of the previous page), which stays fast on
the last page of a million rows where OFFSET would not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import aiosqlite

__all__ = ["MIGRATION", "SqliteFleet"]

MIGRATION = [
    """CREATE TABLE fleet_gateways (
        gateway_id TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        updated_ms INTEGER NOT NULL)""",
    """CREATE TABLE fleet_meters (
        meter_id TEXT PRIMARY KEY,
        gateway_id TEXT NOT NULL,
        doc TEXT NOT NULL,
        updated_ms INTEGER NOT NULL)""",
]


class SqliteFleet:
    """Fleet state and API reads on the store's connection."""

    def __init__(self, db: aiosqlite.Connection, write: Callable[[], Any]) -> None:
        self._db = db
        self._write = write

    async def _rows(self, sql: str, params: Iterable = ()) -> list:
        async with self._db.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    # state ------------------------------------------------------------------------------

    async def load_gateways(self) -> AsyncIterator[list[tuple[str, dict]]]:
        """The stored gateway states, in chunks (100,000 documents never all at once)."""
        async for rows in self._chunks("gateway_id, doc", "fleet_gateways", "gateway_id"):
            yield [(gw, json.loads(doc)) for gw, doc in rows]

    async def load_meters(self) -> AsyncIterator[list[tuple[str, str, dict]]]:
        async for rows in self._chunks("meter_id, gateway_id, doc", "fleet_meters", "meter_id"):
            yield [(m, gw, json.loads(doc)) for m, gw, doc in rows]

    async def _chunks(
        self, columns: str, table: str, key: str, size: int = 5000
    ) -> AsyncIterator[list]:
        """Rows by ``key`` (the first column), ``size`` at a time: keyset pages, so neither
        store's driver ever holds the whole table (psycopg fetches a result whole)."""
        rows = await self._rows(f"SELECT {columns} FROM {table} ORDER BY {key} LIMIT ?", (size,))
        sql = f"SELECT {columns} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?"
        while rows:
            yield rows
            rows = await self._rows(sql, (rows[-1][0], size)) if len(rows) == size else []

    async def save(
        self,
        gateways: list[tuple[str, dict]],
        meters: list[tuple[str, str, dict]],
        now_ms: int,
    ) -> None:
        """Upsert the given states in one write transaction."""
        if not gateways and not meters:
            return
        async with self._write() as db:
            await db.executemany(
                "INSERT INTO fleet_gateways (gateway_id, doc, updated_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (gateway_id) DO UPDATE SET doc = excluded.doc,"
                " updated_ms = excluded.updated_ms",
                [(gw, json.dumps(doc, separators=(",", ":")), now_ms) for gw, doc in gateways],
            )
            await db.executemany(
                "INSERT INTO fleet_meters (meter_id, gateway_id, doc, updated_ms)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
                " gateway_id = excluded.gateway_id, doc = excluded.doc,"
                " updated_ms = excluded.updated_ms",
                [(m, gw, json.dumps(doc, separators=(",", ":")), now_ms) for m, gw, doc in meters],
            )

    async def seq_ranges(self, gateway_ids: Iterable[str]) -> dict[str, list[list[int]]]:
        """Runs of stored or quarantined seqs per gateway (rebuilds ``seen`` of a gateway the
        fleet tables do not know yet: a database from before them)."""
        out: dict[str, list[list[int]]] = {}
        for gateway_id in gateway_ids:
            rows = await self._rows(
                # (subqueries in FROM named: PostgreSQL before 16 requires it)
                "SELECT MIN(seq), MAX(seq) FROM (SELECT seq, seq - ROW_NUMBER() OVER"
                " (ORDER BY seq) AS grp FROM (SELECT seq FROM records WHERE gateway_id = ?"
                " UNION SELECT seq FROM quarantine WHERE gateway_id = ? AND seq IS NOT NULL)"
                " AS s) AS g GROUP BY grp ORDER BY 1",
                (gateway_id, gateway_id),
            )
            if rows:
                out[gateway_id] = [[lo, hi] for lo, hi in rows]
        return out

    async def rejections(self) -> dict[str, dict[str, int]]:
        """Quarantined messages per gateway and reason kind (for the same rebuild)."""
        out: dict[str, dict[str, int]] = {}
        for gateway_id, kind, n in await self._rows(
            "SELECT gateway_id, CASE kind WHEN '' THEN 'other' ELSE kind END, COUNT(*)"
            " FROM quarantine GROUP BY 1, 2"
        ):
            out.setdefault(gateway_id, {})[kind] = n
        return out

    # API reads --------------------------------------------------------------------------

    async def readings(
        self,
        meter_id: str,
        start_ms: int,
        end_ms: int,
        obis: str | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[tuple]:
        """Readings of a meter captured in [start, end), by (captured_ms, obis), after the
        key ``after``; ``limit`` rows at most."""
        sql = (
            "SELECT captured_ms, obis, value, unit, flags, clock_source, gateway_id, seq"
            " FROM readings WHERE meter_id = ? AND captured_ms >= ? AND captured_ms < ?"
        )
        params: list[Any] = [meter_id, start_ms, end_ms]
        if obis is not None:
            sql += " AND obis = ?"
            params.append(obis)
        if after is not None:
            sql += " AND (captured_ms > ? OR (captured_ms = ? AND obis > ?))"
            params += [after[0], after[0], after[1]]
        sql += " ORDER BY captured_ms, obis LIMIT ?"
        params.append(limit)
        return await self._rows(sql, params)

    async def flags(
        self,
        meter_id: str | None,
        outcomes: list[str],
        after_id: int,
        limit: int,
    ) -> list[tuple]:
        """VEE findings (validations), by id, after ``after_id``."""
        sql = (
            "SELECT id, meter_id, obis, captured_ms, rule, outcome, detail, detected_ms"
            f" FROM validations WHERE id > ? AND outcome IN ({','.join('?' * len(outcomes))})"
        )
        params: list[Any] = [after_id, *outcomes]
        if meter_id is not None:
            sql += " AND meter_id = ?"
            params.append(meter_id)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return await self._rows(sql, params)

    async def flag_counts(self, meter_ids: list[str]) -> dict[str, dict[str, int]]:
        """VEE findings per meter and outcome (``error``, ``warn``, ``info``)."""
        out: dict[str, dict[str, int]] = {}
        for start in range(0, len(meter_ids), 500):
            chunk = meter_ids[start : start + 500]
            for meter_id, outcome, n in await self._rows(
                "SELECT meter_id, outcome, SUM(count) FROM vee_counters WHERE rule != ''"
                f" AND meter_id IN ({','.join('?' * len(chunk))}) GROUP BY 1, 2",
                chunk,
            ):
                out.setdefault(meter_id, {})[outcome] = int(n)
        return out

    async def flag_totals(self) -> list[tuple[str, str, int]]:
        """VEE findings in the whole store by (rule, outcome)."""
        return [
            (rule, outcome, int(n)) for rule, outcome, n in await self._rows(
                "SELECT rule, outcome, SUM(count) FROM vee_counters WHERE rule != ''"
                " GROUP BY 1, 2")
        ]  # fmt: skip

    async def bills(self, account_id: str | None, after_seq: int, limit: int) -> list[tuple]:
        sql = (
            "SELECT seq, number, account_id, period, start_ms, end_ms, currency, total,"
            " issued_ms FROM bills WHERE seq > ?"
        )
        params: list[Any] = [after_seq]
        if account_id is not None:
            sql += " AND account_id = ?"
            params.append(account_id)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        return await self._rows(sql, params)
