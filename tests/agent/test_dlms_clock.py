"""The meter clock in the dlms driver: drift against the gateway's (virtual) clock, the
limit that flags captures and keeps a far-off meter's time out of their timestamps, the
set-clock policy (refused for the public client, done by an LLS client), and end to end:
sim dlms -> agent -> mosquitto -> collector, with the drift in the agent's status."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.buffer import Capture
from agent.cli import main as agent_main
from agent.config import DlmsSettings
from agent.drivers.dlms import DlmsMeter, DlmsOutcome
from agent.scheduler import BusScheduler, ScheduledMeter
from firmware_sim.dlms import DlmsMeterState, DlmsSimOptions, DlmsSimServer
from firmware_sim.model import MeterModel
from meterlink.procs import wait_for
from protocols.clock import ClockSetting
from protocols.errors import DecodeError
from protocols.obis import Obis
from protocols.record import ClockSource, Quality
from protocols.status import GatewayStatus, MeterClockStatus
from protocols.topics import status_topic
from tests.support.loopback import loopback, meterlink_proc, query

START = datetime(2026, 11, 1, tzinfo=UTC)
START_NS = int(START.timestamp()) * 10**9
START_MS = START_NS // 10**6
YEARS_MS = 3 * 365 * 86_400_000  # a meter clock three years ahead
PASSWORD = "lls-secret-4711"
OBJECTS = ("1-0:1.8.0", "1-0:16.7.0")


class Wall:
    """The wall clock the simulated meter and the gateway both see (a test moves it)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


