"""Fault 6: power cut during an SQLite write, repeated: the agent AND the collector are
SIGKILLed together at a random point while both write (1-minute slots, batches of 5), then
restarted; after each run both files pass ``PRAGMA integrity_check`` and reconcile."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from .common import check_run, drain, fleet_for
from .reconcile import Tally


def power_cut(root: Path, rng: random.Random, runs: int) -> Tally:
    fleet = fleet_for(root, interval="1m", batch_max_records=5)
    total = Tally()
    try:
        for _ in range(runs):
            collector = fleet.start_collector()
            agent = fleet.start_agent()
            time.sleep(rng.uniform(0.1, 1.5))  # the injection point
            agent.kill(signal.SIGKILL)
            collector.kill(signal.SIGKILL)
            fleet.start_collector()
            drain(fleet)
            check_run(fleet, total)
            assert fleet.collector is not None
            fleet.collector.stop()
    finally:
        fleet.close()
    return total
