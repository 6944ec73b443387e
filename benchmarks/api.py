"""API latency of the fleet overview with 10,000 gateways and 100,000 meters in the store.

    .venv/bin/python -m benchmarks.api [--gateways 10000] [--meters-per-gateway 10]

The store is filled as a running head-end would leave it (registry, fleet state documents
written by ``collector.fleet``: 3% of the gateways offline, some with sequence gaps, 2% of the
meters stale); then the real collector process starts on it with ``[http]`` and a real
mosquitto, loads the fleet state, and the benchmark times requests over loopback with one
keep-alive connection (an API token: a dashboard or a script, not a password login per call).
Reported per endpoint: p50, p95 and max of ``--requests`` calls, after 3 warm-up calls.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from collector.fleet.state import GatewayState, MeterState
from collector.store import open_store
from collector.web.auth import new_token
from meterlink.broker import Mosquitto
from meterlink.procs import Proc, free_port

from .machine import print_header, print_summary, rss_kb

TARGET_P95_MS = 250  # the fleet overview, 10k gateways / 100k meters


def fill(db_path: Path, gateways: int, per_gateway: int, now_ms: int) -> None:
    async def create() -> None:
        store = await open_store(db_path)
        await store.close()

    asyncio.run(create())
    con = sqlite3.connect(db_path)
    gw_rows, key_rows, bind_rows, fleet_gw, fleet_m = [], [], [], [], []
    for g in range(gateways):
        gateway_id = f"gw-{g:05d}"
        offline = g % 33 == 0
        gw = GatewayState(
            gateway_id,
            status="offline" if offline else "online",
            reason="connection lost" if offline else "",
            status_at_ms=None if offline else now_ms - 30_000,
            status_received_ms=now_ms - 30_000,
            last_seen_ms=now_ms - (7_200_000 if offline else 20_000),
            version="0.1.0",
            backlog=0 if g % 7 else 42,
            last_seq=96 * per_gateway,
            clock_offset_ms=g % 200 - 100,
            batches=96,
            records=96 * per_gateway,
            rejected={"bad-signature": 1} if g % 50 == 0 else {},
            seen=[[1, 500], [510, 96 * per_gateway]] if g % 40 == 0 else [[1, 96 * per_gateway]],
        )
        gw_rows.append((gateway_id, now_ms - 86_400_000))
        key_rows.append((gateway_id, f"{g:016x}", bytes(32), "active", now_ms - 86_400_000))
        fleet_gw.append((gateway_id, json.dumps(gw.to_doc()), now_ms))
        for m in range(per_gateway):
            meter_id = f"m-{g:05d}-{m:02d}"
            bind_rows.append((gateway_id, meter_id, now_ms - 86_400_000))
            stale = (g * per_gateway + m) % 50 == 0
            good_ms = now_ms - (10_800_000 if stale else 900_000)
            meter = MeterState(
                meter_id,
                gateway_id,
                records=96,
                good=95 if m % 9 == 0 else 96,
                last_received_ms=now_ms - 60_000,
                last_captured_ms=good_ms,
                last_good_ms=good_ms,
                last_good_at_ms=good_ms,
                last_good={
                    "1-0:1.8.0": [f"{10_000 + g + m}.125", "kWh"],
                    "1-0:2.8.0": ["0.000", "kWh"],
                    "1-0:16.7.0": ["412.5", "W"],
                },
            )
            fleet_m.append((meter_id, gateway_id, json.dumps(meter.to_doc()), now_ms))
    with con:
        con.executemany("INSERT INTO gateways VALUES (?, ?)", gw_rows)
        con.executemany(
            "INSERT INTO gateway_keys (gateway_id, key_id, public_key, status, enrolled_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            key_rows,
        )
        con.executemany("INSERT INTO gateway_meters VALUES (?, ?, ?)", bind_rows)
        con.executemany("INSERT INTO fleet_gateways VALUES (?, ?, ?)", fleet_gw)
        con.executemany("INSERT INTO fleet_meters VALUES (?, ?, ?, ?)", fleet_m)
    con.close()


def timed(conn: http.client.HTTPConnection, path: str, token: str, n: int) -> dict[str, float]:
    samples = []
    size = 0
    for i in range(n + 3):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        size = len(body)
        if i >= 3:
            samples.append(elapsed)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 1),
        "max_ms": round(samples[-1], 1),
        "bytes": size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateways", type=int, default=10_000)
    parser.add_argument("--meters-per-gateway", type=int, default=10)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    meters = args.gateways * args.meters_per_gateway
    print_header(
        "api",
        {"gateways": args.gateways, "meters": meters, "requests": args.requests},
    )
    root = Path(tempfile.mkdtemp(prefix="meterlink-bench-api-"))
    broker = collector = None
    try:
        now_ms = time.time_ns() // 1_000_000
        t0 = time.perf_counter()
        fill(root / "collector.sqlite", args.gateways, args.meters_per_gateway, now_ms)
        print(f"store filled in {time.perf_counter() - t0:.1f}s")
        token, digest = new_token()
        users = root / "users.toml"
        users.write_text(f'[[token]]\nname = "bench"\nrole = "read-only"\nsha256 = "{digest}"\n')
        os.chmod(users, 0o600)
        broker = Mosquitto(root / "broker").start()
        port = free_port()
        config = root / "collector.toml"
        config.write_text(
            '[collector]\ndatabase = "collector.sqlite"\nid = "collector-bench"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n\n'
            f'[http]\nport = {port}\nusers = "users.toml"\n\n'
            '[fleet]\noffline_after = "10m"\nstale_after = "2h"\nflush_interval = "60s"\n'
        )
        t0 = time.perf_counter()
        collector = Proc([sys.executable, "-m", "collector", "run", str(config)], "collector")
        collector.wait_line(lambda t: "http: listening" in t, timeout=300)
        started_s = time.perf_counter() - t0
        loaded = collector.wait_line(lambda t: "fleet:" in t and "loaded" in t, timeout=5)
        print(f"collector up in {started_s:.1f}s ({loaded.split('collector.fleet: ')[-1]})")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        results = {}
        last = f"gw-{args.gateways - 2:05d}"
        for name, path in (
            ("fleet_overview", "/api/fleet?limit=100"),
            ("gateways_first_page", "/api/gateways?limit=100"),
            ("gateways_last_page", f"/api/gateways?limit=100&after={last}"),
            ("gateways_offline", "/api/gateways?state=offline&limit=100"),
            ("meters_stale", "/api/meters?stale=true&limit=100"),
            ("gateway_detail", "/api/gateways/gw-05000"),
            ("meter_detail", "/api/meters/m-05000-03"),
            ("metrics", "/metrics"),
        ):
            results[name] = timed(conn, path, token, args.requests)
            r = results[name]
            print(
                f"{name:22s} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms"
                f"  max {r['max_ms']:7.1f} ms  ({r['bytes']:,} bytes)"
            )
        conn.close()
        rss_mib = round(rss_kb(collector.popen.pid, "VmRSS") / 1024, 1)
        print(f"collector RSS with the fleet loaded: {rss_mib} MiB")
        overview = results["fleet_overview"]
        print(
            f"fleet overview p95 {overview['p95_ms']} ms (target <= {TARGET_P95_MS} ms with"
            f" {args.gateways:,} gateways and {meters:,} meters)"
        )
        print_summary(
            "api",
            {
                "gateways": args.gateways,
                "meters": meters,
                "overview_p50_ms": overview["p50_ms"],
                "overview_p95_ms": overview["p95_ms"],
                "target_p95_ms": TARGET_P95_MS,
                "startup_s": round(started_s, 1),
                "collector_rss_mib": rss_mib,
                "endpoints": results,
            },
        )
        return 0
    finally:
        if collector is not None:
            collector.stop()
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
