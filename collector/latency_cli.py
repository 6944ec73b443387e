"""``meterlink collector latency``: capture-to-commit delays from the store.

The same exact figures as ``GET /api/latency`` (``collector.store.latency_sqlite``): the
records committed in a window of the collector's clock, fleet-wide and per gateway, worst
p99 first. On a fleet's accelerated virtual clock the delays are virtual milliseconds; the
real time they took is that divided by the clock's speed, printed beside them.
"""

from __future__ import annotations

import argparse
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from protocols.clock import format_utc_ms, parse_utc, utc_ms

from .config import Config, with_clock
from .errors import CollectorError
from .latency import DEFAULT_WINDOW_MS, TARGET_P99_MS
from .store import open_store
from .store.latency_sqlite import LatencyRow, latency_of

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("latency", help="capture-to-commit delay p50/p95/p99, fleet and per gateway")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--from", dest="start", help="window start (ISO 8601 UTC or Unix ms)")
    p.add_argument("--to", dest="end", help="window end, exclusive (default: now)")
    p.add_argument("--gateway", help="only this gateway")
    p.add_argument("--limit", type=int, default=20, help="gateways listed (worst p99 first)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--clock", help="the collector's clock (START@ANCHORxSPEED), as for run")


def _ms(text: str | None, default: int, name: str) -> int:
    if text is None:
        return default
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return utc_ms(parse_utc(text))
    except (ValueError, TypeError) as exc:
        raise CollectorError(
            f"--{name} {text!r}: neither ISO 8601 UTC nor Unix ms ({exc})"
        ) from None


def _doc(row: LatencyRow) -> dict[str, Any]:
    if not row.count:
        return {"records": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {"records": row.count, "p50_ms": row.p50_ms, "p95_ms": row.p95_ms,
            "p99_ms": row.p99_ms, "max_ms": row.max_ms}  # fmt: skip


def _seconds(ms: int | None, speed: Decimal) -> str:
    if ms is None:
        return "-"
    text = f"{Decimal(ms) / 1000:.3f} s"
    if speed != 1:
        text += f" ({Decimal(ms) / 1000 / speed:.3f} s real)"
    return text


async def run(config: Config, args: argparse.Namespace) -> int:
    """Print the report (a bad window or limit: ``CollectorError``, exit 2)."""
    clock = with_clock(config, args.clock).collector.clock
    now = clock.virtual_ns(time.time_ns()) // 1_000_000
    end = _ms(args.end, now + 1, "to")
    start = _ms(args.start, end - DEFAULT_WINDOW_MS, "from")
    if start >= end:
        raise CollectorError(f"--from {start} must be before --to {end}")
    if args.limit < 1:
        raise CollectorError(f"--limit {args.limit}: must be at least 1")
    store = await open_store(config.collector.database)
    try:
        reads = latency_of(store)
        fleet = await reads.fleet(start, end)
        rows = await reads.gateways(start, end, gateway_id=args.gateway, limit=args.limit)
    finally:
        await store.close()
    speed = Decimal(str(getattr(clock, "speed", 1) or 1))
    if args.format == "json":
        doc = {"from_ms": start, "to_ms": end, "target_p99_ms": TARGET_P99_MS,
               "clock_speed": str(speed), "fleet": _doc(fleet),
               "gateways": [{"gateway_id": r.gateway_id, **_doc(r)} for r in rows]}  # fmt: skip
        print(json.dumps(doc, indent=2))
        return 0
    print(f"capture -> commit, records committed {format_utc_ms(start)} .. {format_utc_ms(end)}"
          f" (collector clock{'' if speed == 1 else f', {speed}x'})")  # fmt: skip
    table = [("", "records", "p50", "p95", "p99", "max")]
    for name, row in [("fleet", fleet)] + [(r.gateway_id or "?", r) for r in rows]:
        values = (row.p50_ms, row.p95_ms, row.p99_ms, row.max_ms) if row.count else (None,) * 4
        table.append((name, str(row.count), *(_seconds(v, speed) for v in values)))
    widths = [max(len(r[k]) for r in table) for k in range(len(table[0]))]
    for r in table:
        cells = [r[0].ljust(widths[0]), r[1].rjust(widths[1])]
        cells += [cell.ljust(widths[k + 2]) for k, cell in enumerate(r[2:])]
        print("  ".join(cells).rstrip())
    if fleet.count:
        met = Decimal(fleet.p99_ms) / speed < TARGET_P99_MS  # in real time
        print(f"target p99 under {TARGET_P99_MS / 1000:g} s (real time): "
              f"{'met' if met else 'NOT met'}")  # fmt: skip
    return 0
