"""Faults with several collector processes on one broker and one PostgreSQL database (issue 9).

Each fleet runs 2 or 3 collectors, each its own ``[collector] id`` and MQTT session, all in the
``collectors`` group: the broker's shared subscription hands each batch to one of them, and all
of them store into one PostgreSQL database (a server of the fault's own, so a restart of it
disturbs nothing else). The agent streams 1-minute slots in batches of 5 records (at 3600x:
~70 batches a second spread over the collectors), and reconciliation reads PostgreSQL.

What the broker does and does not do, which these faults lean on: mosquitto keeps a killed
collector's unacknowledged messages (and from then on its share of new ones) in that
collector's session and does not hand them to the others. A collector restarted under the
same id gets them back; otherwise only the gateway's end-to-end ack and resend (``ack_timeout``)
gets them stored, by another collector.

Injection points are random delays from the seeded ``rng`` (never synchronisation): every
wait for an effect is ``wait_for`` on an observable condition. Notes count, over all runs, the
seqs held by a killed collector at its kill, the agent's resends and the duplicates the
collectors recognised.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meterlink.procs import wait_for
from tests.support.fleet import Fleet

from .common import FIELDS, check_run, drain, fleet_for
from .reconcile import Tally

STREAM: dict[str, Any] = {"interval": "1m", "batch_max_records": 5}
RESEND = "not acked within"  # the agent's log line for a batch it sends again


class _Counters:
    """Evidence over the runs of one fault, turned into notes at the end."""

    def __init__(self) -> None:
        self.held = 0  # seqs held unacked in a killed collector's session after the kill
        self.kills = 0
        self.resends = 0
        self.exits: list[str] = []
        self.drain_s: list[float] = []
        self.recover_s: list[float] = []
        self.pauses = 0
        self.stalls = 0  # pauses during which no collector stored anything

    def note(self) -> str:
        """One note (the table shows a fault's last notes only)."""
        out = []
        if self.kills:
            out.append(f"{self.held} seqs held unacked by {self.kills} killed collectors")
        out.append(f"{self.resends} batch(es) resent by the agent (ack timeout)")
        if self.recover_s:
            out.append(
                "stored again " + ", ".join(f"{s:.1f}" for s in self.recover_s)
                + " s after PostgreSQL was back"
            )  # fmt: skip
        if self.pauses:
            out.append(
                f"all ingest stalled during {self.stalls} of {self.pauses} pauses (the paused "
                "collector held the gateway's lock in an open transaction)"
            )
        if self.drain_s:
            out.append(f"drain runs {min(self.drain_s):.1f}-{max(self.drain_s):.1f} s")
        out += self.exits
        return "; ".join(out)


def _mc_fleet(root: Path, collectors: int, mqtt: tuple[str, ...] = ()) -> Fleet:
    return fleet_for(root, pg=True, collectors=collectors, collector_mqtt=mqtt, **STREAM)


def _max_seq(fleet: Fleet) -> int:
    return max(fleet.stored_seqs(), default=0)


def _resends(fleet: Fleet) -> int:
    log = fleet.root / "agent.log"
    return log.read_text(errors="replace").count(RESEND) if log.exists() else 0


def _duplicates(fleet: Fleet) -> int:
    return int(fleet.query("SELECT coalesce(sum(duplicate_records), 0) FROM counters")[0][0])


def _in_flight(fleet: Fleet) -> set[int]:
    """Seqs the agent has sent and not had acked (its buffer notes the batch on its records
    and deletes them once acked)."""
    con = sqlite3.connect(f"file:{fleet.agent_buffer}?mode=ro", uri=True, timeout=10)
    try:
        return {s for (s,) in con.execute("SELECT seq FROM records WHERE batch IS NOT NULL")}
    finally:
        con.close()


def _freeze_kill(fleet: Fleet, index: int, rng: random.Random, ev: _Counters) -> None:
    """SIGSTOP collector ``index`` at a random point of its work (receiving, in a transaction,
    between COMMIT and its acks), leave it stopped a random while (the broker keeps handing it
    its share of batches, which it never acks), then SIGKILL it.

    Counts what it held: of the seqs in flight at the kill, those still not stored once the
    others have stored a newer record (well within the agent's 3 s ack timeout, so before any
    resend): the broker keeps them in the dead collector's session."""
    proc = fleet.collector_procs[index]
    time.sleep(rng.uniform(0.2, 1.5))  # the injection point
    os.killpg(proc.popen.pid, signal.SIGSTOP)
    time.sleep(rng.uniform(0.1, 1.0))  # stopped for a random while
    proc.kill(signal.SIGKILL)
    flying = _in_flight(fleet)
    if flying:
        # the others go on (a transaction the victim held open, with its advisory locks,
        # ended with its connection); what it held stays missing behind them
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: _max_seq(fleet) > max(flying), 2.0, "a newer record stored")
        ev.held += len(flying - fleet.stored_seqs())
    ev.kills += 1


