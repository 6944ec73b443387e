"""Best-tariff advice speed: accounts advised per second, 12 months of 15-minute data on 5
tariffs.

    .venv/bin/python -m benchmarks.advise [--accounts 20]

A SQLite store (WAL, as ``open_store`` makes it) gets, in bulk and not timed, ``--accounts``
meters' year 2026 (Europe/Amsterdam) as the collector holds it after ingest with VEE: the
15-minute register readings of import (1-0:1.8.0) and the derived 15-minute intervals (35,040
an account). One electricity account per meter, on a flat tariff; five tariffs are offered:
flat + VAT, time of use (seasons, weekday peaks, holidays) + VAT, TOU tiered per period
(``benchmarks.rating``'s), graduated block tiers, and standing + energy + 15-minute demand with
an 80 % ratchet. Timed: ``collector.rating.advise.advise_account`` for every account (what
``meterlink collector advise`` does): 12 months of intervals and boundary readings read from
the store per account, each month rated on each of the 5 tariffs by the bill's engine, the
drivers and the data counts. A second, separate pass times the reads alone (``load_usage``),
so the rest is rating.
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

from collector.rating.advise import advice_window, advise_account, load_usage
from collector.rating.run import load_billing
from collector.store import open_store

from . import storefill
from .machine import cpu_seconds, print_header, print_summary
from .rating import TARIFF as TOU_TIERS

STEP_MS = 15 * 60 * 1000
START_MS = int(datetime(2025, 12, 31, 23, tzinfo=UTC).timestamp()) * 1000  # 2026-01-01 CET
END_MS = int(datetime(2026, 12, 31, 23, tzinfo=UTC).timestamp()) * 1000  # 2027-01-01 CET
AS_OF_MS = int(datetime(2027, 1, 10, tzinfo=UTC).timestamp()) * 1000
OBIS = "1-0:1.8.0"


_HEAD = 'currency = "EUR"\nholidays = [2026-01-01, 2026-04-06, 2026-12-25, 2026-12-26]\n'
TARIFFS = {
    "flat": f"""id = "flat"\nname = "Flat"\n{_HEAD}
[[version]]
effective_from = 2026-01-01
[[version.charge]]
type = "standing"
price = 0.61234
[[version.charge]]
type = "energy"
price = 0.27815
[[version.charge]]
type = "tax"
percent = 21
""",
    "tou": f"""id = "tou"\nname = "Time of use"\n{_HEAD}
[[version]]
effective_from = 2026-01-01
[[version.charge]]
type = "standing"
price = 0.61234
[[version.charge]]
type = "tou"
default = "offpeak"
schedule = [
  {{ months = "4-9", days = "weekday", hours = "07:00-21:00", period = "peak" }},
  {{ months = "10-3", days = "weekday", hours = "07:00-23:00", period = "peak" }},
]
periods = {{ peak = 0.2850, offpeak = 0.2110 }}
[[version.charge]]
type = "tax"
percent = 21
""",
    "tou-tiers": TOU_TIERS.replace('id = "bench-tou-tiers"', 'id = "tou-tiers"'),
    "tiered": f"""id = "tiered"\nname = "Block tiers"\n{_HEAD}
[[version]]
effective_from = 2026-01-01
[[version.charge]]
type = "standing"
price = 0.45
[[version.charge]]
type = "tiers"
tiers = [{{ upto = 150, price = 0.22 }}, {{ upto = 400, price = 0.27 }}, {{ price = 0.33 }}]
""",
    "demand": f"""id = "demand"\nname = "Demand"\n{_HEAD}
[[version]]
effective_from = 2026-01-01
[[version.charge]]
type = "standing"
price = 0.95
[[version.charge]]
type = "energy"
price = 0.19
[[version.charge]]
type = "demand"
window = 15
price = 3.75
ratchet = 80
""",
}


def meter_of(account: int) -> str:
    return f"am-{account:06d}"


def account_rows(account: int) -> tuple[list[tuple], list[tuple]]:
    """(readings, intervals) of one meter's year: the register every 15 minutes from the
    year's first instant to its last (exact boundaries), 0..500 Wh a quarter hour."""
    rng = random.Random(account)
    meter = meter_of(account)
    readings: list[tuple] = []
    intervals: list[tuple] = []
    register = rng.randrange(1_000_000, 50_000_000)  # Wh
    seq = account * 100_000
    previous = None
    for ms in range(START_MS, END_MS + STEP_MS, STEP_MS):
        seq += 1
        readings.append((meter, OBIS, ms, str(Decimal(register).scaleb(-3)), "kWh", 0, 0,
                         "gw-advise", seq))  # fmt: skip
        if previous is not None:
            used = str(Decimal(register - previous[1]).scaleb(-3))
            intervals.append((meter, OBIS, previous[0], ms, used, "kWh", "actual", "",
                              AS_OF_MS, "collector", "ingest"))  # fmt: skip
        previous = (ms, register)
        register += rng.randrange(0, 501)
    return readings, intervals


