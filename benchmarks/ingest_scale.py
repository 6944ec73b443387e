"""Ingest at fleet scale: 1, 2, 3 collector processes on PostgreSQL, and on SQLite.

    .venv/bin/python -m benchmarks.ingest_scale [--meters 20000] [--gateways 200] [--slots 1]
        [--pg 1,2,3] [--sqlite 1,2,3] [--wave-rate 2000] [--wave-collectors 2]
        [--outage-fraction 0.2 --outage-slots 8] [--timeout 300]

One fleet (``benchmarks.loadgen``: ``--meters`` meters on ``--gateways`` gateways, 10 values
per record, one record per meter per 15-minute slot) is signed once; then for every
configuration a private mosquitto, a fresh database and N real collector processes
(``meterlink collector run``, one shared-subscription group, their own ids) take the whole
stream: first saturated (everything available at once, readings/s = what the collectors
commit, timed to the last ``Ack``), on PostgreSQL (``meterlink.postgres.PostgresCluster``,
``durable=True``: fsync, synchronous_commit and full_page_writes on, as in production) with
``--pg`` collectors, and on one SQLite file with ``--sqlite`` collectors. Then a fixed-rate
15-minute wave (``--wave-rate`` records/s) on PostgreSQL with ``--wave-collectors``, for the
latency at a load the collectors can carry, and, with ``--outage-fraction``, a regional
outage catch-up (that share of the gateways resend ``--outage-slots`` slots of backlog at
once while every gateway sends its live slot at ``--wave-rate``).

For each run: readings/s and records/s, transactions, lost or doubled records (the database
is counted against what was sent), CPU seconds per process from /proc (collectors, the
PostgreSQL server with all its backends, the broker, this generator), bytes per reading in
the database, the collectors' peak RSS, and the per-core figures: readings/s per collector
CPU-second, PostgreSQL CPU-seconds per million readings, broker CPU per 1,000 messages/s.
Nothing is pinned: the machine's cores are shared by all the processes, which is what
bounds the scaling on a small machine (the output says how many cores there are).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from meterlink.postgres import PostgresCluster

from .headend import ScaleHeadEnd, tree_cpu_seconds
from .loadgen import (
    LoadGenerator,
    LoadResult,
    SignedFleet,
    add_fleet_arguments,
    enrol_fleet,
    plan_from_args,
    sign_fleet,
)
from .machine import cpu_seconds, pin_self, print_header, print_summary, split_cores


@dataclass
class Run:
    label: str
    store: str  # "pg" | "sqlite"
    collectors: int
    result: LoadResult
    cpu: dict[str, float]
    rss_mib: list[float]
    transactions: list[int | None]
    retries: tuple[int, int]  # (races with another collector, partitions made)
    db_records: int
    db_readings: int
    bytes_per_reading: float  # readings + records tables (with their indexes)
    db_bytes_per_reading: float  # the whole database
    acks: int
    errors: list[str] = field(default_factory=list)
    scenario: str = ""  # "" (saturated), "wave" or "outage"

    @property
    def key(self) -> str:
        return f"{self.store}{self.collectors}" + (f"_{self.scenario}" if self.scenario else "")

    @property
    def readings(self) -> int:
        return self.result.acked_records * self.result.values

    def collector_cpu(self) -> float:
        return sum(v for k, v in self.cpu.items() if k.startswith("collector"))

    def figures(self) -> dict[str, object]:
        r = self.result
        readings = self.readings or 1
        msgs = r.batches + self.acks
        return {
            "readings_per_s": round(r.readings_per_s()),
            "records_per_s": round(r.acked_records / r.elapsed_s) if r.elapsed_s else 0,
            "readings_per_collector_cpu_s": round(readings / self.collector_cpu())
            if self.collector_cpu()
            else 0,
            "readings_per_cpu_s_with_db": round(
                readings / (self.collector_cpu() + self.cpu.get("postgres", 0.0))
            )
            if self.collector_cpu()
            else 0,
            "pg_cpu_s_per_million_readings": round(
                self.cpu.get("postgres", 0.0) * 1e6 / readings, 1
            ),
            "broker_cpu_s_per_1000_msgs": round(self.cpu["mosquitto"] * 1000 / msgs, 3)
            if msgs
            else 0,
            "bytes_per_reading": round(self.bytes_per_reading, 1),
            "latency_p50_ms": round(r.percentile(50), 1),
            "latency_p95_ms": round(r.percentile(95), 1),
            "latency_p99_ms": round(r.percentile(99), 1),
            "complete": r.complete,
            "lost": r.records - self.db_records,
            "collector_peak_rss_mib": max(self.rss_mib, default=0.0),
            "race_retries": self.retries[0],
        }

    def print(self) -> None:
        r = self.result
        print(f"-- {self.label}")
        print("\n".join(r.lines()))
        tx = [t for t in self.transactions if t is not None]
        print(
            f"  database: {self.db_records:,} records, {self.db_readings:,} readings "
            f"(sent {r.records:,} records: {r.records - self.db_records:+,} missing, "
            f"{self.db_readings - self.db_records * r.values:+,} readings off); transactions "
            f"{' + '.join(str(t) for t in self.transactions)} = {sum(tx)} (mean "
            f"{r.acked_batches / sum(tx) if tx and sum(tx) else 0:.1f} batches each); "
            f"rolled back and run again: {self.retries[0]} after a race with another collector,"
            f" {self.retries[1]} to make a month's partition"
        )
        elapsed = r.elapsed_s or 1.0
        print(
            "  CPU seconds: "
            + ", ".join(f"{k} {v:.2f} ({v / elapsed:.0%})" for k, v in self.cpu.items())
            + f"; collector peak RSS {', '.join(f'{m:.0f}' for m in self.rss_mib)} MiB"
        )
        f = self.figures()
        print(
            f"  per core: {f['readings_per_collector_cpu_s']:,} readings per collector "
            f"CPU-second ({f['readings_per_cpu_s_with_db']:,} counting the database server's"
            f" CPU too); PostgreSQL {f['pg_cpu_s_per_million_readings']} CPU-s per million "
            f"readings; broker {f['broker_cpu_s_per_1000_msgs']} CPU-s per 1,000 messages "
            f"({r.batches:,} batches in, {self.acks:,} acks out); "
            f"{self.bytes_per_reading:.1f} bytes/reading in readings+records "
            f"({self.db_bytes_per_reading:.1f} for the whole database)"
        )
        for line in self.errors[:10]:
            print(f"  !! {line}")
        if len(self.errors) > 10:
            print(f"  !! ... {len(self.errors) - 10} more warning/error lines in the logs")


def _pg_sizes(cluster: PostgresCluster, db: str) -> tuple[int, int, int, int]:
    """(records, readings, bytes of readings+records with indexes, bytes of the database)."""
    out = cluster.psql(
        db,
        "SELECT (SELECT count(*) FROM records), (SELECT count(*) FROM readings),"
        " (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
        "   WHERE inhparent = 'readings'::regclass) + pg_total_relation_size('records'),"
        " pg_database_size(current_database())",
    )
    a, b, c, d = (int(x) for x in out.strip().split("|"))
    return a, b, c, d


def _sqlite_sizes(path: Path) -> tuple[int, int, int, int]:
    con = sqlite3.connect(path, timeout=60)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        records = con.execute("SELECT count(*) FROM records").fetchone()[0]
        readings = con.execute("SELECT count(*) FROM readings").fetchone()[0]
        try:
            tables = con.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ('readings',"
                " 'records') OR name IN (SELECT name FROM sqlite_master WHERE type = 'index'"
                " AND tbl_name IN ('readings', 'records'))"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # no dbstat in this SQLite: the whole file
            tables = 0
        size = (
            con.execute("PRAGMA page_count").fetchone()[0]
            * con.execute("PRAGMA page_size").fetchone()[0]
        )
    finally:
        con.close()
    return records, readings, tables or size, size


def run_one(
    label: str,
    store: str,
    collectors: int,
    fleet: SignedFleet,
    cluster: PostgresCluster | None,
    workdir: Path,
    args: argparse.Namespace,
    rate: float,
    scenario: str = "",
) -> Run:
    workdir.mkdir(parents=True)
    plan = fleet.plan
    if store == "pg":
        assert cluster is not None
        db_name = workdir.name.replace("-", "_")
        database: str | Path = cluster.create_database(db_name)
    else:
        database = workdir / "collectors.sqlite"
    t = time.perf_counter()
    asyncio.run(enrol_fleet(plan, database))
    print(
        f"-- {label}: enrolled {plan.gateways:,} gateways / {plan.meters:,} meters in "
        f"{time.perf_counter() - t:.1f} s; starting {collectors} collector(s)"
    )
    pg_pid = cluster.proc.popen.pid if cluster is not None and cluster.proc else None
    extra = getattr(args, "collector_toml", "") or ""
    with ScaleHeadEnd(workdir, database, collectors, args.coalesce, extra) as head:
        head.start_collectors()
        generator = LoadGenerator(
            "127.0.0.1", head.port, fleet, args.batch_max, args.window, args.connections,
            client_prefix=f"loadgen-{workdir.name}",
        )  # fmt: skip
        try:
            generator.connect()
            cpu0 = {**head.cpu(), "generator": cpu_seconds()}
            if store == "pg" and pg_pid:
                cpu0["postgres"] = tree_cpu_seconds(pg_pid)
            result = generator.run(rate, args.timeout)
            cpu1 = {**head.cpu(), "generator": cpu_seconds()}
            if store == "pg" and pg_pid:
                cpu1["postgres"] = tree_cpu_seconds(pg_pid)
            rss = [kb / 1024 for kb in head.collector_peak_rss_kb()]
        finally:
            generator.close()
        head.stop_collectors()
        acks = result.acked_batches + result.stray_acks
        transactions = head.transactions()
        retries = head.retries()
        errors = head.errors()
    if store == "pg":
        assert cluster is not None
        records, readings, tables, whole = _pg_sizes(cluster, db_name)
    else:
        records, readings, tables, whole = _sqlite_sizes(Path(database))
    return Run(
        label, store, collectors, result, {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1},
        [round(m, 1) for m in rss], transactions, retries, records, readings,
        tables / readings if readings else 0.0, whole / readings if readings else 0.0, acks,
        errors, scenario,
    )  # fmt: skip


async def _inprocess(
    fleet: SignedFleet, target: str | Path, pg_pid: int | None, records: int, coalesce: int
) -> dict[str, float]:
    """The fleet's first ``records`` records straight into ``collector.ingest.Ingestor`` (no
    MQTT, no collector process): each gateway's slot one batch, ``coalesce`` batches per
    transaction, in this process (pinned to one core by the caller)."""
    from collector.ingest import Incoming, Ingestor
    from collector.store import open_store
    from protocols.batch import encode_batch
    from protocols.topics import readings_topic

    plan = fleet.plan
    await enrol_fleet(plan, target)
    now_ms = time.time_ns() // 1_000_000
    messages: list[Incoming] = []
    taken = 0
    for g in range(plan.gateways):
        raws = fleet.records[g]
        per = len(plan.meters_of(g))
        for n, i in enumerate(range(0, len(raws), per), start=1):
            payload = encode_batch(plan.gateway_id(g), n, raws[i : i + per])
            messages.append(Incoming(readings_topic(plan.gateway_id(g)), payload, now_ms))
        taken += len(raws)
        if taken >= records:
            break
    store = await open_store(target)
    try:
        ingestor = Ingestor(store)
        await ingestor.ingest(messages[:1])  # registry load, partition: not timed
        first = ingestor.totals.readings_stored
        db0 = tree_cpu_seconds(pg_pid) if pg_pid else 0.0
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        for i in range(1, len(messages), coalesce):
            await ingestor.ingest(messages[i : i + coalesce])
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        db_cpu = (tree_cpu_seconds(pg_pid) - db0) if pg_pid else 0.0
        readings = ingestor.totals.readings_stored - first
    finally:
        await store.close()
    return {"readings": readings, "seconds": elapsed, "cpu": cpu, "db_cpu": db_cpu}


def _inprocess_both(
    fleet: SignedFleet, cluster: PostgresCluster | None, root: Path, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """``_inprocess`` on PostgreSQL (if running) and on SQLite, this process on one core."""
    out: dict[str, dict[str, float]] = {}
    before = os.sched_getaffinity(0)
    cores = split_cores()
    pin_self(cores[1] if cores else None)
    try:
        targets: list[tuple[str, str | Path, int | None]] = []
        if cluster is not None and cluster.proc is not None:
            targets.append(("pg", cluster.create_database("inprocess"), cluster.proc.popen.pid))
        targets.append(("sqlite", root / "inprocess.sqlite", None))
        for kind, target, pid in targets:
            f = asyncio.run(_inprocess(fleet, target, pid, args.inprocess, args.coalesce))
            out[kind] = f
            name = "PostgreSQL" if kind == "pg" else "SQLite"
            print(
                f"-- in-process Ingestor -> {name} (no MQTT, no collector process; "
                f"{args.coalesce} gateway slots per transaction; this process on one core"
                + (", the server on the other)" if kind == "pg" else ")")
                + f": {f['readings'] / f['seconds']:,.0f} readings/s, "
                f"{f['readings'] / f['cpu']:,.0f} per ingest CPU-second"
                + (
                    f", PostgreSQL {f['db_cpu'] * 1e6 / f['readings']:.1f} CPU-s per million "
                    "readings"
                    if kind == "pg"
                    else ""
                )
            )
    finally:
        os.sched_setaffinity(0, before)
    return out


def _counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_fleet_arguments(parser, 20_000, 200)
    parser.add_argument("--pg", default="1,2,3", help="collector counts on PostgreSQL")
    parser.add_argument("--sqlite", default="1,2", help="collector counts on one SQLite file")
    parser.add_argument("--wave-rate", type=float, default=1000.0,
                        help="records/s of the fixed-rate wave (0: no wave run)")  # fmt: skip
    parser.add_argument("--wave-collectors", type=int, default=2)
    parser.add_argument("--coalesce", type=int, default=50, help="collector batch_coalesce")
    parser.add_argument("--timeout", type=float, default=300.0, help="per run")
    parser.add_argument("--collector-toml", default="",
                        help="more TOML for every collector's config")  # fmt: skip
    parser.add_argument("--inprocess", type=int, default=20_000,
                        help="records for the in-process comparison (0: none)")  # fmt: skip
    args = parser.parse_args(argv)
    outage = args.outage_fraction > 0 and args.outage_slots > 0
    plan = plan_from_args(replace_outage(args, False))
    pg_counts, sqlite_counts = _counts(args.pg), _counts(args.sqlite)
    print_header(
        "ingest_scale: several collectors on PostgreSQL and on SQLite",
        {"cores": f"{os.cpu_count()} (collectors, PostgreSQL, broker and generator share them;"
                  " nothing pinned)",
         "meters": plan.meters, "gateways": plan.gateways, "values": plan.values,
         "slots": plan.slots, "records": plan.total_records,
         "readings": plan.total_records * plan.values, "pg": args.pg, "sqlite": args.sqlite,
         "wave_rate": args.wave_rate, "batch_max": args.batch_max, "window": args.window,
         "coalesce": args.coalesce, "connections": args.connections,
         "outage": f"{args.outage_fraction} x {args.outage_slots} slots" if outage else "no"},
    )  # fmt: skip
    fleet = sign_fleet(plan, args.procs)
    print(fleet.describe())
    runs: list[Run] = []
    inproc: dict[str, dict[str, float]] = {}
    cluster: PostgresCluster | None = None
    with tempfile.TemporaryDirectory(prefix="ml-bench-scale-") as tmp:
        root = Path(tmp)
        try:
            if pg_counts or args.wave_rate > 0 or outage:
                t = time.perf_counter()
                cluster = PostgresCluster(durable=True).start()
                print(f"PostgreSQL (fsync on) started in {time.perf_counter() - t:.1f} s")
            n = 0
            for store, counts in (("pg", pg_counts), ("sqlite", sqlite_counts)):
                for count in counts:
                    n += 1
                    name = "PostgreSQL" if store == "pg" else "SQLite"
                    label = f"{name}, {count} collector(s), saturated"
                    run = run_one(label, store, count, fleet, cluster, root / f"run-{n}",
                                  args, 0.0)  # fmt: skip
                    run.print()
                    runs.append(run)
            if args.wave_rate > 0:
                n += 1
                label = (f"PostgreSQL, {args.wave_collectors} collector(s), 15-minute wave at "
                         f"{args.wave_rate:,.0f} records/s")  # fmt: skip
                run = run_one(label, "pg", args.wave_collectors, fleet, cluster,
                              root / f"run-{n}", args, args.wave_rate, "wave")  # fmt: skip
                run.print()
                runs.append(run)
            if outage:
                outage_plan = plan_from_args(args)
                outage_fleet = sign_fleet(outage_plan, args.procs)
                print(f"outage fleet: {outage_fleet.describe()}")
                n += 1
                label = (f"PostgreSQL, {args.wave_collectors} collector(s), regional outage: "
                         f"{outage_plan.outage_gateways} gateways resend {args.outage_slots} "
                         f"slots, all live at {args.wave_rate:,.0f} records/s")  # fmt: skip
                run = run_one(label, "pg", args.wave_collectors, outage_fleet, cluster,
                              root / f"run-{n}", args, args.wave_rate, "outage")  # fmt: skip
                run.print()
                runs.append(run)
            if args.inprocess > 0:
                inproc = _inprocess_both(fleet, cluster, root, args)
        finally:
            if cluster is not None:
                cluster.stop()
    print()
    print(f"== ingest_scale summary ({os.cpu_count()} cores shared by every process)")
    print(f"{'run':<72} {'readings/s':>10} {'per coll. CPU-s':>15} {'PG CPU-s/M':>10} "
          f"{'B/reading':>9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'lost':>5}")  # fmt: skip
    for run in runs:
        f = run.figures()
        print(f"{run.label:<72} {f['readings_per_s']:>10,} "
              f"{f['readings_per_collector_cpu_s']:>15,} "
              f"{f['pg_cpu_s_per_million_readings']:>10} {f['bytes_per_reading']:>9} "
              f"{f['latency_p50_ms']:>7} {f['latency_p95_ms']:>7} {f['latency_p99_ms']:>7} "
              f"{f['lost']:>5}")  # fmt: skip
    print_summary(
        "ingest_scale",
        {
            "cores": os.cpu_count(),
            "sign_records_per_s": round(fleet.count / fleet.seconds),
            "sign_records_per_cpu_s": round(fleet.count / fleet.cpu_s) if fleet.cpu_s else 0,
            "runs": {r.key: r.figures() for r in runs},
            "inprocess": {
                k: {
                    "readings_per_s": round(v["readings"] / v["seconds"]),
                    "readings_per_cpu_s": round(v["readings"] / v["cpu"]),
                    "db_cpu_s_per_million": round(v["db_cpu"] * 1e6 / v["readings"], 1),
                }
                for k, v in inproc.items()
            },
        },
    )
    return 0


def replace_outage(args: argparse.Namespace, keep: bool) -> argparse.Namespace:
    """``args`` without the outage (for the saturated and wave runs)."""
    if keep:
        return args
    copy = argparse.Namespace(**vars(args))
    copy.outage_fraction, copy.outage_slots = 0.0, 0
    return copy


if __name__ == "__main__":
    raise SystemExit(main())
