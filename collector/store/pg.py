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

    async def fetchmany(self, size: int) -> list[tuple]:
        rows = self._rows[self._next : self._next + size]
        self._next += len(rows)
        return rows

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
    """One autocommit psycopg connection; transactions are explicit ``BEGIN``/``COMMIT``.

    A connection the server or the network broke is opened again at the next statement
    that starts something (``BEGIN``, or any statement outside a transaction), so a
    collector outlives a PostgreSQL restart: the transaction in progress fails (its
    messages are not acked and come again), and the next one runs on a new session. A
    statement inside a transaction whose session was lost fails: its earlier statements
    are gone with the session and must not be continued on another one.
    """

    def __init__(self, conn: psycopg.AsyncConnection, dsn: str = "", setup: str = "") -> None:
        self.raw = conn
        self._dsn = dsn
        self._setup = setup
        self._in_tx = False
        self._closed = False

    @classmethod
    async def connect(cls, dsn: str, setup: str = "") -> PgConnection:
        """Connect to ``dsn``; ``setup``: statements run on every (re)connection."""
        return cls(await _connect(dsn, setup), dsn, setup)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Pending:
        return _Pending(self, sql, params)

    async def _ready(self, starting: bool) -> None:
        if not self.raw.closed:
            return
        if self._closed:
            raise StoreError(f"{_where(self._dsn)}: the connection is closed")
        if self._in_tx and not starting:
            raise StoreError(f"{_where(self._dsn)}: the connection was lost in a transaction")
        self._in_tx = False
        self.raw = await _connect(self._dsn, self._setup)

    async def _run(self, sql: str, params: Sequence[Any]) -> PgCursor:
        starting = sql == "BEGIN"
        outside = starting or not self._in_tx
        await self._ready(starting)
        try:
            try:
                cur, rows = await self._send(sql, params)
            except psycopg.OperationalError:
                # a session lost while idle (server restarted, idle connection cut) is found
                # out by the next statement: outside a transaction nothing of ours went with
                # it (the store writes only inside transactions), so run it once more on a
                # new session; inside one, the failure is the transaction's
                if not (outside and self.raw.closed and not self._closed):
                    raise
                await self._ready(starting)
                cur, rows = await self._send(sql, params)
        except _CONFLICTS as exc:
            raise StoreConflict(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise StoreError(_message(exc)) from exc
        if starting:
            self._in_tx = True
        return PgCursor([tuple(r) for r in rows], cur.rowcount)

    async def _send(self, sql: str, params: Sequence[Any]) -> tuple[Any, list]:
        # without parameters psycopg sends the text as it is: no placeholders to turn
        if params:
            cur = await self.raw.execute(translate(sql), tuple(params))
        else:
            cur = await self.raw.execute(sql.encode())
        rows = await cur.fetchall() if cur.description is not None else []
        return cur, rows

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in seq]
        if not rows:
            return
        await self._ready(False)
        try:
            async with self.raw.cursor() as cur:
                await cur.executemany(translate(sql), rows)
        except _CONFLICTS as exc:
            raise StoreConflict(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise StoreError(_message(exc)) from exc

    async def copy_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
        """Bulk insert with COPY (the fastest way in; constraints still apply)."""
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        await self._ready(False)
        try:
            async with self.raw.cursor() as cur, cur.copy(sql) as copy:
                for row in rows:
                    await copy.write_row(row)
        except _CONFLICTS as exc:
            raise StoreConflict(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise StoreError(_message(exc)) from exc

    async def commit(self) -> None:
        try:
            await self._run("COMMIT", ())
        finally:
            self._in_tx = False

    async def rollback(self) -> None:
        """End the transaction; on a lost session there is nothing left to roll back (the
        server ended it), and the error that ended it is the one worth reporting."""
        self._in_tx = False
        if self.raw.closed:
            return
        try:
            await self.raw.execute("ROLLBACK")
        except psycopg.Error:
            if not self.raw.closed:
                raise

    async def close(self) -> None:
        self._closed = True
        await self.raw.close()


# libpq defaults where the URL says nothing: a server or link that went silent is noticed
# (keepalives, unacknowledged data) instead of a statement waiting on a dead socket forever
_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


async def _connect(dsn: str, setup: str) -> psycopg.AsyncConnection:
    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
        extra = {k: v for k, v in _DEFAULTS.items() if k not in given}
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **extra)
    except psycopg.Error as exc:
        raise StoreError(f"{_where(dsn)}: cannot connect: {_reason(exc)}") from None
    if setup:
        try:
            await conn.execute(setup.encode())
        except psycopg.Error as exc:
            await conn.close()
            raise StoreError(_message(exc)) from exc
    return conn


def _reason(exc: BaseException) -> str:
    """libpq's message on one line (it spreads one error over several, with tabs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _message(exc: psycopg.Error) -> str:
    """The server's primary message (without CONTEXT lines), else libpq's text."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return f"PostgreSQL: {primary or _reason(exc)}"


def _where(dsn: str) -> str:
    from .postgres import redact  # (postgres imports this module)

    return redact(dsn) if dsn else "PostgreSQL"
