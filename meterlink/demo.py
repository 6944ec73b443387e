"""``meterlink demo``: a whole billing month of a small fleet in about a minute.

It starts, on loopback ports of its own choosing: a private mosquitto, the simulated meters
of ``config/scenarios/demo.toml`` (Modbus TCP servers and DLMS/COSEM meters), one agent and
one collector, all on one accelerated virtual clock (``protocols.clock``), then prints
per-meter counts and one bill per customer account, and leaves the collector's database, the
logs and a report in the output folder. Every process it starts is stopped again, also on Ctrl-C.

The demo only orchestrates: it runs the real commands (``meterlink sim``, ``agent``,
``collector``) as child processes, exactly as an operator would.

With ``--serve`` the collector also serves its web dashboard (``[http]``) and the fleet keeps
running after the billing month (the agent is started again without an end), so a new user
sees it live: the dashboard's address and an operator login (a fresh password, also written
to ``dashboard-login.txt``, mode 0600) are printed, and Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from protocols.clock import ClockSetting, format_utc_ms

from .broker import Mosquitto
from .notify import NotifySocket
from .procs import Proc

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "config" / "scenarios" / "demo.toml"
ACCOUNTS = REPO / "config" / "accounts" / "demo.toml"
TARIFFS = REPO / "config" / "tariffs"
GATEWAY = "gw-demo-01"
#: DLMS meters the demo adds to the scenario at run time (they need files of their own)
RUNTIME_DLMS_METERS = ("em-dlms-02", "em-dlms-03")
BILLING_TZ = "Europe/Amsterdam"


@dataclass(frozen=True)
class SimMeter:
    meter_id: str
    host: str
    port: int
    unit: int  # Modbus unit id; 0 for a DLMS meter
    profile: str  # Modbus register map; "" for a DLMS meter
    transport: str = ""  # DLMS: "wrapper" | "hdlc"
    serial: str = ""  # DLMS over HDLC on a serial line: the device (a pty's link)
    auth: str = "none"  # DLMS: "none" | "lls" | "hls"
    mode_e: bool = False  # DLMS on a serial line: IEC 62056-21 mode E start

    @property
    def what(self) -> str:
        if self.serial:
            start = ", mode E start" if self.mode_e else ""
            return f"DLMS/COSEM (HDLC on serial {self.serial}{start}, auth {self.auth})"
        if self.transport:
            return f"DLMS/COSEM ({self.transport} at {self.host}:{self.port}, auth {self.auth})"
        return f"{self.profile} at {self.host}:{self.port} unit {self.unit}"


def parse_ready_line(line: str) -> list[SimMeter]:
    """``READY modbus 127.0.0.1:PORT profile=NAME units=1,2 meters=A,B`` or ``READY dlms
    127.0.0.1:PORT|pty:PATH transport=T [...] auth=A meters=ID`` -> meters."""
    words = line.split()
    fields = dict(word.split("=", 1) for word in words[3:] if "=" in word)
    meters = fields["meters"].split(",")
    if words[1] == "dlms":
        auth, transport = fields.get("auth", "none"), fields["transport"]
        if words[2].startswith("pty:"):
            link, mode_e = words[2][4:], fields.get("mode_e") == "yes"
            return [SimMeter(meters[0], "", 0, 0, "", transport, link, auth, mode_e)]
        host, _, port = words[2].rpartition(":")
        return [SimMeter(meters[0], host, int(port), 0, "", transport, auth=auth)]
    host, _, port = words[2].rpartition(":")
    units = [int(u) for u in fields["units"].split(",")]
    return [
        SimMeter(meter, host, int(port), unit, fields["profile"])
        for unit, meter in zip(units, meters, strict=True)
    ]


def toml_bool(value: bool) -> str:
    return "true" if value else "false"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600 from the start, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def month_window(period: str, tz: str) -> tuple[datetime, datetime]:
    """The UTC instants at which billing month ``YYYY-MM`` starts and ends in ``tz``."""
    year, month = (int(p) for p in period.split("-"))
    zone = ZoneInfo(tz)
    start = datetime(year, month, 1, tzinfo=zone)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.out = Path(args.out or f"demo-output/{stamp}").resolve()
        self.procs: list[Proc] = []
        self.broker: Mosquitto | None = None
        self.sockets: list[NotifySocket] = []
        self.dlms_secrets: dict[str, dict[str, str]] = {}
        period_start, period_end = month_window(args.period, BILLING_TZ)
        self.period_start, self.period_end = period_start, period_end
        # a margin on both sides so that each boundary has readings around it
        self.virtual_start = period_start - timedelta(hours=12)
        self.virtual_end = period_end + timedelta(hours=2)
        span = (self.virtual_end - self.virtual_start).total_seconds()
        self.speed = Decimal(round(span / args.duration))
        self.clock: ClockSetting | None = None
        self.dashboard_url = ""  # --serve: the collector's web address, once it listens
        self.dashboard_password = ""

    # -- processes ---------------------------------------------------------------------

    def log(self, text: str) -> None:
        print(text, flush=True)

    def spawn(self, name: str, *args: str, notify: NotifySocket | None = None) -> Proc:
        env = {"METERLINK_LOG_LEVEL": "INFO", **(notify.env if notify else {})}
        proc = Proc(
            [sys.executable, "-m", "meterlink", *args],
            name,
            cwd=self.out,
            env=env,
            log_path=self.out / "logs" / f"{name}.log",
        )
        self.procs.append(proc)
        return proc

    def run_command(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "meterlink", *args],
            cwd=self.out,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`meterlink {' '.join(args)}` failed ({result.returncode}):\n"
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result.stdout

    def stop_all(self) -> None:
        # the agent first (it flushes its buffer), then the collector, the meters, the broker
        for proc in reversed(self.procs):
            if proc.alive():
                code = proc.stop(timeout=20)
                if code not in (0, -signal.SIGTERM):
                    self.log(f"  {proc.name} exited with {code} (log: logs/{proc.name}.log)")
        self.procs.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    # -- the run -----------------------------------------------------------------------

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        minutes = (self.virtual_end - self.virtual_start).total_seconds() / 60
        self.log(f"meterlink demo -> {self.out}")
        self.log(
            f"  virtual time {self.virtual_start:%Y-%m-%d %H:%M}Z .. "
            f"{self.virtual_end:%Y-%m-%d %H:%M}Z ({minutes / 1440:.1f} days) "
            f"at {self.speed}x, about {self.args.duration:.0f} s"
        )
        # everything starts with the clock standing at the start; it runs from the anchor on
        anchor_ns = time.time_ns() + int(self.args.setup_seconds * 1e9)
        self.clock = ClockSetting.accelerated(self.virtual_start, anchor_ns, self.speed)
        self.log(f"  clock setting {self.clock}")

        self.broker = Mosquitto(self.out / "broker").start()
        self.log(f"  mosquitto on 127.0.0.1:{self.broker.port}")

        scenario = self.write_scenario()
        sims = self.spawn("sim", "sim", "run", str(scenario), "--clock", str(self.clock))
        meters: list[SimMeter] = []
        ready = sims.wait_lines(lambda t: t.startswith("READY "), self.count_servers(), 30)
        for line in ready:
            meters.extend(parse_ready_line(line))
        for meter in meters:
            self.log(f"  meter {meter.meter_id:<12} {meter.what}")

        agent_config = self.write_agent_config(meters)
        collector_config = self.write_collector_config()
        self.run_command("agent", "keys", "init", "--config", str(agent_config))
        public_key = self.out / "agent" / "state" / "keys" / "gateway.pub"
        self.run_command(
            "collector", "enrol", GATEWAY,
            "--public-key", str(public_key),
            "--meters", ",".join(m.meter_id for m in meters),
            "--config", str(collector_config),
        )  # fmt: skip

        collector_ready = NotifySocket()
        self.sockets.append(collector_ready)
        collector = self.spawn(
            "collector",
            "collector",
            "run",
            str(collector_config),
            "--clock",
            str(self.clock),
            notify=collector_ready,
        )
        collector_ready.wait_for("READY", timeout=30, alive=collector.alive)
        if self.args.serve:
            line = collector.wait_line(lambda t: "http: listening on http://" in t, 30)
            self.dashboard_url = line[line.index("http://") :].split()[0].rstrip("/") + "/"

        agent_ready = NotifySocket()
        self.sockets.append(agent_ready)
        agent = self.spawn(
            "agent", "agent", "run", str(agent_config),
            "--clock", str(self.clock),
            "--until", self.virtual_end.isoformat().replace("+00:00", "Z"),
            "--progress-json", "1",
            notify=agent_ready,
        )  # fmt: skip
        agent_ready.wait_for("READY", timeout=30, alive=agent.alive)
        late = (time.time_ns() - anchor_ns) / 1e9
        if late > 0:
            self.log(f"  warning: setup took {late:.1f} s longer than the clock's head start")

        self.watch(agent, collector_config)
        code = agent.popen.wait(timeout=120)
        if code != 0:
            self.log(f"  agent exited with {code}; see logs/agent.log")
        if self.args.serve:
            # the month's report as without --serve (the agent has drained), then live again
            result = self.report(agent_config, collector_config)
            return self.serve(agent_config, result)
        self.stop_all()
        return self.report(agent_config, collector_config)

    # -- --serve -----------------------------------------------------------------------

    def http_port(self) -> int:
        """``--http-port`` if it is free on 127.0.0.1, else any free port (said so)."""
        import socket

        from .procs import free_port

        wanted = self.args.http_port
        if wanted == 0:
            return free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", wanted))
            except OSError:
                port = free_port()
                self.log(f"  port {wanted} is in use: the dashboard takes port {port}")
                return port
        return wanted

    def write_dashboard_users(self, folder: Path) -> Path:
        """A users file with one operator account and a fresh password (both 0600)."""
        from collector.web.auth import hash_password

        self.dashboard_password = secrets.token_urlsafe(12)
        users = folder / "users.toml"
        write_private(
            users,
            "# written by `meterlink demo --serve`: the dashboard's operator account\n"
            f'[[user]]\nname = "operator"\nrole = "operator"\n'
            f"password = {toml_str(hash_password(self.dashboard_password))}\n",
        )
        return users

    def serve(self, agent_config: Path, result: int) -> int:
        """Keep the fleet running (the agent again, with no end) until Ctrl-C."""
        collector_config = self.out / "collector" / "collector.toml"
        # the month's bills issued (the dashboard's bill list), and remote commands possible
        # from the dashboard: a head-end command key, its public half installed on the gateway
        self.run_command(
            "collector", "bill", "--all", "--period", self.args.period, "--issue",
            "--config", str(collector_config), "--as-of", self.virtual_end.isoformat(),
        )  # fmt: skip
        self.run_command("collector", "keys", "init", "--config", str(collector_config))
        trusted = self.out / "agent" / "state" / "keys" / "headend-command.pub"
        trusted.write_bytes((collector_config.parent / "command.pub").read_bytes())
        self.log(f"\nissued the {self.args.period} bills; the gateway trusts the command key")
        agent_ready = NotifySocket()
        self.sockets.append(agent_ready)
        agent = self.spawn(
            "agent-live", "agent", "run", str(agent_config), "--clock", str(self.clock),
            notify=agent_ready,
        )  # fmt: skip
        agent_ready.wait_for("READY", timeout=30, alive=agent.alive)
        login = self.out / "dashboard-login.txt"
        write_private(
            login,
            f"url = {self.dashboard_url}\nuser = operator\npassword = {self.dashboard_password}\n",
        )
        self.log(
            f"\ndashboard: {self.dashboard_url}\n"
            f"  log in as: operator / {self.dashboard_password}   (also in {login}, mode 0600)\n"
            f"  the fleet keeps running on the demo's clock ({self.speed}x: a virtual day every "
            f"{86400 / float(self.speed):.1f} s); logs in {self.out / 'logs'}\n"
            "  press Ctrl-C to stop every process the demo started"
        )
        watched = [proc for proc in self.procs if proc.alive()]  # not the month's agent
        try:
            while True:
                for proc in watched:
                    if not proc.alive():
                        self.log(
                            f"  {proc.name} stopped unexpectedly ({proc.popen.returncode}); "
                            f"see logs/{proc.name}.log"
                        )
                        return 1
                time.sleep(1.0)  # watching child processes, not synchronising with them
        except KeyboardInterrupt:
            self.log("\nstopping every process the demo started")
            return result

    def count_servers(self) -> int:
        import tomllib

        scenario = tomllib.loads((self.out / "sim" / "scenario.toml").read_text())
        return len(scenario.get("servers", [])) + len(scenario.get("dlms", []))

    def watch(self, agent: Proc, collector_config: Path) -> None:
        """Print progress once a second until the agent has finished its run."""
        assert self.clock is not None
        last = 0.0
        while agent.alive():
            now = time.monotonic()
            if now - last >= 1.0:
                last = now
                virtual_ms = self.clock.virtual_ns(time.time_ns()) // 1_000_000
                p = self.latest_progress(agent)
                self.log(
                    f"  {format_utc_ms(virtual_ms)[:16]}Z"
                    f"  captured {p.get('captured_records', 0):>6} records"
                    f" ({p.get('captured_readings', 0):>7} readings)"
                    f"  stored+acked {p.get('acked_records', 0):>6}"
                    f"  backlog {p.get('backlog', 0):>5}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.popen.wait(timeout=0.2)

    @staticmethod
    def latest_progress(agent: Proc) -> dict:
        for line in reversed(agent.lines[-2000:]):  # warnings may come between the lines
            if line.startswith("{") and '"captured_records"' in line:
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        return {}

    # -- configuration -----------------------------------------------------------------

    def write_scenario(self) -> Path:
        """``config/scenarios/demo.toml`` plus the DLMS meters that need files of their own:
        one on a serial line (a pty: HDLC, mode E start, LLS password) and one with
        HLS-GMAC keys. Fresh secrets every run; key files mode 0600."""
        folder = self.out / "sim"
        folder.mkdir(exist_ok=True)
        keys = {
            "authentication_key": secrets.token_hex(16),
            "encryption_key": secrets.token_hex(16),
        }
        self.dlms_secrets = {
            "em-dlms-02": {"password": secrets.token_urlsafe(12)},
            "em-dlms-03": keys,
        }
        meter_keys = folder / "em-dlms-03.keys.toml"
        write_private(
            meter_keys,
            "".join(f"{k} = {toml_str(v)}\n" for k, v in keys.items())
            + 'system_title = "4d4c4b53494d0003"\n',
        )
        password = self.dlms_secrets["em-dlms-02"]["password"]
        extra = f"""

