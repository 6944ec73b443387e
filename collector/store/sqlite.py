"""The SQLite store (aiosqlite): the embedded default.

* WAL mode, so readers (CLI ``stats``, ``bill``) never block the ingest writer.
* ``synchronous=FULL``: in WAL mode NORMAL may lose the last committed transactions on a power
  cut. The collector acks a batch right after COMMIT and the gateway then deletes those
  records, so a commit that could be lost after its ack would lose readings. FULL fsyncs the
  WAL at every commit; ingest coalesces many MQTT messages per transaction to pay that once.
* Writes go in ``BEGIN IMMEDIATE`` transactions (the write lock is taken before the
  duplicate look-ups, so no other writer can slip in between look-up and insert).
* The schema is versioned with ``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from collector.fleet import sqlite as fleet_sqlite

from ..commands import store as commands_store
from . import bills_sqlite, insight_sqlite, latency_sqlite, sla_sqlite, vee_sqlite
from .base import (
    CounterDelta,
    GatewayKey,
    IngestWrite,
    QuarantineRow,
    ReadingPoint,
    StatusRow,
    StoredReading,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStore", "open_sqlite_store", "open_store"]


_SCHEMA = [
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    "INSERT INTO meta (key, value) VALUES ('registry_version', '0')",
    """CREATE TABLE gateways (
        gateway_id TEXT PRIMARY KEY,
        enrolled_ms INTEGER NOT NULL)""",
    """CREATE TABLE gateway_keys (
        gateway_id TEXT NOT NULL REFERENCES gateways (gateway_id),
        key_id TEXT NOT NULL,
        public_key BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
        enrolled_ms INTEGER NOT NULL,
        revoked_ms INTEGER,
        PRIMARY KEY (gateway_id, key_id))""",
    """CREATE TABLE gateway_meters (
        gateway_id TEXT NOT NULL REFERENCES gateways (gateway_id),
        meter_id TEXT NOT NULL,
        bound_ms INTEGER NOT NULL,
        PRIMARY KEY (gateway_id, meter_id))""",
    """CREATE TABLE records (
        gateway_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        meter_id TEXT NOT NULL,
        captured_ms INTEGER NOT NULL,
        raw BLOB NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (gateway_id, seq)) WITHOUT ROWID""",
    # Identity (meter, quantity, time); captured_ms before obis so that one record's values
    # are neighbours and "readings of this meter at these times" is an index range.
    """CREATE TABLE readings (
        meter_id TEXT NOT NULL,
        obis TEXT NOT NULL,
        captured_ms INTEGER NOT NULL,
        value TEXT NOT NULL,
        unit TEXT NOT NULL,
        flags INTEGER NOT NULL,
        clock_source INTEGER NOT NULL,
        gateway_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (meter_id, captured_ms, obis)) WITHOUT ROWID""",
    """CREATE TABLE conflicts (
        id INTEGER PRIMARY KEY,
        meter_id TEXT NOT NULL,
        obis TEXT NOT NULL,
        captured_ms INTEGER NOT NULL,
        stored_value TEXT NOT NULL,
        stored_unit TEXT NOT NULL,
        stored_gateway_id TEXT NOT NULL,
        stored_seq INTEGER NOT NULL,
        new_value TEXT NOT NULL,
        new_unit TEXT NOT NULL,
        new_gateway_id TEXT NOT NULL,
        new_seq INTEGER NOT NULL,
        detected_ms INTEGER NOT NULL)""",
    "CREATE INDEX conflicts_by_meter ON conflicts (meter_id, captured_ms)",
    """CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        received_ms INTEGER NOT NULL,
        topic TEXT NOT NULL,
        gateway_id TEXT NOT NULL,
        seq INTEGER,
        meter_id TEXT,
        reason TEXT NOT NULL,
        raw BLOB NOT NULL)""",
    """CREATE TABLE counters (
        gateway_id TEXT NOT NULL,
        meter_id TEXT NOT NULL,
        records_stored INTEGER NOT NULL DEFAULT 0,
        readings_stored INTEGER NOT NULL DEFAULT 0,
        duplicate_records INTEGER NOT NULL DEFAULT 0,
        duplicate_readings INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        conflicts INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (gateway_id, meter_id))""",
    """CREATE TABLE gateway_status (
        gateway_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms INTEGER,
        backlog INTEGER NOT NULL,
        dropped INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        version TEXT NOT NULL,
        received_ms INTEGER NOT NULL)""",
]

#: Steps from one schema version to the next: ``MIGRATIONS[v]`` takes version v-1 to v.
MIGRATIONS: dict[int, list[str]] = {
    1: _SCHEMA,
    # the stable reason kind of a quarantine entry, counted by ``stats`` (old rows: '')
    2: [
        "ALTER TABLE quarantine ADD COLUMN kind TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX quarantine_by_kind ON quarantine (kind)",
    ],
    # VEE: validations, counters, derived intervals, operator audit, meter swaps
    3: vee_sqlite.MIGRATION,
    # bills: issued bills and their lines, never updated or deleted (triggers)
    4: bills_sqlite.MIGRATION,
    # fleet state per gateway and meter (collector/fleet), kept across restarts
    5: fleet_sqlite.MIGRATION,
    # remote commands and their replies, gateway keys retiring after a rotation
    6: commands_store.MIGRATION,
    # capture-to-commit delay: the time each record's transaction committed
    7: latency_sqlite.MIGRATION,
    # usage insight: customers' alert rules and the alerts they raised
    8: insight_sqlite.MIGRATION,
    # data-completeness SLA: gateway connectivity history and SLA evaluations
    9: sla_sqlite.MIGRATION,
}
SCHEMA_VERSION = max(MIGRATIONS)

RECORD_COLUMNS = ("gateway_id", "seq", "meter_id", "captured_ms", "raw", "received_ms")
READING_COLUMNS = ("meter_id", "obis", "captured_ms", "value", "unit", "flags", "clock_source",
                   "gateway_id", "seq")  # fmt: skip
_COUNTER_NAMES = ("records_stored", "readings_stored", "duplicate_records",
                  "duplicate_readings", "rejected", "conflicts")  # fmt: skip

_CHUNK = 500  # host parameters per IN (...) list; far below SQLite's limit


def _chunks(values: Collection[int]) -> Iterable[list[int]]:
    items = sorted(set(values))
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class SqlIngestTx:
    """The ingest transaction in portable SQL; ``PgIngestTx`` refines it for PostgreSQL."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._commit_id: int | None = None  # latency_sqlite: this transaction's commit row

    async def stamp_commit(self, committed_ms: int) -> None:
        """The commit time of the records written, on the collector's clock: ingest's last
        statement before COMMIT (capture-to-commit delay, ``latency_sqlite``)."""
        if self._commit_id is not None:
            await latency_sqlite.stamp_commit(self._db, self._commit_id, committed_ms)

    def vee(self) -> vee_sqlite.SqliteVeeTx:
        """The VEE queries and writes, in this same transaction."""
        return vee_sqlite.SqliteVeeTx(self._db)

    async def existing_records(
        self, wanted: Mapping[str, Collection[int]]
    ) -> dict[tuple[str, int], bytes]:
        found: dict[tuple[str, int], bytes] = {}
        for gateway_id, seqs in wanted.items():
            for chunk in _chunks(seqs):
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT seq, raw FROM records WHERE gateway_id = ? AND seq IN ({marks})"
                async with self._db.execute(sql, (gateway_id, *chunk)) as cur:
                    for seq, raw in await cur.fetchall():
                        found[(gateway_id, seq)] = bytes(raw)
        return found

    async def existing_readings(
        self, wanted: Mapping[str, Collection[int]]
    ) -> dict[tuple[str, str, int], StoredReading]:
        """The stored readings of these meters at these times, in one statement: a batch of a
        fleet's gateways names a different meter in every record, and one ``SELECT`` per
        meter (one aiosqlite thread round trip each) cost a third of SQLite ingest's time.
        ``CROSS JOIN`` keeps the wanted pairs the outer loop (SQLite does not reorder it),
        each one probe of the primary key's (meter, time) prefix."""
        found: dict[tuple[str, str, int], StoredReading] = {}
        pairs = [[meter_id, ms] for meter_id, times in wanted.items() for ms in sorted(set(times))]
        if not pairs:
            return found
        sql = (
            "SELECT r.meter_id, r.obis, r.captured_ms, r.value, r.unit, r.gateway_id, r.seq"
            " FROM json_each(?) AS w CROSS JOIN readings AS r"
            " WHERE r.meter_id = json_extract(w.value, '$[0]')"
            " AND r.captured_ms = json_extract(w.value, '$[1]')"
        )
        async with self._db.execute(sql, (json.dumps(pairs),)) as cur:
            for meter_id, obis, ms, value, unit, gw, seq in await cur.fetchall():
                found[(meter_id, obis, ms)] = StoredReading(value, unit, gw, seq)
        return found

    async def _bulk(self, table: str, columns: tuple[str, ...], rows: list) -> None:
        """Insert many rows (the PostgreSQL store does it with COPY)."""
        marks = ", ".join("?" * len(columns))
        await self._db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
        )

    async def write(self, rows: IngestWrite) -> None:
        db = self._db
        if rows.records:
            if self._commit_id is None:
                self._commit_id = await latency_sqlite.open_commit(db)
            commit_id = self._commit_id  # records tagged with their transaction's commit row
            await self._bulk("records", (*RECORD_COLUMNS, "commit_id"),
                             [(*r, commit_id) for r in rows.records])  # fmt: skip
        if rows.readings:
            await self._bulk("readings", READING_COLUMNS, rows.readings)
        if rows.conflicts:
            await db.executemany(
                "INSERT INTO conflicts (meter_id, obis, captured_ms, stored_value, stored_unit,"
                " stored_gateway_id, stored_seq, new_value, new_unit, new_gateway_id, new_seq,"
                " detected_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows.conflicts,
            )
        if rows.quarantine:
            await db.executemany(
                "INSERT INTO quarantine (received_ms, topic, gateway_id, seq, meter_id, reason,"
                " raw, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows.quarantine,
            )
        # rows in key order: two writers upserting the same keys lock them in one order
        if rows.counters:
            await db.executemany(
                "INSERT INTO counters (gateway_id, meter_id, records_stored, readings_stored,"
                " duplicate_records, duplicate_readings, rejected, conflicts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (gateway_id, meter_id) DO UPDATE SET"
                + ",".join(
                    f" {name} = counters.{name} + excluded.{name}" for name in _COUNTER_NAMES
                ),
                [
                    (gw, meter, *(getattr(d, name) for name in _COUNTER_NAMES))
                    for (gw, meter), d in sorted(rows.counters.items())
                ],
            )
        if rows.statuses:
            await db.executemany(
                "INSERT INTO gateway_status (gateway_id, state, reason, at_ms, backlog, dropped,"
                " last_seq, version, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (gateway_id) DO UPDATE SET state = excluded.state,"
                " reason = excluded.reason, at_ms = excluded.at_ms,"
                " backlog = excluded.backlog, dropped = excluded.dropped,"
                " last_seq = excluded.last_seq, version = excluded.version,"
                " received_ms = excluded.received_ms"
                # Every collector stores every status, each at its own pace: a copy that
                # reaches a collector late must not overwrite a newer one that another
                # stored. Older: an earlier gateway clock (at_ms) and no higher last_seq; a
                # last will (no at_ms) always applies; 10 min later, an "older" one means a
                # clock set back. (collector.fleet.state.status_is_older: the same rule.)
                " WHERE excluded.at_ms IS NULL OR gateway_status.at_ms IS NULL"
                " OR excluded.at_ms >= gateway_status.at_ms"
                " OR excluded.last_seq > gateway_status.last_seq"
                " OR excluded.received_ms > gateway_status.received_ms + 600000",
                sorted(rows.statuses, key=lambda row: row.gateway_id),  # stable: last wins
            )


