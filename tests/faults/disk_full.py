"""Fault 5: gateway disk full.

* ``disk_drop_oldest`` / ``disk_stop_capture``: a size-limited buffer (max_records = 30) while
  the broker is down: the policy applies, the agent keeps running; drop-oldest records every
  dropped seq in ``losses`` (counted, in the retained status ``dropped``) and publishes loss
  events on the events topic whose seq ranges must be exactly the ``losses`` rows;
  stop-capture counts each refused capture as a read error (no seq assigned, so no gap) and
  publishes a ``refused`` event with the running total.
* ``disk_tmpfs``: the agent's state dir on a real 512 KiB tmpfs (needs root and mount): the
  buffer caps its database below the filesystem's space, so SQLITE_FULL comes from the cap
  while deletes and the WAL still fit; the writer applies drop-oldest (losses 'disk full:
  drop-oldest'), the agent keeps running, and once the broker is back the SAME agent (its
  buffer still full) delivers what it holds; the loss events match ``losses``.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from meterlink.procs import wait_for
from tests.support.fleet import Fleet

from .common import check_run, drain, fleet_for
from .events_spy import EventSpy
from .reconcile import Tally


def _losses(fleet: Fleet) -> set[int]:
    con = sqlite3.connect(f"file:{fleet.agent_buffer}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT first_seq, last_seq FROM losses").fetchall()
    finally:
        con.close()
    return {s for lo, hi in rows for s in range(lo, hi + 1)}


def _check_events(fleet: Fleet, spy: EventSpy, total: Tally) -> None:
    """The loss events received upstream name exactly the seqs in the agent's ``losses``."""
    lost = _losses(fleet)
    wait_for(lambda: spy.dropped_seqs() >= lost, 30, "loss events for every dropped seq")
    reported = spy.dropped_seqs()
    if reported != lost or spy.bad:
        raise AssertionError(
            f"loss events: {len(lost - reported)} dropped seqs not reported, "
            f"{len(reported - lost)} reported but not dropped, {len(spy.bad)} unparsable"
        )


def _limited(root: Path, rng: random.Random, runs: int, policy: str) -> Tally:
    fleet = fleet_for(root, max_records=30, when_full=policy)
    total = Tally()
    broker = fleet.broker
    assert broker is not None
    spy = EventSpy(broker.port, fleet.gateway)
    try:
        fleet.start_collector()
        for _ in range(runs):
            agent = fleet.start_agent()
            broker.stop()
            hours = rng.uniform(3, 5)  # 6 meters x 4 per hour: more than 30 records
            end = fleet.virtual_hours() + hours
            wait_for(lambda e=end: fleet.virtual_hours() >= e, 60, "outage over")
            if not agent.alive():
                raise AssertionError(f"agent died with a full buffer:\n{agent.output[-2000:]}")
            broker.start()
            agent.stop()
            drain(fleet)
            check_run(fleet, total)
            if policy == "drop-oldest":
                _check_events(fleet, spy, total)
            else:
                wait_for(lambda: spy.refused() >= 1, 30, "a refused-captures event")
        status = fleet.query("SELECT dropped FROM gateway_status WHERE gateway_id = ?",
                             fleet.gateway)  # fmt: skip
        total.notes.append(
            f"retained status at the head-end: dropped={status[0][0] if status else None}; "
            f"{len(spy.events)} loss events: {len(spy.dropped_seqs())} dropped seqs named, "
            f"{spy.refused()} refused captures"
        )
    finally:
        spy.close()
        fleet.close()
    return total


def disk_drop_oldest(root: Path, rng: random.Random, runs: int) -> Tally:
    return _limited(root, rng, runs, "drop-oldest")


def disk_stop_capture(root: Path, rng: random.Random, runs: int) -> Tally:
    return _limited(root, rng, runs, "stop-capture")


def tmpfs_available(probe: Path) -> bool:
    probe.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0  # fmt: skip
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    return ok


def disk_tmpfs(root: Path, rng: random.Random, runs: int) -> Tally:
    total = Tally()
    if not tmpfs_available(root / "probe"):
        total.notes.append("mount -t tmpfs not permitted here: skipped")
        return total
    fleet = fleet_for(root, interval="1m")
    state = fleet.agent_config.parent / "state"
    keys = root / "keys-saved"
    shutil.copytree(state / "keys", keys)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(state)], check=True)
    shutil.copytree(keys, state / "keys")
    (state / "keys" / "gateway.key").chmod(0o600)
    broker = fleet.broker
    assert broker is not None
    spy = EventSpy(broker.port, fleet.gateway)
    delivered_full = 0
    try:
        fleet.start_collector()
        for _ in range(runs):
            agent = fleet.start_agent()
            broker.stop()
            wait_for(lambda a=agent: "disk full" in a.output or not a.alive(), 120, "disk full")
            time.sleep(rng.uniform(0.5, 2.0))  # keep capturing on a full disk for a while
            if not agent.alive():
                raise AssertionError(f"agent died on a full disk:\n{agent.output[-2000:]}")
            before = fleet.stored_records()
            broker.start()
            # the same agent, its buffer at the cap, must deliver what it holds
            wait_for(lambda b=before: fleet.stored_records() > b + 50, 60, "delivery when full")
            delivered_full += fleet.stored_records() - before
            if not agent.alive():
                raise AssertionError(f"agent died on a full disk:\n{agent.output[-2000:]}")
            agent.stop()
            drain(fleet)
            check_run(fleet, total)
            _check_events(fleet, spy, total)
        full_lines = [line for line in agent.output.splitlines() if "disk full" in line]
        total.notes.append(
            f"{len(full_lines)} 'disk full' log lines; {delivered_full} records delivered by the "
            f"agent with its buffer at the cap; {len(spy.events)} loss events naming "
            f"{len(spy.dropped_seqs())} dropped seqs"
        )
    finally:
        spy.close()
        fleet.close()
        subprocess.run(["umount", "-l", str(state)], check=False)
    return total
