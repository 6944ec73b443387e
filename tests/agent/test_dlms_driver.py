"""The dlms driver against the simulator as a process, its per-meter errors, its config,
and one end-to-end run: DLMS meter -> agent -> mosquitto -> collector, stored with the
meter's own clock (ClockSource.METER)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agent.buffer import Capture
from agent.config import DLMS_DEFAULT_OBJECTS, ConfigError, DlmsSettings, load_config
from agent.drivers.dlms import DlmsMeter, DlmsOutcome
from agent.drivers.modbus_tcp import MeterReadError
from agent.scheduler import BusScheduler, ScheduledMeter
from firmware_sim.dlms import DLMS_OBJECTS, register_integer
from firmware_sim.model import MeterModel
from meterlink.procs import free_port, wait_for
from protocols.clock import ClockSetting
from protocols.obis import Obis, quantity_for
from protocols.record import ClockSource, Quality, Value
from protocols.units import convert, unit_by_code
from tests.support.loopback import loopback, meterlink_proc, query

START = datetime(2026, 11, 1, tzinfo=UTC)
START_MS = int(START.timestamp()) * 1000
OFFSET_S = 300  # the meter's clock runs 5 minutes ahead
# a clock that stands at START until its anchor in 2096: the values and the meter clock are
# what the model says at START, whatever the machine's speed
STANDING = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))


@pytest.fixture
def dlms_sim() -> object:
    sim = meterlink_proc(
        "sim", "dlms", "--port", "0", "--meter-id", "dl-7", "--seed", "7",
        "--clock", str(STANDING), "--clock-offset", str(OFFSET_S), "--deviation", "-60",
        name="sim",
    )  # fmt: skip
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        host, _, port = line.split()[2].rpartition(":")
        yield host, int(port)
    finally:
        sim.stop()


def _expected(obis: Obis) -> tuple[Decimal, str]:
    """What the agent must report for ``obis``: the simulator's integer, scaled exactly."""
    model = MeterModel("dl-7", 7, origin_ns=START_MS * 10**6)
    spec = DLMS_OBJECTS[obis]
    raw = register_integer(spec, model.values_at(START_MS * 10**6)[obis])
    value = Decimal(raw).scaleb(spec.scaler)
    quantity = quantity_for(obis)
    base = unit_by_code(spec.unit_code).symbol
    assert quantity is not None
    return convert(value, base, quantity.unit), quantity.unit


def test_driver_reads_values_exactly_with_the_meter_clock(dlms_sim: tuple[str, int]) -> None:
    host, port = dlms_sim
    objects = (*DLMS_DEFAULT_OBJECTS, Obis.parse("1-0:31.7.0"))
    settings = DlmsSettings(objects=objects, clock_limit_ns=600 * 10**9)  # the offset is within
    meter = DlmsMeter(
        "dl-7", settings, host, port, timeout=5, retries=0, gateway_ms=lambda: START_MS
    )
    outcome = asyncio.run(meter.read())
    assert outcome.errors == []
    assert outcome.meter_ms == START_MS + OFFSET_S * 1000
    assert outcome.clock_flags is Quality.NONE
    got = {v.obis: (v.value, v.unit) for v in outcome.values}
    assert list(got) == list(objects)
    for obis in objects:
        assert got[obis] == _expected(obis)
    assert got[Obis.parse("1-0:1.8.0")][1] == "kWh"
    assert meter.associations == 1


def test_missing_object_makes_the_capture_partial(dlms_sim: tuple[str, int]) -> None:
    host, port = dlms_sim
    objects = (Obis.parse("1-0:1.8.0"), Obis.parse("1-0:99.8.0"), Obis.parse("1-0:32.7.0"))
    outcome = asyncio.run(
        DlmsMeter("dl-7", DlmsSettings(objects=objects), host, port, timeout=5).read()
    )
    assert [v.obis for v in outcome.values] == [objects[0], objects[2]]
    (error,) = outcome.errors
    assert "meter dl-7: 1-0:99.8.0" in error and "object-undefined (4)" in error


