"""The SQLite store on real files: schema, reopen, one transaction per write."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from collector.store import IngestWrite, QuarantineRow, ReadingRow, RecordRow, open_store
from collector.store.sqlite import SCHEMA_VERSION


def run(coro):
    return asyncio.run(coro)


def reading(seq: int, ms: int, value: str = "1.5") -> ReadingRow:
    return ReadingRow("em-sdm-01", "1-0:1.8.0", ms, value, "kWh", 0, 1, "gw-1", seq)


def test_new_file_gets_wal_schema_version_and_full_sync(tmp_path: Path) -> None:
    async def go():
        store = await open_store(tmp_path / "c.sqlite")
        try:
            async with store._db.execute("PRAGMA synchronous") as cur:
                return (await cur.fetchone())[0]
        finally:
            await store.close()

    assert run(go()) == 2  # FULL
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_records_found_by_seq_after_reopen(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"

    async def write():
        store = await open_store(db)
        async with store.ingest_transaction() as tx:
            await tx.write(
                IngestWrite(
                    records=[RecordRow("gw-1", 4, "em-sdm-01", 1000, b"raw4", 1)],
                    readings=[reading(4, 1000)],
                )
            )
        await store.close()

    async def look():
        store = await open_store(db)  # a restart: nothing cached
        try:
            async with store.ingest_transaction() as tx:
                found = await tx.existing_records({"gw-1": [3, 4, 5]})
                known = await tx.existing_readings({"em-sdm-01": [1000, 2000]})
            return found, known
        finally:
            await store.close()

    run(write())
    found, known = run(look())
    assert found == {("gw-1", 4): b"raw4"}
    assert list(known) == [("em-sdm-01", "1-0:1.8.0", 1000)]
    assert known[("em-sdm-01", "1-0:1.8.0", 1000)].value == "1.5"


def test_a_failure_mid_write_leaves_nothing_half_written(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"

    async def go():
        store = await open_store(db)
        try:
            rows = IngestWrite(
                records=[RecordRow("gw-1", 1, "em-sdm-01", 1000, b"r", 1)],
                # the same identity twice: the readings insert fails after the records insert
                readings=[reading(1, 1000), reading(1, 1000, "2")],
                quarantine=[QuarantineRow(1, "t", "gw-1", None, None, "x", b"")],
            )
            rows.count("gw-1", "em-sdm-01").records_stored += 1
            with pytest.raises(sqlite3.IntegrityError):
                async with store.ingest_transaction() as tx:
                    await tx.write(rows)
            # the store is usable afterwards
            async with store.ingest_transaction() as tx:
                await tx.write(IngestWrite(readings=[reading(1, 1000)]))
        finally:
            await store.close()

    run(go())
    with sqlite3.connect(db) as conn:
        for table in ("records", "quarantine", "counters"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,), table
        assert conn.execute("SELECT COUNT(*) FROM readings").fetchone() == (1,)


def test_counters_add_up_across_transactions(tmp_path: Path) -> None:
    async def go():
        store = await open_store(tmp_path / "c.sqlite")
        try:
            for _ in range(3):
                rows = IngestWrite()
                rows.count("gw-1", "em-sdm-01").duplicate_records += 2
                rows.count("gw-1", "em-sdm-01").rejected += 1
                async with store.ingest_transaction() as tx:
                    await tx.write(rows)
            return await store.counters()
        finally:
            await store.close()

    [(gw, meter, delta)] = run(go())
    assert (gw, meter, delta.duplicate_records, delta.rejected) == ("gw-1", "em-sdm-01", 6, 3)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        run(open_store(db))
