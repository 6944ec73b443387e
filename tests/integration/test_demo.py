"""`meterlink demo` as a user runs it: a whole month, counts that add up, a bill per account,
and no process left behind, also when interrupted with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from meterlink.procs import Proc, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> set[int]:
    """PIDs whose parent is ``pid`` (the demo starts its children in their own sessions)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_runs_a_month_and_prints_a_bill_per_account(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "meterlink", "demo", "--out", str(out),
         "--duration", "15", "--interval", "1h", "--setup-seconds", "4"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout
    assert "every captured record is stored once, rejected or still buffered: yes" in text
    accounts = tomllib.loads((REPO / "config/accounts/demo.toml").read_text())["account"]
    for account in accounts:
        assert f"Bill for account {account['id']}" in text
    assert text.count("Total ") == len(accounts)
    assert "[TO DATE]" not in text  # the whole month was captured
    assert (out / "report.md").exists()
    pages = sorted(p.name for p in (out / "bills").glob("*.html"))
    assert pages == sorted(f"{a['id']}-2026-11.html" for a in accounts)  # printable bills
    assert (out / "collector" / "collector.sqlite").exists()
    for name in ("sim", "agent", "collector"):
        assert (out / "logs" / f"{name}.log").exists()


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    demo = Proc(
        [sys.executable, "-m", "meterlink", "demo", "--out", str(tmp_path / "demo"),
         "--duration", "60", "--setup-seconds", "3"],
        "demo", cwd=tmp_path,
    )  # fmt: skip
    try:
        demo.wait_line(lambda line: "captured" in line and "records" in line, timeout=60)
        children = children_of(demo.popen.pid)
        assert len(children) >= 4  # mosquitto, simulators, collector, agent
        os.kill(demo.popen.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
        assert demo.popen.wait(timeout=60) == 130
        assert "interrupted: stopping every process" in demo.output
        wait_for(lambda: not any(alive(pid) for pid in children), 10, "children to exit")
    finally:
        demo.stop()
