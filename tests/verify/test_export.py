"""``meterlink collector export``: the stored bytes and the keys, from a real database."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from protocols.record import key_id_of

from ._site import GW, T0, Site, build_site, collector, export, read_lines


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(tmp_path / "site")


def test_gateway_export_holds_the_stored_bytes_and_the_enrolled_key(
    site: Site, tmp_path: Path
) -> None:
    out = export(site, tmp_path / "gw.jsonl", "--gateway", GW)
    header, *lines = read_lines(out)
    assert header["format"] == "meterlink-export" and header["version"] == 1
    assert header["records"] == len(site.records) == len(lines)
    [key] = header["keys"]
    public = site.key.public_key()
    assert key["gateway"] == GW and key["status"] == "active"
    assert key["key_id"] == key_id_of(public).hex()
    assert base64.b64decode(key["public_key"]) == public.public_bytes_raw()
    with sqlite3.connect(site.database) as conn:
        stored = dict(conn.execute("SELECT seq, raw FROM records WHERE gateway_id = ?", (GW,)))
    assert {line["seq"]: base64.b64decode(line["record"]) for line in lines} == stored
    assert [line["seq"] for line in lines] == sorted(stored)


def test_meter_export_with_a_time_range(site: Site, tmp_path: Path) -> None:
    out = export(
        site,
        tmp_path / "m.jsonl",
        "--meter",
        "em-2",
        "--from",
        "2026-10-31T23:00:00Z",
        "--to",
        "2026-11-02T00:00:00Z",
    )
    header, *lines = read_lines(out)
    assert [(line["meter"], line["captured_ms"]) for line in lines] == [("em-2", T0 + 3_600_000)]
    assert header["selection"]["meter"] == "em-2"
    assert [k["gateway"] for k in header["keys"]] == [GW]


def test_account_export_includes_the_readings_just_outside_the_period(
    site: Site, tmp_path: Path
) -> None:
    out = export(site, tmp_path / "a.jsonl", "--account", "acc-1", "--period", "2026-11")
    _header, *lines = read_lines(out)
    # every em-1 record: two inside November and one either side, which a bill interpolates
    want = [r.record.seq for r in site.records if r.record.meter_id == "em-1"]
    assert [line["seq"] for line in lines] == want


def test_bad_selection_is_refused_with_the_reason(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["export", "--config", str(site.config), "--out", str(tmp_path / "x.jsonl")]
    assert collector(*args, "--account", "acc-1") == 2
    assert "--account needs --period" in capsys.readouterr().err
    assert collector(*args, "--gateway", "gw-unknown") == 2
    assert "gateway 'gw-unknown' is not enrolled" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
