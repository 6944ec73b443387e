"""Fault 2: the collector SIGKILLed during a batch's transaction and between commit and ack.

Timing-based (the collector is not instrumented): while an agent with 1-minute slots and
batches of 5 records streams, the collector is killed at a random delay, restarted, and killed
again; with a transaction every few milliseconds, kills land inside transactions and between a
commit and its ack. A batch committed but not acked is resent by the agent and must be counted
as a duplicate, not stored twice.
"""

from __future__ import annotations

import random
from pathlib import Path

from .common import check_run, drain, fleet_for, kill_at_random
from .reconcile import Tally


def collector_kill(root: Path, rng: random.Random, runs: int) -> Tally:
    fleet = fleet_for(root, interval="1m", batch_max_records=5)
    total = Tally()
    try:
        fleet.start_collector()
        fleet.start_agent()
        for _ in range(runs):
            collector = fleet.collector
            assert collector is not None
            kill_at_random(collector, rng, 0.2, 1.5)
            fleet.start_collector()
        assert fleet.agent is not None
        fleet.agent.stop()
        drain(fleet)
        check_run(fleet, total)
        total.runs = runs
    finally:
        fleet.close()
    return total
