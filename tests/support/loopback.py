"""The set-up the end-to-end tests share: mosquitto, simulators, the real collector and the real
agent as processes in one temporary folder, stopped together.

``Fleet`` (fleet.py) writes the whole system from the demo scenario; this is the smaller piece
for tests that write their own agent config (DLMS, serial, billing): ``with loopback(tmp_path)
as lb:`` starts the broker, ``lb.spawn`` starts a process, ``lb.collector_config`` writes the
collector's config, ``lb.enrol`` makes the gateway key and enrols it, ``lb.start`` starts a
service and waits for its READY, ``query`` reads the collector's SQLite file; leaving the block
stops every process (last started first), the broker and the notify sockets."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meterlink.broker import Mosquitto
from meterlink.notify import NotifySocket
from meterlink.procs import Proc

REPO = Path(__file__).resolve().parents[2]


def meterlink_proc(*args: str, name: str, cwd: Path = REPO, **kw: Any) -> Proc:
    """``python -m meterlink ARGS`` as a process (not waited for)."""
    return Proc([sys.executable, "-m", "meterlink", *args], name, cwd=cwd, **kw)


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` on the SQLite file ``db`` opened read-only; none while it does not
    exist yet."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@dataclass
class Loopback:
    root: Path
    broker: Mosquitto
    procs: list[Proc] = field(default_factory=list)
    sockets: list[NotifySocket] = field(default_factory=list)

    @property
    def collector_db(self) -> Path:
        return self.root / "collector" / "collector.sqlite"

    def spawn(self, *args: str, name: str, cwd: Path = REPO, **kw: Any) -> Proc:
        """Start ``meterlink ARGS``; it is stopped with the rest."""
        proc = meterlink_proc(*args, name=name, cwd=cwd, **kw)
        self.procs.append(proc)
        return proc

    def collector_config(self, collector_id: str, extra: str = "") -> Path:
        """Write ``collector/collector.toml`` (database collector.sqlite, this broker, group
        "collectors") with ``extra`` appended after a blank line; its path."""
        path = self.root / "collector" / "collector.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            f'[collector]\ndatabase = "collector.sqlite"\nid = "{collector_id}"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.broker.port}\ngroup = "collectors"\n'
        )
        path.write_text(text + ("\n" + extra if extra else ""))
        return path

    def enrol(
        self, agent_toml: Path, collector_toml: Path, gateway: str, meters: Iterable[str]
    ) -> None:
        """``agent keys init`` for ``agent_toml``, then ``collector enrol`` of its public key
        bound to ``meters``; each must succeed."""
        for args in (
            ("agent", "keys", "init", "--config", str(agent_toml)),
            ("collector", "enrol", gateway, "--public-key",
             str(agent_toml.parent / "state/keys/gateway.pub"), "--meters", ",".join(meters),
             "--config", str(collector_toml)),
        ):  # fmt: skip
            one_shot = meterlink_proc(*args, name=args[0], cwd=self.root)
            assert one_shot.popen.wait(timeout=60) == 0, one_shot.output

    def start(self, name: str, *args: str) -> Proc:
        """Start a service (``collector run``, ``agent run``) in the root folder, logging to
        ``NAME.log``, and wait for its READY notification."""
        sock = NotifySocket()
        self.sockets.append(sock)
        proc = self.spawn(*args, name=name, cwd=self.root, env=sock.env,
                          log_path=self.root / f"{name}.log")  # fmt: skip
        sock.wait_for("READY", timeout=30, alive=proc.alive)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=20)
        self.broker.stop()
        for sock in self.sockets:
            sock.close()


@contextmanager
def loopback(root: Path) -> Iterator[Loopback]:
    """A broker in ``root/broker``; everything started through the yielded ``Loopback`` is
    stopped on leaving, whatever happened."""
    lb = Loopback(root, Mosquitto(root / "broker").start())
    try:
        yield lb
    finally:
        lb.close()
