"""``meterlink collector advise``: best-tariff advice for one account.

    advise --account A --config C [--months 12] [--to YYYY-MM] [--as-of ISO]
           [--format text|json]

Exit codes: 0 done (also when the data behind the advice is flagged: estimated, gap or missing
intervals are stated in the output); 2 bad input (config, unknown account, no interval data,
a window without data, a current tariff that cannot be rated); 1 database.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from protocols.clock import ClockSettingError, parse_utc, utc_ms

from ..config import Config
from ..errors import ConfigError, RatingError
from ..store import open_store
from .advise import MAX_MONTHS, advice_document, advise_account, render_advice_text

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "advise",
        help="best-tariff advice: the account's interval data rated on every offered tariff",
    )
    p.add_argument("--account", required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument(
        "--months",
        type=int,
        default=12,
        help=f"billing periods to rate (1..{MAX_MONTHS}, default 12), ending at the last "
        "complete one with data (or --to)",
    )
    p.add_argument("--to", metavar="YYYY-MM", help="the window's last billing period")
    p.add_argument(
        "--as-of",
        metavar="INSTANT",
        help="advise as at this instant (ISO 8601; default now): only periods over by then",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")


async def run(config: Config, args: argparse.Namespace) -> int:
    from .run import load_billing

    if config.billing is None:
        raise ConfigError(f"{config.path}: no [billing] table (accounts, tariffs)")
    as_of = time.time_ns() // 1_000_000
    if args.as_of:
        try:
            as_of = utc_ms(parse_utc(args.as_of))
        except ClockSettingError as exc:
            raise RatingError(f"--as-of: {exc}") from None
    billing = load_billing(config.billing.accounts, config.billing.tariffs)
    account = billing.account(args.account)
    store = await open_store(config.collector.database)
    try:
        advice = await advise_account(
            store, account, billing.tariffs, billing.accounts, as_of, args.months, args.to
        )
    finally:
        await store.close()
    doc = advice_document(advice)
    if args.format == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_advice_text(doc))
    if advice.flagged:
        print(
            f"{advice.account_id}: advice computed on data with estimated, gap or missing "
            "intervals (see 'data' above)",
            file=sys.stderr,
        )
    return 0
