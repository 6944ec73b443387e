"""Capture-to-commit delay under ingest load (issue 10), and what batching does to it.

    .venv/bin/python -m benchmarks.latency [--meters 10000] [--gateways 100] [--rate 1000]
        [--sweep "500x50,500x10,500x1,100x50,10x50"] [--store sqlite|pg] [--collectors 1]
        [--saturate] [--timeout 300]

A fleet like ``benchmarks.ingest_scale``'s (``benchmarks.loadgen``: ``--meters`` meters on
``--gateways`` gateways, 10 values per record, signed by the gateways' keys) sends one
15-minute slot through a private mosquitto to real collector processes
(``benchmarks.headend.ScaleHeadEnd``). Unlike the throughput benchmarks, every record is
captured **when its gateway releases it**: the run is planned to start at a wall-clock
instant T, gateway g's records are signed with the capture time T + (its release offset), and
the generator starts at T. So the delay the collector records (``committed_ms -
captured_ms``, ``collector/latency.py``) is what a live fleet's readings see: publish, broker,
the collector's queue, checks and the transaction.

Scenarios: the wave (``--rate`` records/s: the slot released gateway by gateway, each
gateway's records at once, the agent's way: no linger, up to ``batch_max`` records a batch,
8 in flight) and, with ``--saturate``, the burst (every gateway's slot at once: a fleet whose
gateways all send at the quarter hour). ``--sweep`` runs them for each ``BATCHxCOALESCE``
pair: the gateways' batch size (``[mqtt] batch_max_records`` of the agent, ``--batch-max`` of
the generator) and the collector's ``[collector] batch_coalesce``. The first pair should be
the defaults (500 records, 50 messages).

For each run it prints readings/s, the collector's own exact p50/p95/p99/max capture-to-commit
from the store (the SQL behind ``GET /api/latency``), the generator's publish-to-ack latency
per batch next to it, and the transactions the collectors committed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .headend import ScaleHeadEnd
from .loadgen import FleetPlan, LoadGenerator, LoadResult, SignedFleet, enrol_fleet
from .machine import cpu_seconds, print_header, print_summary
from .records import gateway_records

TARGET_P99_MS = 2_000
DEFAULT_SWEEP = "500x50,500x10,500x1,100x50,10x50"
_SIGN_US = 80  # a record's signing cost at least (benchmarks.loadgen: ~83 us)


@dataclass
class Figures:
    label: str
    batch_max: int
    coalesce: int
    rate: float
    result: LoadResult
    collector: dict[str, int]  # records, p50_ms, p95_ms, p99_ms, max_ms
    transactions: int
    late_start_ms: int  # the run started this much after its planned instant (0: on time)

    def row(self) -> dict[str, object]:
        r = self.result
        return {
            "batch_max": self.batch_max,
            "coalesce": self.coalesce,
            "rate": self.rate,
            "readings_per_s": round(r.readings_per_s()),
            **{f"commit_{k}": v for k, v in self.collector.items()},
            "ack_p50_ms": round(r.percentile(50), 1),
            "ack_p95_ms": round(r.percentile(95), 1),
            "ack_p99_ms": round(r.percentile(99), 1),
            "transactions": self.transactions,
            "complete": r.complete,
            "late_start_ms": self.late_start_ms,
        }


def _release_offsets(plan: FleetPlan, rate: float) -> list[float]:
    """Seconds after the start at which each gateway releases its slot: the generator's
    own schedule (``LoadGenerator._schedule``, one slot: shuffled order, ``rate`` records/s)."""
    offsets = [0.0] * plan.gateways
    if rate <= 0:
        return offsets
    order = list(range(plan.gateways))
    random.Random(plan.seed).shuffle(order)
    cumulative = 0
    for g in order:
        offsets[g] = cumulative / rate
        cumulative += len(plan.meters_of(g))
    return offsets


def _sign(plan: FleetPlan, start_ms: int, rate: float) -> SignedFleet:
    """Every gateway's slot, captured at its release instant."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    offsets = _release_offsets(plan, rate)
    records = [
        gateway_records(plan.key(g), plan.gateway_id(g), plan.meters_of(g),
                        [start_ms + round(offsets[g] * 1000)], plan.values,
                        plan.seed * 1_000_003 + g)
        for g in range(plan.gateways)
    ]  # fmt: skip
    return SignedFleet(plan, records, time.perf_counter() - t0, time.process_time() - cpu0, 1)