class Rig:
    """An in-process simulated meter on a real TCP port (its own event loop in a thread)
    and drivers reading it, both on the same virtual clock: the drift measured is the
    meter's own offset."""

    def __init__(self, offset_ms: int = 0, options: DlmsSimOptions | None = None) -> None:
        self.wall = Wall()
        self.clock = ClockSetting(START_NS, self.wall.now, Decimal(1))
        model = MeterModel("dl-c", 5, origin_ns=START_NS)
        self.state = DlmsMeterState(model, self.clock, offset_ms, deviation=-60, wall_ns=self.wall)
        self.server = DlmsSimServer(self.state, options=options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def command(self, line: str) -> str:
        """A control command, run in the meter's loop (as the simulator's stdin does)."""

        async def run() -> str:
            return self.state.command(line.split())

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def gateway_ms(self) -> int:
        return self.clock.virtual_ns(self.wall()) // 10**6

    def meter(self, meter_id: str = "dl-c", **settings: Any) -> DlmsMeter:
        objects = tuple(Obis.parse(o) for o in OBJECTS)
        return DlmsMeter(
            meter_id,
            DlmsSettings(objects=objects, **settings),
            "127.0.0.1",
            self.server.port,
            timeout=5,
            retries=0,
            gateway_ms=self.gateway_ms,
        )


@pytest.fixture
def rig() -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(offset_ms: int = 0, options: DlmsSimOptions | None = None) -> Rig:
        made.append(Rig(offset_ms, options))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def _read(meter: DlmsMeter) -> DlmsOutcome:
    return asyncio.run(meter.read())


def _capture(meter: DlmsMeter) -> tuple[DlmsOutcome, Capture]:
    """One scheduler poll of ``meter``: the outcome and the capture the scheduler made."""
    got: list[object] = []
    outcomes: list[DlmsOutcome] = []

    class Recording:
        meter_id = meter.meter_id

        async def read(self) -> DlmsOutcome:
            outcome = await meter.read()
            outcomes.append(outcome)
            return outcome

    scheduled = ScheduledMeter(meter.meter_id, 900 * 10**9, Recording(), first=False)
    clock = ClockSetting(START_NS, time.time_ns(), Decimal(1))
    asyncio.run(BusScheduler("t", [scheduled], clock, got.append)._poll(scheduled))
    [capture] = [g for g in got if isinstance(g, Capture)]
    return outcomes[0], capture


def test_drift_is_the_meter_clock_minus_the_gateway_clock(rig: Callable[..., Rig]) -> None:
    sim = rig(offset_ms=-12_340)
    meter = sim.meter()
    outcome = _read(meter)
    assert outcome.drift_ms == -12_340  # one frozen virtual clock: no round trip
    assert outcome.meter_ms == sim.gateway_ms() - 12_340
    assert outcome.clock_flags is Quality.NONE  # within the default limit (30 s)
    assert (meter.clock.drift_ms, meter.clock.suspect) == (-12_340, False)
    assert meter.clock.uncertainty_ms == 10  # the resolution of a COSEM date-time
    assert meter.clock.measured_ms == sim.gateway_ms()


def test_drift_precision_is_half_the_round_trip(rig: Callable[..., Rig]) -> None:
    sim = rig(offset_ms=5_000)
    meter = sim.meter()
    ticks = iter(range(10**6))
    # a gateway clock that advances 40 ms at every look: 40 ms between request and answer
    meter.gateway_ms = lambda: sim.gateway_ms() + 40 * next(ticks)
    outcome = _read(meter)
    assert outcome.drift_ms == 5_000 - 20  # compared with the midpoint
    assert meter.clock.uncertainty_ms == 20 + 10


def test_measurement_noise_neither_flags_nor_sets_a_clock(rig: Callable[..., Rig]) -> None:
    sim = rig(offset_ms=29_000)
    meter = sim.meter(clock_set_ns=28 * 10**9)
    ticks = iter(range(10**6))
    # 8 s between request and answer (a slow round trip under a fast virtual clock): the
    # drift (29 s - 4 s) +/- 4.01 s may be 29 s; beyond 28 s (clock_set) not for certain
    meter.gateway_ms = lambda: sim.gateway_ms() + 8_000 * next(ticks)
    outcome = _read(meter)
    assert (outcome.drift_ms, meter.clock.uncertainty_ms) == (25_000, 4_010)
    assert outcome.clock_flags is Quality.NONE and meter.clock.sets == 0
    sim.command("clock-offset 40")  # 36 s +/- 4.01 s: beyond 30 s for certain
    again = iter(range(10**6))
    meter.gateway_ms = lambda: sim.gateway_ms() + 8_000 * next(again)
    assert _read(meter).clock_flags & Quality.CLOCK_SUSPECT


def test_a_clock_beyond_the_limit_is_flagged_and_stamped_with_the_gateway_clock(
    rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.dlms")
    sim = rig(offset_ms=300_000)  # five minutes fast, limit 30 s
    meter = sim.meter()
    (first, capture), (second, _) = _capture(meter), _capture(meter)
    assert first.drift_ms == second.drift_ms == 300_000
    assert first.meter_ms is None and first.clock_flags & Quality.CLOCK_SUSPECT
    assert capture.clock_source is ClockSource.GATEWAY
    assert capture.flags & Quality.CLOCK_SUSPECT and not capture.flags & Quality.PARTIAL
    assert [str(v.obis) for v in capture.values] == list(OBJECTS)
    crossing = [r.getMessage() for r in caplog.records if "beyond clock_limit" in r.getMessage()]
    assert len(crossing) == 1, crossing  # logged when it crosses, not every cycle
    assert "meter dl-c: clock off by +300.000s" in crossing[0] and "clock_limit 30s" in crossing[0]
    # back within the limit: logged once, the meter's time again
    assert sim.command("clock-offset 2") == "OK clock-offset 2"
    outcome = _read(meter)
    assert outcome.meter_ms == sim.gateway_ms() + 2_000 and outcome.clock_flags is Quality.NONE
    assert any("back within clock_limit 30s" in r.getMessage() for r in caplog.records)


def test_a_clock_years_off_never_stamps_a_capture(rig: Callable[..., Rig]) -> None:
    outcome, capture = _capture(rig(offset_ms=YEARS_MS).meter())
    assert outcome.drift_ms == YEARS_MS
    assert capture.clock_source is ClockSource.GATEWAY
    assert START_MS <= capture.captured_ms < START_MS + 60_000  # the scheduler's virtual now
    assert capture.flags & Quality.CLOCK_SUSPECT


def test_clock_limit_off_takes_any_meter_time(rig: Callable[..., Rig]) -> None:
    sim = rig(offset_ms=YEARS_MS)
    outcome = _read(sim.meter(clock_limit_ns=0))  # clock_limit = "off"
    assert outcome.meter_ms == sim.gateway_ms() + YEARS_MS
    assert outcome.clock_flags is Quality.NONE


def test_a_public_client_set_is_refused_with_a_warning_and_the_values_are_kept(
    rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.dlms")
    sim = rig(offset_ms=300_000)
    meter = sim.meter(clock_set_ns=60 * 10**9)
    outcomes = [_read(meter), _read(meter)]
    for outcome in outcomes:
        assert outcome.errors == [] and len(outcome.values) == len(OBJECTS)
        assert outcome.clock_flags & Quality.CLOCK_SUSPECT
    assert sim.state.clock_offset_ms == 300_000  # the meter's clock is as it was
    assert meter.clock.sets == 0 and meter.clock.set_failures == 2
    warnings = [r.getMessage() for r in caplog.records if "clock not set" in r.getMessage()]
    assert len(warnings) == 1, warnings  # the same refusal is not repeated every cycle
    assert warnings[0].startswith("meter dl-c: clock not set (+300s off, clock_set 60s): SET ")
    assert meter.clock.status()["clock_set_error"] == warnings[0].removeprefix("meter dl-c: ")
    assert meter.failures == 0


def _lls(tmp_path: Path) -> Path:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[meters.dl-c]\npassword = "{PASSWORD}"\n')
    os.chmod(secrets, 0o600)
    return secrets


def test_an_lls_client_sets_a_drifting_clock_and_later_captures_are_not_flagged(
    rig: Callable[..., Rig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.dlms")
    sim = rig(offset_ms=300_000, options=DlmsSimOptions(auth="lls", password=PASSWORD.encode()))
    meter = sim.meter(
        auth="lls", client_address=17, secrets=_lls(tmp_path), clock_set_ns=60 * 10**9
    )
    first, capture = _capture(meter)
    assert first.drift_ms == 300_000 and first.errors == []
    assert capture.flags & Quality.CLOCK_SUSPECT and capture.clock_source is ClockSource.GATEWAY
    # the meter's clock was set to the gateway's time, and reads right
    assert sim.state.clock_offset_ms == 0 and sim.state.clock_adjusted_ms == sim.gateway_ms()
    assert (meter.clock.sets, meter.clock.drift_ms, meter.clock.suspect) == (1, 0, False)
    assert meter.clock.last_set_ms == sim.gateway_ms()
    done = [
        r.getMessage()
        for r in caplog.records
        if "clock set to the gateway's time" in r.getMessage()
    ]
    assert done == [
        "meter dl-c: clock set to the gateway's time: drift was +300s, now +0.000s (+/-0.010s)"
    ]
    sim.wall.now += 900 * 10**9  # the next slot
    second, capture = _capture(meter)
    assert (second.drift_ms, second.clock_flags) == (0, Quality.NONE)
    assert capture.clock_source is ClockSource.METER and capture.captured_ms == sim.gateway_ms()
    assert not capture.flags & Quality.CLOCK_SUSPECT
    assert meter.clock.sets == 1  # nothing more to correct


def _retained_status(port: int, gateway: str) -> GatewayStatus:
    """The gateway's retained status message, as the broker hands it to a new subscriber."""
    got: list[bytes] = []
    arrived = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        got.append(message.payload)
        arrived.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(status_topic(gateway), qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert arrived.wait(20), "no retained status"
    finally:
        client.loop_stop()
        client.disconnect()
    return GatewayStatus.from_bytes(got[0])


@pytest.mark.integration
def test_end_to_end_drift_flagged_corrected_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two meters through sim dlms -> agent -> mosquitto -> collector. dl-far's clock is
    three years ahead and only the public client may read it: its SET is refused (a
    warning), its readings are stored flagged CLOCK_SUSPECT with the gateway's time (not
    refused as future-dated). dl-lls is five minutes fast and read by an LLS client with
    clock_set on: its first capture is flagged, its clock is set, later captures carry
    the meter's time unflagged. The drift shows in agent status and the status message."""
    speed = 120  # 2-minute slots are 1 s apart; 10 ms of round trip is 1.2 s of drift error
    clock = ClockSetting.accelerated(START, time.time_ns() + 2 * 10**9, Decimal(speed))
    with loopback(tmp_path) as lb:
        sims = {}
        for meter_id, extra in (
            ("dl-far", ("--clock-offset", str(YEARS_MS // 1000))),
            ("dl-lls", ("--clock-offset", "300", "--auth", "lls", "--password", PASSWORD)),
        ):
            sim = lb.spawn(
                "sim", "dlms", "--port", "0", "--meter-id", meter_id, "--clock", str(clock),
                *extra, name=meter_id, log_path=tmp_path / f"{meter_id}.log", stdin_pipe=True,
            )  # fmt: skip
            line = sim.wait_line(lambda t: t.startswith("READY dlms"))
            sims[meter_id] = (sim, int(line.split()[2].rpartition(":")[2]))
        collector_toml = lb.collector_config("c-clock")
        agent_dir = tmp_path / "agent"
        agent_dir.mkdir()
        secrets = agent_dir / "secrets.toml"
        secrets.write_text(f'[meters.dl-lls]\npassword = "{PASSWORD}"\n')
        os.chmod(secrets, 0o600)
        agent_toml = agent_dir / "agent.toml"
        agent_toml.write_text(
            '[gateway]\nid = "gw-clock"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {lb.broker.port}\nstatus_interval = "1s"\n\n'
            f'[[meters]]\nid = "dl-far"\ndriver = "dlms"\nhost = "127.0.0.1"\n'
            f'port = {sims["dl-far"][1]}\nobjects = ["1-0:1.8.0"]\ninterval = "2m"\n'
            'timeout = "2s"\nretries = 1\nclock_set = "1m"\n\n'
            f'[[meters]]\nid = "dl-lls"\ndriver = "dlms"\nhost = "127.0.0.1"\n'
            f'port = {sims["dl-lls"][1]}\nobjects = ["1-0:1.8.0"]\ninterval = "2m"\n'
            'timeout = "2s"\nretries = 1\nclock_set = "1m"\nauth = "lls"\n'
            'client_address = 17\nsecrets = "secrets.toml"\n'
        )
        lb.enrol(agent_toml, collector_toml, "gw-clock", ["dl-far", "dl-lls"])
        lb.start("collector", "collector", "run", str(collector_toml), "--clock", str(clock))
        agent = lb.start("agent", "agent", "run", str(agent_toml), "--clock", str(clock))
        db = lb.collector_db

        def stored() -> list[tuple[Any, ...]]:
            try:
                return query(
                    db,
                    "SELECT meter_id, captured_ms, flags, clock_source FROM readings"
                    " ORDER BY meter_id, captured_ms",
                )
            except sqlite3.OperationalError:
                return []  # the schema is not there yet

        def count(meter_id: str) -> int:
            return sum(1 for r in stored() if r[0] == meter_id)

        wait_for(lambda: count("dl-lls") >= 3 and count("dl-far") >= 2, timeout=60,
                 what="captures of both meters")  # fmt: skip
        agent.wait_line(lambda t: "clock set to the gateway's time" in t, timeout=10)
        sim_lls = sims["dl-lls"][0]
        sim_lls.send_line("clock-offset 0")  # the command answers: the sim is alive
        sim_lls.wait_line(lambda t: t.startswith("OK clock-offset"))
        status = meterlink_proc("agent", "status", str(agent_toml), "--json", name="status")
        assert status.popen.wait(timeout=60) == 0, status.output
        clocks = json.loads(status.output)["clocks"]
        assert agent.stop() == 0
        retained = _retained_status(lb.broker.port, "gw-clock")
    rows = stored()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:  # the collector parsed the statuses carrying the clocks (none refused)
        assert con.execute("SELECT state FROM gateway_status").fetchall() == [("offline",)]
    finally:
        con.close()
    assert agent_main(["status", str(agent_toml)]) == 0
    text = capsys.readouterr().out
    assert "meter clocks (DLMS, at the agent's last read):" in text
    assert "  dl-far: drift +94607" in text or "  dl-far: drift +94608" in text
    assert "BEYOND clock_limit" in text
    assert "  dl-lls: drift " in text and "clock set 1 time(s)" in text
    suspect, meter, gateway = (
        int(Quality.CLOCK_SUSPECT),
        int(ClockSource.METER),
        int(ClockSource.GATEWAY),
    )
    far = [r for r in rows if r[0] == "dl-far"]
    assert far and all(r[2] & suspect and r[3] == gateway for r in far), far
    assert all(abs(r[1] - START_MS) < 86_400_000 for r in far)  # the gateway's days, not 2029
    lls = [r for r in rows if r[0] == "dl-lls"]
    assert lls[0][2] & suspect and lls[0][3] == gateway, lls  # caught 5 minutes fast
    later = lls[1:]
    assert later and all(not r[2] & suspect and r[3] == meter for r in later), lls
    log = (tmp_path / "agent.log").read_text()
    assert "meter dl-far: clock off by +" in log and "beyond clock_limit 30s" in log
    assert log.count("meter dl-far: clock not set") == 1 and "read-write-denied (3)" in log
    assert 'use auth = "lls"' in log or 'auth = "lls"' in log
    assert "meter dl-lls: clock set to the gateway's time: drift was +" in log
    assert PASSWORD not in log
    assert clocks["dl-far"]["clock_suspect"] is True and clocks["dl-far"]["clock_sets"] == 0
    assert abs(clocks["dl-far"]["drift_ms"] - YEARS_MS) < 60_000
    assert "read-write-denied" in clocks["dl-far"]["clock_set_error"]
    assert clocks["dl-lls"]["clock_sets"] == 1 and clocks["dl-lls"]["clock_suspect"] is False
    assert abs(clocks["dl-lls"]["drift_ms"]) < 30_000
    by_meter = {m.meter_id: m for m in retained.meters}
    assert retained.state == "offline" and set(by_meter) == {"dl-far", "dl-lls"}
    assert by_meter["dl-far"].suspect and not by_meter["dl-lls"].suspect
    assert by_meter["dl-lls"].sets == 1 and "read-write-denied" in by_meter["dl-far"].set_error
    print(
        f"DLMS clock e2e: dl-far {len(far)} captures flagged, stamped by the gateway; dl-lls "
        f"drift +300 s -> {clocks['dl-lls']['drift_ms']} ms after one SET, "
        f"{len(later)} later captures unflagged"
    )


def test_status_message_carries_meter_clocks_and_stays_strict() -> None:
    plain = GatewayStatus("gw-1", "online", "", 1_000, 2, 0, 7, "0.1.0")
    assert b"meters" not in plain.to_bytes()  # what older collectors accept, unchanged
    assert GatewayStatus.from_bytes(plain.to_bytes()) == plain
    clocks = (
        MeterClockStatus("dl-1", -300_000, 1_000, True, 0, "clock not set: refused"),
        MeterClockStatus("dl-2", None, None, False, 2),
    )
    status = GatewayStatus("gw-1", "online", "", 1_000, 2, 0, 7, "0.1.0", clocks)
    assert GatewayStatus.from_bytes(status.to_bytes()) == status
    head = b'{"v":1,"gateway_id":"g","state":"online","meters":'
    for bad, why in (
        (b"{}", "must be a list"),
        (b"[1]", "expected objects"),
        (b'[{"drift_ms":1}]', "meter_id is required"),
        (b'[{"meter_id":"m","suspect":1}]', "'suspect' must be bool"),
        (b'[{"meter_id":"m","sets":-1}]', "'sets' out of range"),
        (b'[{"meter_id":"m","drift_ms":1.5}]', "'drift_ms' must be int"),
        (b'[{"meter_id":"m","colour":"red"}]', "unknown field 'colour'"),
    ):
        with pytest.raises(DecodeError, match=why):
            GatewayStatus.from_bytes(head + bad + b"}")


def test_a_slowly_drifting_clock_is_set_before_it_reaches_the_limit(
    rig: Callable[..., Rig], tmp_path: Path
) -> None:
    sim = rig(options=DlmsSimOptions(auth="lls", password=PASSWORD.encode()))
    assert sim.command("drift-ppm 1000") == "OK drift-ppm 1000"  # gains 1 ms per second
    meter = sim.meter(
        auth="lls", client_address=17, secrets=_lls(tmp_path), clock_set_ns=10 * 10**9
    )
    sim.wall.now += 5_000 * 10**9
    outcome = _read(meter)
    assert (outcome.drift_ms, outcome.clock_flags, meter.clock.sets) == (5_000, Quality.NONE, 0)
    assert outcome.meter_ms == sim.gateway_ms() + 5_000  # within the limit: the meter's time
    sim.wall.now += 10_000 * 10**9  # 15 s gained: beyond clock_set (10 s), within the limit
    outcome = _read(meter)
    assert outcome.drift_ms == 15_000 and outcome.clock_flags is Quality.NONE
    assert meter.clock.sets == 1 and meter.clock.drift_ms == 0  # set, read back right
    sim.wall.now += 2_000 * 10**9  # it keeps gaining at its rate from the new time
    assert _read(meter).drift_ms == 2_000 and meter.clock.sets == 1


_clock_status = st.builds(
    MeterClockStatus,
    st.text(min_size=1, max_size=20),
    st.none() | st.integers(-(2**62), 2**62),
    st.none() | st.integers(0, 2**62),
    st.booleans(),
    st.integers(0, 2**31),
    st.text(max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_clock_status, max_size=5))
def test_status_meters_round_trip(meters: list[MeterClockStatus]) -> None:
    status = GatewayStatus("gw-1", "online", "", 5, 0, 0, 1, "0.1.0", tuple(meters))
    assert GatewayStatus.from_bytes(status.to_bytes()) == status


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_status_meters_garbage_is_only_a_decode_error(meters: object) -> None:
    payload = json.dumps({"v": 1, "gateway_id": "g", "state": "online", "meters": meters})
    try:
        status = GatewayStatus.from_bytes(payload.encode())
    except DecodeError:
        return
    assert isinstance(status.meters, tuple)
