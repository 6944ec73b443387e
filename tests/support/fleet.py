"""A whole system on loopback for integration tests: mosquitto, simulated meters, the real
collector(s) and the real agent as processes, on one accelerated virtual clock.

The head-end is one collector on a SQLite file (the default), or ``collectors`` collector
processes (each its own ``[collector] id``, one ``[mqtt] group``: the broker's shared
subscription spreads the batches) on one PostgreSQL database (``postgres=``: a database of its
own on that server, made at ``setup()``).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg

from meterlink.broker import Mosquitto
from meterlink.notify import NotifySocket
from meterlink.postgres import PostgresCluster
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.record import decode_record

REPO = Path(__file__).resolve().parents[2]
GATEWAY = "gw-it-01"
START = datetime(2026, 11, 1, tzinfo=UTC)
_databases = itertools.count(1)


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


def modbus_meter_lines(meter: dict, interval: str) -> list[str]:
    """The agent config's ``[[meters]]`` table of one simulated Modbus TCP meter."""
    return [
        "", "[[meters]]", f'id = "{meter["id"]}"', 'driver = "modbus-tcp"',
        f'host = "{meter["host"]}"', f"port = {meter['port']}", f"unit = {meter['unit']}",
        f'profile = "{meter["profile"]}"', f'interval = "{interval}"', 'timeout = "1s"',
        "retries = 2",
    ]  # fmt: skip


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
    collectors: int = 1  # collector processes (more than one: give ``postgres``)
    postgres: PostgresCluster | None = None  # the head-end on a new database of this server
    own_postgres: bool = False  # close() stops ``postgres`` too
    collector_mqtt: tuple[str, ...] = ()  # more lines for the collectors' [mqtt] section
    database_url: str | None = None  # set by setup() with ``postgres``
    broker: Mosquitto | None = None
    sim: Proc | None = None
    agent: Proc | None = None
    collector: Proc | None = None
    clock: ClockSetting | None = None
    meters: list[dict[str, str]] = field(default_factory=list)
    collector_procs: dict[int, Proc] = field(default_factory=dict)  # by collector index
    collector_count: int = 0  # configs written: indexes 0..count-1 (replacements included)
    _sockets: list[NotifySocket] = field(default_factory=list)
    _procs: list[Proc] = field(default_factory=list)

    # -- set-up ----------------------------------------------------------------------------

    def setup(self) -> Fleet:
        if self.collectors > 1 and self.postgres is None:
            raise ValueError("several collectors share one PostgreSQL database: give postgres=")
        if self.postgres is not None:
            self.database_url = self.postgres.create_database(
                f"fleet_{os.getpid()}_{next(_databases)}"
            )
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
        for _ in range(self.collectors):
            self.add_collector()
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
        return self.collector_config_of(0)

    def collector_config_of(self, index: int) -> Path:
        """Collector ``index``'s config (index 0: ``collector/collector.toml``, as always)."""
        name = "collector.toml" if index == 0 else f"collector-{index + 1}.toml"
        return self.root / "collector" / name

    def collector_id(self, index: int) -> str:
        return "collector-it" if self.postgres is None else f"collector-it-{index + 1}"

    @property
    def head_end(self) -> Path | str:
        """Where the collectors store: the SQLite file, or the PostgreSQL database's URL."""
        return self.database_url or self.collector_db

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
            lines += modbus_meter_lines(m, self.interval)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("\n".join(lines) + "\n")

    def add_collector(self) -> int:
        """Write the config of one more collector (a new ``[collector] id``, the same group and
        database); returns its index for ``start_collector``."""
        index = self.collector_count
        self.collector_count += 1
        if index == 0:
            self._write_collector_config()  # subclasses extend the first collector's config
        else:
            self._write_collector_config_of(index)
        return index

    def _write_collector_config(self) -> None:
        self._write_collector_config_of(0)

    def _write_collector_config_of(self, index: int) -> None:
        assert self.broker is not None
        config = self.collector_config_of(index)
        config.parent.mkdir(parents=True, exist_ok=True)
        database = self.database_url or "collector.sqlite"
        config.write_text(
            "[collector]\n"
            f'database = "{database}"\n'
            f'id = "{self.collector_id(index)}"\n\n'
            "[mqtt]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.broker.port}\n"
            'group = "collectors"\n' + "".join(f"{line}\n" for line in self.collector_mqtt)
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

    def start_collector(self, index: int = 0) -> Proc:
        """Start collector ``index`` (its config and id; the same id again after a kill: the
        broker hands it its session back) and wait for READY (subscribed)."""
        proc = self._start_ready(
            "collector" if index == 0 else f"collector{index + 1}",
            "collector",
            "run",
            str(self.collector_config_of(index)),
            "--clock",
            str(self.clock),
            env=self.collector_env,
        )
        self.collector_procs[index] = proc
        if index == 0:
            self.collector = proc
        return proc

    def start_collectors(self) -> list[Proc]:
        """Start every configured collector that is not running."""
        return [
            self.start_collector(i)
            for i in range(self.collector_count)
            if i not in self.collector_procs or not self.collector_procs[i].alive()
        ]

    def running_collectors(self) -> dict[int, Proc]:
        return {i: p for i, p in self.collector_procs.items() if p.alive()}

    def restart_postgres(self) -> None:
        """PostgreSQL fast shutdown (SIGINT to the postmaster: sessions ended, transactions
        rolled back) and a start on the same data folder and port."""
        cluster = self.postgres
        assert cluster is not None and cluster.proc is not None
        old = cluster.proc
        os.kill(old.popen.pid, signal.SIGINT)  # the postmaster only
        old.popen.wait(timeout=60)
        # the same command line; as the same account (the server refuses root)
        user = "postgres" if os.geteuid() == 0 else None
        cluster.proc = Proc(old.args, "postgres", user=user)
        cluster.proc.wait_line(lambda line: "ready to accept connections" in line, 60)

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
        if self.own_postgres and self.postgres is not None:
            self.postgres.stop()

    # -- observation -----------------------------------------------------------------------

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Read the head-end's database (read-only, while collectors may be writing)."""
        if self.database_url is not None:
            return pg_query(self.database_url, sql, *params)
        if not self.collector_db.exists():
            return []
        con = sqlite3.connect(f"file:{self.collector_db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def stored_records(self) -> int:
        return self.query("SELECT count(*) FROM records WHERE gateway_id = ?", self.gateway)[0][0]

    def stored_seqs(self) -> set[int]:
        return {s for (s,) in self.query("SELECT seq FROM records WHERE gateway_id = ?",
                                         self.gateway)}  # fmt: skip

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


def pg_query(url: str, sql: str, *params: object) -> list[tuple]:
    """Run one read query (``?`` placeholders, as for SQLite) on the PostgreSQL database."""
    with psycopg.connect(url, autocommit=True) as con:
        rows = con.execute(sql.replace("?", "%s"), params).fetchall()  # type: ignore[arg-type]
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
