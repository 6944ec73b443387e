"""The head-end side of a benchmark: a private mosquitto and the real collector process,
with a gateway key made and enrolled through the CLI, as an operator would."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from meterlink.broker import Mosquitto
from meterlink.notify import NotifySocket
from meterlink.procs import Proc

from .machine import cpu_seconds, rss_kb

__all__ = ["HeadEnd", "meterlink_cli"]


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
