"""Device profiles: the shipped ones load, and errors name file, key and line."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from protocols.modbus import ModbusProfileError, Order, load_profile, parse_profile
from protocols.obis import Obis

PROFILES = Path(__file__).resolve().parents[2] / "config" / "profiles"

MINIMAL = """\
[profile]
manufacturer = "Acme"
model = "M1"

[profile.document]
title = "Acme M1 Modbus"
version = "1.0"
url = "https://example.invalid/m1.pdf"

[[registers]]
obis = "1-0:1.8.0"
address = 0x0034
type = "int32"
order = "CDAB"
scale = "0.1"
unit = "kWh"

[[registers]]
obis = "1-0:16.7.0"
address = 0x0028
type = "int32"
scale = -1
unit = "W"
"""


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_profiles_load_and_plan(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.document.url.startswith("http")
    codes = {spec.obis for spec in profile.registers}
    for needed in ("1-0:1.8.0", "1-0:2.8.0", "1-0:16.7.0"):
        assert Obis.parse(needed) in codes
    assert all(r.count <= profile.max_count for r in profile.plan())


def test_sdm630_map() -> None:
    profile = load_profile(PROFILES / "eastron_sdm630.toml")
    assert profile.register("1-0:1.8.0").address == 0x0048
    assert profile.register("1-0:2.8.0").address == 0x004A
    assert profile.register("1-0:16.7.0").address == 0x0034
    assert profile.register("1-0:14.7.0").address == 0x0046
    assert profile.function == 4 and profile.order is Order.ABCD


def test_em24_scaled_integers() -> None:
    profile = load_profile(PROFILES / "carlo_gavazzi_em24_e1.toml")
    energy = profile.register("1-0:1.8.0")
    assert (energy.order, energy.step) == (Order.CDAB, Decimal("0.1"))
    assert profile.register("1-0:31.7.0").step == Decimal("0.001")
    assert energy.decode([0xD687, 0x0012]) == Decimal("123456.7")


def test_minimal_profile_defaults() -> None:
    profile = parse_profile(MINIMAL, source="m1.toml", default_name="m1")
    assert profile.name == "m1"
    assert profile.max_gap == 10 and profile.max_count == 125
    power = profile.register("1-0:16.7.0")
    assert power.step == Decimal("0.1") and power.order is Order.ABCD


def _broken(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "key", "line"),
    [
        ('type = "int32"', 'type = "int31"', "registers[0].type", 13),
        ('obis = "1-0:1.8.0"', 'obis = "1-0:1.8"', "registers[0].obis", 11),
        ('unit = "kWh"', 'unit = "V"', "registers[0].unit", 16),
        ('unit = "kWh"', 'unit = "kWhh"', "registers[0].unit", 16),
        ('scale = "0.1"', 'scale = "zero"', "registers[0].scale", 15),
        ("address = 0x0028", "address = 0x0035", "registers[1].address", 20),
        ('order = "CDAB"', 'order = "ABDC"', "registers[0].order", 14),
        ('model = "M1"', 'modle = "M1"', "profile.modle", 3),
    ],
)
def test_errors_name_file_key_and_line(old: str, new: str, key: str, line: int) -> None:
    with pytest.raises(ModbusProfileError) as info:
        parse_profile(_broken(old, new), source="m1.toml", default_name="m1")
    assert info.value.key == key
    assert info.value.line == line
    assert str(info.value).startswith(f"m1.toml:{line}: {key}:")


def test_duplicate_obis_is_an_error() -> None:
    text = MINIMAL.replace('obis = "1-0:16.7.0"', 'obis = "1-0:2.8.0"')
    text = text.replace('unit = "W"', 'unit = "kWh"').replace('"1-0:2.8.0"', '"1-0:1.8.0"')
    with pytest.raises(ModbusProfileError, match=r"registers\[1\]\.obis.*already mapped"):
        parse_profile(text, source="m1.toml")


def test_toml_syntax_error_names_the_line() -> None:
    with pytest.raises(ModbusProfileError) as info:
        parse_profile(MINIMAL + "\n[[registers]\n", source="m1.toml")
    assert info.value.line is not None
    assert "m1.toml" in str(info.value)


def test_missing_document_is_an_error() -> None:
    text = MINIMAL.replace("[profile.document]", "[profile.doc]")
    with pytest.raises(ModbusProfileError, match="profile"):
        parse_profile(text, source="m1.toml")


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModbusProfileError, match=r"nope\.toml"):
        load_profile(tmp_path / "nope.toml")


def test_scale_is_never_a_float() -> None:
    profile = parse_profile(MINIMAL.replace('scale = "0.1"', "scale = 0.1"), source="m1.toml")
    assert profile.register("1-0:1.8.0").multiplier == Decimal("0.1")
