"""How long the data-completeness SLA takes to evaluate for a fleet.

The dashboard's SLA page, the API and the Prometheus gauges (the last 24 hours, reused for
``[sla] metrics_every``) evaluate the SLA on demand from the store (``collector.sla``). This
fills a SQLite store with ``--meters`` meters on gateways of 10, each with ``--registers``
registers read every 15 minutes for ``--days`` days (readings and the derived intervals, 1 %
of the intervals estimated), then times the evaluation of the whole period and of the last
24 hours (what a metrics refresh does).

    python -m benchmarks.sla [--meters 2000] [--days 30] [--registers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from collector.config import load_config
from collector.sla.evaluate import evaluate, evaluate_window
from collector.sla.period import parse_period
from collector.store import open_store

from .machine import cpu_seconds, print_header, print_summary, rss_kb
from .storefill import fill_sqlite

STEP_MS = 900_000
START_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
REGISTERS = ("1-0:1.8.0", "1-0:2.8.0", "1-0:3.8.0", "1-0:4.8.0", "1-0:1.7.0", "1-0:2.7.0")


def meter_rows(m: int, days: int, registers: int) -> tuple[list[tuple], list[tuple]]:
    """One meter's readings (``registers`` registers) and derived intervals of the main one,
    every 15 minutes for ``days`` days; one interval in a thousand estimated."""
    gw, meter = f"gw-{m // 10:05d}", f"em-{m:06d}"
    readings: list[tuple] = []
    intervals: list[tuple] = []
    for k in range(days * 96 + 1):
        ms = START_MS + k * STEP_MS
        for r, obis in enumerate(REGISTERS[:registers]):
            seq = m * 100_000 + k * registers + r
            readings.append((meter, obis, ms, f"{1000 + k}.5", "kWh", 0, 0, gw, seq))
        if k:
            quality = "estimated" if (k * 7 + m) % 1000 == 0 else "actual"
            intervals.append((meter, "1-0:1.8.0", ms - STEP_MS, ms, "1.000", "kWh", quality,
                              "", ms + 60_000, "collector", "ingest"))  # fmt: skip
    return readings, intervals


def fill(path: Path, meters: int, days: int, registers: int) -> tuple[int, int]:
    """The registry (gateways of 10 meters) and every meter's rows (not timed)."""
    con = sqlite3.connect(path)
    try:
        with con:
            for g in range(0, meters, 10):
                gw = f"gw-{g // 10:05d}"
                con.execute("INSERT INTO gateways (gateway_id, enrolled_ms) VALUES (?, 0)", (gw,))
                con.executemany(
                    "INSERT INTO gateway_meters (gateway_id, meter_id, bound_ms) VALUES (?, ?, 0)",
                    [(gw, f"em-{m:06d}") for m in range(g, min(g + 10, meters))],
                )
    finally:
        con.close()
    return fill_sqlite(path, (meter_rows(m, days, registers) for m in range(meters)))


async def timed(config_path: Path, days: int) -> dict[str, float]:
    config = load_config(config_path)
    end_ms = START_MS + days * 96 * STEP_MS
    now_ms = end_ms + 5 * 86_400_000  # every deadline passed
    store = await open_store(config.collector.database)
    try:
        period = parse_period("2026-11" if days >= 30 else f"2026-11-01..2026-11-{days:02d}")
        t0, c0 = time.perf_counter(), cpu_seconds()
        report = await evaluate(store, config, period, now_ms)
        whole = (time.perf_counter() - t0, cpu_seconds() - c0, len(report.meter_days))
        t0, c0 = time.perf_counter(), cpu_seconds()
        window = await evaluate_window(store, config, end_ms - 86_400_000, end_ms, now_ms)
        day = (time.perf_counter() - t0, cpu_seconds() - c0, len(window.meter_days))
    finally:
        await store.close()
    return {
        "period_s": round(whole[0], 2),
        "period_cpu_s": round(whole[1], 2),
        "meter_days": whole[2],
        "day_s": round(day[0], 2),
        "day_cpu_s": round(day[1], 2),
        "breaches": len(report.breaches),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--registers", type=int, default=4, choices=range(1, 7))
    args = parser.parse_args()
    print_header(
        "sla: evaluating the data-completeness SLA",
        {"meters": args.meters, "days": args.days, "registers": args.registers},
    )
    folder = Path(tempfile.mkdtemp(prefix="meterlink-sla-"))
    config = folder / "collector.toml"
    config.write_text('[collector]\ndatabase = "sla.sqlite"\n[vee]\nenabled = true\n')
    asyncio.run(_schema(folder / "sla.sqlite"))
    t0 = time.perf_counter()
    readings, intervals = fill(folder / "sla.sqlite", args.meters, args.days, args.registers)
    print(
        f"store: {readings:,} readings, {intervals:,} intervals of {args.meters:,} meters "
        f"filled in {time.perf_counter() - t0:.1f} s (not timed)"
    )
    filled_kb = rss_kb()
    fig = asyncio.run(timed(config, args.days))
    fig["eval_peak_rss_growth_mib"] = max(rss_kb() - filled_kb, 0) // 1024
    print(
        f"period ({args.days} days): {fig['period_s']} s ({fig['period_cpu_s']} CPU-s) for "
        f"{fig['meter_days']:,} meter-days, {fig['breaches']} breaches; "
        f"{args.meters / fig['period_s']:,.0f} meters/s"
    )
    print(
        f"last 24 hours (a metrics refresh): {fig['day_s']} s ({fig['day_cpu_s']} CPU-s); "
        f"{args.meters / fig['day_s']:,.0f} meters/s; peak RSS {rss_kb() // 1024} MiB, "
        f"{fig['eval_peak_rss_growth_mib']} MiB of it added by the evaluations"
    )
    print_summary(
        "sla",
        {
            "meters": args.meters,
            "days": args.days,
            **fig,
            "meters_per_s_period": round(args.meters / fig["period_s"]),
            "meters_per_s_day": round(args.meters / fig["day_s"]),
        },
    )
    return 0


async def _schema(path: Path) -> None:
    store = await open_store(path)
    await store.close()


if __name__ == "__main__":
    raise SystemExit(main())
