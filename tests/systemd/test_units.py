"""The systemd units: valid for systemd itself, and carrying the settings the service relies on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
NAMES = ["meterlink-agent.service", "meterlink-collector.service"]


def parse(name: str) -> dict[str, list[str]]:
    """Directive -> values (a unit file may repeat a directive)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


@pytest.mark.parametrize("name", NAMES)
def test_unit_is_notify_with_watchdog_restart_and_hardening(name: str) -> None:
    unit = parse(name)
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.WatchdogSec"][0].endswith("s")
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.User"] != ["root"] and unit["Service.User"]
    assert unit["Service.StateDirectory"]
    for directive, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("RestrictSUIDSGID", "yes"),
    ]:
        assert unit[f"Service.{directive}"] == [value], directive
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_agent_may_open_serial_ports() -> None:
    assert "dialout" in parse("meterlink-agent.service")["Service.SupplementaryGroups"][0]


def test_units_parse_as_ini() -> None:
    for name in NAMES:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment]
        parser.read_string((UNITS / name).read_text())
        assert parser.has_section("Service")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    # ExecStart must name an executable that exists: point it at this environment's command.
    meterlink = Path(sys.executable).with_name("meterlink")
    assert meterlink.exists(), "install the package first (pip install -e .)"
    paths = []
    for name in NAMES:
        text = (UNITS / name).read_text().replace("/usr/local/bin/meterlink", str(meterlink))
        path = tmp_path / name
        path.write_text(text)
        paths.append(str(path))
    result = subprocess.run(
        ["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(name in line for name in NAMES)
    ]
    assert result.returncode == 0, result.stderr
    assert complaints == []
