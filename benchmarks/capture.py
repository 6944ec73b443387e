"""Agent capture -> sign -> buffer commit, on one core, without Modbus.

    .venv/bin/python -m benchmarks.capture [--records 50000] [--values 10] [--buses 10]

One task per bus hands ``Capture`` objects to ``agent.writer.CaptureWriter`` as the
scheduler does (``put`` and go on: a poll awaits its Modbus I/O, here ``sleep(0)``); the
writer signs them and commits each waiting group in one transaction of the real
``agent.buffer.Buffer`` (WAL, ``synchronous=FULL``). The clock runs from the first ``put``
to the last commit. For reference: the cost of signing alone, and one commit per capture
(what group commit saves).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.buffer import Buffer, Capture
from agent.writer import CaptureWriter
from protocols.record import ClockSource, Quality, Record, Value, key_id_of, sign_record

from .machine import cpu_seconds, pin_self, print_header, print_summary, rss_kb
from .records import GENERIC_POINTS, SLOT_MS, START_MS, MeterModel, meter_ids

GATEWAY = "gw-bench-01"
TARGET = 20_000  # readings/s, from the issue
POOL = 16  # value sets drawn per meter, reused round-robin (values are not the point here)


def value_pool(meters: list[str], values: int) -> dict[str, list[tuple[Value, ...]]]:
    rng = random.Random(7)
    points = GENERIC_POINTS[:values]
    pools = {}
    for meter in meters:
        model = MeterModel(meter, points, rng)
        pools[meter] = [model.values() for _ in range(POOL)]
    return pools


async def grouped(
    path: Path, key: Ed25519PrivateKey, meters: list[str], pools: dict, records: int, buses: int
) -> dict[str, float]:
    buffer = await Buffer.open(path, GATEWAY, key)
    try:
        writer = CaptureWriter(buffer)
        writer.start()
        per_bus = [meters[i::buses] for i in range(buses)]
        slots = records // len(meters)

        async def bus(bus_meters: list[str]) -> None:
            for slot in range(slots):
                ms = START_MS + slot * SLOT_MS
                for meter in bus_meters:
                    writer.put(Capture(meter, ms, pools[meter][slot % POOL]))
                    await asyncio.sleep(0)  # the poll's I/O

        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        await asyncio.gather(*(bus(m) for m in per_bus))
        await writer.stop()
        elapsed = time.perf_counter() - t0
        return {
            "elapsed": elapsed,
            "cpu": cpu_seconds() - cpu0,
            "records": writer.records,
            "readings": writer.readings,
            "commits": writer.commits,
            "backlog": await buffer.backlog(),
        }
    finally:
        await buffer.close()


async def one_per_commit(
    path: Path, key: Ed25519PrivateKey, meters: list[str], pools: dict, records: int
) -> float:
    buffer = await Buffer.open(path, GATEWAY, key)
    try:
        caps = itertools.cycle(meters)
        t0 = time.perf_counter()
        for n in range(records):
            meter = next(caps)
            await buffer.append([Capture(meter, START_MS + n * SLOT_MS, pools[meter][0])])
        return time.perf_counter() - t0
    finally:
        await buffer.close()


def sign_only(key: Ed25519PrivateKey, meters: list[str], pools: dict, n: int) -> float:
    """Seconds per record for Record.body() + Ed25519 sign, as Buffer.append does it (key id
    computed once); the best of three rounds, as other work on the machine only adds."""
    key_id = key_id_of(key.public_key())
    best = float("inf")
    for _round in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            meter = meters[i % len(meters)]
            record = Record(
                GATEWAY, meter, i + 1, START_MS + i * SLOT_MS, ClockSource.GATEWAY,
                Quality.NONE, pools[meter][i % POOL],
            )  # fmt: skip
            sign_record(record, key, key_id)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--values", type=int, default=10, help="values per record (1-20)")
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--buses", type=int, default=10, help="producer tasks (one per bus)")
    parser.add_argument("--single", type=int, default=500, help="captures, one commit each")
    args = parser.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    pin_self({cores[-1]})
    print_header(
        "capture: agent capture -> sign -> buffer commit on one core",
        {
            "records": args.records, "values_per_record": args.values,
            "readings": args.records * args.values, "meters": args.meters,
            "buses": args.buses, "buffer": "WAL synchronous=FULL", "cpu": cores[-1],
        },
    )  # fmt: skip
    meters = meter_ids(args.meters)
    pools = value_pool(meters, args.values)
    key = Ed25519PrivateKey.generate()
    records = (args.records // len(meters)) * len(meters)
    with tempfile.TemporaryDirectory(prefix="ml-bench-capture-") as tmp:
        root = Path(tmp)
        res = asyncio.run(grouped(root / "buffer.sqlite", key, meters, pools, records, args.buses))
        size = sum(p.stat().st_size for p in root.glob("buffer.sqlite*"))
        rss = rss_kb()
        single_db = root / "single.sqlite"
        single = asyncio.run(one_per_commit(single_db, key, meters, pools, args.single))
    per_sign = sign_only(key, meters, pools, 1000)
    elapsed = res["elapsed"]
    rate = res["readings"] / elapsed
    print(
        f"group commit: {res['records']:,} records ({res['readings']:,} readings) in "
        f"{elapsed:.2f}s, {res['commits']} commits (mean group "
        f"{res['records'] / max(res['commits'], 1):.0f} records), backlog {res['backlog']:,}"
    )
    print(
        f"  {rate:,.0f} readings/s  {res['records'] / elapsed:,.0f} records/s  "
        f"{elapsed * 1e6 / res['records']:.0f} us/record  (target >= {TARGET:,} readings/s); "
        f"CPU {res['cpu']:.2f}s of {elapsed:.2f}s"
    )
    print(f"  peak RSS (VmHWM) {rss / 1024:.1f} MiB; buffer files {size / 1e6:.1f} MB")
    print(
        f"  of which Record.body() + Ed25519 sign alone: {per_sign * 1e6:.0f} us/record "
        f"({per_sign * res['records'] / elapsed:.0%} of the time)"
    )
    print(
        f"one commit per capture (no grouping, {args.single} captures): "
        f"{args.single / single:,.0f} records/s, {single * 1e3 / args.single:.2f} ms/commit "
        f"(the fsync of synchronous=FULL)"
    )
    print_summary(
        "capture",
        {
            "readings_per_s": round(rate),
            "records_per_s": round(res["records"] / elapsed),
            "commits": res["commits"],
            "peak_rss_mib": round(rss / 1024, 1),
            "sign_us_per_record": round(per_sign * 1e6),
            "single_commit_records_per_s": round(args.single / single),
            "target_readings_per_s": TARGET,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
