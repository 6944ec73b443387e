"""What every benchmark prints about where it ran, and small measuring helpers."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Mapping

__all__ = [
    "cpu_model",
    "cpu_seconds",
    "pin_self",
    "print_header",
    "print_summary",
    "rss_kb",
    "split_cores",
]

SUMMARY_PREFIX = "SUMMARY "


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_header(title: str, params: Mapping[str, object]) -> None:
    print(f"== {title}")
    print(
        f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} "
        f"python={platform.python_version()} sqlite={sqlite3.sqlite_version} "
        f"date={time.strftime('%Y-%m-%d %H:%M:%S %Z')} "
        f"loadavg={' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("parameters: " + " ".join(f"{k}={v}" for k, v in params.items()))
    sys.stdout.flush()


def print_summary(name: str, figures: Mapping[str, object]) -> None:
    """One machine-readable line for ``run_all`` (the human-readable lines come before)."""
    print(SUMMARY_PREFIX + json.dumps({"bench": name, **figures}, sort_keys=True))
    sys.stdout.flush()


def rss_kb(pid: int | str = "self", field: str = "VmHWM") -> int:
    """``VmHWM`` (peak resident set) or ``VmRSS`` of a process, in KiB; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def split_cores() -> tuple[set[int], set[int]] | None:
    """Two disjoint one-core sets (publisher side, head-end side), or None on one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return {cores[0]}, {cores[1]}


def pin_self(cores: set[int] | None) -> None:
    """Pin this process (and the children it starts from now on) to ``cores``."""
    if cores:
        os.sched_setaffinity(0, cores)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process (all its threads) so far; 0.0 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS
