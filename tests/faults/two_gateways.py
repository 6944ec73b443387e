"""Fault 9: two gateways (own keys, both enrolled, every meter bound to both) read the same
meters. Each gateway's seqs reconcile on their own. The two gateways poll at slightly different
instants, so their captures of one meter carry different timestamps: both are stored as separate
readings (identity = meter, timestamp, quantity). When two captures have the same identity and
the same value, the second is counted as a duplicate; with a different value, a conflict."""

from __future__ import annotations

import random
from pathlib import Path

from .common import check_run, fleet_for
from .reconcile import Tally

SECOND = "gw-it-02"


def two_gateways(root: Path, rng: random.Random, runs: int) -> Tally:
    fleet = fleet_for(root)
    second = fleet.add_gateway(SECOND, root / "agent2" / "agent.toml")
    total = Tally()
    try:
        fleet.start_collector()
        for _ in range(runs):
            until = fleet.virtual_hours() + rng.uniform(2, 4)
            a = fleet.start_agent(until_hours=until)
            b = fleet.start_agent(until_hours=until, config=second, name="agent2")
            for proc in (a, b):
                if proc.popen.wait(timeout=120) != 0:
                    raise AssertionError(proc.output[-2000:])
            check_run(fleet, total)
            other = Tally()
            check_run(fleet, other, SECOND, second.parent / "state" / "buffer.sqlite")
            for name in ("records", "readings", "stored_once", "in_buffer", "dropped", "lost",
                         "twice", "altered", "duplicate_identity", "conflicts"):  # fmt: skip
                setattr(total, name, getattr(total, name) + getattr(other, name))
            total.notes += other.notes
    finally:
        fleet.close()
    return total
