"""What the PostgreSQL store adds to the SQLite one: a schema migrated once by whichever
collector comes first, readings in monthly partitions made on demand, the deduplication
identity enforced by the database between collectors, and a connection that is lost
failing loudly and coming back."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.config import load_config
from collector.errors import ConfigError
from collector.ingest import Ingestor
from collector.registry import enrol_gateway
from collector.store import IngestWrite, ReadingRow, RecordRow, StoreConflict, open_store, postgres
from collector.store.base import StoreError
from collector.store.postgres import (
    PgStore,
    month_start_ms,
    months_covered,
    open_pg_store,
    partition_name,
    redact,
)
from collector.store.sqlite import SCHEMA_VERSION

from ._fixtures import T0, message, record, write_public_key
from ._stores import pg_rows

GW = "gw-1"
METERS = ["em-1", "em-2", "em-3"]
OCT_31_2330 = 1_793_489_400_000  # 2026-10-31T23:30:00Z
NOV_1_0030 = OCT_31_2330 + 3_600_000  # 2026-11-01T00:30:00Z
SCHEMA_LOCK = 0x6D6C0004  # collector/store/postgres.py _LOCK_SCHEMA


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll an observable condition (a row in pg_locks, ...) without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def reading(meter: str, ms: int, seq: int, value: str = "1.5") -> ReadingRow:
    return ReadingRow(meter, "1-0:1.8.0", ms, value, "kWh", 0, 1, GW, seq)


# schema ------------------------------------------------------------------------------------


def test_two_stores_opening_one_empty_database_at_once_migrate_it_once(pg_url: str) -> None:
    async def go() -> None:
        import psycopg

        # hold the schema lock so that both opens are waiting when the race starts
        holder = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
        await holder.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        opens = [asyncio.create_task(open_pg_store(pg_url)) for _ in range(2)]

        def both_waiting() -> bool:
            return pg_rows(
                pg_url,
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            ) == [(2,)]

        await until(both_waiting, "both opens to wait for the schema lock")
        assert pg_rows(pg_url, "SELECT to_regclass('meta') IS NULL") == [(True,)]
        await holder.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
        await holder.close()
        stores = await asyncio.gather(*opens)  # the second found the schema made: no error
        for store in stores:
            await store.close()

    run(go())
    assert pg_rows(pg_url, "SELECT key, value FROM meta ORDER BY key") == [
        ("registry_version", "0"),  # inserted by step 1 once (a second run would fail on it)
        ("schema_version", str(SCHEMA_VERSION)),
    ]


def test_a_second_open_changes_nothing(pg_url: str) -> None:
    run(_open_close(pg_url))
    catalog = (
        "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    )
    where = " WHERE n.nspname = 'public' ORDER BY c.oid"
    before = pg_rows(pg_url, catalog + where)
    version_row = pg_rows(pg_url, "SELECT xmin::text FROM meta WHERE key = 'schema_version'")
    run(_open_close(pg_url))
    assert pg_rows(pg_url, catalog + where) == before  # no table, index or partition more
    assert pg_rows(pg_url, "SELECT xmin::text FROM meta WHERE key = 'schema_version'") == (
        version_row  # the version row was not written again
    )


async def _open_close(url: str) -> None:
    store = await open_store(url)
    await store.close()


def test_a_newer_schema_version_is_refused_with_a_clear_message(pg_url: str) -> None:
    run(_open_close(pg_url))
    pg_rows(pg_url, f"UPDATE meta SET value = '{SCHEMA_VERSION + 3}' WHERE key = 'schema_version'")
    with pytest.raises(StoreError) as caught:
        run(open_store(pg_url))
    assert str(caught.value) == (
        f"{redact(pg_url)}: schema version {SCHEMA_VERSION + 3} is newer than this "
        f"collector's {SCHEMA_VERSION}; upgrade the collector"
    )


# partitions -------------------------------------------------------------------------------


def test_readings_land_in_monthly_partitions_made_on_demand(pg_url: str) -> None:
    async def go() -> None:
        one, two = await open_pg_store(pg_url), await open_pg_store(pg_url)
        try:
            # one batch across the end of October: two partitions made inside the transaction
            async with one.ingest_transaction() as tx:
                await tx.existing_readings({"em-1": [OCT_31_2330, NOV_1_0030]})
                await tx.write(
                    IngestWrite(
                        readings=[reading("em-1", OCT_31_2330, 1), reading("em-1", NOV_1_0030, 2)]
                    )
                )
            # another collector, which knew of no partition at its start, writes into both
            async with two.ingest_transaction() as tx:
                await tx.write(
                    IngestWrite(
                        readings=[reading("em-2", OCT_31_2330, 1), reading("em-2", NOV_1_0030, 2)]
                    )
                )
        finally:
            await one.close()
            await two.close()

    assert pg_rows(pg_url, "SELECT COUNT(*) FROM pg_inherits") == [(0,)]  # none before
    run(go())
    parts = pg_rows(
        pg_url,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass"
        " ORDER BY 1",
    )
    oct_start, nov_start = month_start_ms(OCT_31_2330), month_start_ms(NOV_1_0030)
    assert [name for name, _bound in parts] == ["readings_202610", "readings_202611"]
    assert [months_covered(bound) for _name, bound in parts] == [{oct_start}, {nov_start}]
    assert pg_rows(
        pg_url,
        "SELECT tableoid::regclass::text, meter_id, captured_ms FROM readings ORDER BY 2, 3",
    ) == [
        ("readings_202610", "em-1", OCT_31_2330),
        ("readings_202611", "em-1", NOV_1_0030),
        ("readings_202610", "em-2", OCT_31_2330),
        ("readings_202611", "em-2", NOV_1_0030),
    ]
    # each partition has the identity as its primary key (made by the ATTACH)
    assert pg_rows(
        pg_url,
        "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'p'"
        " AND conrelid::regclass::text LIKE 'readings_%' ORDER BY 1",
    ) == [("readings_202610",), ("readings_202611",)]


def test_partition_bounds_names_and_months(pg_url: str) -> None:
    nov = month_start_ms(NOV_1_0030)
    assert partition_name(nov) == "readings_202611"
    assert partition_name(month_start_ms(-1)) == "readings_196912"
    assert months_covered(
        f"FOR VALUES FROM ('{nov}') TO ('{month_start_ms(T0 + 40 * 86_400_000)}')"
    )
    # a yearly partition made by hand covers its twelve months; DEFAULT and MINVALUE none
    year = pg_rows(
        pg_url,
        "SELECT extract(epoch FROM timestamptz '2027-01-01 00:00Z')::bigint * 1000,"
        " extract(epoch FROM timestamptz '2028-01-01 00:00Z')::bigint * 1000",
    )[0]
    assert len(months_covered(f"FOR VALUES FROM ({year[0]}) TO ({year[1]})")) == 12
    assert months_covered("DEFAULT") == set()
    assert months_covered("FOR VALUES FROM (MINVALUE) TO (0)") == set()

    async def go() -> None:
        run_sql = "CREATE TABLE readings_2027 PARTITION OF readings FOR VALUES FROM ({}) TO ({})"
        store = await open_pg_store(pg_url)
        await store.close()
        pg_rows(pg_url, run_sql.format(*year))
        store = await open_pg_store(pg_url)  # learns of it from the catalog
        try:
            async with store.ingest_transaction() as tx:
                await tx.write(IngestWrite(readings=[reading("em-1", year[0] + 3_600_000, 1)]))
        finally:
            await store.close()

    run(go())
    assert pg_rows(pg_url, "SELECT tableoid::regclass::text FROM readings") == [("readings_2027",)]


# the identity, enforced by the database ---------------------------------------------------


def test_two_collectors_ingesting_the_same_records_at_once_store_each_once(
    pg_url: str, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    records = [
        record(key, GW, METERS[seq % 3], seq, OCT_31_2330 + (seq // 3) * 900_000)
        for seq in range(1, 61)
    ]  # 60 records across the end of October, two readings each
    messages = [message(GW, b, [r.raw for r in records[b * 5 : b * 5 + 5]]) for b in range(12)]

    async def go() -> tuple[Ingestor, Ingestor]:
        setup = await open_pg_store(pg_url)
        await enrol_gateway(setup, GW, write_public_key(key, tmp_path / "gw.pem"), METERS, T0)
        await setup.close()
        one, two = await open_pg_store(pg_url), await open_pg_store(pg_url)
        a, b = Ingestor(one, clock_ms=lambda: T0), Ingestor(two, clock_ms=lambda: T0)
        shuffled = messages[:]
        random.Random(7).shuffle(shuffled)
        try:

            async def feed(ingestor: Ingestor, order: list) -> None:
                for msg in order:
                    [outcome] = await ingestor.ingest([msg])
                    assert outcome.ack is not None  # acked: stored, or found stored

            await asyncio.gather(feed(a, messages), feed(b, shuffled))
            # and every message once more in one transaction each, at the same moment
            await asyncio.gather(a.ingest(messages), b.ingest(shuffled))
        finally:
            await one.close()
            await two.close()
        return a, b

    a, b = run(go())
    assert pg_rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT (gateway_id, seq)) FROM records") == [
        (60, 60)
    ]
    assert pg_rows(
        pg_url,
        "SELECT COUNT(*), COUNT(DISTINCT (meter_id, captured_ms, obis)) FROM readings",
    ) == [(120, 120)]
    stored = a.totals.records_stored + b.totals.records_stored
    duplicates = a.totals.duplicate_records + b.totals.duplicate_records
    assert (stored, duplicates) == (60, 60 * 3)  # 4 deliveries of each: 1 stored, 3 duplicates
    # both stored some: they ran side by side (each began with a different message)
    assert a.totals.records_stored > 0 and b.totals.records_stored > 0
    assert pg_rows(
        pg_url, "SELECT SUM(records_stored), SUM(duplicate_records), SUM(conflicts) FROM counters"
    ) == [(60, 180, 0)]
    assert pg_rows(pg_url, "SELECT COUNT(*) FROM quarantine") == [(0,)]


def test_a_raw_insert_of_a_stored_identity_is_refused_by_the_primary_key(pg_url: str) -> None:
    async def go() -> None:
        store = await open_pg_store(pg_url)
        try:
            async with store.ingest_transaction() as tx:
                await tx.write(
                    IngestWrite(
                        records=[RecordRow(GW, 1, "em-1", NOV_1_0030, b"r", 1)],
                        readings=[reading("em-1", NOV_1_0030, 1)],
                    )
                )
            # bypassing the look-ups and the locks: the database itself says no
            with pytest.raises(StoreConflict, match="duplicate key"):
                async with store.ingest_transaction() as tx:
                    await tx.write(IngestWrite(readings=[reading("em-1", NOV_1_0030, 2, "9")]))
            with pytest.raises(StoreConflict, match="duplicate key"):
                async with store._write() as db:
                    await db.execute(
                        "INSERT INTO records (gateway_id, seq, meter_id, captured_ms, raw,"
                        " received_ms) VALUES (?, ?, ?, ?, ?, ?)",
                        (GW, 1, "em-1", 5, b"other", 6),
                    )
        finally:
            await store.close()

    run(go())
    assert pg_rows(pg_url, "SELECT value FROM readings") == [("1.5",)]
    assert pg_rows(pg_url, "SELECT raw FROM records") == [(b"r",)]


# configuration and connections ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://meterlink:s3cret@127.0.0.1:5432/meterlink",
        "postgres://meterlink:s3cret@127.0.0.1/meterlink",
        "postgresql://meterlink@127.0.0.1:5432/meterlink?sslmode=require&password=s3cret",
    ],
)
def test_a_password_in_the_url_is_refused_by_config_and_redact_hides_it(
    tmp_path: Path, url: str
) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(f'[collector]\ndatabase = "{url}"\nid = "c1"\n')
    with pytest.raises(ConfigError, match="holds a password") as caught:
        load_config(path)
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in redact(url)
    assert redact(url).startswith("postgresql://meterlink@127.0.0.1")


def test_a_lost_connection_fails_loudly_and_the_next_transaction_reconnects(pg_url: str) -> None:
    def kill(pid: int) -> None:
        pg_rows(pg_url, f"SELECT pg_terminate_backend({pid}, 5000)")

    async def go() -> None:
        store = await open_pg_store(pg_url)
        assert isinstance(store, PgStore)
        try:
            # lost inside a transaction: that transaction fails, nothing of it stays
            with pytest.raises(StoreError, match="PostgreSQL"):
                async with store.ingest_transaction() as tx:
                    await tx.write(IngestWrite(records=[RecordRow(GW, 1, "em-1", 1, b"a", 1)]))
                    kill(store._writer.raw.info.backend_pid)
                    await tx.write(IngestWrite(records=[RecordRow(GW, 2, "em-1", 1, b"b", 1)]))
            # lost between transactions (a server restart, say): the next one reconnects
            async with store.ingest_transaction() as tx:
                await tx.write(IngestWrite(records=[RecordRow(GW, 3, "em-1", 1, b"c", 1)]))
            kill(store._writer.raw.info.backend_pid)
            kill(store._db.raw.info.backend_pid)  # the reader too
            async with store.ingest_transaction() as tx:
                await tx.write(IngestWrite(records=[RecordRow(GW, 4, "em-1", 1, b"d", 1)]))
            assert await store.registry_version() == 0
        finally:
            await store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.counters()  # closed by its owner: never reopened behind its back

    run(asyncio.wait_for(go(), 60))  # failing, not hanging
    assert pg_rows(pg_url, "SELECT seq FROM records ORDER BY seq") == [(3,), (4,)]


def test_a_collector_frozen_inside_an_ingest_transaction_loses_its_session_and_locks(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The others' ingest waits on its gateway and meter locks only until the server ends
    the idle session (``INGEST_IDLE_TIMEOUT``, 10 s; 300 ms here); other write sessions
    keep the 5-minute timeout."""
    monkeypatch.setattr(postgres, "INGEST_IDLE_TIMEOUT", "300ms")

    async def go() -> None:
        frozen, other = await open_pg_store(pg_url), await open_pg_store(pg_url)
        try:
            with pytest.raises(StoreError, match="PostgreSQL"):
                async with frozen.ingest_transaction() as tx:
                    await tx._db.execute("SELECT pg_advisory_xact_lock(4242)")
                    pid = tx._db.raw.info.backend_pid
                    # frozen: no statement while the session is idle in the transaction
                    await until(
                        lambda: (
                            not pg_rows(pg_url, f"SELECT 1 FROM pg_stat_activity WHERE pid = {pid}")
                        ),
                        "the server ending the idle ingest session",
                    )
                    await tx._db.execute("SELECT 1")  # thawed: the transaction is gone
            got = await (
                await other._writer.execute("SELECT pg_try_advisory_lock(4242)")
            ).fetchone()
            assert got[0] is True  # its lock went with it
            async with frozen._write() as db:  # a global-lock write keeps 5 minutes
                row = await (
                    await db.execute("SHOW idle_in_transaction_session_timeout")
                ).fetchone()
                assert row[0] == "5min"
        finally:
            await frozen.close()
            await other.close()

    run(asyncio.wait_for(go(), 60))


def test_a_server_that_is_not_there_is_a_clear_error(pg_url: str) -> None:
    from meterlink.procs import free_port

    url = f"postgresql://meterlink@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError) as caught:
        run(asyncio.wait_for(open_store(url), 30))
    assert str(caught.value).startswith(f"{url}: cannot connect: ")
    assert "refused" in str(caught.value)