def _supervise(fleet: Fleet, ev: _Counters, abandoned: set[int]) -> None:
    """Do what systemd does for collector.service (``Restart=on-failure``): a collector that
    exited with a failure is started again; one that exited 0 stays down (noted)."""
    for index, proc in list(fleet.collector_procs.items()):
        if index in abandoned or proc.alive():
            continue
        code = proc.popen.returncode
        if code == 0:
            ev.exits.append(f"collector {index + 1} exited 0: systemd leaves it down")
            abandoned.add(index)
        else:
            ev.exits.append(f"collector {index + 1} exited {code}: restarted")
            fleet.start_collector(index)


def _fold(total: Tally, fleet_tally: Tally) -> None:
    """Add one fleet's (cumulative) tally into a total over several fleets."""
    total.runs += fleet_tally.runs
    for name in FIELDS:
        setattr(total, name, getattr(total, name) + getattr(fleet_tally, name))
    total.notes += fleet_tally.notes


def _finish(total: Tally, ev: _Counters, duplicates: int) -> None:
    total.held, total.resent = ev.held, ev.resends
    note = ev.note()
    if duplicates:
        note += f"; {duplicates} duplicate records recognised by the collectors"
    total.notes.append(note)


def _drain_timed(fleet: Fleet, ev: _Counters) -> None:
    t0 = time.monotonic()
    drain(fleet, timeout=300, drain_timeout=240)
    ev.drain_s.append(time.monotonic() - t0)


Inject = Callable[[Fleet, random.Random, _Counters, set[int]], None]


def _runs(root: Path, rng: random.Random, runs: int, collectors: int, inject: Inject) -> Tally:
    """One fleet of ``collectors``; each run: an agent streams, ``inject`` faults the system,
    the agent stops, failed collectors are restarted, a drain run delivers the rest,
    reconcile (after every run)."""
    fleet = _mc_fleet(root, collectors)
    total, ev, abandoned = Tally(), _Counters(), set[int]()
    try:
        fleet.start_collectors()
        for _ in range(runs):
            before = _resends(fleet)
            fleet.start_agent()
            inject(fleet, rng, ev, abandoned)
            assert fleet.agent is not None
            fleet.agent.stop()
            _supervise(fleet, ev, abandoned)
            _drain_timed(fleet, ev)
            ev.resends += _resends(fleet) - before
            check_run(fleet, total)
        _finish(total, ev, _duplicates(fleet))
    finally:
        fleet.close()
    return total


# -- the faults -----------------------------------------------------------------------------


def _kill_one_restart(fleet: Fleet, rng: random.Random, ev: _Counters, _a: set[int]) -> None:
    victim = rng.randrange(fleet.collector_count)
    _freeze_kill(fleet, victim, rng, ev)
    time.sleep(rng.uniform(0.0, 1.0))  # down a random while; the others keep going
    fleet.start_collector(victim)  # the same id: the broker hands it back its session
    time.sleep(rng.uniform(0.2, 1.0))


def mc_collector_kill(root: Path, rng: random.Random, runs: int) -> Tally:
    """3 collectors; one, chosen at random, is stopped and SIGKILLed mid-ingest while it holds
    unacked batches, and restarted under its id."""
    return _runs(root, rng, runs, 3, _kill_one_restart)


def mc_collector_lost(
    root: Path, rng: random.Random, runs: int, mqtt: tuple[str, ...] = ()
) -> Tally:
    """3 collectors; one is stopped and SIGKILLed while it holds unacked batches and is never
    started again: only the agent's ack timeout and resend get its batches stored (by the
    others), and the broker keeps routing a share of new batches into its dead session.
    A fresh fleet per run (one dead session each: they would pile up in one broker)."""
    total, ev, duplicates = Tally(), _Counters(), 0
    for run in range(runs):
        fleet = _mc_fleet(root / f"run{run + 1}", 3, mqtt)
        one = Tally()
        try:
            fleet.start_collectors()
            before = _resends(fleet)
            fleet.start_agent()
            victim = rng.randrange(3)
            _freeze_kill(fleet, victim, rng, ev)
            time.sleep(rng.uniform(0.2, 0.8))  # the agent keeps streaming to the two left
            assert fleet.agent is not None
            fleet.agent.stop()
            _drain_timed(fleet, ev)
            ev.resends += _resends(fleet) - before
            check_run(fleet, one)
            duplicates += _duplicates(fleet)
        finally:
            fleet.close()
        _fold(total, one)
    _finish(total, ev, duplicates)
    return total


def mc_collector_lost_expiry(root: Path, rng: random.Random, runs: int) -> Tally:
    """mc_collector_lost with ``[mqtt] session_expiry = 5`` (seconds) on the collectors: the
    broker ends the dead collector's session (its queue discarded, its share of the group
    gone) 5 s after the kill, and the agent's resends then go to the live ones."""
    return mc_collector_lost(root, rng, runs, ("session_expiry = 5",))


