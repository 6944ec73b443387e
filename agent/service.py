"""The running agent: buffer, writer, uplink and one scheduler task per connection.

Start order: key, profiles, buffer, writer, uplink, pollers, then READY=1 to systemd.
Stop order (SIGTERM/SIGINT): pollers stop, queued captures are committed, the offline status
is published, the client disconnects, the buffer closes; exit 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sdnotify

from protocols.modbus import ModbusError, Profile, load_profile
from protocols.status import MeterClockStatus

from .buffer import Buffer
from .config import AgentConfig, ConfigError, MeterConfig
from .drivers.dlms import DlmsMeter
from .drivers.dsmr_p1 import DsmrMeter, P1Port
from .drivers.iec62056 import Iec62056Meter, IecLine
from .drivers.modbus_rtu import RtuBus, RtuMeter
from .drivers.modbus_tcp import ModbusTcpConnection, ModbusTcpMeter
from .keys import load_key
from .metrics import load_metrics_settings, start_metrics
from .scheduler import BusScheduler, ScheduledMeter
from .uplink import Uplink
from .writer import CaptureWriter

__all__ = [
    "CLOCKS_FILE",
    "STATE_FILE",
    "AgentService",
    "ProfileIssue",
    "build_meters",
    "load_profiles",
]

log = logging.getLogger("agent")

VERSION = "0.1.0"
CLOCKS_FILE = "dlms-clocks.json"  # in the state dir: the DLMS meters' clocks, for agent status
STATE_FILE = "agent-state.json"  # in the state dir: broker connection and buses, for status


@dataclass(frozen=True, slots=True)
class ProfileIssue:
    meter_id: str
    message: str

    def __str__(self) -> str:
        return f"meter {self.meter_id}: {self.message}"


def load_profiles(meters: Sequence[MeterConfig]) -> tuple[dict[str, Profile], list[ProfileIssue]]:
    """Load and plan each meter's profile (each file once); every problem is listed."""
    by_path: dict[str, Profile | str] = {}
    profiles: dict[str, Profile] = {}
    issues: list[ProfileIssue] = []
    for meter in meters:
        if meter.driver in ("dlms", "iec62056", "dsmr-p1"):
            continue  # reads COSEM objects / data sets / telegrams, not a register profile
        key = str(meter.profile_path)
        if key not in by_path:
            try:
                profile = load_profile(meter.profile_path)
                profile.plan()
                by_path[key] = profile
            except (ModbusError, OSError) as exc:
                by_path[key] = str(exc)
        loaded = by_path[key]
        if isinstance(loaded, str):
            issues.append(ProfileIssue(meter.id, loaded))
        else:
            profiles[meter.id] = loaded
    return profiles, issues


SerialLineDriver = RtuBus | IecLine | P1Port
MeterDriverType = ModbusTcpMeter | DlmsMeter | RtuMeter | Iec62056Meter | DsmrMeter
Connection = ModbusTcpConnection | RtuBus | IecLine | P1Port


def build_meters(
    config: AgentConfig, profiles: dict[str, Profile], cursors: Buffer | None = None
) -> tuple[dict[tuple[str, str, int], list[MeterDriverType]], list[Connection]]:
    """One connection per (driver, host, port); its meters in config order. A dlms meter
    opens its own connection (and association) per read, serialised with the other
    logical devices behind the same host:port (or serial port) by their shared scheduler."""
    connections: dict[tuple[str, str, int], ModbusTcpConnection] = {}
    lines: dict[str, SerialLineDriver] = {}  # serial device -> its bus / line / P1 port
    groups: dict[tuple[str, str, int], list[MeterDriverType]] = {}
    for meter in config.meters:
        if meter.dlms is not None:
            groups.setdefault(meter.connection, []).append(
                DlmsMeter(
                    meter.id,
                    meter.dlms,
                    meter.host,
                    meter.port,
                    timeout=meter.timeout,
                    retries=meter.retries,
                    gateway_ms=lambda clock=config.gateway.clock: (
                        clock.virtual_ns(time.time_ns()) // 1_000_000
                    ),
                    cursors=cursors,  # the load profile's committed cursor (buffer)
                    state_dir=config.gateway.state_dir,
                )
            )
            continue
        if meter.serial is not None:
            groups.setdefault(meter.connection, []).append(_serial_driver(meter, profiles, lines))
            continue
        conn = connections.get(meter.connection)
        if conn is None:
            conn = connections[meter.connection] = ModbusTcpConnection(meter.host, meter.port)
        driver = ModbusTcpMeter(
            meter.id, meter.unit, profiles[meter.id], conn, meter.timeout, meter.retries
        )
        groups.setdefault(meter.connection, []).append(driver)
    return groups, [*connections.values(), *lines.values()]