class SqliteStore:
    """The ``Store`` on one SQLite file. Use ``open_store``; close with ``close()``."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()  # one write transaction at a time on this connection

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await asyncio.shield(self._db.rollback())
                raise
            await self._db.commit()

    @asynccontextmanager
    async def ingest_transaction(self) -> AsyncIterator[SqlIngestTx]:
        async with self._write() as db:
            yield SqlIngestTx(db)

    @asynccontextmanager
    async def vee_transaction(self) -> AsyncIterator[vee_sqlite.SqliteVeeOperatorTx]:
        """A write transaction for operator VEE actions (accept, reject, edit, swap)."""
        async with self._write() as db:
            yield vee_sqlite.SqliteVeeOperatorTx(db)

    @property
    def vee(self) -> vee_sqlite.SqliteVeeReads:
        """VEE reads: derived intervals (for rating), flags, estimates, audit, counters."""
        return vee_sqlite.SqliteVeeReads(self._db)

    @property
    def bills(self) -> bills_sqlite.SqliteBills:
        """Issued bills: reads, and ``issue`` (numbering and storing in one transaction)."""
        return bills_sqlite.SqliteBills(self._db, self._write)

    @property
    def commands(self) -> commands_store.SqliteCommands:
        """Remote commands, their replies, and rotated keys' retirements (collector/commands)."""
        return commands_store.SqliteCommands(self._db, self._write)

    @property
    def fleet(self) -> fleet_sqlite.SqliteFleet:
        """Fleet state (collector/fleet) and the HTTP API's paginated reads."""
        return fleet_sqlite.SqliteFleet(self._db, self._write)

    async def _rows(self, sql: str, params: tuple = ()) -> list:
        async with self._db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    # registry ---------------------------------------------------------------------------

    async def registry_version(self) -> int:
        rows = await self._rows("SELECT value FROM meta WHERE key = 'registry_version'")
        return int(rows[0][0])

    async def gateway_keys(self) -> list[GatewayKey]:
        rows = await self._rows(
            "SELECT gateway_id, key_id, public_key, status, enrolled_ms FROM gateway_keys"
            " ORDER BY gateway_id, enrolled_ms DESC"
        )
        return [GatewayKey(gw, kid, bytes(pk), st, ms) for gw, kid, pk, st, ms in rows]

    async def bindings(self) -> list[tuple[str, str]]:
        return [
            tuple(r) for r in await self._rows("SELECT gateway_id, meter_id FROM gateway_meters")
        ]

    async def enrol(
        self, gateway_id: str, key: GatewayKey, meters: Collection[str], now_ms: int
    ) -> bool:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO gateways (gateway_id, enrolled_ms) VALUES (?, ?)"
                " ON CONFLICT (gateway_id) DO NOTHING",
                (gateway_id, now_ms),
            )
            async with db.execute(
                "SELECT status FROM gateway_keys WHERE gateway_id = ? AND key_id = ?",
                (gateway_id, key.key_id),
            ) as cur:
                known = await cur.fetchone()
            if known is None:
                await db.execute(
                    "INSERT INTO gateway_keys (gateway_id, key_id, public_key, status,"
                    " enrolled_ms) VALUES (?, ?, ?, 'active', ?)",
                    (gateway_id, key.key_id, key.public_key, now_ms),
                )
            await db.executemany(
                "INSERT INTO gateway_meters (gateway_id, meter_id, bound_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (gateway_id, meter_id) DO NOTHING",
                [(gateway_id, meter, now_ms) for meter in meters],
            )
            await db.execute(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
                " WHERE key = 'registry_version'"
            )
        return known is None

    async def revoke_key(self, gateway_id: str, key_id: str, now_ms: int) -> str | None:
        async with self._write() as db:
            async with db.execute(
                "SELECT status FROM gateway_keys WHERE gateway_id = ? AND key_id = ?",
                (gateway_id, key_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            if row[0] != "revoked":
                await db.execute(
                    "UPDATE gateway_keys SET status = 'revoked', revoked_ms = ?"
                    " WHERE gateway_id = ? AND key_id = ?",
                    (now_ms, gateway_id, key_id),
                )
                await db.execute(
                    "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
                    " WHERE key = 'registry_version'"
                )
        return str(row[0])

    # reads ------------------------------------------------------------------------------

    async def counters(self) -> list[tuple[str, str, CounterDelta]]:
        rows = await self._rows(
            "SELECT gateway_id, meter_id, records_stored, readings_stored, duplicate_records,"
            " duplicate_readings, rejected, conflicts FROM counters ORDER BY meter_id, gateway_id"
        )
        return [(gw, meter, CounterDelta(*rest)) for gw, meter, *rest in rows]

    async def quarantine_by_reason(self) -> list[tuple[str, int]]:
        rows = await self._rows(
            "SELECT CASE kind WHEN '' THEN reason ELSE kind END AS k, COUNT(*) FROM quarantine"
            " GROUP BY k ORDER BY COUNT(*) DESC, k"
        )
        return [(reason, n) for reason, n in rows]

    async def quarantine_entries(self, limit: int) -> list[tuple[int, QuarantineRow]]:
        rows = await self._rows(
            "SELECT id, received_ms, topic, gateway_id, seq, meter_id, reason, raw, kind"
            " FROM quarantine ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [(i, QuarantineRow(*rest[:6], bytes(rest[6]), rest[7])) for i, *rest in rows]

    async def gateway_statuses(self) -> list[StatusRow]:
        rows = await self._rows(
            "SELECT gateway_id, state, reason, at_ms, backlog, dropped, last_seq, version,"
            " received_ms FROM gateway_status ORDER BY gateway_id"
        )
        return [StatusRow(*r) for r in rows]

    async def reading_at_or_before(
        self, meter_id: str, obis: str, instant_ms: int
    ) -> ReadingPoint | None:
        rows = await self._rows(
            "SELECT captured_ms, value, unit FROM readings WHERE meter_id = ? AND obis = ?"
            " AND captured_ms <= ? ORDER BY captured_ms DESC LIMIT 1",
            (meter_id, obis, instant_ms),
        )
        return ReadingPoint(*rows[0]) if rows else None

    async def reading_at_or_after(
        self, meter_id: str, obis: str, instant_ms: int
    ) -> ReadingPoint | None:
        rows = await self._rows(
            "SELECT captured_ms, value, unit FROM readings WHERE meter_id = ? AND obis = ?"
            " AND captured_ms >= ? ORDER BY captured_ms ASC LIMIT 1",
            (meter_id, obis, instant_ms),
        )
        return ReadingPoint(*rows[0]) if rows else None

    async def conflict_count(self, meter_id: str, start_ms: int, end_ms: int) -> int:
        rows = await self._rows(
            "SELECT COUNT(*) FROM conflicts WHERE meter_id = ? AND captured_ms >= ?"
            " AND captured_ms <= ?",
            (meter_id, start_ms, end_ms),
        )
        return int(rows[0][0])


async def open_store(target: Path | str) -> SqliteStore:
    """Open the store the configuration names: a ``postgresql://`` URL (``PgStore``) or
    the path of a SQLite file; created or migrated to this version's schema."""
    if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
        from .postgres import open_pg_store  # psycopg is loaded only where it is used

        return await open_pg_store(target)
    return await open_sqlite_store(target)


async def open_sqlite_store(path: Path | str) -> SqliteStore:
    """Open (creating or migrating) the database file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA busy_timeout = 10000")
        async with db.execute("PRAGMA journal_mode = WAL") as cur:
            mode = (await cur.fetchone())[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"{path}: could not switch to WAL mode (got {mode})")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        async with db.execute("PRAGMA user_version") as cur:
            version = (await cur.fetchone())[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path}: schema version {version} is newer than this collector's "
                f"{SCHEMA_VERSION}; upgrade the collector"
            )
        if version < SCHEMA_VERSION:
            await db.execute("BEGIN IMMEDIATE")
            try:
                async with db.execute("PRAGMA user_version") as cur:
                    version = (await cur.fetchone())[0]  # another process may have won
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                await db.rollback()
                raise
            await db.commit()
    except BaseException:
        await db.close()
        raise
    return SqliteStore(db, path)
