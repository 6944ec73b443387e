"""Fault 7: the gateway clock steps back (-2 h) and forward (+3 h) across an agent restart.

Modbus meters have no clock: timestamps come from the gateway. A capture whose timestamp is
not after the meter's previous capture (persisted in the buffer's meter_stats) is flagged
Quality.CLOCK_SUSPECT and still stored. At the head-end a reading whose identity (meter,
timestamp, quantity) already exists is a duplicate when the value is the same and a conflict
(kept in the conflicts table, both values) when it differs: never silently overwritten.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from .common import check_run, drain, fleet_for
from .reconcile import Tally

HOUR_NS = 3_600_000_000_000


def _stepped(root: Path, rng: random.Random, runs: int, hours: float) -> Tally:
    fleet = fleet_for(root)
    total = Tally()
    try:
        fleet.start_collector()
        for _ in range(runs):
            drain(fleet, hours=rng.uniform(1.5, 3))
            assert fleet.clock is not None and fleet.clock.start_ns is not None
            step = int(hours * HOUR_NS)
            stepped = replace(fleet.clock, start_ns=fleet.clock.start_ns + step)
            until = fleet.virtual_hours() + hours + rng.uniform(1, 2)
            agent = fleet.start_agent(until_hours=until, clock=stepped)
            if agent.popen.wait(timeout=120) != 0:
                raise AssertionError(agent.output[-2000:])
            check_run(fleet, total)
    finally:
        fleet.close()
    return total


def clock_back(root: Path, rng: random.Random, runs: int) -> Tally:
    return _stepped(root, rng, runs, -2)


def clock_forward(root: Path, rng: random.Random, runs: int) -> Tally:
    return _stepped(root, rng, runs, 3)
