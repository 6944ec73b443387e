"""Backlog drain: a full agent buffer emptied through mosquitto, acked by the collector.

    .venv/bin/python -m benchmarks.drain [--records 20000] [--values 10]

The agent's buffer (``agent.buffer.Buffer``) is pre-filled with a backlog, as after an
outage; a private mosquitto and the real collector process run, the collector pinned to one
core. The agent's ``agent.uplink.Uplink`` runs in this process (on the other core, with the
broker) with the agent's default MQTT settings, and the clock runs until the buffer is
empty: every record published, stored and committed by the collector, acked, and deleted.
``--profile`` samples the publishing side with cProfile (event-loop thread only).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import random
import tempfile
import time
from pathlib import Path

from agent.buffer import Buffer, Capture
from agent.config import MqttConfig
from agent.keys import load_key
from agent.uplink import Uplink

from .headend import HeadEnd
from .machine import cpu_seconds, pin_self, print_header, print_summary, split_cores
from .records import GENERIC_POINTS, SLOT_MS, START_MS, MeterModel, meter_ids

GATEWAY = "gw-bench-01"
TARGET = 30_000  # readings/s, from the issue


async def fill(buffer: Buffer, meters: list[str], records: int, values: int) -> float:
    rng = random.Random(3)
    models = [MeterModel(m, GENERIC_POINTS[:values], rng) for m in meters]
    t0 = time.perf_counter()
    chunk: list[Capture] = []
    for n in range(records):
        model = models[n % len(models)]
        chunk.append(Capture(model.meter_id, START_MS + (n // len(models)) * SLOT_MS,
                             model.values()))  # fmt: skip
        if len(chunk) == 5000:
            await buffer.append(chunk)
            chunk = []
    if chunk:
        await buffer.append(chunk)
    return time.perf_counter() - t0


async def drain(
    head: HeadEnd, records: int, values: int, mqtt_cfg: MqttConfig, meters: list[str],
    profile: bool, timeout: float,
) -> dict[str, object]:  # fmt: skip
    key = load_key(head.state_dir / "keys")
    buffer = await Buffer.open(head.state_dir / "buffer.sqlite", GATEWAY, key.private)
    try:
        fill_s = await fill(buffer, meters, records, values)
        print(f"backlog of {buffer.count:,} records built in {fill_s:.1f}s")
        uplink = Uplink(GATEWAY, mqtt_cfg, buffer)
        profiler = cProfile.Profile() if profile else None
        cpu0 = {**head.cpu(), "agent": cpu_seconds()}
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        await uplink.start()
        deadline = t0 + timeout
        connected_at = None
        samples: list[tuple[float, int]] = []
        try:
            while buffer.count > 0 and time.perf_counter() < deadline:
                if connected_at is None and uplink.connected:
                    connected_at = time.perf_counter() - t0
                samples.append((time.perf_counter() - t0, buffer.count))
                await asyncio.sleep(0.01)  # polls the backlog; the work runs meanwhile
            elapsed = time.perf_counter() - t0
            if profiler:
                profiler.disable()
            cpu1 = {**head.cpu(), "agent": cpu_seconds()}
            left = buffer.count
        finally:
            await uplink.stop()
        if profiler:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
            print("agent-side profile (event-loop thread, by own time):")
            print("\n".join(text.getvalue().splitlines()[:40]))
        c = uplink.counters
        return {
            "elapsed": elapsed,
            "left": left,
            "connected_at": connected_at or 0.0,
            "cpu": {n: cpu1[n] - cpu0.get(n, 0.0) for n in cpu1},
            "batches": c.batches_published,
            "published": c.records_published,
            "resent": c.batches_resent,
            "acked": c.records_acked,
            "samples": samples,
        }
    finally:
        await buffer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--values", type=int, default=10, help="values per record (1-20)")
    parser.add_argument("--meters", type=int, default=100)
    defaults = MqttConfig()
    parser.add_argument("--batch-max", type=int, default=defaults.batch_max_records)
    parser.add_argument("--inflight", type=int, default=defaults.max_inflight)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    cores = split_cores()
    print_header(
        "drain: agent backlog -> mosquitto -> collector -> acks -> deleted",
        {
            "records": args.records, "values_per_record": args.values,
            "readings": args.records * args.values, "meters": args.meters,
            "batch_max_records": args.batch_max, "max_inflight": args.inflight,
            "pinning": f"agent+broker cpu {sorted(cores[0])}, collector cpu {sorted(cores[1])}"
            if cores else "none (one core)",
        },
    )  # fmt: skip
    meters = meter_ids(args.meters)
    with tempfile.TemporaryDirectory(prefix="ml-bench-drain-") as tmp:
        pin_self(cores[0] if cores else None)
        collector_core = min(cores[1]) if cores else None
        with HeadEnd(Path(tmp), GATEWAY, meters, collector_core) as head:
            mqtt_cfg = MqttConfig(
                host="127.0.0.1", port=head.port, batch_max_records=args.batch_max,
                max_inflight=args.inflight,
            )  # fmt: skip
            res = asyncio.run(
                drain(head, args.records, args.values, mqtt_cfg, meters, args.profile,
                      args.timeout)
            )  # fmt: skip
            rss = head.collector_peak_rss_kb()
            db_records, db_readings = head.stored()
        tx = head.transactions()
    elapsed = float(res["elapsed"])  # type: ignore[arg-type]
    drained = args.records - int(res["left"])  # type: ignore[call-overload]
    rate = drained * args.values / elapsed
    print(
        f"drained {drained:,} of {args.records:,} records in {elapsed:.2f}s"
        + (f"  (TIMED OUT, {res['left']} left)" if res["left"] else "")
        + f"; connected after {float(res['connected_at']):.2f}s"  # type: ignore[arg-type]
    )
    print(
        f"  {rate:,.0f} readings/s  {drained / elapsed:,.0f} records/s  "
        f"(target >= {TARGET:,} readings/s)"
    )
    print(
        f"  {res['batches']} batches published ({res['published']} records), "
        f"{res['resent']} resent, {res['acked']} records acked and deleted"
    )
    print(f"  collector database: {db_records} records, {db_readings} readings; "
          f"{tx} transactions; collector peak RSS {rss / 1024:.1f} MiB")  # fmt: skip
    cpu: dict[str, float] = res["cpu"]  # type: ignore[assignment]
    print(
        "  CPU seconds in the window: "
        + ", ".join(f"{n} {v:.2f}s ({v / elapsed:.0%})" for n, v in cpu.items())
    )
    samples: list[tuple[float, int]] = res["samples"]  # type: ignore[assignment]
    marks = [s for s in samples if s[1] <= args.records * 3 // 4][:1]
    marks += [s for s in samples if s[1] <= args.records // 4][:1]
    if len(marks) == 2 and marks[1][0] > marks[0][0]:
        mid = (marks[0][1] - marks[1][1]) * args.values / (marks[1][0] - marks[0][0])
        print(f"  steady state (backlog 75% -> 25%): {mid:,.0f} readings/s")
    print_summary(
        "drain",
        {
            "readings_per_s": round(rate),
            "records_per_s": round(drained / elapsed),
            "drained_records": drained,
            "complete": not res["left"],
            "collector_peak_rss_mib": round(rss / 1024, 1),
            "cpu_s": {n: round(v, 2) for n, v in cpu.items()},
            "target_readings_per_s": TARGET,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
