"""Rating speed: intervals rated per second on a TOU + tiered tariff, one core, in-process.

    .venv/bin/python -m benchmarks.rating [--accounts 10000] [--days 30] [--pool 64]

Each account's month (``--days`` x 96 quarter-hours, Europe/Amsterdam, starting on a local
midnight) is rated by ``collector.rating.engine.rate`` against one tariff: a daily standing
charge, a time-of-use charge (summer/winter x weekday/weekend x peak/offpeak, public holidays)
tiered per period at 150 and 400 kWh (graduated, a limit crossed inside an interval split), and
VAT on the total. Usage is ``UsageInterval`` lists with exact ``Decimal`` quantities; building
them is not timed, so ``--pool`` distinct months are built and the accounts cycle over them (the
work of rating does not depend on which account a list belongs to). Target: >= 500,000
intervals/s (issue 7).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from collector.rating.engine import rate
from collector.rating.model import UsageInterval
from collector.rating.tariff import load_tariff

from .machine import cpu_seconds, pin_self, print_header, print_summary, split_cores

TARGET = 500_000
TARIFF = """
id = "bench-tou-tiers"
name = "Bench TOU + tiers"
currency = "EUR"
holidays = [2026-12-25, 2026-12-26]

[[version]]
effective_from = 2026-01-01

[[version.charge]]
type = "standing"
price = 0.61234

[[version.charge]]
type = "tou"
default = "offpeak"
schedule = [
  { months = "4-9", days = "weekday", hours = "07:00-21:00", period = "peak" },
  { months = "10-3", days = "weekday", hours = "07:00-23:00", period = "peak" },
]
tiers_upto = [150, 400]
periods = { peak = [0.2850, 0.3120, 0.3561], offpeak = [0.2110, 0.2305, 0.2703] }

[[version.charge]]
type = "tax"
label = "VAT"
percent = 21
"""


def month_of_usage(seed: int, start: datetime, count: int) -> list[UsageInterval]:
    rng = random.Random(seed)
    step = timedelta(minutes=15)
    first = start.astimezone(UTC)
    return [
        UsageInterval(
            first + step * i, first + step * (i + 1),
            Decimal(rng.randrange(0, 500)).scaleb(-3), "kWh",
            "actual" if rng.random() > 0.02 else "estimated",
        )
        for i in range(count)
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--pool", type=int, default=64, help="distinct usage months")
    args = parser.parse_args(argv)
    cores = split_cores()
    pin_self(cores[1] if cores else None)
    tz = ZoneInfo("Europe/Amsterdam")
    start = datetime(2026, 11, 1, tzinfo=tz)
    end = start + timedelta(days=args.days)  # November: no DST change inside
    count = int((end.astimezone(UTC) - start.astimezone(UTC)) / timedelta(minutes=15))
    print_header("rating", {"accounts": args.accounts, "days": args.days, "intervals": count,
                            "pool": args.pool})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(TARIFF, encoding="utf-8")
        tariff = load_tariff(path)
    pool = [month_of_usage(seed, start, count) for seed in range(min(args.pool, args.accounts))]
    lines = 0
    total = Decimal(0)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    for account in range(args.accounts):
        result = rate(tariff, pool[account % len(pool)], start, end, tz)
        lines += len(result)
        total += sum(line.amount for line in result)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    intervals = args.accounts * count
    per_s = int(intervals / elapsed)
    print(
        f"rated {args.accounts:,} accounts x {count} intervals = {intervals:,} intervals "
        f"in {elapsed:.2f} s ({cpu:.2f} s CPU): {per_s:,} intervals/s, "
        f"{args.accounts / elapsed:,.0f} accounts/s; {lines:,} lines, total {total} EUR"
    )
    print(f"target >= {TARGET:,} intervals/s: {'meets' if per_s >= TARGET else 'BELOW'}")
    print_summary("rating", {"intervals_per_s": per_s, "target_intervals_per_s": TARGET,
                             "cpu_intervals_per_s": int(intervals / cpu) if cpu else 0,
                             "accounts": args.accounts, "intervals": intervals,
                             "seconds": round(elapsed, 3)})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
