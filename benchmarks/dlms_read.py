"""A full read of one DLMS meter over the TCP wrapper, as the agent's driver does it every
cycle: connect, AARQ/AARE, the Clock, the six default registers with their scaler_units,
RLRQ/RLRE, close; against a ``sim dlms`` process on this machine.

    .venv/bin/python -m benchmarks.dlms_read [--reads 200] [--warmup 5]

The read is ``agent.drivers.dlms.DlmsMeter.read`` itself (drift measured, values exact);
only its transport is swapped for one that counts requests and bytes (the wrapper
transport plus counters). Reads run one after the other (one meter, one association at a
time, as on a bus). Printed: ms per read (median, p95, min, max), requests and bytes per
read, peak RSS of the agent side and of the simulator. Loopback numbers: a real meter's
link (and its own processing time) adds its round trips x 15.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from agent.config import DlmsSettings
from agent.drivers.dlms import DlmsMeter
from agent.drivers.dlms import meter as meter_module
from meterlink.procs import Proc

from .dlms_wire import CountingTransport
from .machine import print_header, print_summary, rss_kb


def counting_transport(settings: DlmsSettings, host: str, port: int, timeout: float) -> object:
    return CountingTransport(host, port, settings.client_address, settings.server_address, timeout)


async def read_many(host: str, port: int, reads: int, warmup: int) -> tuple[list[float], int]:
    meter = DlmsMeter("bench-dlms", DlmsSettings(), host, port, timeout=10, retries=0)
    for _ in range(warmup):
        await meter.read()
    CountingTransport.reset()
    times = []
    values = 0
    for _ in range(reads):
        t0 = time.perf_counter()
        outcome = await meter.read()
        times.append(time.perf_counter() - t0)
        if outcome.errors or outcome.meter_ms is None:
            raise SystemExit(f"read failed: {outcome.errors}")
        values += len(outcome.values)
    return times, values


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    print_header("dlms_read", {"reads": args.reads, "registers": 6, "transport": "wrapper"})
    meter_module.make_transport = counting_transport  # type: ignore[assignment]
    sim = Proc(
        [sys.executable, "-m", "meterlink", "sim", "dlms", "--port", "0", "--meter-id",
         "bench-dlms"],
        "sim",
    )  # fmt: skip
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        host, _, port = line.split()[2].rpartition(":")
        times, values = asyncio.run(read_many(host, int(port), args.reads, args.warmup))
        sim_rss = rss_kb(sim.popen.pid)
    finally:
        sim.stop()
    ms = sorted(t * 1000 for t in times)
    median = statistics.median(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    requests = CountingTransport.requests / args.reads
    sent = CountingTransport.sent / args.reads
    received = CountingTransport.received / args.reads
    agent_rss = rss_kb()
    print(
        f"{args.reads} full reads ({values // args.reads} values + clock each): median "
        f"{median:.2f} ms, p95 {p95:.2f} ms, min {ms[0]:.2f} ms, max {ms[-1]:.2f} ms; "
        f"{requests:.0f} requests per read (AARQ, clock, 6 x scaler_unit + value, RLRQ), "
        f"{sent:.0f} B sent and {received:.0f} B received per read"
    )
    print(
        f"peak RSS agent side {agent_rss / 1024:.1f} MiB, simulator {sim_rss / 1024:.1f} MiB; "
        f"{1000 / median:.0f} reads/s one after the other on loopback"
    )
    print_summary(
        "dlms_read",
        {
            "reads": args.reads,
            "median_ms": round(median, 3),
            "p95_ms": round(p95, 3),
            "requests_per_read": round(requests, 1),
            "bytes_sent_per_read": round(sent),
            "bytes_received_per_read": round(received),
            "peak_rss_mib": round(agent_rss / 1024, 1),
            "sim_peak_rss_mib": round(sim_rss / 1024, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
