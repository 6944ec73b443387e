"""A bill run on a PostgreSQL store, and the same on SQLite: bills/s and intervals/s.

    .venv/bin/python -m benchmarks.bill_pg [--accounts 100] [--stores pg,sqlite]

Each store (PostgreSQL: ``meterlink.postgres.PostgresCluster(durable=True)``, fsync on, as
in production; SQLite: a file in WAL mode, ``synchronous=FULL``) gets the schema from
``open_store`` and then, in bulk (COPY / executemany; not timed), ``--accounts`` meters'
month of November 2026 (Europe/Amsterdam) as the collector holds it after ingest with VEE:
the 15-minute register readings of import (1-0:1.8.0) and export (1-0:2.8.0) and the derived
15-minute intervals of both (2 x 2,880 intervals per account). One electricity account per
meter on ``benchmarks.rating``'s TOU + tiered tariff. Timed: ``collector.rating.run.bill_run``
issuing every account's bill for 2026-11 (what ``meterlink collector bill --all --period
2026-11 --issue`` does): per account the intervals and the register readings at both ends
read from the store, rated, numbered and stored in one write transaction. CPU seconds of
this process and of the PostgreSQL server (all its backends) are printed beside the clock.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from collector.rating.run import bill_run, load_billing
from collector.store import open_store
from meterlink.postgres import PostgresCluster

from . import storefill
from .headend import tree_cpu_seconds
from .machine import cpu_seconds, print_header, print_summary
from .rating import TARIFF

STEP_MS = 15 * 60 * 1000
START_MS = int(datetime(2026, 10, 31, 23, tzinfo=UTC).timestamp()) * 1000  # Nov 1, 00:00 CET
END_MS = int(datetime(2026, 11, 30, 23, tzinfo=UTC).timestamp()) * 1000  # Dec 1, 00:00 CET
PERIOD = "2026-11"
NOW_MS = int(datetime(2026, 12, 5, tzinfo=UTC).timestamp()) * 1000
QUANTITIES = (("1-0:1.8.0", 500), ("1-0:2.8.0", 120))  # (OBIS, most Wh in a quarter hour)


def meter_of(account: int) -> str:
    return f"bm-{account:06d}"


def account_rows(account: int) -> tuple[list[tuple], list[tuple]]:
    """(readings, intervals) of one meter's month: registers every 15 minutes from one
    quarter hour before the month to one after (both bill boundaries are exact readings),
    and the intervals between them (exact Decimal strings, kWh with 3 decimals)."""
    rng = random.Random(account)
    meter = meter_of(account)
    readings: list[tuple] = []
    intervals: list[tuple] = []
    seq = account * 10_000
    for obis, most in QUANTITIES:
        register = rng.randrange(1_000_000, 50_000_000)  # Wh
        previous = None
        for ms in range(START_MS - STEP_MS, END_MS + 2 * STEP_MS, STEP_MS):
            value = str(Decimal(register).scaleb(-3))
            seq += 1
            readings.append((meter, obis, ms, value, "kWh", 0, 0, "gw-bill", seq))
            if previous is not None and START_MS <= previous[0] < END_MS:
                used = str(Decimal(register - previous[1]).scaleb(-3))
                intervals.append((meter, obis, previous[0], ms, used, "kWh", "actual", "",
                                  NOW_MS, "collector", "ingest"))  # fmt: skip
            previous = (ms, register)
            register += rng.randrange(0, most + 1)
    return readings, intervals


def write_billing(folder: Path, accounts: int) -> tuple[Path, Path]:
    tariffs = folder / "tariffs"
    tariffs.mkdir(parents=True)
    (tariffs / "bench.toml").write_text(TARIFF, encoding="utf-8")
    lines = []
    for a in range(1, accounts + 1):
        lines += [
            "[[account]]", f'id = "acc-{a:06d}"', f'name = "Bench account {a}"',
            'timezone = "Europe/Amsterdam"', 'tariff = "bench-tou-tiers"',
            f'meters = ["{meter_of(a)}"]', "",
        ]  # fmt: skip
    path = folder / "accounts.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, tariffs


async def _schema(target: str | Path) -> None:
    store = await open_store(target)
    try:
        if hasattr(store, "ensure_partitions"):
            from collector.store.postgres import month_start_ms

            await store.ensure_partitions({month_start_ms(START_MS - STEP_MS),
                                           month_start_ms(END_MS + STEP_MS)})  # fmt: skip
    finally:
        await store.close()


def fill_pg(url: str, accounts: int) -> int:
    import psycopg

    rows = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for table, columns, index in (("readings", storefill.READING_COLUMNS, 0),
                                      ("intervals", storefill.INTERVAL_COLUMNS, 1)):  # fmt: skip
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for a in range(1, accounts + 1):
                    for row in account_rows(a)[index]:
                        copy.write_row(row)
                        rows += 1
    # the insert-driven autovacuum of the new rows and the checkpoint writing the filled
    # pages would otherwise run during the timed bill run (and count as the server's CPU
    # there): both done here, untimed
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")
    return rows


def fill_sqlite(path: Path, accounts: int) -> int:
    readings, intervals = storefill.fill_sqlite(
        path, (account_rows(a) for a in range(1, accounts + 1))
    )
    return readings + intervals


async def timed_run(target: str | Path, accounts_path: Path, tariffs: Path) -> tuple[float, int]:
    billing = load_billing(accounts_path, tariffs)
    store = await open_store(target)
    try:
        t0 = time.perf_counter()
        result = await bill_run(store, billing, PERIOD, NOW_MS, issue=True)
        elapsed = time.perf_counter() - t0
    finally:
        await store.close()
    if result.failures:
        raise RuntimeError(f"bill run failed for {len(result.failures)}: {result.failures[:3]}")
    return elapsed, result.issued


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--stores", default="pg,sqlite")
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    intervals_per_account = len(QUANTITIES) * (END_MS - START_MS) // STEP_MS
    print_header("bill_pg: a bill run on PostgreSQL and on SQLite",
                 {"accounts": args.accounts, "period": PERIOD, "zone": "Europe/Amsterdam",
                  "intervals_per_account": intervals_per_account,
                  "tariff": "TOU + tiers + standing + VAT (benchmarks.rating)",
                  "stores": ",".join(stores)})  # fmt: skip
    figures: dict[str, object] = {"accounts": args.accounts}
    with tempfile.TemporaryDirectory(prefix="ml-bench-bill-") as tmp:
        root = Path(tmp)
        accounts_path, tariffs = write_billing(root, args.accounts)
        for kind in stores:
            cluster: PostgresCluster | None = None
            try:
                if kind == "pg":
                    cluster = PostgresCluster(durable=True).start()
                    target: str | Path = cluster.create_database("bills")
                else:
                    target = root / "bills.sqlite"
                asyncio.run(_schema(target))
                t = time.perf_counter()
                rows = fill_pg(str(target), args.accounts) if kind == "pg" else fill_sqlite(
                    Path(target), args.accounts)  # fmt: skip
                fill_s = time.perf_counter() - t
                pg_pid = cluster.proc.popen.pid if cluster is not None and cluster.proc else None
                cpu0, pg0 = cpu_seconds(), tree_cpu_seconds(pg_pid) if pg_pid else 0.0
                elapsed, issued = asyncio.run(timed_run(target, accounts_path, tariffs))
                cpu = cpu_seconds() - cpu0
                pg_cpu = (tree_cpu_seconds(pg_pid) - pg0) if pg_pid else 0.0
            finally:
                if cluster is not None:
                    cluster.stop()
            intervals = args.accounts * intervals_per_account
            name = "PostgreSQL" if kind == "pg" else "SQLite"
            print(
                f"{name}: filled {rows:,} rows in {fill_s:.1f} s; bill run issued {issued:,} bills"
                f" in {elapsed:.2f} s: {issued / elapsed:,.1f} bills/s, "
                f"{intervals / elapsed:,.0f} intervals/s; CPU: bill run process {cpu:.2f} s"
                + (f", PostgreSQL {pg_cpu:.2f} s" if kind == "pg" else "")
                + f" ({(cpu + pg_cpu) * 1000 / issued:.1f} ms CPU per bill)"
            )
            figures[f"{kind}_bills_per_s"] = round(issued / elapsed, 1)
            figures[f"{kind}_intervals_per_s"] = round(intervals / elapsed)
            figures[f"{kind}_cpu_ms_per_bill"] = round((cpu + pg_cpu) * 1000 / issued, 1)
            if kind == "pg":
                figures["pg_server_cpu_ms_per_bill"] = round(pg_cpu * 1000 / issued, 1)
    if "pg_bills_per_s" in figures and "sqlite_bills_per_s" in figures:
        ratio = float(figures["pg_bills_per_s"]) / float(figures["sqlite_bills_per_s"])  # type: ignore[arg-type]
        print(f"PostgreSQL / SQLite bills/s: {ratio:.2f}")
        figures["pg_over_sqlite"] = round(ratio, 2)
    print_summary("bill_pg", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
