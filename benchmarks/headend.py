"""The head-end side of a benchmark: a private mosquitto and the real collector process,
with a gateway key made and enrolled through the CLI, as an operator would."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from meterlink.broker import Mosquitto
from meterlink.notify import NotifySocket
from meterlink.procs import Proc

from .machine import cpu_seconds, rss_kb

__all__ = ["HeadEnd", "ScaleHeadEnd", "meterlink_cli", "tree_cpu_seconds"]


def meterlink_cli(*args: str, cwd: Path) -> str:
    """Run a one-shot ``meterlink`` command; raise with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "meterlink", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"meterlink {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result.stdout


class HeadEnd:
    """Use as a context manager: everything started is stopped on the way out.

    ``collector_core`` pins the collector process (``taskset -c``); the broker inherits the
    affinity of the benchmark process, which the caller sets before ``start``.
    """

    def __init__(
        self, workdir: Path, gateway_id: str, meters: list[str], collector_core: int | None
    ) -> None:
        self.workdir = workdir
        self.gateway_id = gateway_id
        self.meters = meters
        self.collector_core = collector_core
        self.state_dir = workdir / "agent-state"
        self.config = workdir / "collector" / "collector.toml"
        self.database = workdir / "collector" / "collector.sqlite"
        self.broker: Mosquitto | None = None
        self.collector: Proc | None = None
        self._notify: NotifySocket | None = None

    @property
    def public_key(self) -> Path:
        return self.state_dir / "keys" / "gateway.pub"

    def __enter__(self) -> HeadEnd:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        meterlink_cli("agent", "keys", "init", "--state-dir", str(self.state_dir), cwd=self.workdir)
        self.broker = Mosquitto(self.workdir / "broker").start()
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "[collector]\n"
            'database = "collector.sqlite"\n'
            'id = "collector-bench"\n\n'
            "[mqtt]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.broker.port}\n"
        )
        meterlink_cli(
            "collector", "enrol", self.gateway_id,
            "--public-key", str(self.public_key),
            "--meters", ",".join(self.meters),
            "--config", str(self.config),
            cwd=self.workdir,
        )  # fmt: skip
        self._notify = NotifySocket()
        command = [sys.executable, "-m", "meterlink", "collector", "run", str(self.config)]
        if self.collector_core is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(self.collector_core), *command]
        self.collector = Proc(
            command,
            "collector",
            cwd=self.workdir,
            env=self._notify.env,
            log_path=self.workdir / "collector.log",
        )
        self._notify.wait_for("READY", timeout=60, alive=self.collector.alive)

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()
            self.collector = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    # -- observation -------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.port

    def pids(self) -> dict[str, int]:
        out = {}
        if self.collector is not None:
            out["collector"] = self.collector.popen.pid
        if self.broker is not None and self.broker.proc is not None:
            out["mosquitto"] = self.broker.proc.popen.pid
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the collector and the broker."""
        return {name: cpu_seconds(pid) for name, pid in self.pids().items()}

    def collector_peak_rss_kb(self) -> int:
        pid = self.pids().get("collector")
        return rss_kb(pid) if pid else 0

    def transactions(self) -> int | None:
        """Transactions the collector committed, from its last log line (after ``stop``)."""
        log = self.workdir / "collector.log"
        found = None
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if "stopped after " in line:
                    found = int(line.split("stopped after ", 1)[1].split()[0])
        return found

    def stored(self) -> tuple[int, int]:
        """(records, readings) in the collector's database."""
        con = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            records = con.execute("SELECT count(*) FROM records").fetchone()[0]
            readings = con.execute("SELECT count(*) FROM readings").fetchone()[0]
        finally:
            con.close()
        return records, readings


