"""Fault 10: a one-week backlog drains while live readings keep flowing.

A third gateway's buffer is filled directly with ``agent.buffer.Buffer.append`` (as
benchmarks/drain.py does): M synthetic meters x 10 values x I 15-minute intervals, timestamps
in the week before the fleet's start (long version 1,000 x 10 x 672; CI 50 x 10 x 96). Then the
real agent process runs on that buffer, polling the six simulated meters live, so live captures
keep arriving in the same buffer while the backlog drains. From the moment the agent is READY
(the drain starts) until the last backlog record is stored, the harness samples the head-end
every 50 ms real (3 virtual min): the live age is the virtual time since the newest live record
stored at the head-end was captured -- or since the drain started while none is stored yet (a
live view that was not refreshed since the drain began is that old). The drain rate is backlog
records (and readings) / real seconds from READY to the last backlog record stored.
"""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal
from pathlib import Path

from agent.buffer import Buffer, Capture
from agent.keys import load_key
from protocols.obis import Obis
from protocols.record import Value
from tests.support.fleet import START

from .common import check_run, fleet_for
from .reconcile import Tally

GW = "gw-backlog"
SLOT_MS = 15 * 60 * 1000
OBIS = [Obis.parse(f"1-0:{c}.8.{t}") for c in (1, 2) for t in range(5)]  # 10 energy registers


async def _fill(path: Path, key, meters: list[str], intervals: int) -> int:  # type: ignore[no-untyped-def]
    start_ms = int(START.timestamp() * 1000) - intervals * SLOT_MS
    buf = await Buffer.open(path, GW, key, max_records=10_000_000)
    try:
        n = 0
        for i in range(intervals):
            caps = [
                Capture(
                    m,
                    start_ms + i * SLOT_MS + k,
                    tuple(
                        Value(o, Decimal(1000 + i * 10 + j) / 10, "kWh") for j, o in enumerate(OBIS)
                    ),
                )
                for k, m in enumerate(meters)
            ]
            n += len((await buf.append(caps)).seqs)
        return n
    finally:
        await buf.close()


def _virtual_ms(fleet) -> int:  # type: ignore[no-untyped-def]
    assert fleet.clock is not None
    return fleet.clock.virtual_ns(time.time_ns()) // 10**6


def _real(fleet, virtual_min: float) -> str:  # type: ignore[no-untyped-def]
    return f"{virtual_min * 60 / fleet.speed:.2f} s real"


def backlog(root: Path, rng: random.Random, runs: int, meters: int = 50,
            intervals: int = 96) -> Tally:  # fmt: skip
    total = Tally()
    # the buffer must hold the whole backlog: a smaller max_records drops its oldest (policy)
    fleet = fleet_for(root, batch_max_records=500, max_records=10_000_000)
    synthetic = [f"em-bl-{i:04d}" for i in range(meters)]
    config = fleet.add_gateway(GW, root / "agent-bl" / "agent.toml", tuple(synthetic))
    state = config.parent / "state"
    key = load_key(state / "keys").private
    filled = asyncio.run(_fill(state / "buffer.sqlite", key, synthetic, intervals))
    live = [m["id"] for m in fleet.meters]
    try:
        fleet.start_collector()
        agent = fleet.start_agent(config=config, name="agent-bl")
        t0 = time.monotonic()
        start_ms = _virtual_ms(fleet)
        ages: list[float] = []
        marks = ",".join("?" * len(live))
        while True:
            now_ms = _virtual_ms(fleet)
            stored_bl = fleet.query(
                f"SELECT count(*) FROM records WHERE gateway_id = ? AND meter_id NOT IN ({marks})",
                GW, *live)[0][0]  # fmt: skip
            newest = fleet.query(
                f"SELECT max(captured_ms) FROM records WHERE meter_id IN ({marks})", *live
            )[0][0]
            ages.append((now_ms - max(newest or start_ms, start_ms)) / 60000)
            if stored_bl >= filled or time.monotonic() - t0 > 1800:
                break
            time.sleep(0.05)  # sampling period of the measurement, not a synchronisation
        elapsed = time.monotonic() - t0
        agent.stop()
        check_run(fleet, total, GW, state / "buffer.sqlite")
        total.runs = runs
        total.notes.append(
            f"backlog {filled} records x 10 values drained in {elapsed:.1f} s "
            f"({filled / elapsed:.0f} records/s, {filled * 10 / elapsed:.0f} readings/s); "
            f"live age at the head-end during the drain: max {_real(fleet, max(ages))} "
            f"({max(ages):.0f} virtual min), median {_real(fleet, sorted(ages)[len(ages) // 2])}"
            f" ({len(ages)} samples from the drain start; clock {fleet.speed}x: live slots "
            f"every 15 virtual min = {15 * 60 / fleet.speed:.2f} s real)"
        )
    finally:
        fleet.close()
    return total


def backlog_week(root: Path, rng: random.Random, runs: int) -> Tally:
    return backlog(root, rng, runs, meters=1000, intervals=672)
