"""Load-profile backfill over the TCP wrapper: 30 days of a 15-minute profile (2,880
entries) read from a ``sim dlms`` process, as the agent's dlms driver reads it.

    .venv/bin/python -m benchmarks.dlms_backfill [--days 30] [--runs 3]

Each run is one association: the profile's capture objects, capture period, the registers'
scaler_units and the clock, then the buffer by range in one-day GETs
(``agent.drivers.dlms.profile.ProfileReader``, the driver's own code), decoded into exact
values. Then the entries go the agent's way into a real buffer: one Capture each, signed and
committed in one transaction (``agent.buffer.Buffer``). The simulator's clock stands still,
so every run reads the same 2,880 entries; the first run also pays the simulator computing
them from its model (a real meter has them stored), so the best run is the figure.
Printed: seconds and entries/s (read; read + sign + commit), GETs, bytes on the wire both
ways (wrapper headers included), peak RSS of the agent side and of the simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.buffer import Buffer, Capture
from agent.config import DlmsSettings
from agent.drivers.dlms.profile import ProfileReader
from agent.drivers.dlms.session import DlmsSession
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.obis import Obis
from protocols.record import ClockSource

from .dlms_wire import CountingTransport
from .machine import print_header, print_summary, rss_kb

START = datetime(2026, 11, 1, tzinfo=UTC)
PROFILE = Obis.parse("1-0:99.1.0")


async def one_run(host: str, port: int, days: int, buffer_path: Path) -> dict[str, float]:
    settings = DlmsSettings(load_profile=PROFILE, backfill_limit_ns=days * 86_400 * 10**9)
    CountingTransport.reset()
    t0 = time.perf_counter()
    transport = CountingTransport(host, port, 16, 1, timeout=30)
    session = DlmsSession(transport, settings, "bench-dlms")
    try:
        await transport.open()
        await session.open()
        rows = await ProfileReader("bench-dlms", settings).read(session)
    finally:
        await session.close()
    read_s = time.perf_counter() - t0
    if rows.errors:
        raise SystemExit(f"profile read failed: {rows.errors}")
    t1 = time.perf_counter()
    buffer = await Buffer.open(buffer_path, "gw-bench", Ed25519PrivateKey.generate())
    try:
        captures = [
            Capture("bench-dlms", ms, values, flags, ClockSource.METER, profile=PROFILE)
            for ms, values, flags in rows.entries
        ]
        await buffer.append(captures)
        cursor = buffer.profile_cursor("bench-dlms", PROFILE)
    finally:
        await buffer.close()
    commit_s = time.perf_counter() - t1
    assert cursor == rows.entries[-1][0]
    return {
        "entries": len(rows.entries),
        "values": sum(len(v) for _ms, v, _f in rows.entries),
        "read_s": read_s,
        "commit_s": commit_s,
        "requests": CountingTransport.requests,
        "sent": CountingTransport.sent,
        "received": CountingTransport.received,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print_header("dlms_backfill", {"days": args.days, "period": "15m", "runs": args.runs})
    # a clock standing at START: the same entries in every run
    clock = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))
    sim = Proc(
        [sys.executable, "-m", "meterlink", "sim", "dlms", "--port", "0", "--meter-id",
         "bench-dlms", "--clock", str(clock), "--origin", "2026-09-01T00:00:00Z",
         "--profile-period", "15m"],
        "sim",
    )  # fmt: skip
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        host, _, port = line.split()[2].rpartition(":")
        results = []
        with tempfile.TemporaryDirectory(prefix="bench-dlms-") as tmp:
            for run in range(args.runs):
                got = asyncio.run(one_run(host, int(port), args.days, Path(tmp) / f"b{run}.db"))
                results.append(got)
                total = got["read_s"] + got["commit_s"]
                print(
                    f"run {run + 1}: {got['entries']} entries ({got['values']} values) read in "
                    f"{got['read_s']:.3f}s ({got['entries'] / got['read_s']:,.0f} entries/s), "
                    f"{got['requests']} requests, {got['sent']:,} B sent, "
                    f"{got['received']:,} B received; + sign & commit {got['commit_s']:.3f}s "
                    f"= {total:.3f}s ({got['entries'] / total:,.0f} entries/s)"
                )
        sim_rss = rss_kb(sim.popen.pid)
    finally:
        sim.stop()
    best = min(results, key=lambda r: r["read_s"] + r["commit_s"])
    agent_rss = rss_kb()
    total = best["read_s"] + best["commit_s"]
    print(
        f"best: {best['entries']} entries in {total:.3f}s ({best['entries'] / total:,.0f} "
        f"entries/s; read {best['read_s']:.3f}s, sign+commit {best['commit_s']:.3f}s), "
        f"{best['received'] / best['entries']:.1f} B/entry received, "
        f"peak RSS agent side {agent_rss / 1024:.1f} MiB, simulator {sim_rss / 1024:.1f} MiB"
    )
    print_summary(
        "dlms_backfill",
        {
            "days": args.days,
            "entries": best["entries"],
            "seconds": round(total, 3),
            "read_seconds": round(best["read_s"], 3),
            "entries_per_s": round(best["entries"] / total),
            "first_run_seconds": round(results[0]["read_s"] + results[0]["commit_s"], 3),
            "requests": best["requests"],
            "bytes_sent": best["sent"],
            "bytes_received": best["received"],
            "peak_rss_mib": round(agent_rss / 1024, 1),
            "sim_peak_rss_mib": round(sim_rss / 1024, 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