def test_refused_association_is_a_clear_error_not_retried(dlms_sim: tuple[str, int]) -> None:
    host, port = dlms_sim
    meter = DlmsMeter("dl-7", DlmsSettings(client_address=1), host, port, retries=3)
    with pytest.raises(MeterReadError, match=r"association refused.*authentication required") as e:
        asyncio.run(meter.read())
    assert "meter dl-7" in str(e.value) and "(1 attempt)" in str(e.value)
    assert meter.failures == 1


def test_connection_refused_and_silent_meter_are_per_meter_errors() -> None:
    async def main() -> tuple[str, str]:
        closed = free_port()
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        silent_port = silent.sockets[0].getsockname()[1]
        errors = []
        for port in (closed, silent_port):
            meter = DlmsMeter("dl-x", DlmsSettings(), "127.0.0.1", port, timeout=0.3, retries=1)
            with pytest.raises(MeterReadError) as exc:
                await meter.read()
            errors.append(str(exc.value))
        silent.close()
        return errors[0], errors[1]

    refused, silent = asyncio.run(main())
    assert refused.startswith("meter dl-x: dlms at 127.0.0.1:")
    assert "cannot connect" in refused and "(2 attempts)" in refused
    assert "AARQ: no answer within 0.3s" in silent


def test_scheduler_stamps_a_capture_with_the_meter_clock_when_the_read_has_one() -> None:
    got: list[object] = []
    value = Value(Obis.parse("1-0:1.8.0"), Decimal("1.5"), "kWh")

    class Driver:
        meter_id = "dl-7"

        async def read(self) -> DlmsOutcome:
            return DlmsOutcome((value,), [], 1_000, Quality.CLOCK_SUSPECT)

    scheduled = ScheduledMeter("dl-7", 900 * 10**9, Driver())
    scheduler = BusScheduler("test", [scheduled], ClockSetting.system(), got.append)
    asyncio.run(scheduler._poll(scheduled))
    [capture] = [g for g in got if isinstance(g, Capture)]
    assert (capture.captured_ms, capture.clock_source) == (1_000, ClockSource.METER)
    assert capture.flags == Quality.RESTARTED | Quality.CLOCK_SUSPECT


