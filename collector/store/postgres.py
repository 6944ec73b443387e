"""The PostgreSQL store: the same ``Store`` as SQLite, for several collectors and large fleets.

Selected by the configuration only: ``[collector] database = "postgresql://..."`` (a libpq
URL; keep the password out of it, in ``~/.pgpass`` or ``PGPASSFILE``). What differs from the
SQLite store, and why:

* **The schema** is the SQLite one translated (``postgres_schema``), except ``readings``,
  which is partitioned by month of ``captured_ms``: retention drops a partition, and the
  indexes a collector writes to stay the size of one month. Partitions are made on demand,
  by the write that first needs one, on a short session of their own (``ensure_partitions``).
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
* **A lost connection** (server restart, network) fails the transaction in progress with a
  ``StoreError`` (nothing acked: the broker redelivers), and the next transaction or read
  opens a new session (``pg.PgConnection``): the collector keeps running, retries, and
  says so in its log; TCP keepalives and timeouts keep a dead link from hanging it, and
  the server ends a writer session left idle inside a transaction, freeing its locks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import psycopg
from psycopg import errors as pg_errors

from collector.fleet import sqlite as fleet_sqlite

from ..commands import store as commands_store
from . import bills_sqlite, postgres_schema, vee_sqlite
from .base import IngestWrite, StoreConflict, StoredReading, StoreError
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
    """``url`` without its password (nor any other parameter), for messages and logs."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = str(parts.get("user", ""))
    host = str(parts.get("host", ""))
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    port = str(parts.get("port", ""))
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


