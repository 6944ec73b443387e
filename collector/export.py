"""Export stored records, byte for byte, with the public keys that check them.

The export is a JSON Lines file (format: ``docs/wire-format.md``, "Export format and offline
verification"): a header line with the selection and the gateways' enrolled keys, then one
line per record carrying the record's bytes exactly as the collector received and stored them
(base64). Nothing is re-serialised, so ``meterlink verify`` (or any Ed25519 tool) checks the
very bytes the gateway signed.

The database is read in one read-only transaction (a consistent snapshot): a read-only
SQLite connection (WAL lets the collector keep ingesting meanwhile), or, for a
``postgresql://`` database, a psycopg session in a REPEATABLE READ READ ONLY transaction.
The queries are the same text for both.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from protocols.clock import ClockSettingError, format_utc_ms, parse_utc, utc_ms

from .config import Config
from .errors import CollectorError, ConfigError, RatingError

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ExportError",
    "ExportResult",
    "Selection",
    "account_selection",
    "export_command",
    "write_export",
]

EXPORT_FORMAT = "meterlink-export"
EXPORT_VERSION = 1
_MIN_SCHEMA_VERSION = 1  # collector/store/sqlite.py SCHEMA_VERSION: tables read here exist
_BILLED_OBIS = ("1-0:1.8.0", "1-0:2.8.0")  # the registers a bill reads (rating/bill.py)


class ExportError(CollectorError):
    """An export that cannot be made as asked (no such database, nothing selected)."""


@dataclass(frozen=True)
class Selection:
    """Which records: one gateway, one meter, or the meters of an account over a period.

    ``from_ms``/``to_ms`` bound the capture time (inclusive). For an account and period,
    ``meters`` holds the account's meters, the bounds are the period's, and the readings
    just outside it that a bill interpolates with are added (``boundary_obis``).
    """

    describe: dict
    gateway: str | None = None
    meters: tuple[str, ...] = ()
    from_ms: int | None = None
    to_ms: int | None = None
    boundary_obis: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportResult:
    path: Path
    records: int
    keys: int
    gateways: tuple[str, ...]


def account_selection(
    account_id: str, meters: Sequence[str], period: str, start_ms: int, end_ms: int
) -> Selection:
    """The records behind a bill of ``account_id`` for ``period`` (``[start_ms, end_ms]``)."""
    return Selection(
        describe={"account": account_id, "period": period, "meters": list(meters)},
        meters=tuple(meters),
        from_ms=start_ms,
        to_ms=end_ms,
        boundary_obis=_BILLED_OBIS,
    )


class _Rows(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Any: ...


class _Conn(Protocol):
    """What the export needs of a connection: sqlite3's, or ``_PgReader``."""

    def execute(self, sql: str, params: Sequence[object] = ...) -> _Rows: ...
    def close(self) -> None: ...


class _PgReader:
    """A psycopg session speaking sqlite3's ``execute`` (``?`` placeholders), read only."""

    def __init__(self, url: str) -> None:
        import psycopg

        from .store.pg import translate
        from .store.postgres import redact

        self._translate = translate
        self._where = redact(url)
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = "; ".join(x.strip() for x in str(exc).splitlines() if x.strip())
            raise ExportError(f"{self._where}: cannot connect: {reason}") from None

    def execute(self, sql: str, params: Sequence[object] = ()) -> Any:
        import psycopg

        from .store.base import StoreError

        if sql == "BEGIN":  # the one snapshot: every later statement sees the same data
            sql = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        try:
            if params:
                return self._conn.execute(self._translate(sql), tuple(params))
            return self._conn.execute(sql.encode())
        except psycopg.errors.UndefinedTable:
            raise
        except psycopg.Error as exc:
            raise StoreError(f"{self._where}: {str(exc).strip()}") from exc

    def schema_version(self) -> int:
        row = self.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._conn.close()


def _connect(database: Path | str) -> _Conn:
    if isinstance(database, str) and database.startswith(("postgresql://", "postgres://")):
        import psycopg

        reader = _PgReader(database)
        try:
            version = reader.schema_version()
        except psycopg.errors.UndefinedTable:
            version = 0  # no meta table: not a collector database
        if version < _MIN_SCHEMA_VERSION:
            reader.close()
            raise ExportError(f"{reader._where}: not a collector database (no schema version)")
        return reader
    database = Path(database)
    if not database.exists():
        raise ExportError(f"{database}: no such database")
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < _MIN_SCHEMA_VERSION:
        conn.close()
        raise ExportError(f"{database}: not a collector database (schema version {version})")
    return conn


def _select_keys(conn: _Conn, sel: Selection) -> list[tuple[str, int]]:
    """(gateway, seq) of the selected records, sorted."""
    where: list[str] = []
    params: list[object] = []
    if sel.gateway is not None:
        where.append("gateway_id = ?")
        params.append(sel.gateway)
    if sel.meters:
        where.append(f"meter_id IN ({','.join('?' * len(sel.meters))})")
        params.extend(sel.meters)
    if sel.from_ms is not None:
        where.append("captured_ms >= ?")
        params.append(sel.from_ms)
    if sel.to_ms is not None:
        where.append("captured_ms <= ?")
        params.append(sel.to_ms)
    sql = "SELECT gateway_id, seq FROM records"
    if where:
        sql += " WHERE " + " AND ".join(where)
    found = {(gw, seq) for gw, seq in conn.execute(sql, params)}
    # The readings a bill interpolates with at the period's edges lie outside the period.
    for meter in sel.meters:
        for obis in sel.boundary_obis:
            for op, order, instant in (
                ("<=", "DESC", sel.from_ms),
                (">=", "ASC", sel.to_ms),
            ):
                if instant is None:
                    continue
                row = conn.execute(
                    "SELECT gateway_id, seq FROM readings WHERE meter_id = ? AND obis = ?"
                    f" AND captured_ms {op} ? ORDER BY captured_ms {order} LIMIT 1",
                    (meter, obis, instant),
                ).fetchone()
                if row is not None:
                    found.add((row[0], row[1]))
    return sorted(found)


