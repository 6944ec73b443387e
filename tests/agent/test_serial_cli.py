"""The field engineer's commands against the serial simulators as a process: ``agent scan
modbus`` (RTU on a pty and TCP) finds the units and their profiles and prints a section that
loads; ``agent scan iec62056`` prints identification and data sets; ``agent check --read``
prints a table with a hint per failure (unit not on the bus, wrong register map, damaged
answers)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config
from meterlink.procs import Proc

REPO = Path(__file__).resolve().parents[2]


def _meterlink(*args: str, name: str, cwd: Path = REPO, **kw: object) -> Proc:
    return Proc([sys.executable, "-m", "meterlink", *args], name, cwd=cwd, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Proc]]:
    """An RTU bus (units 1 SDM630, 2 EM24, 3 SDM630), an IEC 62056-21 meter at address 42
    and a DSMR 5 port, from one ``sim run``."""
    tmp = tmp_path_factory.mktemp("serial-cli")
    (tmp / "serial.toml").write_text(
        '[[rtu]]\npty_link = "ttyRS485"\nbaud = 9600\nparity = "E"\npace = false\n'
        '[[rtu.units]]\nunit = 1\nprofile = "eastron_sdm630"\nmeter = "u1"\n'
        '[[rtu.units]]\nunit = 2\nprofile = "carlo_gavazzi_em24_e1"\nmeter = "u2"\n'
        '[[rtu.units]]\nunit = 3\nprofile = "eastron_sdm630"\nmeter = "u3"\n\n'
        '[[iec62056]]\npty_link = "ttyOPT"\nmeter = "iec-9"\naddress = "42"\nbaud = 9600\n\n'
        '[[dsmr]]\npty_link = "ttyP1"\nversion = "5"\nmeter = "p1"\nevery = 0.5\n'
    )
    sim = _meterlink(
        "sim", "run", str(tmp / "serial.toml"), name="sim", stdin_pipe=True,
        log_path=tmp / "sim.log",
    )  # fmt: skip
    try:
        sim.wait_lines(lambda t: t.startswith("READY "), 3, timeout=60)
        yield tmp, sim
    finally:
        sim.stop()


@pytest.mark.integration
def test_scan_modbus_rtu_finds_units_and_profiles_and_prints_a_section_that_loads(
    lines: tuple[Path, Proc], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp, _sim = lines
    port = str(tmp / "ttyRS485")
    args = ["scan", "modbus", "--port", port, "--baud", "9600", "--parity", "E"]
    assert main([*args, "--units", "1-5", "--timeout", "0.2"]) == 0
    out, err = capsys.readouterr()
    assert "scanned 5 unit id(s): 3 answered" in err  # progress and its end, on stderr
    assert "  unit 1: eastron_sdm630\n" in out
    assert "  unit 2: carlo_gavazzi_em24_e1\n" in out
    assert "  unit 3: eastron_sdm630\n" in out
    assert "unit 4" not in out and "unit 5" not in out
    section = out.split("# ready to paste into the agent's config:\n", 1)[1]
    config = tmp_path / "agent.toml"
    config.write_text('[gateway]\nid = "gw"\n\n' + section.replace("unit-", "m-"))
    meters = load_config(config).meters
    assert [(m.unit, m.profile, m.driver) for m in meters] == [
        (1, "eastron_sdm630", "modbus-rtu"),
        (2, "carlo_gavazzi_em24_e1", "modbus-rtu"),
        (3, "eastron_sdm630", "modbus-rtu"),
    ]
    assert all(m.serial is not None and m.serial.setting == "9600 8E1" for m in meters)


@pytest.mark.integration
def test_scan_modbus_over_tcp(capsys: pytest.CaptureFixture[str]) -> None:
    sim = _meterlink(
        "sim", "modbus", "--port", "0", "--profile", "carlo_gavazzi_em24_e1", "--units", "1,2",
        name="sim-tcp",
    )  # fmt: skip
    try:
        ready = sim.wait_line(lambda t: t.startswith("READY modbus"))
        host, _, port = ready.split()[2].rpartition(":")
        code = main(["scan", "modbus", "--host", host, "--port", port, "--units", "1-3"])
    finally:
        sim.stop()
    out = capsys.readouterr().out
    assert code == 0
    assert "  unit 1: carlo_gavazzi_em24_e1\n" in out and "  unit 2: carlo_gavazzi_em24_e1" in out
    assert 'driver = "modbus-tcp"' in out and f"port = {port}" in out and "unit 3" not in out


@pytest.mark.integration
def test_scan_iec62056_prints_identification_and_data_sets(
    lines: tuple[Path, Proc], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp, _sim = lines
    assert main(["scan", "iec62056", "--port", str(tmp / "ttyOPT"), "--address", "42"]) == 0
    out = capsys.readouterr().out
    assert "identification: manufacturer" in out and "ident 'iec-9'; read at 9600 baud" in out
    assert "1.8.0(" in out and "-> 1-0:1.8.0 = " in out and " kWh" in out
    assert 'driver = "iec62056"' in out and 'address = "42"' in out
    # no meter at another address: a clear failure with a hint
    code = main(
        ["scan", "iec62056", "--port", str(tmp / "ttyOPT"), "--address", "7", "--timeout", "0.5"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "no identification within 0.5s" in err
    assert "hint: no identification: check the optical head" in err


@pytest.mark.integration
def test_check_read_prints_a_table_with_on_site_hints(
    lines: tuple[Path, Proc], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp, sim = lines
    bus = f'driver = "modbus-rtu"\nport = "{tmp}/ttyRS485"\nbaud = 9600\ntimeout = "300ms"\n'
    config = tmp_path / "agent.toml"
    config.write_text(
        '[gateway]\nid = "gw-check"\n\n'
        f'[[meters]]\nid = "ok-1"\n{bus}unit = 1\nprofile = "eastron_sdm630"\n\n'
        # an EM24 read with the SDM630's map: it answers, with nonsense values
        f'[[meters]]\nid = "map-2"\n{bus}unit = 2\nprofile = "eastron_sdm630"\n\n'
        f'[[meters]]\nid = "crc-3"\n{bus}unit = 3\nprofile = "eastron_sdm630"\n\n'
        f'[[meters]]\nid = "gone-9"\n{bus}unit = 9\nprofile = "eastron_sdm630"\n\n'
        f'[[meters]]\nid = "iec-9"\ndriver = "iec62056"\nserial = "{tmp}/ttyOPT"\n'
        'address = "42"\n\n'
        f'[[meters]]\nid = "p1"\ndriver = "dsmr-p1"\nserial = "{tmp}/ttyP1"\n'
    )
    sim.send_line("u3 fault corrupt")
    sim.wait_line(lambda t: t.startswith("OK fault corrupt"), timeout=10)
    try:
        code = main(["check", str(config), "--read"])
    finally:
        sim.send_line("u3 fault none")
    out, err = capsys.readouterr()
    assert code == 1 and "2 meter(s) could not be read" in err
    assert "connection " in out and "(modbus-rtu 9600 8E1): 4 meter(s)" in out
    assert "  bus time per cycle at 9600 baud: 550 ms from frame sizes (12 requests)" in out
    assert "850 ms with one meter silent; shortest interval 900s" in out
    assert "(iec62056 300 7E1): 1 meter(s)" in out and "(dsmr-p1 115200 8N1): 1 meter(s)" in out
    table = out[out.index("\nmeter ") + 1 :]
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line.strip()}
    assert set(rows) == {"ok-1", "map-2", "crc-3", "gone-9", "iec-9", "p1"}
    for ok in ("ok-1", "iec-9", "p1"):
        assert " ok " in rows[ok], rows[ok]
    assert " SUSPECT " in rows["map-2"] and "the profile (register map" in rows["map-2"]
    assert "FAILED" in rows["crc-3"] and "bad CRC" in rows["crc-3"]
    assert "FAILED" in rows["gone-9"] and "no reply from this unit only" in rows["gone-9"]
    assert "check its unit id (address)" in rows["gone-9"]

    # an exception response: the register map
    config.write_text(
        '[gateway]\nid = "gw-check"\n\n'
        f'[[meters]]\nid = "exc-1"\n{bus}unit = 1\nprofile = "eastron_sdm630"\n'
    )
    sim.send_line("u1 fault exception:2")
    sim.wait_line(lambda t: t.startswith("OK fault exception:2"), timeout=10)
    try:
        assert main(["check", str(config), "--read"]) == 1
    finally:
        sim.send_line("u1 fault none")
    out = capsys.readouterr().out
    assert "hint: the meter answers with exception 2 (illegal data address)" in out
    assert "the register map (profile) does not fit this meter" in out
