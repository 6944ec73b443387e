"""How long a fleet-state flush keeps ingest waiting.

Every ``flush_interval`` (5 s) the collector merges the gateway and meter states that changed
into the store (``collector.fleet.tracking.FleetKeeper``). With 100,000 meters reporting every
few seconds that is every state, every time. Ingest commits on the same store writer, so what
matters is the longest time a concurrent writer waits, not the flush's total.

The benchmark marks 100,000 meters and 10,000 gateways dirty, then flushes while a second task
commits a one-row write transaction in a loop (standing in for ingest batches) and records
the time between its commits. It runs once with the whole flush in one transaction and once
with the default chunk (``FLUSH_CHUNK``), on SQLite and, if PostgreSQL is installed, on a
throwaway PostgreSQL cluster.

    python -m benchmarks.fleet_flush [--meters 100000] [--sqlite-only]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from collector.fleet import tracking
from collector.fleet.state import Fleet
from collector.fleet.tracking import FleetKeeper
from collector.store import open_store

from .machine import print_header, print_summary

_WRITE = (
    "INSERT INTO meta (key, value) VALUES ('bench', '1')"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


async def _one(target: str, meters: int, chunk: int) -> dict[str, float]:
    tracking.FLUSH_CHUNK = chunk
    store = await open_store(target)
    try:
        fleet = Fleet()
        keeper = FleetKeeper(store, fleet)
        await keeper.load()
        for n in range(meters):
            state = fleet.meter(f"m{n:07d}", f"gw{n // 10:06d}")
            state.records += 1
            state.last_received_ms = 1_790_000_000_000 + n
            state.last_good = {"1-0:1.8.0": [f"{n}.5", "kWh"]}
        for g in range(meters // 10):
            fleet.gateway(f"gw{g:06d}").records += 10
        gaps: list[float] = []
        done = asyncio.Event()

        async def writer() -> None:
            last = time.perf_counter()
            while not done.is_set():
                async with store.fleet._write() as db:
                    await db.execute(_WRITE)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
                await asyncio.sleep(0)

        task = asyncio.create_task(writer())
        while len(gaps) < 20:  # the writer runs before the flush starts
            await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        await keeper.flush()
        took = time.perf_counter() - t0
        done.set()
        await task
        gaps.sort()
        return {
            "flush_s": round(took, 2),
            "longest_wait_ms": round(gaps[-1] * 1000),
            "p99_wait_ms": round(gaps[int(len(gaps) * 0.99)] * 1000, 1),
        }
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    default = tracking.FLUSH_CHUNK
    print_header("fleet_flush: ingest's wait behind a fleet-state flush",
                 {"meters": args.meters, "gateways": args.meters // 10,
                  "chunk": default})  # fmt: skip
    stores: list[tuple[str, str]] = []
    folder = Path(tempfile.mkdtemp(prefix="meterlink-flush-"))
    cluster = None
    if not args.sqlite_only:
        from meterlink.postgres import PostgresCluster, postgres_bindir

        try:
            postgres_bindir()
        except Exception as exc:
            print(f"PostgreSQL not measured: {exc}")
        else:
            cluster = PostgresCluster(durable=True).start()
    summary: dict[str, object] = {"meters": args.meters, "chunk": default}
    try:
        for chunk in (10**9, default):
            stores = [("sqlite", str(folder / f"flush-{chunk}.db"))]
            if cluster is not None:
                stores.append(("postgresql", cluster.create_database(f"flush_{chunk}")))
            for name, target in stores:
                fig = asyncio.run(_one(target, args.meters, chunk))
                how = "one transaction" if chunk == 10**9 else f"chunks of {chunk}"
                print(f"{name:10s} {how:16s}: flush {fig['flush_s']} s; a concurrent writer "
                      f"waited at most {fig['longest_wait_ms']} ms "
                      f"(p99 {fig['p99_wait_ms']} ms)")  # fmt: skip
                tag = "whole" if chunk == 10**9 else "chunked"
                summary[f"{name}_{tag}_longest_wait_ms"] = fig["longest_wait_ms"]
                summary[f"{name}_{tag}_flush_s"] = fig["flush_s"]
    finally:
        if cluster is not None:
            cluster.stop()
    print_summary("fleet_flush", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
