"""``meterlink collector sla``: the data-completeness SLA report.

sla --config C --period 2026-11 [--gateway G] [--meter M] [--format table|json]
    [--clock SETTING]

``--period``: a month, a day or days (``2026-11-01..2026-11-07``) in ``[sla] timezone``.
"Now" (which intervals are past their deadline) is the collector's clock: ``[collector]
clock``, or ``--clock`` as given to ``collector run``. Exit 0 with the report (breaches or
not), 2 on bad input (period, unknown gateway or meter).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..config import Config, with_clock
from ..errors import ConfigError
from ..store import open_store
from .evaluate import evaluate
from .period import PeriodError, parse_period
from .report import format_table

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sla", help="data-completeness SLA per meter, gateway and day")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--period", required=True, help="YYYY-MM, YYYY-MM-DD or DAY..DAY")
    p.add_argument("--gateway")
    p.add_argument("--meter")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--clock", help="the collector's clock (START@ANCHORxSPEED), as for run")


async def run(config: Config, args: argparse.Namespace) -> int:
    try:
        period = parse_period(args.period)
    except PeriodError as exc:
        raise ConfigError(f"--period {exc}") from None
    clock = with_clock(config, args.clock).collector.clock
    now_ms = clock.virtual_ns(time.time_ns()) // 1_000_000
    store = await open_store(config.collector.database)
    try:
        known = await store.bindings()
        if args.gateway is not None and args.gateway not in {gw for gw, _m in known}:
            raise ConfigError(f"--gateway {args.gateway!r}: no such gateway enrolled")
        if args.meter is not None and args.meter not in {m for _gw, m in known}:
            raise ConfigError(f"--meter {args.meter!r}: no such meter enrolled")
        report = await evaluate(
            store, config, period, now_ms, gateway=args.gateway, meter=args.meter
        )
    finally:
        await store.close()
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(format_table(report), end="")
    return 0