# -- several collectors on one database (issue 9) ---------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its children: the live ones (read now) plus the ones that
    exited and were reaped (``cutime``/``cstime`` of their parent). For the PostgreSQL
    postmaster this is the whole server: backends, WAL writer, checkpointer, ..."""
    ticks = os.sysconf("SC_CLK_TCK")

    def fields(p: int | str) -> list[str] | None:
        try:
            with open(f"/proc/{p}/stat", encoding="ascii") as handle:
                return handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return None

    own = fields(pid)
    if own is None:
        return 0.0
    total = sum(int(x) for x in own[11:15])  # utime stime cutime cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            child = fields(entry)
            if child is not None and child[1] == str(pid):  # ppid
                total += sum(int(x) for x in child[11:15])
    return total / ticks


class ScaleHeadEnd:
    """A private mosquitto and ``collectors`` real collector processes (``meterlink
    collector run``: same MQTT shared-subscription group, their own ids) on one database:
    a PostgreSQL URL, or a SQLite file in ``workdir``. Nothing is pinned: on a small
    machine every process takes the cores it can get, and the figures are CPU seconds
    per process (``cpu()``). Gateways are enrolled by the caller before ``start_collectors``
    (the collectors read the registry when they start and again when it changes)."""

    def __init__(
        self,
        workdir: Path,
        database: str | Path,
        collectors: int,
        batch_coalesce: int = 50,
        extra_config: str = "",
    ) -> None:
        """``extra_config``: more TOML tables for every collector's config (e.g. ``[fleet]``)."""
        self.workdir = workdir
        self.extra_config = extra_config
        self.database = database
        self.count = collectors
        self.batch_coalesce = batch_coalesce
        self.broker: Mosquitto | None = None
        self.collectors: list[Proc] = []
        self._notify: list[NotifySocket] = []

    def __enter__(self) -> ScaleHeadEnd:
        try:
            self.broker = Mosquitto(self.workdir / "broker").start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.port

    def config_path(self, n: int) -> Path:
        return self.workdir / f"collector-{n}" / "collector.toml"

    def start_collectors(self) -> None:
        assert self.broker is not None
        procs_started = []
        for n in range(1, self.count + 1):
            config = self.config_path(n)
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(
                "[collector]\n"
                f'database = "{self.database}"\n'
                f'id = "collector-scale-{n}"\n'
                f"batch_coalesce = {self.batch_coalesce}\n\n"
                "[mqtt]\n"
                'host = "127.0.0.1"\n'
                f"port = {self.broker.port}\n"
                + (f"\n{self.extra_config}\n" if self.extra_config else "")
            )
            notify = NotifySocket()
            self._notify.append(notify)
            proc = Proc(
                [sys.executable, "-m", "meterlink", "collector", "run", str(config)],
                f"collector-{n}",
                cwd=config.parent,
                env=notify.env,
                log_path=config.parent / "collector.log",
            )
            self.collectors.append(proc)
            procs_started.append((notify, proc))
        for notify, proc in procs_started:
            notify.wait_for("READY", timeout=90, alive=proc.alive)

    def stop_collectors(self) -> None:
        for proc in self.collectors:
            proc.stop()
        self.collectors = []
        for notify in self._notify:
            notify.close()
        self._notify = []

    def stop(self) -> None:
        self.stop_collectors()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    # -- observation -----------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        out = {f"collector-{n}": p.popen.pid for n, p in enumerate(self.collectors, start=1)}
        if self.broker is not None and self.broker.proc is not None:
            out["mosquitto"] = self.broker.proc.popen.pid
        return out

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids().items()}

    def collector_peak_rss_kb(self) -> list[int]:
        return [rss_kb(p.popen.pid) for p in self.collectors]

    def logs(self) -> list[str]:
        return [
            (self.config_path(n).parent / "collector.log").read_text(errors="replace")
            if (self.config_path(n).parent / "collector.log").exists()
            else ""
            for n in range(1, self.count + 1)
        ]

    def transactions(self) -> list[int | None]:
        """Per collector, from its last log line (after ``stop_collectors``)."""
        out: list[int | None] = []
        for text in self.logs():
            found = None
            for line in text.splitlines():
                if "stopped after " in line:
                    found = int(line.split("stopped after ", 1)[1].split()[0])
            out.append(found)
        return out

    def retries(self) -> tuple[int, int]:
        """Ingest transactions rolled back and run again: (lost a race with another
        collector, made a missing ``readings`` partition first)."""
        races = partitions = 0
        for text in self.logs():
            for line in text.splitlines():
                if "running it again" in line:
                    if "partitions missing" in line:
                        partitions += 1
                    else:
                        races += 1
        return races, partitions

    def errors(self) -> list[str]:
        """Log lines at WARNING or above (a collector's trouble under load)."""
        out = []
        for n, text in enumerate(self.logs(), start=1):
            in_traceback = False
            for line in text.splitlines():
                if " WARNING " in line or " ERROR " in line:
                    out.append(f"collector-{n}: {line}")
                elif line.startswith("Traceback"):
                    in_traceback = True
                elif in_traceback and line and not line.startswith(" "):
                    out.append(f"collector-{n}:   -> {line}")  # the exception itself
                    in_traceback = False
        return out