# Added by `meterlink demo` (files of their own, written to {folder}):
[[dlms]]
meter = "em-dlms-02"
transport = "hdlc"
pty_link = {toml_str(str(folder / "ttyDLMS02"))}
mode_e = true
auth = "lls"
password = {toml_str(password)}
kind = "household"
base_load_w = 480
initial_import_kwh = "7312.9"

[[dlms]]
meter = "em-dlms-03"
port = 0
auth = "hls"
keys = {toml_str(str(meter_keys))}
kind = "commercial"
base_load_w = 2600
pv_peak_w = 9000
initial_import_kwh = "51230.0"
initial_export_kwh = "4410.7"
"""
        path = folder / "scenario.toml"
        write_private(path, SCENARIO.read_text() + extra)  # it holds the LLS password
        return path

    def half_interval(self) -> str:
        """Half the poll interval as a duration (``15m`` -> ``450s``)."""
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        text = self.args.interval.strip()
        return f"{int(text[:-1]) * units[text[-1]] // 2}s"

    def write_agent_config(self, meters: list[SimMeter]) -> Path:
        folder = self.out / "agent"
        folder.mkdir(exist_ok=True)
        assert self.broker is not None
        lines = [
            "# written by `meterlink demo`",
            "[gateway]",
            f"id = {toml_str(GATEWAY)}",
            'state_dir = "state"',
            "",
            "[mqtt]",
            'host = "127.0.0.1"',
            f"port = {self.broker.port}",
            "batch_max_records = 200",
            "max_inflight = 8",
            'ack_timeout = "10s"',
            "",
            "[buffer]",
            "max_records = 1000000",
            'when_full = "drop-oldest"',
        ]
        for meter in meters:
            lines += ["", "[[meters]]", f"id = {toml_str(meter.meter_id)}"]
            if meter.transport:
                lines += ['driver = "dlms"', f"transport = {toml_str(meter.transport)}"]
                if meter.serial:
                    lines += [
                        f"serial = {toml_str(meter.serial)}",
                        f"mode_e = {toml_bool(meter.mode_e)}",
                    ]
                else:
                    lines += [f"host = {toml_str(meter.host)}", f"port = {meter.port}"]
                if meter.auth != "none":
                    client = 17 if meter.auth == "lls" else 1  # reading / management client
                    lines += [
                        f"client_address = {client}",
                        f"auth = {toml_str('hls-gmac' if meter.auth == 'hls' else meter.auth)}",
                        'secrets = "dlms-secrets.toml"',
                    ]
                # energy comes from the load profile (the meter's own 15-minute entries);
                # the cycle reads instantaneous values. At the demo's speed a cycle spans
                # minutes of virtual time, so a register read stamped with the clock read
                # at its start would sit out of order with the profile's entries.
                lines += [
                    'objects = ["1-0:16.7.0", "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"]',
                    'load_profile = "1-0:99.1.0"',
                    'backfill_limit = "12h"',
                ]
            else:
                lines += [
                    'driver = "modbus-tcp"',
                    f"host = {toml_str(meter.host)}",
                    f"port = {meter.port}",
                    f"unit = {meter.unit}",
                    f"profile = {toml_str(meter.profile)}",
                ]
            lines += [
                f"interval = {toml_str(self.args.interval)}",
                'timeout = "2s"',
                "retries = 2",
            ]
        path = folder / "agent.toml"
        path.write_text("\n".join(lines) + "\n")
        write_private(
            folder / "dlms-secrets.toml",
            "".join(
                f"[meters.{meter}]\n" + "".join(f"{k} = {toml_str(v)}\n" for k, v in values.items())
                for meter, values in self.dlms_secrets.items()
            ),
        )
        return path

    def write_collector_config(self) -> Path:
        folder = self.out / "collector"
        folder.mkdir(exist_ok=True)
        assert self.broker is not None
        text = "\n".join(
            [
                "# written by `meterlink demo`",
                "[collector]",
                'database = "collector.sqlite"',
                'id = "collector-demo"',
                "",
                "[mqtt]",
                'host = "127.0.0.1"',
                f"port = {self.broker.port}",
                'group = "collectors"',
                "",
                "[billing]",
                f"accounts = {toml_str(str(ACCOUNTS))}",
                f"tariffs = {toml_str(str(TARIFFS))}",
                "",
                "[vee]",
                f"timezone = {toml_str(BILLING_TZ)}",
                f"interval = {toml_str(self.args.interval)}",
                "# at the demo's clock speed a millisecond is most of a virtual minute: reads",
                "# land minutes after their slots and the processes' clocks differ by as much,",
                "# so reads are not expected on the grid, the slack is half an interval and",
                "# the timestamp rule is left out",
                "aligned = false",
                f"clock_drift = {toml_str(self.half_interval())}",
                'rules = ["units", "limits", "monotonic", "negative", "sumcheck", "gaps",',
                '         "spike", "zero", "history"]',
            ]
        )
        if self.args.serve:
            users = self.write_dashboard_users(folder)
            # offline after a few real seconds of silence: at the demo's speed the agent
            # publishes many times a second
            text += "\n".join(
                [
                    "",
                    "",
                    "[http]",
                    'host = "127.0.0.1"',
                    f"port = {self.http_port()}",
                    f"users = {toml_str(users.name)}",
                    "",
                    "[fleet]",
                    'offline_after = "30s"',
                    'stale_after = "1m"',
                ]
            )
        path = folder / "collector.toml"
        path.write_text(text + "\n")
        return path

    # -- the result --------------------------------------------------------------------

    def report(self, agent_config: Path, collector_config: Path) -> int:
        agent = json.loads(self.run_command("agent", "status", str(agent_config), "--json"))
        head = json.loads(
            self.run_command("collector", "stats", "--config", str(collector_config), "--json")
        )
        captured = {m["meter_id"]: m for m in agent["meters"]}
        stored: dict[str, dict[str, int]] = {}
        for row in head["counters"]:
            if row["meter"] is None:
                continue
            totals = stored.setdefault(row["meter"], {})
            for key in ("records_stored", "readings_stored", "rejected", "duplicate_records"):
                totals[key] = totals.get(key, 0) + int(row[key])
        in_buffer = agent.get("backlog_by_meter", {})
        rows = [
            f"{'meter':<14}{'captured':>10}{'stored':>10}{'rejected':>10}{'in buffer':>11}"
            f"{'readings':>10}{'resent':>8}{'errors':>8}"
        ]
        ok = True
        for meter_id in sorted(set(captured) | set(stored)):
            cap, got = captured.get(meter_id, {}), stored.get(meter_id, {})
            n_captured = int(cap.get("records", 0))
            n_stored, n_rejected = got.get("records_stored", 0), got.get("rejected", 0)
            n_buffer = int(in_buffer.get(meter_id, 0))
            ok &= n_captured == n_stored + n_rejected + n_buffer
            rows.append(
                f"{meter_id:<14}{n_captured:>10}{n_stored:>10}{n_rejected:>10}{n_buffer:>11}"
                f"{got.get('readings_stored', 0):>10}{got.get('duplicate_records', 0):>8}"
                f"{int(cap.get('read_errors', 0)):>8}"
            )
        rows.append(
            "every captured record is stored once, rejected or still buffered: "
            + ("yes" if ok else "NO (see logs)")
        )
        table = "\n".join(rows)
        self.log("\nper meter (records; one record = one capture of all a meter's values):")
        self.log(table)

        vee = self.run_command("collector", "vee", "report", "--config", str(collector_config))
        vee_summary = vee.split("findings to review")[0].rstrip()
        self.log("\nvalidation (VEE) at the head-end; `meterlink collector vee report` lists all:")
        self.log(vee_summary)

        bills = []
        for account in self.account_ids():
            text = self.run_command(
                "collector", "bill", "--account", account, "--period", self.args.period,
                "--config", str(collector_config),
                "--as-of", self.virtual_end.isoformat(),
            )  # fmt: skip
            bills.append(text.rstrip())
        self.log("\n" + "\n\n".join(bills))
        # the printable bills (HTML, usage heat map by day and hour) next to the report
        html_dir = self.out / "bills"
        self.run_command(
            "collector", "bill", "--all", "--period", self.args.period,
            "--config", str(collector_config), "--as-of", self.virtual_end.isoformat(),
            "--format", "html", "--out", str(html_dir),
        )  # fmt: skip
        pages = sorted(html_dir.glob("*.html"))
        self.log(f"\nprintable bills (HTML): {html_dir} ({len(pages)} pages)")
        sla, latency, usage = self.customer_and_sla(collector_config)

        report = self.out / "report.md"
        report.write_text(
            "\n".join(
                [
                    "# meterlink demo report",
                    "",
                    f"- virtual time: {self.virtual_start.isoformat()} .. "
                    f"{self.virtual_end.isoformat()}",
                    f"- clock setting: `{self.clock}`",
                    f"- billing period: {self.args.period} ({BILLING_TZ})",
                    f"- collector database: `{collector_config.parent / 'collector.sqlite'}`",
                    f"- logs: `{self.out / 'logs'}`",
                    "",
                    "## Per meter",
                    "",
                    "```",
                    table,
                    "```",
                    "",
                    "## Validation (VEE)",
                    "",
                    "```",
                    vee_summary,
                    "```",
                    "",
                    "## Bills",
                    "",
                    f"Printable (HTML): {', '.join(f'`bills/{p.name}`' for p in pages)}",
                    "",
                    "```",
                    "\n\n".join(bills),
                    "```",
                    "",
                    "## Data-completeness SLA (`meterlink collector sla`)",
                    "",
                    "```",
                    sla.rstrip(),
                    "```",
                    "",
                    "## Capture to commit (`meterlink collector latency`)",
                    "",
                    "```",
                    latency.rstrip(),
                    "```",
                    "",
                    "## Usage insight (`meterlink collector usage`)",
                    "",
                    "```",
                    "\n\n".join(usage),
                    "```",
                    "",
                ]
            )
        )
        self.log(f"\ncollector database: {collector_config.parent / 'collector.sqlite'}")
        self.log(f"report: {report}")
        return 0 if ok else 1

    def customer_and_sla(self, collector_config: Path) -> tuple[str, str, list[str]]:
        """The SLA report, the capture-to-commit delays and each account's usage insight;
        prints the short parts (the report keeps them whole)."""
        config, clock = ("--config", str(collector_config)), ("--clock", str(self.clock))
        sla = self.run_command("collector", "sla", "--period", self.args.period, *config, *clock)
        self.log(
            "\ndata-completeness SLA (`meterlink collector sla`). At this clock speed a"
            " 15-minute slot is 20 ms of real time and the 4-hour deadline 0.3 s: the Modbus"
            " meters miss polls ('meter not answering', then 'estimated') and some records"
            " commit 'late':"
        )
        self.log(sla.split("\nGateways per day")[0].rstrip())
        latency = self.run_command(
            "collector", "latency", *config, *clock, "--from", self.virtual_start.isoformat()
        )
        self.log("\ncapture -> commit delay (`meterlink collector latency`):")
        self.log(latency.rstrip())
        usage = [
            self.run_command(
                "collector", "usage", "--account", account, "--period", self.args.period, *config
            ).rstrip()
            for account in self.account_ids()
        ]
        self.log(
            "\nusage insight per account (by day, TOU, actual/estimated, top hours): "
            "`meterlink collector usage`, in the report and on the dashboard's /usage pages"
        )
        return sla, latency, usage

    @staticmethod
    def account_ids() -> list[str]:
        import tomllib

        return [a["id"] for a in tomllib.loads(ACCOUNTS.read_text())["account"]]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meterlink demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="output folder (default: demo-output/<UTC time>)")
    parser.add_argument("--period", default="2026-11", help="billing month (default 2026-11)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="real seconds for the whole month (default 60)"
    )
    parser.add_argument("--interval", default="15m", help="poll interval, virtual (default 15m)")
    parser.add_argument(
        "--setup-seconds", type=float, default=6.0,
        help="real seconds the clock stands still while the processes start (default 6)",
    )  # fmt: skip
    parser.add_argument(
        "--serve", action="store_true",
        help="after the month, keep the fleet running and serve the web dashboard until Ctrl-C",
    )  # fmt: skip
    parser.add_argument(
        "--http-port", type=int, default=8080,
        help="--serve: the dashboard's port on 127.0.0.1 (default 8080; 0 = any free port)",
    )  # fmt: skip
    return parser.parse_args(argv)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo the way Ctrl-C does


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    demo = Demo(args)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process the demo started", flush=True)
        return 130
    except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        demo.stop_all()
        signal.signal(signal.SIGTERM, previous)
