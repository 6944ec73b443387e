"""Shared steps of the fault runs: a fleet, an agent run that drains, the per-run checks.

A fault function takes ``(root, rng, runs)`` and returns a Tally: it builds ONE fleet under
``root``, injects its fault ``runs`` times at points drawn from ``rng`` (the random delays are
the injection points, never synchronisation: every wait for an effect is ``wait_for`` on an
observable condition), lets the system recover, and reconciles after each run.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meterlink.postgres import PostgresCluster
from meterlink.procs import Proc
from tests.support.fleet import Fleet

from .reconcile import Tally, integrity_ok, reconcile

__all__ = ["FaultFn", "check_run", "drain", "fleet_for", "kill_at_random"]

FIELDS = ("records", "readings", "stored_once", "in_buffer", "dropped", "lost", "twice",
          "altered", "duplicate_identity", "conflicts", "clock_suspect", "read_errors")  # fmt: skip
FaultFn = Callable[[Path, random.Random, int], Tally]


def fleet_for(root: Path, *, pg: bool = False, **options: Any) -> Fleet:
    """A fleet under ``root``; ``pg``: on a PostgreSQL server of its own (started here, stopped
    by ``fleet.close()``), for several collectors and for restarting the server."""
    root.mkdir(parents=True, exist_ok=True)
    if pg:
        options.update(postgres=PostgresCluster().start(), own_postgres=True)
    fleet = Fleet(root, **options)
    try:
        return fleet.setup()
    except BaseException:
        fleet.close()
        raise


def kill_at_random(proc: Proc, rng: random.Random, low: float, high: float) -> float:
    """SIGKILL ``proc`` after a random real delay (the injection point); returns the delay."""
    delay = rng.uniform(low, high)
    time.sleep(delay)
    proc.kill(signal.SIGKILL)
    return delay


def drain(fleet: Fleet, hours: float = 0.5, timeout: float = 120, **kw: Any) -> None:
    """Run the agent over a short window from now, let it drain its backlog, wait for exit 0."""
    agent = fleet.start_agent(until_hours=fleet.virtual_hours() + hours, **kw)
    code = agent.popen.wait(timeout=timeout)
    if code != 0:
        raise AssertionError(f"agent exited {code}:\n{agent.output[-3000:]}")


def check_run(fleet: Fleet, total: Tally, gateway: str | None = None,
              buffer: Path | None = None) -> Tally:  # fmt: skip
    """Reconcile one run (agent stopped) and check the SQLite files (the agent's buffer, and the
    collector's unless the head-end is PostgreSQL); fold into ``total``."""
    gateway = gateway or fleet.gateway
    buffer = buffer or fleet.agent_buffer
    tally = reconcile(fleet.head_end, gateway, buffer)
    files = [buffer] if fleet.database_url else [buffer, fleet.collector_db]
    for path in files:
        verdict = integrity_ok(path)
        if verdict != "ok":
            tally.altered += 1
            tally.notes.append(f"{path.name}: integrity_check: {verdict}")
    total.runs += 1
    for name in FIELDS:
        setattr(total, name, getattr(tally, name))  # cumulative state of the one fleet
    total.notes += tally.notes
    if not tally.ok:
        total.notes.append(f"run {total.runs}: {tally.problems()}")
    return tally