def _serial_driver(
    meter: MeterConfig, profiles: dict[str, Profile], lines: dict[str, SerialLineDriver]
) -> MeterDriverType:
    """A serial meter's driver on the one bus / line / P1 port of its device."""
    s = meter.serial
    assert s is not None
    line = lines.get(s.device)
    if meter.driver == "modbus-rtu":
        if line is None:
            line = lines[s.device] = RtuBus(s)
        assert isinstance(line, RtuBus)
        return RtuMeter(
            meter.id, meter.unit, profiles[meter.id], line, meter.timeout, meter.retries
        )
    if meter.driver == "iec62056":
        if line is None:
            line = lines[s.device] = IecLine(s.device)
        assert isinstance(line, IecLine)
        return Iec62056Meter(meter.id, s, line, meter.timeout, meter.retries)
    if line is None:
        line = lines[s.device] = P1Port(s)
    assert isinstance(line, P1Port)
    return DsmrMeter(meter.id, s, line)


@dataclass(slots=True)
class ProgressOptions:
    log_every: float = 10.0  # real seconds between INFO progress lines
    json_every: float | None = None  # seconds between JSON lines on stdout (None: off)


@dataclass(slots=True)
class AgentService:
    config: AgentConfig
    progress: ProgressOptions = field(default_factory=ProgressOptions)
    until_ns: int | None = None  # virtual instant: poll no slot from here on, drain, exit
    drain_timeout: float = 60.0  # real seconds to wait for the head-end's acks after `until`
    buffer: Buffer | None = None
    writer: CaptureWriter | None = None
    uplink: Uplink | None = None
    schedulers: list[BusScheduler] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def request_stop(self) -> None:
        self._stop.set()

    def counters(self) -> dict[str, object]:
        writer, uplink, buffer = self.writer, self.uplink, self.buffer
        assert writer is not None and uplink is not None and buffer is not None
        c = uplink.counters
        return {
            "t_ms": time.time_ns() // 10**6,
            "virtual_ms": self.config.gateway.clock.virtual_ns(time.time_ns()) // 10**6,
            "captured_records": writer.records,
            "captured_readings": writer.readings,
            "read_errors": writer.errors,
            "skipped_slots": sum(m.skipped for s in self.schedulers for m in s.meters),
            "backlog": buffer.count,
            "last_seq": buffer.next_seq - 1,
            "dropped": buffer.dropped_total,
            "refused": buffer.refused_total,
            "published_batches": c.batches_published,
            "published_records": c.records_published,
            "resent_batches": c.batches_resent,
            "refused_batches": c.batches_refused,
            "acked_records": c.records_acked,
            "inflight_batches": len(uplink.inflight),
            "connected": uplink.connected,
            "clock_suspect_meters": sum(1 for m in self.meter_clocks() if m.suspect),
        }

    def meter_clocks(self) -> tuple[MeterClockStatus, ...]:
        """Each DLMS meter's clock as last measured (for the status message and file)."""
        out = []
        for sched in self.schedulers:
            for scheduled in sched.meters:
                driver = scheduled.driver
                if isinstance(driver, DlmsMeter):
                    c = driver.clock
                    out.append(
                        MeterClockStatus(
                            driver.meter_id, c.drift_ms, c.measured_ms, c.suspect, c.sets,
                            c.set_error,
                        )
                    )  # fmt: skip
        return tuple(out)

    def _write_clocks(self, last: str = "") -> str:
        """Write the DLMS meters' clock figures to the state dir when they changed (temp
        file + rename: ``agent status`` never reads half a file)."""
        doc = {
            sched_meter.driver.meter_id: sched_meter.driver.clock.status()
            for sched in self.schedulers
            for sched_meter in sched.meters
            if isinstance(sched_meter.driver, DlmsMeter)
        }
        text = json.dumps(doc, indent=1, sort_keys=True)
        if not doc or text == last:
            return last
        path = self.config.gateway.state_dir / CLOCKS_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(text + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)
            return last
        return text

    async def _clock_file(self) -> None:
        last = ""
        try:
            while True:
                last = self._write_clocks(last)
                await asyncio.sleep(1.0)
        finally:
            self._write_clocks(last)

    def state(self) -> dict[str, object]:
        """What ``agent status`` shows of the running agent beyond the buffer: the broker
        connection and each bus's cycle time against its period and utilisation."""
        uplink = self.uplink
        return {
            "t_ms": time.time_ns() // 10**6,
            "pid": os.getpid(),
            "broker": {
                "host": self.config.mqtt.host,
                "port": self.config.mqtt.port,
                "connected": bool(uplink is not None and uplink.connected),
            },
            "buses": [_bus_state(sched) for sched in self.schedulers],
        }

    async def _state_file(self) -> None:
        path = self.config.gateway.state_dir / STATE_FILE
        try:
            while True:
                _write_json(path, self.state())
                await asyncio.sleep(1.0)
        finally:
            state = self.state()
            state["stopped"] = True
            _write_json(path, state)

    async def run(self) -> int:
        cfg = self.config
        try:
            metrics_settings = load_metrics_settings(cfg.path)  # [metrics]: agent/metrics.py
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("%s; not started", issue)
            return 2
        key = load_key(cfg.keys_dir)
        profiles, issues = load_profiles(cfg.meters)
        if issues:
            for issue in issues:
                log.error("%s", issue)
            return 2
        self.buffer = await Buffer.open(
            cfg.buffer_path,
            cfg.gateway.id,
            key.private,
            cfg.buffer.max_records,
            cfg.buffer.when_full,
        )
        log.info(
            "gateway %s key %s buffer %s: %d records held, next seq %d",
            cfg.gateway.id,
            key.key_id,
            cfg.buffer_path,
            self.buffer.count,
            self.buffer.next_seq,
        )
        self.uplink = Uplink(cfg.gateway.id, cfg.mqtt, self.buffer, cfg.gateway.clock, VERSION)
        self.writer = CaptureWriter(self.buffer, on_commit=self.uplink.wake)
        self.writer.start()
        await self.uplink.start()
        groups, self.connections = build_meters(cfg, profiles, self.buffer)
        by_id = {m.id: m for m in cfg.meters}
        for (driver, host, port), drivers in groups.items():
            scheduled = [
                ScheduledMeter(d.meter_id, by_id[d.meter_id].interval_ns, d) for d in drivers
            ]
            sched = BusScheduler(
                f"{driver}://{host}:{port}" if port else f"{driver}:{host}",
                scheduled,
                cfg.gateway.clock,
                self.writer.put,
                until_ns=self.until_ns,
            )
            self.schedulers.append(sched)
            self._tasks.append(asyncio.create_task(sched.run(), name=f"bus {host}:{port}"))
        metrics = start_metrics(self, metrics_settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        notifier = sdnotify.SystemdNotifier()
        notifier.notify("READY=1")
        print(
            f"READY agent gateway={cfg.gateway.id} meters={len(cfg.meters)} "
            f"buses={len(self.schedulers)} clock={cfg.gateway.clock}",
            flush=True,
        )
        self.uplink.meter_status = self.meter_clocks
        from .commands import CommandAgent  # remote commands (imports this module)

        self.uplink.on_command = CommandAgent(self, key).on_message
        helpers = [
            asyncio.create_task(self._progress_log()),
            asyncio.create_task(self._clock_file()),
            asyncio.create_task(self._state_file()),
        ]
        if self.progress.json_every:
            helpers.append(asyncio.create_task(self._progress_json(self.progress.json_every)))
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if watchdog_usec > 0:
            helpers.append(asyncio.create_task(self._watchdog(notifier, watchdog_usec / 2e6)))
        if self.until_ns is not None:
            helpers.append(asyncio.create_task(self._finish_window()))
        await self._stop.wait()
        log.info("stopping: polling ends, queued captures are committed")
        notifier.notify("STOPPING=1")
        for task in self._tasks + helpers:
            task.cancel()
        await asyncio.gather(*self._tasks, *helpers, return_exceptions=True)
        await self.writer.stop()
        await self.uplink.stop("shutdown")
        if metrics is not None:
            metrics.stop()
        for conn in self.connections:
            await conn.close()
        final = self.counters()
        await self.buffer.close()
        if self.progress.json_every:
            print(json.dumps({"final": True, **final}), flush=True)
        log.info(
            "stopped: captured %s records, backlog %s, acked %s",
            final["captured_records"],
            final["backlog"],
            final["acked_records"],
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        return 0

    async def _finish_window(self) -> None:
        """After the last slot before ``until``: commit, wait for the head-end's acks, stop."""
        assert self.writer is not None and self.buffer is not None
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.stop()
        log.info("run window ends: backlog drains (up to %.0fs)", self.drain_timeout)
        deadline = time.monotonic() + self.drain_timeout
        while self.buffer.count > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # acks arrive from the network thread; poll the count
        if self.buffer.count:
            log.warning("run window ends with %d records not yet acked", self.buffer.count)
        self.request_stop()

    async def _watchdog(self, notifier: sdnotify.SystemdNotifier, every: float) -> None:
        # From the event loop itself: a blocked loop stops the pings and systemd restarts us.
        while True:
            notifier.notify("WATCHDOG=1")
            await asyncio.sleep(every)

    async def _progress_log(self) -> None:
        while True:
            await asyncio.sleep(self.progress.log_every)
            c = self.counters()
            log.info(
                "progress: captured %s records (%s readings), %s read errors, backlog %s, "
                "acked %s, %s batches in flight, %s",
                c["captured_records"],
                c["captured_readings"],
                c["read_errors"],
                c["backlog"],
                c["acked_records"],
                c["inflight_batches"],
                "connected" if c["connected"] else "DISCONNECTED",
            )

    async def _progress_json(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            sys.stdout.write(json.dumps(self.counters()) + "\n")
            sys.stdout.flush()


def _write_json(target: Path, doc: dict[str, object]) -> None:
    """Temp file + rename: a reader never sees half a file."""
    tmp = target.with_suffix(".tmp-state")
    try:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        log.warning("cannot write %s: %s", target, exc)


def _bus_state(sched: BusScheduler) -> dict[str, object]:
    """One bus: its cycle (real seconds) against its period, and the line's figures."""
    out: dict[str, object] = {
        "name": sched.name,
        "meters": [m.meter_id for m in sched.meters],
        "cycles": sched.cycles,
        "last_cycle_s": round(sched.last_cycle_s, 4),
        "max_cycle_s": round(sched.max_cycle_s, 4),
        "period_s": round(sched.period_s, 4),
        "overruns": sched.overruns,
        "skipped_slots": sum(m.skipped for m in sched.meters),
    }
    driver = sched.meters[0].driver if sched.meters else None
    line = getattr(driver, "bus", None) or getattr(driver, "line", None)
    if isinstance(driver, DsmrMeter):
        port = driver.port
        out.update(
            kind="dsmr-p1",
            utilisation=round(port.utilisation(), 4),
            telegrams=port.telegrams,
            bad_telegrams=port.bad_telegrams,
        )
    elif isinstance(line, RtuBus):
        c = line.counters
        out.update(
            kind="modbus-rtu",
            setting=line.settings.setting,
            utilisation=round(line.utilisation(), 4),
            requests=c.requests,
            answers=c.answers,
            silent=c.silent,
            bad_frames=c.bad_frames,
            exceptions=c.exceptions,
            stray=c.stray,
            busy_s=round(c.busy_s, 4),
            held_s=round(c.held_s, 4),
        )
    elif isinstance(line, IecLine):
        out.update(
            kind="iec62056",
            utilisation=round(line.utilisation(), 4),
            readouts=line.readouts,
            failures=line.failures,
        )
    return out
