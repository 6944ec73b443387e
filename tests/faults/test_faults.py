"""The short version of the fault matrix (the long one: python -m tests.faults.run)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from .registry import FAULTS

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("METERLINK_FAULT_SEED", "20260601"))
SHORT = [name for name, (_fn, runs, _long) in FAULTS.items() if runs]


@pytest.mark.parametrize("name", SHORT)
def test_fault_loses_duplicates_and_alters_nothing(name: str, tmp_path: Path) -> None:
    fn, runs, _long = FAULTS[name]
    tally = fn(tmp_path, random.Random(f"{SEED}:{name}"), runs)
    print(f"{name} seed {SEED}: {tally}")
    skipped = [n for n in tally.notes if "skipped" in n]
    if skipped and not tally.runs:
        pytest.skip(skipped[0])
    assert tally.lost == 0 and tally.twice == 0 and tally.altered == 0, tally.notes
    assert tally.runs == runs or "skipped" in " ".join(tally.notes)
    if name.startswith("disk_drop") or name == "disk_tmpfs":
        assert tally.dropped > 0 or "skipped" in " ".join(tally.notes)
    if name == "disk_stop_capture":
        assert tally.read_errors > 0
    if name == "clock_back":
        assert tally.clock_suspect > 0
    if name in ("mc_collector_kill", "mc_collector_lost"):
        # the killed collector held unacked batches (else the run tested nothing)
        assert tally.held > 0, tally.notes
    if name == "mc_collector_lost":
        # and nobody but the agent's resend could get them stored
        assert tally.resent > 0, tally.notes