def _pause_one(fleet: Fleet, rng: random.Random, ev: _Counters, _a: set[int]) -> None:
    victim = rng.randrange(fleet.collector_count)
    proc = fleet.collector_procs[victim]
    time.sleep(rng.uniform(0.2, 1.5))  # the injection point
    os.killpg(proc.popen.pid, signal.SIGSTOP)
    before = len(fleet.stored_seqs())
    # paused beyond the agent's 3 s ack timeout: what it holds is resent to the others
    time.sleep(rng.uniform(3.5, 6.0))
    if len(fleet.stored_seqs()) == before:
        ev.stalls += 1
    os.killpg(proc.popen.pid, signal.SIGCONT)
    ev.pauses += 1
    time.sleep(rng.uniform(0.5, 1.0))


def mc_collector_pause(root: Path, rng: random.Random, runs: int) -> Tally:
    """3 collectors; one is paused (SIGSTOP: a VM or a process that stops being scheduled)
    at a random point for 3.5-6 s, longer than the agent's ack timeout, then resumed: it
    finishes what it was doing (a transaction, acks) while the agent already resent its
    batches to the others."""
    return _runs(root, rng, runs, 3, _pause_one)


def _kill_all(fleet: Fleet, rng: random.Random, ev: _Counters, _a: set[int]) -> None:
    time.sleep(rng.uniform(0.2, 1.5))  # the injection point
    procs = list(fleet.running_collectors().values())
    for proc in procs:  # all at once (a power cut of the head-end's machines)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
    for proc in procs:
        proc.kill(signal.SIGKILL)  # reaps
    ev.held += len(_in_flight(fleet))  # nobody is left to store what was in flight
    ev.kills += len(procs)
    time.sleep(rng.uniform(0.0, 1.0))
    fleet.start_collectors()
    time.sleep(rng.uniform(0.2, 1.0))


def mc_all_kill(root: Path, rng: random.Random, runs: int) -> Tally:
    """2 collectors, both SIGKILLed at once at a random point mid-ingest, restarted."""
    return _runs(root, rng, runs, 2, _kill_all)


def _broker_kill(fleet: Fleet, rng: random.Random, ev: _Counters, _a: set[int]) -> None:
    broker = fleet.broker
    assert broker is not None
    time.sleep(rng.uniform(0.2, 1.5))  # the injection point
    broker.kill()
    time.sleep(rng.uniform(0.0, 1.0))
    broker.start()  # same port, same persistence folder
    time.sleep(rng.uniform(0.5, 1.5))


def mc_broker_kill(root: Path, rng: random.Random, runs: int) -> Tally:
    """3 collectors; mosquitto SIGKILLed at a random point and restarted with its
    persistence folder; agent and collectors reconnect."""
    return _runs(root, rng, runs, 3, _broker_kill)


def _agent_kill(fleet: Fleet, rng: random.Random, ev: _Counters, _a: set[int]) -> None:
    assert fleet.agent is not None
    time.sleep(rng.uniform(0.05, 1.5))  # the injection point
    fleet.agent.kill(signal.SIGKILL)


def mc_agent_kill(root: Path, rng: random.Random, runs: int) -> Tally:
    """3 collectors ingesting; the agent SIGKILLed at a random point (batches in flight, some
    of them being stored by each collector)."""
    return _runs(root, rng, runs, 3, _agent_kill)


def _pg_restart(fleet: Fleet, rng: random.Random, ev: _Counters, abandoned: set[int]) -> None:
    time.sleep(rng.uniform(0.2, 1.5))  # the injection point
    fleet.restart_postgres()
    back = time.monotonic()
    stored = _max_seq(fleet)

    def storing_again() -> bool:
        # a collector that exited is restarted as systemd would; one that neither exits nor
        # reconnects leaves the seqs unstored and this times out
        _supervise(fleet, ev, abandoned)
        return _max_seq(fleet) >= stored + 20

    wait_for(
        storing_again,
        60,
        "collectors storing again after the PostgreSQL restart (a collector that neither "
        "reconnects nor exits stops acking for good)",
    )
    ev.recover_s.append(time.monotonic() - back)
    time.sleep(rng.uniform(0.2, 1.0))


def mc_pg_restart(root: Path, rng: random.Random, runs: int) -> Tally:
    """2 collectors ingesting; PostgreSQL stopped (fast shutdown: sessions ended, open
    transactions rolled back) and started again on the same data folder."""
    return _runs(root, rng, runs, 2, _pg_restart)


__all__ = [
    "mc_agent_kill",
    "mc_all_kill",
    "mc_broker_kill",
    "mc_collector_kill",
    "mc_collector_lost",
    "mc_collector_lost_expiry",
    "mc_collector_pause",
    "mc_pg_restart",
]
