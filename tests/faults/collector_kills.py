"""Fault 2: the collector SIGKILLed during a batch's transaction and between commit and ack.

Timing-based (the collector is not instrumented): while an agent with 1-minute slots and
batches of 5 records streams, the collector is killed at a random delay and restarted; the
agent stops, a drain run delivers the rest and the run is reconciled (after each kill). With a
transaction every few milliseconds, kills land inside transactions and between a commit and its
ack. A batch committed but not acked is resent by the agent and must be counted
as a duplicate, not stored twice.
"""

from __future__ import annotations

import random
from pathlib import Path

from .common import check_run, drain, fleet_for, kill_at_random
from .reconcile import Tally


def collector_kill(root: Path, rng: random.Random, runs: int) -> Tally:
    """Each run: an agent streams, the collector is SIGKILLed at a random point and restarted,
    the agent stops and a drain run delivers the rest; then reconcile (after EVERY kill)."""
    fleet = fleet_for(root, interval="1m", batch_max_records=5)
    total = Tally()
    try:
        fleet.start_collector()
        for _ in range(runs):
            agent = fleet.start_agent()
            collector = fleet.collector
            assert collector is not None
            kill_at_random(collector, rng, 0.2, 1.5)
            fleet.start_collector()
            agent.stop()
            drain(fleet)
            check_run(fleet, total)
    finally:
        fleet.close()
    return total
