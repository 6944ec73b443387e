"""The serial drivers' config keys: defaults, one bus per device, and errors with
file:line:key (a port's meters must share its setting and its protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

HEAD = '[gateway]\nid = "gw"\n\n'


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + text)
    return load_config(path)


def _errors(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text)
    return str(exc.value)


def test_serial_meters_defaults_and_one_bus_per_device(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        '[[meters]]\nid = "r1"\ndriver = "modbus-rtu"\nport = "/dev/ttyUSB0"\nunit = 1\n'
        'profile = "eastron_sdm630"\n\n'
        '[[meters]]\nid = "r2"\ndriver = "modbus-rtu"\nport = "/dev/ttyUSB0"\nunit = 2\n'
        'profile = "carlo_gavazzi_em24_e1"\n\n'
        '[[meters]]\nid = "e"\ndriver = "dsmr-p1"\nserial = "/dev/ttyUSB1"\n\n'
        '[[meters]]\nid = "g"\ndriver = "dsmr-p1"\nserial = "/dev/ttyUSB1"\nchannel = 1\n\n'
        '[[meters]]\nid = "old"\ndriver = "dsmr-p1"\nserial = "/dev/ttyUSB3"\nversion = "3"\n\n'
        '[[meters]]\nid = "i1"\ndriver = "iec62056"\nserial = "ttyOPT"\naddress = "12"\n'
        "max_baud = 4800\n\n"
        '[[meters]]\nid = "i2"\ndriver = "iec62056"\nserial = "ttyOPT"\naddress = "13"\n',
    )
    m = {meter.id: meter for meter in config.meters}  # type: ignore[attr-defined]
    assert m["r1"].connection == m["r2"].connection == ("modbus-rtu", "/dev/ttyUSB0", 0)
    assert m["r1"].serial.setting == "9600 8E1" and m["r1"].timeout == 1.0
    assert m["e"].connection == m["g"].connection and m["g"].serial.channel == 1
    assert m["e"].serial.setting == "115200 8N1" and m["e"].serial.max_age_ns == 5 * 10**9
    assert m["old"].serial.setting == "9600 7E1" and m["old"].serial.max_age_ns == 30 * 10**9
    # a relative device is taken from the config file's directory
    assert m["i1"].serial.device == str(tmp_path / "ttyOPT") == m["i2"].serial.device
    assert (m["i1"].serial.address, m["i1"].serial.max_baud, m["i1"].timeout) == ("12", 4800, 3.0)


def test_a_port_shares_its_setting_and_protocol(tmp_path: Path) -> None:
    text = _errors(
        tmp_path,
        '[[meters]]\nid = "r1"\ndriver = "modbus-rtu"\nport = "/dev/ttyUSB0"\nunit = 1\n'
        'profile = "eastron_sdm630"\n\n'
        '[[meters]]\nid = "r2"\ndriver = "modbus-rtu"\nport = "/dev/ttyUSB0"\nunit = 2\n'
        'profile = "eastron_sdm630"\nparity = "N"\n\n'
        '[[meters]]\nid = "p"\ndriver = "dsmr-p1"\nserial = "/dev/ttyUSB0"\n\n'
        '[[meters]]\nid = "r3"\ndriver = "modbus-rtu"\nport = "/dev/ttyUSB0"\nunit = 1\n'
        'profile = "eastron_sdm630"\n',
    )
    assert (
        "agent.toml:17: meters[1].parity: 'N' but meters[0] ('r1') on the same port "
        "/dev/ttyUSB0 has 'E'" in text
    )
    assert "agent.toml:22: meters[2].serial: /dev/ttyUSB0 is also the port of meters[0]" in text
    assert "one serial port carries one protocol" in text
    assert "meters[3].unit: duplicate address: unit 1 at /dev/ttyUSB0:0 is also meter 'r1'" in text


def test_serial_key_errors_name_file_line_and_key(tmp_path: Path) -> None:
    text = _errors(
        tmp_path,
        '[[meters]]\nid = "r1"\ndriver = "modbus-rtu"\nunit = 1\nprofile = "eastron_sdm630"\n'
        "baud = 9601\n\n"
        '[[meters]]\nid = "e"\ndriver = "dsmr-p1"\nserial = "/dev/p1"\nversion = "6"\n\n'
        '[[meters]]\nid = "g1"\ndriver = "dsmr-p1"\nserial = "/dev/p2"\nchannel = 1\n\n'
        '[[meters]]\nid = "g2"\ndriver = "dsmr-p1"\nserial = "/dev/p2"\nchannel = 1\n\n'
        '[[meters]]\nid = "i"\ndriver = "iec62056"\nserial = "/dev/o"\naddress = "a/b"\n'
        "max_baud = 38400\n",
    )
    assert "agent.toml:4: meters[0].port: missing (required)" in text
    assert "agent.toml:9: meters[0].baud: must be one of 300, 600" in text
    assert "agent.toml:15: meters[1].version: must be one of 2.2, 3, 4, 5, e-mucs" in text
    assert "meters[3].channel: duplicate address: channel 1 on /dev/p2 is also meter 'g1'" in text
    assert "agent.toml:33: meters[4].address: at most 32 characters" in text
    assert "agent.toml:34: meters[4].max_baud: must be one of 300" in text


def test_check_warns_when_a_bus_cannot_keep_its_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    meters = "".join(
        f'[[meters]]\nid = "r{u}"\ndriver = "modbus-rtu"\nport = "/dev/ttyUSB9"\nunit = {u}\n'
        f'profile = "eastron_sdm630"\nbaud = 1200\ninterval = "1s"\n\n'
        for u in (1, 2, 3)
    )
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + meters)
    # a warning, not an error: the config is valid
    assert main(["check", str(path), "--no-read"]) == 0
    out = capsys.readouterr().out
    assert "connection /dev/ttyUSB9 (modbus-rtu 1200 8E1): 3 meter(s)" in out
    assert "bus time per cycle at 1200 baud: 3300 ms from frame sizes (9 requests)" in out
    assert "WARNING: the bus cannot keep this period (slots will be skipped)" in out


def test_check_measures_a_bus_budget_against_the_real_period_of_a_fast_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """15 minutes of virtual time at 1800x are 0.5 s of real time: a bus that needs more
    for its cycle is warned about, though 15 minutes would be plenty at 1x."""
    from agent.cli import main

    meters = "".join(
        f'[[meters]]\nid = "r{u}"\ndriver = "modbus-rtu"\nport = "/dev/ttyUSB9"\nunit = {u}\n'
        f'profile = "eastron_sdm630"\ninterval = "15m"\n\n'
        for u in (1, 2, 3)
    )
    path = tmp_path / "agent.toml"
    path.write_text(HEAD + meters)
    assert main(["check", str(path), "--no-read"]) == 0
    assert "WARNING" not in capsys.readouterr().out
    fast = "2026-01-01T00:00:00Z@0x1800"
    assert main(["check", str(path), "--no-read", "--clock", fast]) == 0
    out = capsys.readouterr().out
    assert "shortest interval 0.5s real (clock at 1800x)" in out
    assert "WARNING: the bus cannot keep this period (slots will be skipped)" in out