def test_config_accepts_dlms_meters_with_defaults_and_names_bad_keys(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[gateway]\nid = "gw"\n\n'
        '[[meters]]\nid = "d1"\ndriver = "dlms"\nhost = "10.0.0.5"\n\n'
        '[[meters]]\nid = "d2"\ndriver = "dlms"\nhost = "10.0.0.5"\nport = 4060\n'
        'client_address = 16\nserver_address = 17\nobjects = ["1-0:1.8.0", "0-0:96.1.0"]\n'
    )
    d1, d2 = load_config(path).meters
    assert d1.dlms is not None and d2.dlms is not None
    assert (d1.port, d1.dlms.client_address, d1.dlms.server_address) == (4059, 16, 1)
    assert d1.dlms.objects == DLMS_DEFAULT_OBJECTS
    assert (d2.port, d2.dlms.server_address, d2.dlms.objects) == (
        4060,
        17,
        (Obis.parse("1-0:1.8.0"), Obis.parse("0-0:96.1.0")),
    )
    path.write_text(
        '[gateway]\nid = "gw"\n\n'
        '[[meters]]\nid = "d1"\ndriver = "dlms"\nhost = "h"\nobjects = ["x.y"]\n'
        "client_address = 300\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert "agent.toml:9: meters[0].client_address: must be <= 127" in text
    assert "agent.toml:8: meters[0].objects: not an OBIS code: 'x.y'" in text


@pytest.mark.integration
def test_end_to_end_dlms_readings_stored_with_the_meter_clock(tmp_path: Path) -> None:
    """sim dlms -> agent run -> mosquitto -> collector: readings stored exactly, stamped with
    the meter's clock (5 minutes ahead of the gateway's), clock source METER."""
    speed = 3600
    clock = ClockSetting.accelerated(START, time.time_ns() + 2 * 10**9, Decimal(speed))
    with loopback(tmp_path) as lb:
        sim = lb.spawn(
            "sim", "dlms", "--port", "0", "--meter-id", "dl-e2e", "--clock", str(clock),
            "--clock-offset", str(OFFSET_S), name="sim", log_path=tmp_path / "sim.log",
        )  # fmt: skip
        host, _, port = (
            sim.wait_line(lambda t: t.startswith("READY dlms")).split()[2].rpartition(":")
        )
        collector_toml = lb.collector_config("c-dlms")
        agent_toml = tmp_path / "agent" / "agent.toml"
        agent_toml.parent.mkdir()
        agent_toml.write_text(
            '[gateway]\nid = "gw-dlms"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {lb.broker.port}\nbatch_max_records = 5\n\n'
            f'[[meters]]\nid = "dl-e2e"\ndriver = "dlms"\nhost = "{host}"\nport = {port}\n'
            'objects = ["1-0:1.8.0", "1-0:16.7.0", "1-0:32.7.0"]\n'
            'interval = "15m"\ntimeout = "2s"\nretries = 1\n'
            'clock_limit = "10m"\n'  # the 5-minute offset is within the limit: meter stamps
        )
        lb.enrol(agent_toml, collector_toml, "gw-dlms", ["dl-e2e"])
        lb.start("collector", "collector", "run", str(collector_toml), "--clock", str(clock))
        lb.start("agent", "agent", "run", str(agent_toml), "--clock", str(clock))

        def stored() -> list[tuple]:
            return query(
                lb.collector_db,
                "SELECT meter_id, obis, captured_ms, value, unit, clock_source FROM readings"
                " ORDER BY captured_ms, obis",
            )

        wait_for(lambda: len({r[2] for r in stored()}) >= 3, timeout=60, what="3 DLMS captures")
    rows = stored()
    captures = sorted({r[2] for r in rows})
    assert len(captures) >= 3
    model = MeterModel("dl-e2e", 0, origin_ns=START_MS * 10**6)
    energy_obis = Obis.parse("1-0:1.8.0")
    for meter_id, obis, _ms, _value, unit, source in rows:
        # only the DLMS path stamps a capture with the meter's clock
        assert (meter_id, source) == ("dl-e2e", int(ClockSource.METER))
        assert (obis, unit) in (("1-0:1.8.0", "kWh"), ("1-0:16.7.0", "W"), ("1-0:32.7.0", "V"))
    lags = []
    for ms in captures:
        energy = {r[1]: Decimal(r[3]) for r in rows if r[2] == ms}["1-0:1.8.0"]
        assert energy == energy.quantize(Decimal("0.001"))  # whole Wh, exact
        # the register was read after the clock: at or after the true instant the meter's
        # clock showed (its time minus the offset), and energy never decreases
        true_ns = (ms - OFFSET_S * 1000) * 10**6
        floor_kwh = model.values_at(true_ns)[energy_obis].quantize(Decimal("0.001"), "ROUND_FLOOR")
        assert energy >= floor_kwh, (ms, energy, floor_kwh)
        lags.append((ms - START_MS - OFFSET_S * 1000) % (15 * 60_000) / 1000)
    print(
        f"DLMS e2e: {len(captures)} captures, {len(rows)} readings stored with clock source "
        f"METER; meter stamp - offset - slot (virtual s): {lags}"
    )


def test_a_relative_dlms_serial_device_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[gateway]\nid = "gw"\n\n[[meters]]\nid = "d1"\ndriver = "dlms"\ntransport = "hdlc"\n'
        'serial = "dev/ttyOPT"\n'
    )
    (meter,) = load_config(path).meters
    assert meter.dlms is not None and meter.dlms.serial == str(tmp_path / "dev" / "ttyOPT")
    assert meter.connection == ("dlms", str(tmp_path / "dev" / "ttyOPT"), 0)
