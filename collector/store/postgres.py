"""The PostgreSQL store: the same ``Store`` as SQLite, for several collectors and large fleets.

Selected by the configuration only: ``[collector] database = "postgresql://..."`` (a libpq
URL; keep the password out of it, in ``~/.pgpass`` or ``PGPASSFILE``). What differs from the
SQLite store, and why:

* **The schema** is the SQLite one translated (``postgres_schema``), except ``readings``,
  which is partitioned by month of ``captured_ms``: retention drops a partition, and the
  indexes a collector writes to stay the size of one month. Partitions are made on demand.
* **Deduplication is enforced by the database.** The identities are primary keys
  (``records (gateway_id, seq)``, ``readings (meter_id, captured_ms, obis)``). Ingest looks
  them up first to tell a duplicate from a conflict; between look-up and insert another
  collector holding a redelivered copy could commit the same identity, so the ingest
  transaction first takes transaction-scoped advisory locks on the gateways and meters it
  touches (in one order: no deadlock between collectors), which makes the look-up exact; and
  if a writer without those locks ever slipped in, the primary key refuses the second insert,
  the transaction rolls back (``StoreConflict``) and ingest runs it again.
* **Two connections**: one for write transactions (one at a time, as with SQLite), one in
  autocommit for reads (dashboard, API, bill runs), so a read never lands inside a write
  transaction. Other write transactions (bills, commands, fleet, VEE operator actions) take
  one global advisory lock: they are rare, and the bill numbering relies on one writer.
* ``synchronous_commit`` stays on (the server default): the collector acks right after COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import psycopg

from collector.fleet import sqlite as fleet_sqlite

from ..commands import store as commands_store
from . import bills_sqlite, postgres_schema, vee_sqlite
from .base import IngestWrite, StoreConflict, StoredReading
from .pg import PgConnection
from .sqlite import (
    SCHEMA_VERSION,
    SqlIngestTx,
    SqliteStore,
)

__all__ = ["PgIngestTx", "PgStore", "is_postgres_url", "open_pg_store", "redact"]

log = logging.getLogger("collector")

# advisory lock name spaces (the first key of pg_advisory_xact_lock(int, int))
_LOCK_GATEWAY = 0x6D6C0001
_LOCK_METER = 0x6D6C0002
_LOCK_WRITER = 0x6D6C0003  # the writes other than ingest: one at a time, as in SQLite
_LOCK_SCHEMA = 0x6D6C0004  # migrations and new partitions
_BUCKETS = 4096  # advisory locks per name space: hash buckets of ids (a collision only waits)


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = parts.get("user", "")
    host = parts.get("host", "")
    port = parts.get("port", "")
    return f"postgresql://{user}{'@' if user else ''}{host}{':' if port else ''}{port}/" + str(
        parts.get("dbname", "")
    )


def _bucket(text: str) -> int:
    return zlib.crc32(text.encode()) % _BUCKETS


def month_start_ms(instant_ms: int) -> int:
    """The first millisecond (UTC) of the month holding ``instant_ms``."""
    at = datetime.fromtimestamp(instant_ms // 1000, UTC)
    first = datetime(at.year, at.month, 1, tzinfo=UTC)
    return int(first.timestamp()) * 1000


def _next_month_ms(start_ms: int) -> int:
    at = datetime.fromtimestamp(start_ms // 1000, UTC)
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1000


class _MissingPartitions(Exception):
    def __init__(self, months: set[int]) -> None:
        super().__init__(f"readings partitions missing for {len(months)} month(s)")
        self.months = months


class PgIngestTx(SqlIngestTx):
    """The ingest transaction on PostgreSQL: locks, array look-ups, COPY."""

    def __init__(self, db: PgConnection, partitions: set[int]) -> None:
        super().__init__(db)  # type: ignore[arg-type]
        self._pg = db
        self._partitions = partitions
        self._locked: set[tuple[int, int]] = set()

    async def _lock(self, space: int, ids: Iterable[str]) -> None:
        wanted = sorted({_bucket(i) for i in ids} - {b for s, b in self._locked if s == space})
        if not wanted:
            return
        # one statement, buckets in ascending order: every collector locks in the same order
        await self._pg.execute(
            "SELECT count(pg_advisory_xact_lock(?, b)) FROM"
            " (SELECT unnest(?::int[]) AS b ORDER BY 1) AS s",
            (space, wanted),
        )
        self._locked.update((space, b) for b in wanted)

    async def existing_records(
        self, wanted: Mapping[str, Collection[int]]
    ) -> dict[tuple[str, int], bytes]:
        await self._lock(_LOCK_GATEWAY, wanted)
        gateways: list[str] = []
        seqs: list[int] = []
        for gateway_id, numbers in wanted.items():
            for seq in set(numbers):
                gateways.append(gateway_id)
                seqs.append(seq)
        rows = await (
            await self._pg.execute(
                "SELECT r.gateway_id, r.seq, r.raw FROM records r"
                " JOIN unnest(?::text[], ?::bigint[]) AS w (gateway_id, seq)"
                " USING (gateway_id, seq)",
                (gateways, seqs),
            )
        ).fetchall()
        return {(gw, seq): bytes(raw) for gw, seq, raw in rows}

    async def existing_readings(
        self, wanted: Mapping[str, Collection[int]]
    ) -> dict[tuple[str, str, int], StoredReading]:
        await self._lock(_LOCK_METER, wanted)
        found: dict[tuple[str, str, int], StoredReading] = {}
        for meter_id, times in wanted.items():
            rows = await (
                await self._pg.execute(
                    "SELECT obis, captured_ms, value, unit, gateway_id, seq FROM readings"
                    " WHERE meter_id = ? AND captured_ms = ANY(?::bigint[])",
                    (meter_id, sorted(set(times))),
                )
            ).fetchall()
            for obis, ms, value, unit, gw, seq in rows:
                found[(meter_id, obis, ms)] = StoredReading(value, unit, gw, seq)
        return found

    async def _bulk(self, table: str, columns: tuple[str, ...], rows: list) -> None:
        await self._pg.copy_rows(table, columns, rows)

    async def write(self, rows: IngestWrite) -> None:
        if rows.readings:
            months = {month_start_ms(r.captured_ms) for r in rows.readings}
            missing = months - self._partitions
            if missing:
                raise _MissingPartitions(missing)  # made outside this transaction, then again
            # the meters written are locked even where ingest did not look them up first
            await self._lock(_LOCK_METER, {r.meter_id for r in rows.readings})
        if rows.records:
            await self._lock(_LOCK_GATEWAY, {r.gateway_id for r in rows.records})
        await super().write(rows)


class PgStore(SqliteStore):
    """The ``Store`` on PostgreSQL. Use ``open_pg_store``; close with ``close()``.

    The query modules (VEE, bills, fleet, commands) are the SQLite store's: their SQL is
    portable, and ``PgConnection`` speaks aiosqlite's calling convention.
    """

    def __init__(self, writer: PgConnection, reader: PgConnection, url: str) -> None:
        super().__init__(reader, url)  # type: ignore[arg-type]
        self._writer = writer
        self.url = url
        self._partitions: set[int] = set()

    async def close(self) -> None:
        await self._writer.close()
        await self._db.close()

    @asynccontextmanager
    async def _transaction(self, global_lock: bool) -> AsyncIterator[PgConnection]:
        async with self._lock:
            await self._writer.execute("BEGIN")
            try:
                if global_lock:
                    await self._writer.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_WRITER,))
                yield self._writer
            except BaseException:
                await asyncio.shield(self._writer.rollback())
                raise
            await self._writer.commit()

    def _write(self):  # type: ignore[no-untyped-def,override]
        return self._transaction(global_lock=True)

    @asynccontextmanager
    async def ingest_transaction(self) -> AsyncIterator[PgIngestTx]:  # type: ignore[override]
        try:
            async with self._transaction(global_lock=False) as db:
                yield PgIngestTx(db, self._partitions)
        except _MissingPartitions as missing:
            await self.ensure_partitions(missing.months)
            raise StoreConflict(str(missing)) from None

    async def ensure_partitions(self, months: Iterable[int]) -> None:
        """Make the monthly ``readings`` partitions starting at ``months`` (ms) if missing."""
        todo = sorted(set(months) - self._partitions)
        if not todo:
            return
        async with self._lock:
            await self._writer.execute("BEGIN")
            try:
                await self._writer.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_SCHEMA,))
                for start in todo:
                    name = "readings_" + datetime.fromtimestamp(start // 1000, UTC).strftime("%Y%m")
                    await self._writer.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF readings"
                        f" FOR VALUES FROM ({start}) TO ({_next_month_ms(start)})"
                    )
            except BaseException:
                await asyncio.shield(self._writer.rollback())
                raise
            await self._writer.commit()
        self._partitions.update(todo)

    async def _load_partitions(self) -> None:
        rows = await (
            await self._db.execute(
                "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'readings'::regclass"
            )
        ).fetchall()
        for (bound,) in rows:
            # FOR VALUES FROM ('1700000000000') TO ('...')
            start = bound.split("(", 1)[1].split(")", 1)[0].strip("'")
            self._partitions.add(int(start))

    @property
    def vee(self) -> vee_sqlite.SqliteVeeReads:
        return vee_sqlite.SqliteVeeReads(self._db)  # type: ignore[arg-type]

    @property
    def bills(self) -> bills_sqlite.SqliteBills:
        return bills_sqlite.SqliteBills(self._db, self._write)  # type: ignore[arg-type]

    @property
    def commands(self) -> commands_store.SqliteCommands:
        return commands_store.SqliteCommands(self._db, self._write)  # type: ignore[arg-type]

    @property
    def fleet(self) -> fleet_sqlite.SqliteFleet:
        return fleet_sqlite.SqliteFleet(self._db, self._write)  # type: ignore[arg-type]


async def _migrate(db: PgConnection, url: str) -> None:
    await db.execute("BEGIN")
    try:
        await db.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_SCHEMA,))
        exists = await (await db.execute("SELECT to_regclass('meta') IS NOT NULL")).fetchone()
        version = 0
        if exists and exists[0]:
            row = await (
                await db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            ).fetchone()
            version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{redact(url)}: schema version {version} is newer than this collector's "
                f"{SCHEMA_VERSION}; upgrade the collector"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in postgres_schema.migration(step):
                await db.execute(statement)
        if version < SCHEMA_VERSION:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
    except BaseException:
        await db.rollback()
        raise
    await db.commit()


async def open_pg_store(url: str) -> PgStore:
    """Connect to the database at ``url`` (creating or migrating its schema)."""
    try:
        writer = await PgConnection.connect(url)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"{redact(url)}: cannot connect: {reason}") from None
    try:
        await _migrate(writer, url)
        reader = await PgConnection.connect(url)
    except BaseException:
        await writer.close()
        raise
    store = PgStore(writer, reader, url)
    await store._load_partitions()
    return store