async def _commit_figures(database: str | Path) -> dict[str, int]:
    from collector.store import open_store
    from collector.store.latency_sqlite import latency_of

    store = await open_store(database)
    try:
        row = await latency_of(store).fleet(0, 2**62)
    finally:
        await store.close()
    return {"records": row.count, "p50_ms": row.p50_ms, "p95_ms": row.p95_ms,
            "p99_ms": row.p99_ms, "max_ms": row.max_ms}  # fmt: skip


def run_one(
    label: str,
    plan: FleetPlan,
    workdir: Path,
    database: str | Path,
    args: argparse.Namespace,
    batch_max: int,
    coalesce: int,
    rate: float,
) -> Figures:
    workdir.mkdir(parents=True)
    asyncio.run(enrol_fleet(plan, database))
    with ScaleHeadEnd(workdir, database, args.collectors, coalesce, args.collector_toml) as head:
        head.start_collectors()
        generator = LoadGenerator(
            "127.0.0.1", head.port, _placeholder(plan), batch_max, args.window,
            args.connections, client_prefix=f"latency-{workdir.name}",
        )  # fmt: skip
        try:
            generator.connect()
            # plan the start: after the signing (with room to spare), then sign for it
            margin_s = 1.5 + 3.0 * plan.meters * args.sign_s_per_record
            start_ms = time.time_ns() // 1_000_000 + round(margin_s * 1000)
            generator.fleet = _sign(plan, start_ms, rate)
            wait = start_ms / 1000 - time.time()
            if wait > 0:
                time.sleep(wait)  # a benchmark's start line, not synchronisation
            late = max(0, time.time_ns() // 1_000_000 - start_ms)
            result = generator.run(rate, args.timeout)
        finally:
            generator.close()
        head.stop_collectors()
        transactions = sum(t or 0 for t in head.transactions())
        errors = head.errors()
    collector = asyncio.run(_commit_figures(database))
    figures = Figures(label, batch_max, coalesce, rate, result, collector, transactions, late)
    print(f"-- {label}")
    print("\n".join(result.lines()))
    c = collector
    per_tx = result.acked_batches / transactions if transactions else 0.0
    print(
        f"  collector capture->commit ({c['records']:,} records, exact, from the store): "
        f"p50 {c['p50_ms']:,} ms, p95 {c['p95_ms']:,} ms, p99 {c['p99_ms']:,} ms, max "
        f"{c['max_ms']:,} ms (target p99 < {TARGET_P99_MS:,} ms: "
        f"{'met' if c['records'] and c['p99_ms'] < TARGET_P99_MS else 'NOT met'}); "
        f"{transactions} transactions ({per_tx:.1f} batches each)"
        + (f"; started {late} ms late" if late > 50 else "")
    )
    for line in errors[:5]:
        print(f"  !! {line}")
    return figures


def _sign_cost(plan: FleetPlan, sample: int = 300) -> float:
    """Seconds to sign one record here, now (a sample of gateway 0's meters)."""
    meters = (plan.meters_of(0) * sample)[:sample]
    t0 = time.perf_counter()
    gateway_records(plan.key(0), plan.gateway_id(0), meters, [plan.end_ms], plan.values, 0)
    return max((time.perf_counter() - t0) / sample, _SIGN_US / 1e6)


def _placeholder(plan: FleetPlan) -> SignedFleet:
    return SignedFleet(plan, [[] for _ in range(plan.gateways)], 0.0, 0.0, 1)


def _pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        batch, sep, coalesce = part.strip().partition("x")
        if not sep or not batch.isdigit() or not coalesce.isdigit():
            raise SystemExit(f"--sweep: {part!r} is not BATCHxCOALESCE (e.g. 500x50)")
        out.append((int(batch), int(coalesce)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--values", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s of the wave")
    parser.add_argument("--sweep", default=DEFAULT_SWEEP,
                        help="BATCHxCOALESCE pairs, the defaults first")  # fmt: skip
    parser.add_argument("--saturate", action="store_true",
                        help="also the burst (every slot at once) for each pair")  # fmt: skip
    parser.add_argument("--store", choices=("sqlite", "pg"), default="sqlite")
    parser.add_argument("--collectors", type=int, default=1)
    parser.add_argument("--window", type=int, default=8, help="batches in flight per gateway")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--collector-toml", default="", help="more TOML for the collectors")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    pairs = _pairs(args.sweep)
    plan = FleetPlan(meters=args.meters, gateways=args.gateways, values=args.values,
                     seed=args.seed, prefix="lat")  # fmt: skip
    print_header(
        "latency: capture-to-commit under ingest load",
        {"cores": os.cpu_count(), "meters": plan.meters, "gateways": plan.gateways,
         "values": plan.values, "records": plan.total_records, "rate": args.rate,
         "sweep (batch x coalesce)": args.sweep, "saturate": args.saturate,
         "store": args.store, "collectors": args.collectors, "window": args.window},
    )  # fmt: skip
    args.sign_s_per_record = _sign_cost(plan)
    runs: list[Figures] = []
    cluster = None
    cpu0 = cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="ml-bench-latency-") as tmp:
        root = Path(tmp)
        try:
            if args.store == "pg":
                from meterlink.postgres import PostgresCluster

                cluster = PostgresCluster(durable=True).start()
            todo = [(b, c, args.rate) for b, c in pairs]
            if args.saturate:
                todo += [(b, c, 0.0) for b, c in pairs]
            for n, (batch, coalesce, rate) in enumerate(todo, start=1):
                where = root / f"run-{n}"
                database: str | Path
                if cluster is not None:
                    database = cluster.create_database(f"latency_{n}")
                else:
                    database = where / "collectors.sqlite"
                what = (f"{rate:,.0f} records/s wave" if rate > 0
                        else "burst: every gateway's slot at once")  # fmt: skip
                label = f"{what}, batch_max {batch}, batch_coalesce {coalesce}"
                runs.append(run_one(label, plan, where, database, args, batch, coalesce, rate))
        finally:
            if cluster is not None:
                cluster.stop()
    print()
    print(f"== latency summary ({os.cpu_count()} cores shared; store {args.store}, "
          f"{args.collectors} collector(s); capture->commit exact from the store, ms)")  # fmt: skip
    print(f"{'scenario':<14} {'batch':>6} {'coalesce':>8} {'readings/s':>10} {'p50':>7} "
          f"{'p95':>7} {'p99':>7} {'max':>7} {'ack p99':>8} {'tx':>5}")  # fmt: skip
    for f in runs:
        c = f.collector
        scenario = "burst" if f.rate <= 0 else f"wave {f.rate:,.0f}/s"
        print(f"{scenario:<14} {f.batch_max:>6} {f.coalesce:>8} "
              f"{round(f.result.readings_per_s()):>10,} {c['p50_ms']:>7,} {c['p95_ms']:>7,} "
              f"{c['p99_ms']:>7,} {c['max_ms']:>7,} {f.result.percentile(99):>8,.0f} "
              f"{f.transactions:>5}")  # fmt: skip
    default = runs[0] if runs else None
    met = bool(default and default.collector["records"])
    met = met and default is not None and default.collector["p99_ms"] < TARGET_P99_MS
    print_summary(
        "latency",
        {
            "store": args.store,
            "meters": plan.meters,
            "rate": args.rate,
            "target_p99_ms": TARGET_P99_MS,
            "default_p50_ms": default.collector["p50_ms"] if default else None,
            "default_p95_ms": default.collector["p95_ms"] if default else None,
            "default_p99_ms": default.collector["p99_ms"] if default else None,
            "default_readings_per_s": round(default.result.readings_per_s()) if default else 0,
            "default_met": met,
            "runs": [f.row() for f in runs],
            "generator_cpu_s": round(cpu_seconds() - cpu0, 2),
        },
    )
    return 0 if all(f.result.complete for f in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
