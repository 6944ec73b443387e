"""Filling a SQLite store's readings and intervals straight from rows (benchmarks' set-up,
never timed): faster than ingest by far, for benchmarks of what reads the store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

__all__ = ["INTERVAL_COLUMNS", "READING_COLUMNS", "fill_sqlite"]

READING_COLUMNS = ("meter_id", "obis", "captured_ms", "value", "unit", "flags", "clock_source",
                   "gateway_id", "seq")  # fmt: skip
INTERVAL_COLUMNS = ("meter_id", "obis", "start_ms", "end_ms", "value", "unit", "quality", "method",
                    "created_ms", "created_by", "why")  # fmt: skip


def _insert(columns: tuple[str, ...], table: str) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def fill_sqlite(path: Path, meters: Iterable[tuple[list[tuple], list[tuple]]]) -> tuple[int, int]:
    """Write each meter's (readings, intervals) rows in one transaction, then ANALYZE; returns
    (readings, intervals) written. The store's schema must exist (``open_store`` once)."""
    con = sqlite3.connect(path)
    readings = intervals = 0
    try:
        con.execute("BEGIN")
        for rows, derived in meters:
            con.executemany(_insert(READING_COLUMNS, "readings"), rows)
            con.executemany(_insert(INTERVAL_COLUMNS, "intervals"), derived)
            readings += len(rows)
            intervals += len(derived)
        con.execute("COMMIT")
        con.execute("ANALYZE")
    finally:
        con.close()
    return readings, intervals
