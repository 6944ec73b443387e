"""A whole system on loopback for integration tests: mosquitto, simulated meters, the real
collector and the real agent as processes, on one accelerated virtual clock."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from meterlink.broker import Mosquitto
from meterlink.notify import NotifySocket
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.record import decode_record

REPO = Path(__file__).resolve().parents[2]
GATEWAY = "gw-it-01"
START = datetime(2026, 11, 1, tzinfo=UTC)


def meterlink(*args: str, cwd: Path) -> str:
    """Run a one-shot ``meterlink`` command; fail the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "meterlink", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"meterlink {' '.join(args)}:\n{result.stderr}{result.stdout}"
    return result.stdout


@dataclass
class Fleet:
    """Configure with ``Fleet(tmp_path).setup()``; always ``close()`` (the fixture does)."""

    root: Path
    speed: int = 3600  # one virtual hour per real second: 15-minute slots every 0.25 s
    head_start: float = 3.0  # real seconds the clock stands while the processes start
    gateway: str = GATEWAY
    batch_max_records: int = 20
    ack_timeout: str = "3s"
    max_records: int = 100000
    when_full: str = "drop-oldest"
    interval: str = "15m"
    agent_env: dict[str, str] = field(default_factory=dict)
    collector_env: dict[str, str] = field(default_factory=dict)
    broker: Mosquitto | None = None
    sim: Proc | None = None
    agent: Proc | None = None
    collector: Proc | None = None
    clock: ClockSetting | None = None
    meters: list[dict[str, str]] = field(default_factory=list)
    _sockets: list[NotifySocket] = field(default_factory=list)
    _procs: list[Proc] = field(default_factory=list)

    # -- set-up ----------------------------------------------------------------------------

    def setup(self) -> Fleet:
        self.clock = ClockSetting.accelerated(
            START, time.time_ns() + int(self.head_start * 1e9), Decimal(self.speed)
        )
        self.broker = Mosquitto(self.root / "broker").start()
        scenario = str(REPO / "config/scenarios/demo.toml")
        self.sim = self._spawn("sim", "sim", "run", scenario, "--clock", str(self.clock))
        for line in self.sim.wait_lines(lambda t: t.startswith("READY modbus"), 2, 30):
            words = line.split()
            host, _, port = words[2].rpartition(":")
            fields = dict(w.split("=", 1) for w in words[3:])
            for unit, meter in zip(
                fields["units"].split(","), fields["meters"].split(","), strict=True
            ):
                self.meters.append(
                    {"id": meter, "host": host, "port": port, "unit": unit,
                     "profile": fields["profile"]}
                )  # fmt: skip
        self._write_collector_config()
        self.add_gateway(self.gateway, self.agent_config)
        return self

    def add_gateway(self, gateway: str, config: Path, extra_meters: tuple[str, ...] = ()) -> Path:
        """Write an agent config for ``gateway`` polling every meter, make its key, enrol it
        (bound to every simulated meter and to ``extra_meters``)."""
        self._write_agent_config(gateway, config)
        meterlink("agent", "keys", "init", "--config", str(config), cwd=self.root)
        meterlink(
            "collector", "enrol", gateway,
            "--public-key", str(config.parent / "state/keys/gateway.pub"),
            "--meters", ",".join([m["id"] for m in self.meters] + list(extra_meters)),
            "--config", str(self.collector_config),
            cwd=self.root,
        )  # fmt: skip
        return config

    @property
    def agent_config(self) -> Path:
        return self.root / "agent" / "agent.toml"

    @property
    def agent_buffer(self) -> Path:
        return self.root / "agent" / "state" / "buffer.sqlite"

    @property
    def collector_config(self) -> Path:
        return self.root / "collector" / "collector.toml"

    @property
    def collector_db(self) -> Path:
        return self.root / "collector" / "collector.sqlite"

    def _write_agent_config(self, gateway: str, config: Path) -> None:
        assert self.broker is not None
        lines = [
            "[gateway]", f'id = "{gateway}"', 'state_dir = "state"', "",
            "[mqtt]", 'host = "127.0.0.1"', f"port = {self.broker.port}",
            f"batch_max_records = {self.batch_max_records}",
            f'ack_timeout = "{self.ack_timeout}"', "",
            "[buffer]", f"max_records = {self.max_records}",
            f'when_full = "{self.when_full}"',
        ]  # fmt: skip
        for m in self.meters:
            lines += [
                "", "[[meters]]", f'id = "{m["id"]}"', 'driver = "modbus-tcp"',
                f'host = "{m["host"]}"', f"port = {m['port']}", f"unit = {m['unit']}",
                f'profile = "{m["profile"]}"', f'interval = "{self.interval}"', 'timeout = "1s"',
                "retries = 2",
            ]  # fmt: skip
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("\n".join(lines) + "\n")

    def _write_collector_config(self) -> None:
        assert self.broker is not None
        self.collector_config.parent.mkdir(parents=True, exist_ok=True)
        self.collector_config.write_text(
            "[collector]\n"
            'database = "collector.sqlite"\n'
            'id = "collector-it"\n\n'
            "[mqtt]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.broker.port}\n"
            'group = "collectors"\n'
        )

    # -- processes -------------------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        *args: str,
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        proc = Proc(
            [sys.executable, "-m", "meterlink", *args],
            name,
            cwd=self.root,
            env={**(notify.env if notify else {}), **(env or {})},
            log_path=self.root / f"{name}.log",
        )
        self._procs.append(proc)
        return proc

    def _start_ready(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        sock = NotifySocket()
        self._sockets.append(sock)
        proc = self._spawn(name, *args, notify=sock, env=env)
        try:
            sock.wait_for("READY", timeout=30, alive=proc.alive)
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{name} did not become ready: {exc}\n{proc.output}") from None
        return proc

    def start_collector(self) -> Proc:
        self.collector = self._start_ready(
            "collector",
            "collector",
            "run",
            str(self.collector_config),
            "--clock",
            str(self.clock),
            env=self.collector_env,
        )
        return self.collector

    def start_agent(
        self,
        until_hours: float | None = None,
        *,
        config: Path | None = None,
        clock: ClockSetting | None = None,
        env: dict[str, str] | None = None,
        drain_timeout: float = 60,
        name: str = "agent",
    ) -> Proc:
        """Start an agent (this fleet's, or the one of ``config``); ``clock`` overrides the
        fleet's clock setting (a gateway whose clock was stepped)."""
        config = config or self.agent_config
        clock = clock or self.clock
        args = ["agent", "run", str(config), "--clock", str(clock)]
        if until_hours is not None:
            until = START + timedelta(hours=until_hours)
            args += ["--until", until.isoformat(), "--drain-timeout", str(drain_timeout)]
        proc = self._start_ready(name, *args, env={**self.agent_env, **(env or {})})
        if config == self.agent_config:
            self.agent = proc
        return proc

    def virtual_hours(self) -> float:
        """Virtual hours since the fleet's clock started."""
        assert self.clock is not None and self.clock.start_ns is not None
        return (self.clock.virtual_ns(time.time_ns()) - self.clock.start_ns) / 3.6e12

    def close(self) -> None:
        for proc in reversed(self._procs):
            proc.stop(timeout=20)
        if self.broker is not None:
            self.broker.stop()
        for sock in self._sockets:
            sock.close()

    # -- observation -----------------------------------------------------------------------

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Read the collector's database (read-only, while the collector may be writing)."""
        if not self.collector_db.exists():
            return []
        con = sqlite3.connect(f"file:{self.collector_db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def stored_records(self) -> int:
        return self.query("SELECT count(*) FROM records WHERE gateway_id = ?", self.gateway)[0][0]

    def agent_status(self) -> dict:
        return json.loads(meterlink("agent", "status", str(self.agent_config), "--json",
                                    cwd=self.root))  # fmt: skip

    def collector_stats(self) -> dict:
        return json.loads(
            meterlink("collector", "stats", "--config", str(self.collector_config), "--json",
                      cwd=self.root)
        )  # fmt: skip

    def assert_exactly_once(self) -> int:
        """Every record the agent captured (seq 1..last) is at the head-end exactly once, with
        exactly its own values, or still in the agent's buffer; returns the record count."""
        status = self.agent_status()
        last_seq = status["last_seq"]
        held = status["backlog"]
        seqs = [row[0] for row in self.query(
            "SELECT seq FROM records WHERE gateway_id = ? ORDER BY seq", self.gateway)]  # fmt: skip
        assert held == 0, f"{held} records still in the agent's buffer"
        assert seqs == list(range(1, last_seq + 1)), (
            f"head-end holds {len(seqs)} records for seqs 1..{last_seq}; missing: "
            f"{sorted(set(range(1, last_seq + 1)) - set(seqs))[:20]}"
        )
        # each stored record's readings are exactly its signed values, once
        expected: dict[tuple[str, str, int], Decimal] = {}
        for (raw,) in self.query("SELECT raw FROM records WHERE gateway_id = ?", self.gateway):
            signed = decode_record(raw)
            for reading in signed.readings():
                key = (reading.meter_id, str(reading.obis), reading.captured_ms)
                assert key not in expected, f"two records carry {key}"
                expected[key] = reading.value
        stored = {
            (meter, obis, ms): Decimal(value)
            for meter, obis, ms, value in self.query(
                "SELECT meter_id, obis, captured_ms, value FROM readings WHERE gateway_id = ?",
                self.gateway,
            )
        }
        assert stored == expected
        assert self.query("SELECT count(*) FROM quarantine")[0][0] == 0
        return last_seq