def write_billing(folder: Path, accounts: int) -> tuple[Path, Path]:
    tariffs = folder / "tariffs"
    tariffs.mkdir(parents=True)
    for name, text in TARIFFS.items():
        (tariffs / f"{name}.toml").write_text(text, encoding="utf-8")
    lines = []
    for a in range(1, accounts + 1):
        lines += [
            "[[account]]", f'id = "acc-{a:06d}"', 'timezone = "Europe/Amsterdam"',
            'tariff = "flat"', f'meters = ["{meter_of(a)}"]', "",
        ]  # fmt: skip
    path = folder / "accounts.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, tariffs


def fill_sqlite(path: Path, accounts: int) -> tuple[int, int]:
    return storefill.fill_sqlite(path, (account_rows(a) for a in range(1, accounts + 1)))


async def _schema(path: Path) -> None:
    store = await open_store(path)
    await store.close()


async def timed(db: Path, accounts_path: Path, tariffs: Path) -> dict[str, object]:
    billing = load_billing(accounts_path, tariffs)
    ids = sorted(billing.accounts)
    store = await open_store(db)
    try:
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        results = []
        for account_id in ids:
            results.append(
                await advise_account(
                    store, billing.accounts[account_id], billing.tariffs, billing.accounts, AS_OF_MS
                )
            )
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        t1 = time.perf_counter()
        for account_id in ids:  # the reads alone
            account = billing.accounts[account_id]
            periods = await advice_window(store, account, 12, AS_OF_MS)
            await load_usage(store, account.service_points[0], periods)
        reads = time.perf_counter() - t1
    finally:
        await store.close()
    options = [len(r.points[0].options) for r in results]
    rated = sum(o.total is not None for r in results for o in r.points[0].options)
    best: dict[str, int] = {}
    for r in results:
        top = r.points[0].best
        if top is not None:
            best[top.tariff_id] = best.get(top.tariff_id, 0) + 1
    checksum = sum((r.current_total for r in results), Decimal(0))
    return {"elapsed": elapsed, "cpu": cpu, "reads": reads, "options": options, "rated": rated,
            "best": best, "checksum": checksum,
            "intervals": sum(c for r in results for c in r.points[0].counts.values())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=20)
    args = parser.parse_args(argv)
    per_account = (END_MS - START_MS) // STEP_MS
    print_header("advise: best-tariff advice, 12 months of 15-minute data on 5 tariffs",
                 {"accounts": args.accounts, "months": 12, "zone": "Europe/Amsterdam",
                  "intervals_per_account": per_account, "tariffs": ",".join(TARIFFS),
                  "store": "sqlite"})  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ml-bench-advise-") as tmp:
        root = Path(tmp)
        accounts_path, tariffs = write_billing(root, args.accounts)
        db = root / "advise.sqlite"
        asyncio.run(_schema(db))
        t = time.perf_counter()
        readings, stored = fill_sqlite(db, args.accounts)
        fill_s = time.perf_counter() - t
        r = asyncio.run(timed(db, accounts_path, tariffs))
    elapsed = float(r["elapsed"])  # type: ignore[arg-type]
    cpu = float(r["cpu"])  # type: ignore[arg-type]
    reads = float(r["reads"])  # type: ignore[arg-type]
    intervals = int(r["intervals"])  # type: ignore[call-overload]
    tariff_count = len(TARIFFS)
    rated = intervals * tariff_count
    if set(r["options"]) != {tariff_count} or r["rated"] != tariff_count * args.accounts:  # type: ignore[arg-type]
        raise RuntimeError(f"expected {tariff_count} rated options per account, got {r}")
    per_s = args.accounts / elapsed
    print(f"store: {readings:,} readings and {stored:,} intervals ({args.accounts} meters x 12"
          f" months x 15 min) filled in {fill_s:.1f} s (not timed)")  # fmt: skip
    print(
        f"advised {args.accounts} accounts x {tariff_count} tariffs in {elapsed:.2f} s "
        f"({cpu:.2f} s CPU): {per_s:.2f} accounts/s, {elapsed * 1000 / args.accounts:.0f} ms an "
        f"account; {rated:,} intervals rated ({intervals:,} read): {rated / elapsed:,.0f} "
        f"intervals rated/s"
    )
    if cpu:
        print(
            f"per CPU second (this process, store thread included): {args.accounts / cpu:.2f} "
            f"accounts/s, {rated / cpu:,.0f} intervals rated/s"
        )
    print(
        f"of which reading the store (12 months of intervals and boundary readings, "
        f"measured alone): {reads:.2f} s ({reads / elapsed:.0%}); best tariffs: {r['best']}; "
        f"checksum (current totals) {r['checksum']} EUR"
    )
    print_summary("advise", {"accounts": args.accounts, "tariffs": tariff_count,
                             "intervals_per_account": per_account,
                             "accounts_per_s": round(per_s, 2),
                             "cpu_accounts_per_s": round(args.accounts / cpu, 2) if cpu else 0,
                             "intervals_rated_per_s": int(rated / elapsed),
                             "seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3),
                             "read_seconds": round(reads, 3)})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