def partition_name(start_ms: int) -> str:
    """``readings_YYYYMM`` for the month starting at ``start_ms``."""
    at = datetime.fromtimestamp(start_ms // 1000, UTC)
    return f"readings_{at.year:04d}{at.month:02d}"


_BOUND = re.compile(r"FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")
_MAX_MONTHS = 12 * 200  # a partition wider than this (MINVALUE ...) is not expanded


def months_covered(bound: str) -> set[int]:
    """The month starts (ms) a partition's bound (``pg_get_expr`` of it) covers whole.

    Partitions made elsewhere (a DBA's yearly one, a DEFAULT partition) are understood
    as far as they can be: a month they cover whole needs no partition of ours; a
    DEFAULT or unbounded one covers no month here (a new partition is then attached
    where its bound is free, or refused by the server with a clear message)."""
    match = _BOUND.search(bound)
    if match is None:
        return set()
    low, high = int(match.group(1)), int(match.group(2))
    month = month_start_ms(low)
    if month < low:
        month = _next_month_ms(month)
    out: set[int] = set()
    while len(out) < _MAX_MONTHS and _next_month_ms(month) <= high:
        out.add(month)
        month = _next_month_ms(month)
    return out


class PgIngestTx(SqlIngestTx):
    """The ingest transaction on PostgreSQL: locks, array look-ups, COPY.

    The look-ups are PostgreSQL's own text (the one exception to one query text, besides
    the locks and COPY that SQLite has no use for): SQLite has no arrays, and the portable
    form, chunked ``IN (?, ...)`` lists per gateway or meter, costs a round trip per
    meter over a network where SQLite's costs a function call; here one statement joins
    the wanted keys as two arrays, whatever the batch size.
    """

    def __init__(self, db: PgConnection, store: PgStore) -> None:
        super().__init__(db)  # type: ignore[arg-type]
        self._pg = db
        self._store = store
        self._locked: set[tuple[int, int]] = set()

    async def _lock(self, space: int, ids: Iterable[str]) -> None:
        wanted = sorted({_bucket(i) for i in ids} - {b for s, b in self._locked if s == space})
        if not wanted:
            return
        # One statement, buckets in ascending order, so every collector locks in the same
        # order (no deadlock between them): the array is sorted here and unnest yields it
        # in order to the aggregate that takes the locks, with no join or sort between
        # that could reorder it (a sorted subquery would leave the order to the planner).
        await self._pg.execute(
            "SELECT count(pg_advisory_xact_lock(?, b)) FROM unnest(?::int[]) AS u (b)",
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
        meters: list[str] = []
        times: list[int] = []
        for meter_id, captures in wanted.items():
            for ms in set(captures):
                meters.append(meter_id)
                times.append(ms)
        # one statement for all meters (an index look-up per pair, pruned to its partition)
        rows = await (
            await self._pg.execute(
                "SELECT r.meter_id, r.obis, r.captured_ms, r.value, r.unit, r.gateway_id, r.seq"
                " FROM readings r JOIN unnest(?::text[], ?::bigint[]) AS w (meter_id,"
                " captured_ms) USING (meter_id, captured_ms)",
                (meters, times),
            )
        ).fetchall()
        return {
            (meter, obis, ms): StoredReading(value, unit, gw, seq)
            for meter, obis, ms, value, unit, gw, seq in rows
        }

    async def _bulk(self, table: str, columns: tuple[str, ...], rows: list) -> None:
        try:
            await self._pg.copy_rows(table, columns, rows)
        except StoreError as exc:
            if table == "readings" and isinstance(exc.__cause__, pg_errors.CheckViolation):
                # "no partition of relation readings found for row": a partition this
                # store knew of was dropped (retention): look again, run the batch again
                self._store.forget_partitions()
                raise StoreConflict(str(exc)) from exc
            raise

    async def write(self, rows: IngestWrite) -> None:
        if rows.readings:
            # rows are ReadingRow or plain tuples in its column order (ingest's fast path)
            await self._store.ensure_partitions({month_start_ms(r[2]) for r in rows.readings})
            # the meters written are locked even where ingest did not look them up first
            await self._lock(_LOCK_METER, {r[0] for r in rows.readings})
        if rows.records:
            await self._lock(_LOCK_GATEWAY, {r[0] for r in rows.records})
        await super().write(rows)


# every session of the writer: a collector that stops between the statements of a
# transaction (frozen, or cut off in a way TCP has not noticed yet) gets its session
# ended by the server, which frees its locks for the other collectors
_WRITER_SETUP = "SET idle_in_transaction_session_timeout = '5min'"
# ingest transactions, tighter: their gateway and meter locks stall every other collector's
# ingest for those gateways and meters, and they are never idle for more than milliseconds
# between statements (verification and decoding happen before BEGIN). A collector frozen
# mid-transaction loses its session after this; its batches are not acked and come again.
INGEST_IDLE_TIMEOUT = "10s"


class PgStore(SqliteStore):
    """The ``Store`` on PostgreSQL. Use ``open_pg_store``; close with ``close()``.

    The query modules (VEE, bills, fleet, commands) are the SQLite store's: their SQL is
    portable, and ``PgConnection`` speaks aiosqlite's calling convention.
    """

    def __init__(self, writer: PgConnection, reader: PgConnection, url: str) -> None:
        super().__init__(reader, url)  # type: ignore[arg-type]
        self._writer = writer
        self.url = url
        self._partitions: set[int] = set()  # month starts (ms) known to have a partition
        self._partition_lock = asyncio.Lock()

    async def close(self) -> None:
        try:
            await self._writer.close()
        finally:
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
        async with self._transaction(global_lock=False) as db:
            await db.execute(
                f"SET LOCAL idle_in_transaction_session_timeout = '{INGEST_IDLE_TIMEOUT}'"
            )
            yield PgIngestTx(db, self)

    def forget_partitions(self) -> None:
        """Drop what is known of the partitions: the next write looks at the catalog."""
        self._partitions.clear()

    async def ensure_partitions(self, months: Iterable[int]) -> None:
        """Make the monthly ``readings`` partitions starting at ``months`` (ms) if missing.

        On a session of its own, committed at once, even when called inside an ingest
        transaction: ``CREATE TABLE ... (LIKE readings)`` then ``ATTACH PARTITION``, which
        takes only a SHARE UPDATE EXCLUSIVE lock on ``readings``, so it waits neither for
        this collector's open transaction nor for the other collectors' (they read and
        insert), and the transaction's next statement routes rows into the new partition.
        (``CREATE TABLE ... PARTITION OF`` would need an ACCESS EXCLUSIVE lock: inside the
        transaction it would block every other collector until the commit; outside it, it
        would wait for the transaction that is waiting for it.)"""
        if not set(months) - self._partitions:
            return
        async with self._partition_lock:
            todo = sorted(set(months) - self._partitions)
            if not todo:
                return
            conn = await PgConnection.connect(self.url)
            try:
                await conn.execute("BEGIN")
                try:
                    await conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_SCHEMA,))
                    known = await _partition_months(conn)  # another collector's, too
                    for start in todo:
                        if start not in known:
                            await _make_partition(conn, start)
                except BaseException:
                    await asyncio.shield(conn.rollback())
                    raise
                await conn.commit()
            finally:
                await conn.close()
            self._partitions |= known | set(todo)

    async def _load_partitions(self) -> None:
        self._partitions |= await _partition_months(self._db)

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


async def _partition_months(db: PgConnection) -> set[int]:
    rows = await (
        await db.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings'::regclass"
        )
    ).fetchall()
    out: set[int] = set()
    for (bound,) in rows:
        out |= months_covered(bound or "")
    return out


async def _make_partition(db: PgConnection, start: int) -> None:
    name = partition_name(start)
    end = _next_month_ms(start)
    # (a table of that name left unattached by hand is attached if its rows fit the month)
    await db.execute(f"CREATE TABLE IF NOT EXISTS {name} (LIKE readings INCLUDING DEFAULTS)")
    # the primary key's index is made on the new table by the ATTACH (empty: at once)
    await db.execute(
        f"ALTER TABLE readings ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO ({end})"
    )


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
            raise StoreError(
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
        await asyncio.shield(db.rollback())
        raise
    await db.commit()


async def open_pg_store(url: str) -> PgStore:
    """Connect to the database at ``url`` (creating or migrating its schema).

    Raises ``StoreError`` (a ``RuntimeError``) with the URL without its password when the
    server cannot be reached or the schema is newer than this collector's."""
    writer = await PgConnection.connect(url, _WRITER_SETUP)
    try:
        await _migrate(writer, url)
        reader = await PgConnection.connect(url)
    except BaseException:
        await writer.close()
        raise
    store = PgStore(writer, reader, url)
    try:
        await store._load_partitions()
    except BaseException:
        await store.close()
        raise
    return store
