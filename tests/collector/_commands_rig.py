"""A running fleet of one for the command tests: mosquitto, ``sim dlms``, the agent and the
collector as processes, keys made and trusted as an operator would (CLI), real clocks."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

from collector.web.auth import new_token
from meterlink.broker import Mosquitto
from meterlink.notify import NotifySocket
from meterlink.procs import Proc, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
GATEWAY = "gw-cmd"
METER = "dl-cmd"
OFFSET_S = 300  # the simulated meter's clock runs 5 minutes ahead
OP_TOKEN, READ_TOKEN = new_token(), new_token()  # (token, sha256) for [http]
PASSWORD = "lls-cmd-4711"  # set-clock needs an association with write access (LLS)


def meterlink(*args: str, name: str, cwd: Path, **kw: object) -> Proc:
    return Proc([sys.executable, "-m", "meterlink", *args], name, cwd=cwd, **kw)  # type: ignore[arg-type]


def one_shot(*args: str, cwd: Path, timeout: float = 120) -> tuple[int, str]:
    proc = meterlink(*args, name=args[1] if len(args) > 1 else args[0], cwd=cwd)
    code = proc.popen.wait(timeout=timeout)
    proc.stop()
    return code, proc.output


def agent_toml(broker_port: int, meters: list[tuple[str, str, int]], interval: str = "1h") -> str:
    text = (
        f'[gateway]\nid = "{GATEWAY}"\nstate_dir = "state"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n\n'
    )
    for meter_id, host, port in meters:
        text += (
            f'[[meters]]\nid = "{meter_id}"\ndriver = "dlms"\nhost = "{host}"\nport = {port}\n'
            'objects = ["1-0:1.8.0", "1-0:32.7.0"]\n'
            f'interval = "{interval}"\ntimeout = "2s"\nretries = 0\nclock_limit = "1h"\n'
            'load_profile = "1-0:99.1.0"\nbackfill_limit = "30m"\n'
            'auth = "lls"\nclient_address = 17\nsecrets = "secrets.toml"\n\n'
        )
    return text


@dataclass
class Rig:
    root: Path
    broker: Mosquitto
    sim_host: str = ""
    sim_port: int = 0
    http_port: int = 0  # > 0: the collector serves [http] (tokens OP_TOKEN, READ_TOKEN)
    procs: list[Proc] = field(default_factory=list)
    sockets: list[NotifySocket] = field(default_factory=list)

    @property
    def collector_toml(self) -> Path:
        return self.root / "collector" / "collector.toml"

    @property
    def agent_toml(self) -> Path:
        return self.root / "agent" / "agent.toml"

    @property
    def db(self) -> Path:
        return self.root / "collector" / "collector.sqlite"

    @property
    def keys_dir(self) -> Path:
        return self.root / "agent" / "state" / "keys"

    def start(self) -> Rig:
        sim = meterlink(
            "sim", "dlms", "--port", "0", "--meter-id", METER, "--clock-offset", str(OFFSET_S),
            "--auth", "lls", "--password", PASSWORD,
            name="sim", cwd=self.root, log_path=self.root / "sim.log",
        )  # fmt: skip
        self.procs.append(sim)
        line = sim.wait_line(lambda t: t.startswith("READY dlms"))
        host, _, port = line.split()[2].rpartition(":")
        self.sim_host, self.sim_port = host, int(port)
        (self.root / "collector").mkdir()
        self.collector_toml.write_text(
            '[collector]\ndatabase = "collector.sqlite"\nid = "c-cmd"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.broker.port}\n\n'
            '[commands]\nexpiry = "2m"\nreply_timeout = "60s"\nkey_grace = "1h"\n'
        )
        if self.http_port:
            users = self.root / "collector" / "users.toml"
            users.write_text(
                f'[[token]]\nname = "ops"\nrole = "operator"\nsha256 = "{OP_TOKEN[1]}"\n\n'
                f'[[token]]\nname = "viewer"\nrole = "read-only"\nsha256 = "{READ_TOKEN[1]}"\n'
            )
            os.chmod(users, 0o600)
            with self.collector_toml.open("a") as f:
                f.write(f'\n[http]\nport = {self.http_port}\nusers = "users.toml"\n')
        self.agent_toml.parent.mkdir()
        self.agent_toml.write_text(agent_toml(self.broker.port, [(METER, host, int(port))]))
        secrets = self.agent_toml.parent / "secrets.toml"
        secrets.write_text(f'[meters.{METER}]\npassword = "{PASSWORD}"\n')
        os.chmod(secrets, 0o600)
        for args in (
            ("agent", "keys", "init", "--config", str(self.agent_toml)),
            ("collector", "keys", "init", "--config", str(self.collector_toml)),
            ("collector", "enrol", GATEWAY, "--public-key", str(self.keys_dir / "gateway.pub"),
             "--meters", METER, "--config", str(self.collector_toml)),
        ):  # fmt: skip
            code, out = one_shot(*args, cwd=self.root)
            assert code == 0, out
        # the operator installs the head-end's public command key on the gateway
        shutil.copy(self.root / "collector" / "command.pub", self.keys_dir / "headend-command.pub")
        for name, args in (
            ("collector", ("collector", "run", str(self.collector_toml))),
            ("agent", ("agent", "run", str(self.agent_toml))),
        ):
            sock = NotifySocket()
            self.sockets.append(sock)
            proc = meterlink(*args, name=name, cwd=self.root, env=sock.env,
                             log_path=self.root / f"{name}.log")  # fmt: skip
            self.procs.append(proc)
            sock.wait_for("READY", timeout=30, alive=proc.alive)
        # The agent subscribes to its commands before it publishes its online status on the
        # same connection: once the collector stored that status, a command reaches it (a
        # gateway's first session does not exist before it connected once).
        wait_for(
            lambda: (
                self.db.exists()
                and self.query("SELECT state FROM gateway_status WHERE gateway_id = ?", (GATEWAY,))
                == [("online",)]
            ),
            timeout=30,
            what="the gateway online at the head-end",
        )
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=20)
        self.procs.clear()
        for sock in self.sockets:
            sock.close()

    def agent(self) -> Proc:
        return next(p for p in self.procs if p.name == "agent")

    def command(self, *args: str, timeout: str = "60s") -> tuple[int, dict]:
        """``collector command GATEWAY ...`` with --json: exit code and the stored command."""
        action, *rest = args
        code, out = one_shot(
            "collector", "command", GATEWAY, action, *rest, "--json", "--timeout", timeout,
            "--config", str(self.collector_toml), cwd=self.root,
        )  # fmt: skip
        start = out.find("{")
        assert start >= 0, out
        return code, json.loads(out[start : out.rindex("}") + 1])

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()


def start_rig(root: Path, http: bool = False) -> Rig:
    broker = Mosquitto(root / "broker").start()
    rig = Rig(root, broker, http_port=free_port() if http else 0)
    try:
        return rig.start()
    except BaseException:
        rig.stop()
        broker.stop()
        raise


def stop_rig(rig: Rig) -> None:
    try:
        rig.stop()
    finally:
        rig.broker.stop()


__all__ = [
    "GATEWAY", "METER", "OFFSET_S", "OP_TOKEN", "READ_TOKEN", "Rig", "agent_toml", "free_port",
    "one_shot", "start_rig", "stop_rig",
]  # fmt: skip
