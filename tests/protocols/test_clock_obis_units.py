"""Clock settings, OBIS codes and units: the small shared vocabulary."""

from __future__ import annotations

from decimal import Decimal

import pytest

from protocols.clock import ClockSetting, ClockSettingError, format_utc_ms, parse_utc
from protocols.obis import Obis, ObisError
from protocols.topics import parse_topic, readings_topic, shared_subscription
from protocols.units import UnitError, convert


def test_two_processes_with_one_setting_agree_on_virtual_time() -> None:
    text = "2026-10-31T22:00:00Z@1764190000.5x43200"
    a, b = ClockSetting.parse(text), ClockSetting.parse(str(ClockSetting.parse(text)))
    real = 1_764_190_010_500_000_000  # 10 s after the anchor
    assert a.virtual_ns(real) == b.virtual_ns(real)
    assert a.virtual_ns(real) == parse_utc("2026-11-05T22:00:00Z").timestamp() * 10**9


def test_real_and_virtual_are_inverse() -> None:
    clock = ClockSetting.parse("2026-11-01T00:00:00Z@1000x3600")
    virtual = clock.virtual_ns(1_000_000_000_000 + 123_456_789)
    assert abs(clock.real_ns(virtual) - 1_000_123_456_789) <= 1


def test_clock_stands_at_start_until_the_anchor() -> None:
    clock = ClockSetting.parse("2026-11-01T00:00:00Z@1000x3600")
    start = clock.start_ns
    assert clock.virtual_ns(0) == start
    assert clock.virtual_ns(1_000 * 10**9) == start
    assert clock.virtual_ns(1_001 * 10**9) == start + 3600 * 10**9
    assert clock.real_ns(start - 10**9) == 1_000 * 10**9


def test_system_clock_is_identity() -> None:
    clock = ClockSetting.parse("system")
    assert clock.is_system and clock.virtual_ns(123) == 123 and str(clock) == "system"


@pytest.mark.parametrize("text", ["tomorrow", "2026-11-01@x3", "2026-11-01T00:00Z@10x0"])
def test_bad_clock_settings_say_what_is_expected(text: str) -> None:
    with pytest.raises(ClockSettingError):
        ClockSetting.parse(text)


def test_format_utc_ms() -> None:
    ms = int(parse_utc("2026-10-31T22:00:00Z").timestamp()) * 1000 + 123
    assert format_utc_ms(ms) == "2026-10-31T22:00:00.123Z"


def test_obis_parse_and_print() -> None:
    assert str(Obis.parse("1-0:1.8.0")) == "1-0:1.8.0"
    assert Obis.parse("1.8.0") == Obis(1, 0, 1, 8, 0, 255)
    assert str(Obis.parse("0-0:96.1.0*1")) == "0-0:96.1.0*1"
    assert Obis.from_bytes(Obis.parse("7-0:3.0.0").to_bytes()) == Obis(7, 0, 3, 0, 0)
    with pytest.raises(ObisError):
        Obis.parse("1-0:1.8")
    with pytest.raises(ObisError):
        Obis.parse("1-0:300.8.0")


def test_unit_conversion_is_exact() -> None:
    assert convert(Decimal("1234567"), "Wh", "kWh") == Decimal("1234.567")
    assert convert(Decimal("1.5"), "m3", "l") == Decimal("1500")
    with pytest.raises(UnitError):
        convert(Decimal(1), "kWh", "V")


def test_topics() -> None:
    assert readings_topic("gw-1") == "meterlink/v1/gw-1/readings"
    assert parse_topic("meterlink/v1/gw-1/cmd/7/reply") == ("gw-1", "cmd/7/reply")
    assert shared_subscription() == "$share/collectors/meterlink/v1/+/readings"


def test_utc_ms_is_exact_where_a_float_timestamp_is_one_millisecond_short() -> None:
    from datetime import timedelta

    from protocols.clock import utc_ms

    moment = parse_utc("2001-01-01T00:00:00Z") + timedelta(milliseconds=1_206_285_759_332)
    assert int(moment.timestamp() * 1000) != 978_307_200_000 + 1_206_285_759_332  # the float way
    assert utc_ms(moment) == 978_307_200_000 + 1_206_285_759_332
    assert utc_ms(parse_utc("1969-12-31T23:59:59.999Z")) == -1
