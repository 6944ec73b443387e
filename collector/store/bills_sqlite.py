"""The bill tables of the SQLite store (schema version 4) and their queries.

An issued bill is one row of ``bills`` (its complete JSON document, as issued) and one row per
line in ``bill_lines`` (for queries and correction look-ups). Triggers refuse every UPDATE and
DELETE on both tables: an issued bill is never changed; late data is carried as correction
lines on a later bill. Bill numbers are allocated in the issuing transaction (``BEGIN
IMMEDIATE``), so two bill runs never hand out the same number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, NamedTuple

import aiosqlite

__all__ = ["MIGRATION", "BillLineRow", "IssuedBill", "SqliteBills", "format_number"]

MIGRATION = [
    """CREATE TABLE bills (
        seq INTEGER PRIMARY KEY,
        number TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL,
        period TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        currency TEXT NOT NULL,
        total TEXT NOT NULL,
        issued_ms INTEGER NOT NULL,
        document TEXT NOT NULL,
        UNIQUE (account_id, period))""",
    # one row per line; corrects_* name the earlier bill and period a correction line is for
    """CREATE TABLE bill_lines (
        number TEXT NOT NULL REFERENCES bills (number),
        line INTEGER NOT NULL,
        service_point TEXT NOT NULL,
        line_key TEXT NOT NULL,
        component TEXT NOT NULL,
        label TEXT NOT NULL,
        quantity TEXT NOT NULL,
        unit TEXT NOT NULL,
        unit_price TEXT NOT NULL,
        amount TEXT NOT NULL,
        corrects_period TEXT,
        corrects_number TEXT,
        PRIMARY KEY (number, line)) WITHOUT ROWID""",
    "CREATE INDEX bill_lines_by_key ON bill_lines (service_point, corrects_period)",
    """CREATE TRIGGER bills_never_updated BEFORE UPDATE ON bills
        BEGIN SELECT RAISE(ABORT, 'an issued bill is never changed'); END""",
    """CREATE TRIGGER bills_never_deleted BEFORE DELETE ON bills
        BEGIN SELECT RAISE(ABORT, 'an issued bill is never deleted'); END""",
    """CREATE TRIGGER bill_lines_never_updated BEFORE UPDATE ON bill_lines
        BEGIN SELECT RAISE(ABORT, 'an issued bill is never changed'); END""",
    """CREATE TRIGGER bill_lines_never_deleted BEFORE DELETE ON bill_lines
        BEGIN SELECT RAISE(ABORT, 'an issued bill is never deleted'); END""",
]


def format_number(seq: int) -> str:
    return f"B{seq:07d}"


class IssuedBill(NamedTuple):
    number: str
    account_id: str
    period: str
    start_ms: int
    end_ms: int
    currency: str
    total: str
    issued_ms: int
    document: str


class BillLineRow(NamedTuple):
    """A stored line: a section's line (corrects_period None) or a correction line."""

    number: str
    line: int
    service_point: str
    line_key: str
    component: str
    label: str
    quantity: str
    unit: str
    unit_price: str
    amount: str
    corrects_period: str | None
    corrects_number: str | None


_BILL_COLUMNS = "number, account_id, period, start_ms, end_ms, currency, total, issued_ms, document"


class SqliteBills:
    """Bill reads, and the issuing write (``issue``), on the store's connection."""

    def __init__(self, db: aiosqlite.Connection, write: Callable[[], Any]) -> None:
        self._db = db
        self._write = write

    async def _rows(self, sql: str, params: Iterable = ()) -> list:
        async with self._db.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def issued(self, account_id: str, period: str) -> IssuedBill | None:
        rows = await self._rows(
            f"SELECT {_BILL_COLUMNS} FROM bills WHERE account_id = ? AND period = ?",
            (account_id, period),
        )
        return IssuedBill(*rows[0]) if rows else None

    async def by_number(self, number: str) -> IssuedBill | None:
        rows = await self._rows(f"SELECT {_BILL_COLUMNS} FROM bills WHERE number = ?", (number,))
        return IssuedBill(*rows[0]) if rows else None

    async def of_account(self, account_id: str) -> list[IssuedBill]:
        """The account's issued bills, oldest period first."""
        rows = await self._rows(
            f"SELECT {_BILL_COLUMNS} FROM bills WHERE account_id = ? ORDER BY start_ms, seq",
            (account_id,),
        )
        return [IssuedBill(*r) for r in rows]

    async def lines(self, numbers: Iterable[str]) -> list[BillLineRow]:
        wanted = list(numbers)
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        rows = await self._rows(
            f"SELECT * FROM bill_lines WHERE number IN ({marks}) ORDER BY number, line", wanted
        )
        return [BillLineRow(*r) for r in rows]

    async def demand_peaks(self, service_point: str, before_ms: int) -> list[str]:
        """The highest demand line (kW) of each issued bill of the point before ``before_ms``,
        oldest first (for ratchets)."""
        rows = await self._rows(
            "SELECT b.number, l.quantity FROM bill_lines l JOIN bills b ON b.number = l.number"
            " WHERE l.service_point = ? AND l.component = 'demand' AND l.corrects_period IS NULL"
            " AND b.end_ms <= ? ORDER BY b.start_ms",
            (service_point, before_ms),
        )
        best: dict[str, Decimal] = {}
        for number, value in rows:
            best[number] = max(best.get(number, Decimal(value)), Decimal(value))
        return [str(v) for v in best.values()]

    async def interval_changes(
        self, meter_id: str, obis: str, start_ms: int, end_ms: int, since_ms: int
    ) -> list[tuple[str, str, int]]:
        """Derived intervals of [start, end) created or superseded after ``since_ms``:
        (quality, why, count) of the rows now current, for a correction's reason."""
        return [
            (q, why, int(n))
            for q, why, n in await self._rows(
                "SELECT quality, why, COUNT(*) FROM intervals WHERE meter_id = ? AND obis = ?"
                " AND start_ms >= ? AND start_ms < ? AND superseded_ms IS NULL"
                " AND created_ms > ? GROUP BY quality, why ORDER BY COUNT(*) DESC",
                (meter_id, obis, start_ms, end_ms, since_ms),
            )
        ]

    async def issue(
        self,
        account_id: str,
        period: str,
        start_ms: int,
        end_ms: int,
        currency: str,
        issued_ms: int,
        make: Callable[[str], tuple[str, str, list[tuple]]],
    ) -> IssuedBill:
        """Allocate the next number, ``make(number) -> (total, document, lines)`` and store
        it, in one transaction. An already issued (account, period) is returned unchanged."""
        async with self._write() as db:
            async with db.execute(
                f"SELECT {_BILL_COLUMNS} FROM bills WHERE account_id = ? AND period = ?",
                (account_id, period),
            ) as cur:
                found = await cur.fetchone()
            if found is not None:
                return IssuedBill(*found)
            async with db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM bills") as cur:
                seq = int((await cur.fetchone())[0])
            number = format_number(seq)
            total, document, lines = make(number)
            await db.execute(
                "INSERT INTO bills (seq, number, account_id, period, start_ms, end_ms, currency,"
                " total, issued_ms, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    number,
                    account_id,
                    period,
                    start_ms,
                    end_ms,
                    currency,
                    total,
                    issued_ms,
                    document,
                ),
            )
            await db.executemany(
                "INSERT INTO bill_lines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(number, i, *line) for i, line in enumerate(lines, start=1)],
            )
        return IssuedBill(
            number, account_id, period, start_ms, end_ms, currency, total, issued_ms, document
        )
