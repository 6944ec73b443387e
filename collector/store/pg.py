"""A psycopg 3 connection that speaks like the aiosqlite one the store's queries are written for.

The store's query modules (VEE, bills, fleet, commands) take a connection and call
``execute(sql, params)`` (awaited, or used as ``async with``), ``executemany``, and read rows
with ``fetchone``/``fetchall``. Their SQL is the portable subset both SQLite and PostgreSQL
run (``?`` placeholders, ``ON CONFLICT``, ``RETURNING``, window functions), so one query
module serves both stores; only the schemas differ (``postgres_schema.py``). This adapter
turns ``?`` into psycopg's ``%s`` (and a literal ``%`` into ``%%``) once per statement text.

Errors that mean "another collector got there first" (unique violation, deadlock,
serialization failure) become ``StoreConflict``: the transaction is rolled back and the
caller runs it again, now seeing the other's commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from .base import StoreConflict, StoreError

__all__ = ["PgConnection", "PgCursor", "translate"]

_CONFLICTS = (
    pg_errors.UniqueViolation,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.LockNotAvailable,
)


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``?`` placeholders to ``%s`` outside quoted text; ``%`` to ``%%``."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class PgCursor:
    """The rows of one executed statement (``fetchone``/``fetchall`` are awaitable)."""

    def __init__(self, rows: list[tuple], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    async def fetchone(self) -> tuple | None:
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    async def fetchall(self) -> list[tuple]:
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return rows

    async def __aenter__(self) -> PgCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Pending:
    """``conn.execute(...)``: awaitable, and usable as ``async with`` (as in aiosqlite)."""

    def __init__(self, conn: PgConnection, sql: str, params: Sequence[Any]) -> None:
        self._conn = conn
        self._sql = sql
        self._params = params

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._conn._run(self._sql, self._params).__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._conn._run(self._sql, self._params)

    async def __aexit__(self, *exc: object) -> None:
        return None


class PgConnection:
    """One autocommit psycopg connection; transactions are explicit ``BEGIN``/``COMMIT``."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.raw = conn

    @classmethod
    async def connect(cls, dsn: str) -> PgConnection:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        return cls(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Pending:
        return _Pending(self, sql, params)

    async def _run(self, sql: str, params: Sequence[Any]) -> PgCursor:
        try:
            # without parameters psycopg sends the text as it is: no placeholders to turn
            if params:
                cur = await self.raw.execute(translate(sql), tuple(params))
            else:
                cur = await self.raw.execute(sql.encode())
            rows = await cur.fetchall() if cur.description is not None else []
        except _CONFLICTS as exc:
            raise StoreConflict(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {str(exc).strip() or type(exc).__name__}") from exc
        return PgCursor([tuple(r) for r in rows], cur.rowcount)

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in seq]
        if not rows:
            return
        try:
            async with self.raw.cursor() as cur:
                await cur.executemany(translate(sql), rows)
        except _CONFLICTS as exc:
            raise StoreConflict(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {str(exc).strip() or type(exc).__name__}") from exc

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        """Bulk insert with COPY (the fastest way in; constraints still apply)."""
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        try:
            async with self.raw.cursor() as cur, cur.copy(sql) as copy:
                for row in rows:
                    await copy.write_row(row)
        except _CONFLICTS as exc:
            raise StoreConflict(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {str(exc).strip() or type(exc).__name__}") from exc

    async def commit(self) -> None:
        await self._run("COMMIT", ())

    async def rollback(self) -> None:
        await self.raw.execute("ROLLBACK")

    async def close(self) -> None:
        await self.raw.close()