def _key_lines(conn: _Conn, gateways: Iterable[str]) -> list[dict]:
    keys: list[dict] = []
    for gateway in sorted(set(gateways)):
        rows = conn.execute(
            "SELECT key_id, public_key, status, enrolled_ms, revoked_ms FROM gateway_keys"
            " WHERE gateway_id = ? ORDER BY enrolled_ms, key_id",
            (gateway,),
        ).fetchall()
        for key_id, public_key, status, enrolled_ms, revoked_ms in rows:
            keys.append(
                {
                    "gateway": gateway,
                    "key_id": key_id,
                    "public_key": base64.b64encode(bytes(public_key)).decode("ascii"),
                    "status": status,
                    "enrolled_at": format_utc_ms(enrolled_ms),
                    "revoked_at": None if revoked_ms is None else format_utc_ms(revoked_ms),
                }
            )
    return keys


def write_export(database: Path | str, sel: Selection, out: Path, now_ms: int) -> ExportResult:
    """Write the records of ``sel`` and their gateways' keys to ``out`` (atomically)."""
    conn = _connect(database)
    try:
        conn.execute("BEGIN")  # one snapshot for keys and records
        wanted = _select_keys(conn, sel)
        gateways = {gw for gw, _seq in wanted}
        if sel.gateway is not None:
            gateways.add(sel.gateway)
            known = conn.execute(
                "SELECT 1 FROM gateways WHERE gateway_id = ?", (sel.gateway,)
            ).fetchone()
            if known is None:
                where = conn._where if isinstance(conn, _PgReader) else database
                raise ExportError(f"{where}: gateway {sel.gateway!r} is not enrolled")
        keys = _key_lines(conn, gateways)
        header = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": format_utc_ms(now_ms),
            "selection": sel.describe,
            "records": len(wanted),
            "keys": keys,
        }
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", encoding="ascii", newline="\n") as fh:
            fh.write(json.dumps(header, separators=(",", ":")) + "\n")
            for gateway, seq in wanted:
                row = conn.execute(
                    "SELECT meter_id, captured_ms, received_ms, raw FROM records"
                    " WHERE gateway_id = ? AND seq = ?",
                    (gateway, seq),
                ).fetchone()
                meter, captured_ms, received_ms, raw = row
                line = {
                    "gateway": gateway,
                    "seq": seq,
                    "meter": meter,
                    "captured_ms": captured_ms,
                    "received_ms": received_ms,
                    "record": base64.b64encode(bytes(raw)).decode("ascii"),
                }
                fh.write(json.dumps(line, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return ExportResult(out, len(wanted), len(keys), tuple(sorted(gateways)))


def _instant(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return utc_ms(parse_utc(text))
    except ClockSettingError as exc:
        raise ExportError(f"{option}: {exc}") from None


def _selection(config: Config, args: argparse.Namespace) -> Selection:
    from_ms = _instant("--from", args.from_)
    to_ms = _instant("--to", args.to)
    bounds = {"from": args.from_, "to": args.to}
    if args.account is None:
        if args.period is not None:
            raise ExportError("--period goes with --account")
        if args.gateway is not None:
            return Selection({"gateway": args.gateway, **bounds}, args.gateway, (), from_ms, to_ms)
        return Selection({"meter": args.meter, **bounds}, None, (args.meter,), from_ms, to_ms)
    if args.period is None:
        raise ExportError("--account needs --period YYYY-MM")
    if from_ms is not None or to_ms is not None:
        raise ExportError("--from/--to do not go with --account: the period sets the range")
    from .rating import load_accounts, load_tariffs, parse_period

    if config.billing is None:
        raise ConfigError(f"{config.path}: no [billing] table (accounts, tariffs)")
    accounts = load_accounts(config.billing.accounts, load_tariffs(config.billing.tariffs))
    account = accounts.get(args.account)
    if account is None:
        known = ", ".join(sorted(accounts)) or "none"
        raise RatingError(
            f"{config.billing.accounts}: no account {args.account!r} (known: {known})"
        )
    period = parse_period(args.period, account)
    return account_selection(
        account.id, account.meters, period.label, period.start_ms, period.end_ms
    )


def export_command(config: Config, args: argparse.Namespace, now_ms: int) -> int:
    """``meterlink collector export``: write the file, say what is in it."""
    sel = _selection(config, args)
    result = write_export(config.collector.database, sel, args.out, now_ms)
    print(
        f"exported {result.records} records and {result.keys} keys"
        f" (gateways: {', '.join(result.gateways) or 'none'}) to {result.path}"
    )
    print(f"check with: meterlink verify {result.path}")
    return 0
