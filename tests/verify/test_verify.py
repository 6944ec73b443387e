"""``meterlink verify``: exported records checked offline against the gateway's key."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meterlink import verify
from protocols.record import decode_record, key_id_of, sign_record
from tests.collector._fixtures import write_public_key

from ._site import (
    GW,
    T_END,
    Site,
    build_site,
    collector,
    export,
    read_lines,
    record_bytes,
    set_record_bytes,
    write_lines,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return build_site(tmp_path / "site")


def run_verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()  # drop what came before (the export's own lines)
    rc = verify.main([str(a) for a in args])
    return rc, capsys.readouterr().out


def verify_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    rc, out = run_verify(capsys, *args, "--json")
    return rc, json.loads(out)


def test_an_untouched_export_verifies_with_the_keys_in_it(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(site, tmp_path / "gw.jsonl", "--gateway", GW)
    rc, text = run_verify(capsys, out)
    assert rc == 0
    n = len(site.records)
    assert f"summary: {n} records, {n} verified, 0 failed" in text
    assert "keys used: the keys in the export" in text
    assert text.count("\n  ok    line") == n
    assert "RESULT: all verified" in text


def test_one_flipped_byte_fails_that_record_only_with_the_reason(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(site, tmp_path / "gw.jsonl", "--gateway", GW)
    header, *lines = read_lines(out)
    raw = record_bytes(lines[2])
    raw[-70] ^= 0x01  # a byte of the last value, inside the signed body
    set_record_bytes(lines[2], bytes(raw))
    raw = record_bytes(lines[4])
    raw[1] ^= 0x01  # the key id
    set_record_bytes(lines[4], bytes(raw))
    set_record_bytes(lines[5], bytes(record_bytes(lines[5])[:40]))  # cut short
    write_lines(out, [header, *lines])
    rc, doc = verify_json(capsys, out)
    assert rc == 1
    results = {r["line"]: r for r in doc["records"]}
    assert results[4]["reason"] == "bad signature" and results[4]["seq"] == 3
    assert results[6]["reason"].startswith("unknown key id ")
    assert results[7]["reason"].startswith("malformed: ")
    assert [line for line, r in results.items() if r["ok"]] == [2, 3, 5, 8]
    assert doc["summary"] == {"records": 7, "verified": 4, "failed": 3}
    rc, text = run_verify(capsys, out, "--failures-only")
    assert rc == 1 and "line 4 gateway gw-1 seq 3" in text and "bad signature" in text
    assert "  ok  " not in text


def test_a_record_line_dropped_from_the_file_is_reported(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(site, tmp_path / "gw.jsonl", "--gateway", GW)
    header, *lines = read_lines(out)
    write_lines(out, [header, *lines[:-1]])
    rc, doc = verify_json(capsys, out)
    assert rc == 1 and doc["summary"]["failed"] == 0
    assert "announces 7 records, the file holds 6" in doc["problems"][0]


def test_the_auditors_own_key_replaces_the_keys_in_the_file(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export(site, tmp_path / "gw.jsonl", "--gateway", GW)
    rc, text = run_verify(capsys, out, "--public-key", site.public_pem)
    assert rc == 0
    assert "keys used: --public-key (the keys in the export are ignored)" in text
    assert f"from {site.public_pem}" in text
    wrong = write_public_key(Ed25519PrivateKey.generate(), tmp_path / "wrong.pem")
    rc, doc = verify_json(capsys, out, "--public-key", str(wrong))
    assert rc == 1
    assert doc["summary"] == {"records": 7, "verified": 0, "failed": 7}
    assert all(r["reason"].startswith("unknown key id") for r in doc["records"])


def test_a_forged_key_in_the_file_does_not_fool_the_auditors_key(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone re-signs a changed record with a key of their own and puts it in the file:
    with the export's keys it 'verifies', with the gateway's real key it does not."""
    out = export(site, tmp_path / "gw.jsonl", "--gateway", GW)
    header, *lines = read_lines(out)
    forger = Ed25519PrivateKey.generate()
    rec = decode_record(bytes(record_bytes(lines[0]))).record
    set_record_bytes(lines[0], sign_record(rec, forger).raw)
    header["keys"][0]["public_key"] = base64.b64encode(
        forger.public_key().public_bytes_raw()
    ).decode()
    header["keys"][0]["key_id"] = key_id_of(forger.public_key()).hex()
    write_lines(out, [header, *lines])
    rc, doc = verify_json(capsys, out, "--public-key", str(site.public_pem))
    assert rc == 1 and doc["records"][0]["reason"].startswith("unknown key id")


def make_bill(site: Site, capsys: pytest.CaptureFixture[str], path: Path) -> Path:
    as_of = "2026-12-05T00:00:00Z"
    args = ["bill", "--config", str(site.config), "--account", "acc-1", "--period", "2026-11"]
    assert collector(*args, "--json", "--as-of", as_of) == 0
    path.write_text(capsys.readouterr().out)
    return path


def test_a_bills_readings_are_found_in_verified_records(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bill = make_bill(site, capsys, tmp_path / "bill.json")
    out = export(site, tmp_path / "acc.jsonl", "--account", "acc-1", "--period", "2026-11")
    capsys.readouterr()
    rc, doc = verify_json(capsys, out, "--public-key", str(site.public_pem), "--bill", bill)
    assert rc == 0
    cited = {(b["meter"], b["obis"], b["captured_ms"], b["value"]) for b in doc["bill"]}
    assert ("em-1", "1-0:1.8.0", T_END + 15 * 60_000, "1350.45") in cited
    assert len(doc["bill"]) == 4 and all(b["ok"] and b["gateway"] == GW for b in doc["bill"])


def test_an_altered_bill_reading_is_reported(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bill = make_bill(site, capsys, tmp_path / "bill.json")
    doc = json.loads(bill.read_text())
    end = doc["lines"][1]["readings"][1]["readings"][0]  # the last reading of November
    assert end["value"] == "1350.37"
    end["value"] = "1340.45"
    bill.write_text(json.dumps(doc))
    out = export(site, tmp_path / "acc.jsonl", "--account", "acc-1", "--period", "2026-11")
    capsys.readouterr()
    rc, text = run_verify(capsys, out, "--bill", bill)
    assert rc == 1
    assert "summary: 5 records, 5 verified, 0 failed" in text
    assert "FAIL  bill line 2" in text and "end reading 1" in text
    assert (
        "at 2026-11-30T22:45:00.000Z = 1340.45 kWh: value differs: "
        "the signed record (gateway gw-1 seq 6) says 1350.37 kWh" in text
    )
    assert "3 found with the same value in a verified record, 1 not" in text


def test_not_an_export_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    assert verify.main([str(path)]) == 2
    assert 'line 1: no "format": "meterlink-export" header' in capsys.readouterr().err
    assert verify.main([str(tmp_path / "missing.jsonl")]) == 2


def test_verify_imports_neither_agent_nor_collector(site: Site, tmp_path: Path) -> None:
    """Run the command as a third party would, in a fresh interpreter, then list what it
    loaded: nothing of agent/ or collector/."""
    out = export(site, tmp_path / "gw.jsonl", "--gateway", GW)
    script = (
        "import json, sys\n"
        "from meterlink.cli import main\n"
        "rc = main(['verify', sys.argv[1]])\n"
        "print('MODULES ' + json.dumps(sorted(sys.modules)))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "7 verified, 0 failed" in proc.stdout
    modules = json.loads(proc.stdout.split("MODULES ", 1)[1])
    assert "meterlink.verify" in modules and "protocols.record" in modules
    assert [m for m in modules if m.split(".")[0] in ("agent", "collector")] == []
