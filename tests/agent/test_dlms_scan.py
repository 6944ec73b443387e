"""``meterlink agent scan dlms`` against ``sim dlms`` as a process: the object list, the
values, a config section that loads and reads the meter; its errors; ``agent check``
listing (and with --read, reading) DLMS meters."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import DlmsSettings, load_config
from agent.drivers.dlms import DlmsMeter
from agent.drivers.dlms.scan import ScannedObject, ScanResult, config_section, parse_object_list
from meterlink.procs import Proc, free_port
from protocols.dlms import DlmsDecodeError
from protocols.dlms.axdr import Data, Tag
from protocols.obis import Obis

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim() -> Iterator[int]:
    proc = Proc(
        [sys.executable, "-m", "meterlink", "sim", "dlms", "--port", "0", "--meter-id", "dl-s1"],
        "sim",
        cwd=REPO,
    )
    try:
        line = proc.wait_line(lambda t: t.startswith("READY dlms"))
        yield int(line.split()[2].rpartition(":")[2])
    finally:
        proc.stop()


def _pasted(out: str) -> str:
    return out.split("# ready to paste into the agent's config:\n", 1)[1]


def test_scan_lists_the_objects_and_values_and_its_section_reads_the_meter(
    sim: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", "dlms", "--host", "127.0.0.1", "--port", str(sim)]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n", 1)[0].splitlines()
    assert table[0].startswith(f"dlms meter at 127.0.0.1:{sim} (wPort 16->1): ")
    rows = {line.split()[0]: line for line in table[2:]}
    assert rows["0-0:1.0.0"].split()[1:3] == ["8", "Clock"]
    assert rows["0-0:40.0.0"].split()[1:4] == ["15", "Association", "LN"]
    assert rows["1-0:99.1.0"].split()[1:3] == ["7", "Profile"]
    assert rows["1-0:99.1.0"].endswith(" entries, every 15 min")
    assert rows["0-0:96.1.0"].endswith("'dl-s1'")
    assert rows["1-0:1.8.0"].endswith(" kWh") and rows["1-0:32.7.0"].endswith(" V")
    assert rows["1-0:31.7.0"].endswith(" A")
    section = _pasted(out)
    assert section.startswith('[[meters]]\nid = "dl-s1"\ndriver = "dlms"\n')
    assert 'load_profile = "1-0:99.1.0"' in section
    config = tmp_path / "agent.toml"
    config.write_text('[gateway]\nid = "gw-scan"\n\n' + section)
    (meter,) = load_config(config).meters
    assert meter.dlms is not None and (meter.host, meter.port) == ("127.0.0.1", sim)
    objects = [str(o) for o in meter.dlms.objects]
    # energy, power and voltage registers; not the currents or the frequency
    assert objects[:2] == ["1-0:1.8.0", "1-0:2.8.0"] and "1-0:32.7.0" in objects
    assert "1-0:31.7.0" not in objects and "1-0:14.7.0" not in objects
    reader = DlmsMeter(meter.id, meter.dlms, meter.host, meter.port, timeout=5, retries=0)
    outcome = asyncio.run(reader.read())
    assert [str(v.obis) for v in outcome.values] == objects and not outcome.errors


def test_scan_cli_process_and_its_errors(sim: int) -> None:
    def run(*args: str) -> tuple[int, str]:
        proc = Proc(
            [sys.executable, "-m", "meterlink", "agent", "scan", "dlms", *args], "scan", cwd=REPO
        )
        return proc.popen.wait(timeout=60), proc.output

    code, out = run("--host", "127.0.0.1", "--port", str(sim), "--no-values", "--id", "m-1")
    assert code == 0, out
    assert re.search(r"^0-0:40\.0\.0 +15 Association LN +1$", out, re.M), out
    assert 'id = "m-1"' in out
    code, out = run("--host", "127.0.0.1", "--port", str(sim), "--client-address", "1")
    assert code == 1
    assert "scan failed: dlms at 127.0.0.1:" in out and "association refused" in out
    assert "hint: the meter refused this client" in out
    code, out = run("--host", "127.0.0.1", "--port", str(free_port()), "--timeout", "1")
    assert code == 1 and "cannot connect" in out and "hint: nothing listens there" in out
    code, out = run("--serial", "/dev/null", "--transport", "wrapper")
    assert code == 2 and "--serial needs --transport hdlc" in out


def test_scan_says_when_the_meter_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    async def silent() -> int:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            argv = ["scan", "dlms", "--host", "127.0.0.1", "--port", str(port), "--timeout", "0.3"]
            return await asyncio.to_thread(main, argv)
        finally:
            server.close()

    assert asyncio.run(silent()) == 1
    err = capsys.readouterr().err
    assert "AARQ: no answer within 0.3s" in err and "hint: connected but no answer" in err


def test_object_list_parsing_names_the_bad_element() -> None:
    good = Data.structure(
        Data(Tag.LONG_UNSIGNED, 3),
        Data(Tag.UNSIGNED, 0),
        Data.octet_string(bytes((1, 0, 1, 8, 0, 255))),
        Data.structure(Data.array(), Data.array()),
    )
    (obj,) = parse_object_list(Data.array(good))
    assert (obj.class_id, obj.version, obj.obis, obj.class_name) == (
        3,
        0,
        Obis.parse("1-0:1.8.0"),
        "Register",
    )
    bad = Data.structure(Data(Tag.LONG_UNSIGNED, 3), Data(Tag.UNSIGNED, 0), Data.octet_string(b"x"))
    with pytest.raises(DlmsDecodeError, match=r"object_list element 1: .*6 bytes"):
        parse_object_list(Data.array(good, bad))
    with pytest.raises(DlmsDecodeError, match="expected an array, got STRUCTURE"):
        parse_object_list(good)


def test_config_section_for_hdlc_on_a_serial_port(tmp_path: Path) -> None:
    result = ScanResult(
        "/dev/ttyUSB0 hdlc",
        [ScannedObject(3, 0, Obis.parse("1-0:2.8.0"), "1 kWh", amount=None, unit="kWh")],
    )
    settings = DlmsSettings(
        transport="hdlc", serial="/dev/ttyUSB0", mode_e=True, server_address=1, physical_address=5
    )
    section = config_section(result, settings)
    assert 'serial = "/dev/ttyUSB0"' in section and "mode_e = true" in section
    assert "physical_address = 5" in section and "host" not in section
    config = tmp_path / "agent.toml"
    config.write_text('[gateway]\nid = "gw"\n\n' + section)
    (meter,) = load_config(config).meters
    assert meter.id == "dlms-ttyUSB0-1" and meter.dlms is not None
    assert (meter.dlms.serial, meter.dlms.mode_e, meter.dlms.physical_address) == (
        "/dev/ttyUSB0",
        True,
        5,
    )
    assert meter.dlms.objects == (Obis.parse("1-0:2.8.0"),)


def test_check_lists_dlms_meters_and_tries_a_read(
    sim: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    dead = free_port()
    config.write_text(
        '[gateway]\nid = "gw-check"\n\n'
        f'[[meters]]\nid = "dl-ok"\ndriver = "dlms"\nhost = "127.0.0.1"\nport = {sim}\n'
        'objects = ["1-0:1.8.0"]\nclock_limit = "off"\n\n'
        f'[[meters]]\nid = "dl-dead"\ndriver = "dlms"\nhost = "127.0.0.1"\nport = {dead}\n'
        'timeout = "1s"\nclock_set = "5m"\n'
    )
    assert main(["check", str(config), "--no-read"]) == 0
    out = capsys.readouterr().out
    assert f"connection 127.0.0.1:{sim} (dlms): 1 meter(s)" in out
    assert f"  dl-ok: dlms 127.0.0.1:{sim} (wPort 16->1) auth none, 1 objects (1-0:1.8.0)" in out
    assert "clock_limit off, clock_set off" in out
    assert "  dl-dead: dlms" in out and "clock_limit 30s, clock_set 5m" in out
    assert main(["check", str(config), "--read"]) == 1
    captured = capsys.readouterr()
    assert "read dl-ok: ok: 1-0:1.8.0=" in captured.out and "; clock drift " in captured.out
    assert "read dl-dead: FAILED: meter dl-dead: dlms at 127.0.0.1:" in captured.out
    assert "hint: nothing listens there" in captured.out
    assert "1 meter(s) could not be read" in captured.err


@pytest.mark.integration
def test_scan_over_hdlc_on_a_serial_pty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "meter-tty"
    proc = Proc(
        [sys.executable, "-m", "meterlink", "sim", "dlms", "--meter-id", "dl-tty",
         "--transport", "hdlc", "--pty-link", str(link)],
        "sim-pty",
        cwd=REPO,
    )  # fmt: skip
    try:
        proc.wait_line(lambda t: t.startswith("READY dlms pty:"))
        assert main(["scan", "dlms", "--serial", str(link)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"dlms meter at {link}")
        section = _pasted(out)
        assert f'transport = "hdlc"\nserial = "{link}"\nbaud = 9600\n' in section
        config = tmp_path / "agent.toml"
        config.write_text('[gateway]\nid = "gw-tty"\n\n' + section)
        (meter,) = load_config(config).meters
        assert meter.id == "dl-tty" and meter.dlms is not None
        reader = DlmsMeter(meter.id, meter.dlms, timeout=5, retries=0)
        outcome = asyncio.run(reader.read())
        assert [v.obis for v in outcome.values] == list(meter.dlms.objects)
    finally:
        proc.stop()
