"""The water simulator's leak: the water model has no flow at night, a leak adds a constant
flow from a virtual instant on, and ``sim run`` with ``leak_lph`` in a ``[[dsmr]]`` table shows
it in the P1 telegrams' water register (a real simulator process on a virtual clock, read
through its pty with pyserial and ``protocols.dsmr``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import serial

from firmware_sim.model import BUCKET_NS, MeterModel, ModelParams
from meterlink.procs import Proc
from protocols.dsmr import NEED_DATA, TelegramReader, TelegramReceived, meter_readings

REPO = Path(__file__).resolve().parents[2]
MWH_PER_M3 = 100_000_000  # the water model's kWh / 100
MINUTE_MS = 60_000


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000


def test_the_water_model_has_no_night_flow_and_a_leak_adds_exactly_its_rate() -> None:
    start = datetime(2026, 11, 20, 20, tzinfo=UTC)
    leak_from = datetime(2026, 11, 21, 0, tzinfo=UTC)
    plain = MeterModel("w", 1, ModelParams(kind="water"), origin_ns=_ns(start))
    leaking = MeterModel(
        "w",
        1,
        ModelParams(kind="water", leak_w=1200, leak_from_ns=_ns(leak_from)),  # 12 l/h
        origin_ns=_ns(start),
    )
    first = _ns(start) // BUCKET_NS
    for bucket in range(first, first + 9 * 60):  # 20:00 .. 05:00 UTC
        hour = (bucket // 60) % 24
        if hour >= 22 or hour < 5:
            assert plain.load_mw(bucket) == 0, bucket
        extra = leaking.load_mw(bucket) - plain.load_mw(bucket)
        assert extra == (1_200_000 if bucket >= _ns(leak_from) // BUCKET_NS else 0)
    # 12 l/h = 0.012 m3 an hour = 1.2 kWh of the model an hour, exactly
    a = leaking.energies_mwh(_ns(leak_from))[0]
    b = leaking.energies_mwh(_ns(leak_from) + 3600 * 10**9)[0]
    assert Decimal(b - a) / MWH_PER_M3 == Decimal("0.012")


def _water_captures(link: Path, until_ms: int) -> dict[int, Decimal]:
    """Water register by capture instant from the P1 stream until a capture at ``until_ms``."""
    out: dict[int, Decimal] = {}
    reader = TelegramReader()
    with serial.Serial(str(link), baudrate=115200, timeout=10) as line:
        while max(out, default=0) < until_ms:
            chunk = line.read(line.in_waiting or 1)
            assert chunk, f"P1 stream stalled after {len(out)} captures"
            reader.receive_data(chunk)
            while (event := reader.next_event()) is not NEED_DATA:
                if not isinstance(event, TelegramReceived):
                    continue
                for meter in meter_readings(event.telegram, ZoneInfo("Europe/Amsterdam")):
                    if meter.kind == "water" and meter.captured_ms is not None:
                        out[meter.captured_ms] = meter.values[0].value
    return out


def test_sim_run_with_a_leak_shows_night_flow_that_never_stops(tmp_path: Path) -> None:
    scenario = tmp_path / "leak.toml"
    scenario.write_text(
        "[clock]\n"
        'start = "2026-11-20T22:00:00Z"\n'  # 23:00 local: the night, nothing flows
        "speed = 3600\n\n"
        "[[dsmr]]\n"
        'pty_link = "p1"\n'
        'meter = "p1-home"\n'
        "water = true\n"
        'leak_lph = "12"\n'
        'leak_from = "2026-11-21T00:00:00Z"\n'
        'every = "0.05"\n'
    )
    sim = Proc.python(
        "firmware_sim", "run", str(scenario), "--pty-dir", str(tmp_path), cwd=REPO, name="sim"
    )
    try:
        ready = sim.wait_line(lambda text: text.startswith("READY dsmr"))
        assert "meters=p1-home,p1-home-water" in ready
        leak_ms = int(datetime(2026, 11, 21, 0, tzinfo=UTC).timestamp()) * 1000
        captures = _water_captures(tmp_path / "p1", leak_ms + 120 * MINUTE_MS)
    finally:
        assert sim.stop() == 0, sim.output
    before = {ms: v for ms, v in captures.items() if ms <= leak_ms}
    after = sorted(ms for ms in captures if ms >= leak_ms)
    assert len(before) >= 3 and len(set(before.values())) == 1  # no flow before the leak
    assert len(after) >= 20
    for ms in after:  # 12 l/h: exactly one litre every 5-minute capture, never flat
        litres = (ms - leak_ms) // (5 * MINUTE_MS)
        assert captures[ms] - captures[leak_ms] == Decimal(litres) / 1000, ms


def test_a_leak_without_a_water_meter_is_refused_naming_the_key(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[[dsmr]]\npty_link = "p1"\nleak_lph = "12"\n')
    sim = Proc.python(
        "firmware_sim", "run", str(scenario), "--pty-dir", str(tmp_path), cwd=REPO, name="sim"
    )
    try:
        assert sim.popen.wait(timeout=30) == 2
    finally:
        sim.stop()
    assert "dsmr[0].leak_lph: needs water = true" in sim.output
