"""Fault 5: gateway disk full.

* ``disk_drop_oldest`` / ``disk_stop_capture``: a size-limited buffer (max_records = 30) while
  the broker is down: the policy applies, the agent keeps running; drop-oldest records every
  dropped seq in ``losses`` (counted, in the retained status ``dropped``), stop-capture counts
  each refused capture as a read error (no seq assigned, so no gap).
* ``disk_tmpfs``: the agent's state dir on a real 512 KiB tmpfs (needs root and mount): SQLite
  reports SQLITE_FULL; the writer applies drop-oldest (losses 'disk full: drop-oldest') instead
  of retrying forever, and the agent keeps running.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

from meterlink.procs import wait_for

from .common import check_run, drain, fleet_for
from .reconcile import Tally


def _limited(root: Path, rng: random.Random, runs: int, policy: str) -> Tally:
    fleet = fleet_for(root, max_records=30, when_full=policy)
    total = Tally()
    broker = fleet.broker
    assert broker is not None
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
        status = fleet.query("SELECT dropped FROM gateway_status WHERE gateway_id = ?",
                             fleet.gateway)  # fmt: skip
        total.notes.append(
            f"retained status at the head-end: dropped={status[0][0] if status else None}"
        )
    finally:
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
    try:
        fleet.start_collector()
        for _ in range(runs):
            agent = fleet.start_agent()
            broker.stop()
            wait_for(lambda a=agent: "disk full" in a.output or not a.alive(), 120, "disk full")
            time.sleep(rng.uniform(0.5, 2.0))  # keep capturing on a full disk for a while
            if not agent.alive():
                raise AssertionError(f"agent died on a full disk:\n{agent.output[-2000:]}")
            broker.start()
            agent.stop()
            drain(fleet)
            check_run(fleet, total)
        total.notes.append("agent log: " + "; ".join(
            {line.split(" ", 3)[-1][:90] for line in agent.output.splitlines()
             if "disk full" in line}))  # fmt: skip
    finally:
        fleet.close()
        subprocess.run(["umount", "-l", str(state)], check=False)
    return total
