"""Fault 1: the agent SIGKILLed during capture, during a buffer write, between publish and ack.

The kill lands at a random real delay after the agent is READY. Where it lands is statistics:
*capture* uses the normal 15-minute slots (polls of 6 meters every 0.25 s real, so most kills
land in or between polls); *write* uses 1-minute slots (the writer commits many times a second,
so kills land in or near a transaction); *publish* uses a long ack timeout and batches of one
record, so at any moment several batches are published and not yet acked.
"""

from __future__ import annotations

import random
from pathlib import Path

from .common import check_run, drain, fleet_for, kill_at_random
from .reconcile import Tally


def _kills(root: Path, rng: random.Random, runs: int, **options: object) -> Tally:
    fleet = fleet_for(root, **options)  # type: ignore[arg-type]
    total = Tally()
    try:
        fleet.start_collector()
        for _ in range(runs):
            agent = fleet.start_agent()
            kill_at_random(agent, rng, 0.05, 1.5)
            drain(fleet)
            check_run(fleet, total)
    finally:
        fleet.close()
    return total


def agent_kill_capture(root: Path, rng: random.Random, runs: int) -> Tally:
    return _kills(root, rng, runs)


def agent_kill_write(root: Path, rng: random.Random, runs: int) -> Tally:
    return _kills(root, rng, runs, interval="1m")


def agent_kill_publish(root: Path, rng: random.Random, runs: int) -> Tally:
    return _kills(root, rng, runs, batch_max_records=1, ack_timeout="30s")
