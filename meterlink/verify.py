"""``meterlink verify EXPORT``: check exported records (and a bill's readings) offline.

A third party (a customer, an auditor) runs this with nothing but an export file from
``meterlink collector export`` and, ideally, the gateway's public key obtained on its own.
It imports ``protocols/`` only (the record codec and the signature rule), never ``agent/`` or
``collector/``: what it trusts is the gateway's key, not the head-end. Format:
``docs/wire-format.md``, "Export format and offline verification".

    meterlink verify EXPORT [--public-key PEM ...] [--bill BILL.json] [--failures-only] [--json]

Exit codes: 0 every record verifies (and every reading the bill cites is found with its exact
value in a verified record), 1 something did not, 2 bad input (file unreadable, not an export,
not a key, not a bill).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.clock import format_utc_ms
from protocols.errors import DecodeError
from protocols.keys import KeyFormatError, public_key_from_pem
from protocols.record import SignedRecord, decode_record, key_id_of

__all__ = [
    "BillCheck",
    "KeyUsed",
    "RecordCheck",
    "VerifyError",
    "VerifyReport",
    "check_bill",
    "main",
    "verify_export",
]

EXPORT_FORMAT = "meterlink-export"
EXPORT_VERSION = 1

REASON_BAD_SIGNATURE = "bad signature"
REASON_UNKNOWN_KEY = "unknown key id"
REASON_MALFORMED = "malformed"


class VerifyError(Exception):
    """Input that cannot be checked at all (exit 2): the message names file, line and key."""


@dataclass(frozen=True)
class KeyUsed:
    gateway: str | None  # None: a --public-key, valid for any gateway
    key_id: str
    key: Ed25519PublicKey = field(repr=False, compare=False)
    source: str  # "export" or the PEM file
    status: str = ""
    revoked_at: str | None = None

    def describe(self) -> str:
        who = f"gateway {self.gateway}" if self.gateway else "any gateway"
        state = f", {self.status}" if self.status else ""
        if self.revoked_at:
            state += f" at {self.revoked_at}"
        return f"key {self.key_id} ({who}{state}) from {self.source}"


@dataclass(frozen=True)
class RecordCheck:
    """The verdict on one line of the export."""

    line: int
    ok: bool
    reason: str  # "" when ok; else starts with one of the REASON_* words
    gateway: str | None = None
    seq: int | None = None
    meter: str | None = None
    captured_ms: int | None = None
    key_id: str | None = None
    signed: SignedRecord | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        what = f"line {self.line}"
        if self.gateway is not None:
            what += f" gateway {self.gateway} seq {self.seq}"
        if self.meter is not None:
            what += f" meter {self.meter}"
        if self.captured_ms is not None:
            what += f" captured {format_utc_ms(self.captured_ms)}"
        if self.key_id is not None:
            what += f" key {self.key_id}"
        return what if self.ok else f"{what}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "ok": self.ok,
            "reason": self.reason,
            "gateway": self.gateway,
            "seq": self.seq,
            "meter": self.meter,
            "captured_ms": self.captured_ms,
            "key_id": self.key_id,
        }


@dataclass(frozen=True)
class BillCheck:
    """One reading a bill cites, and whether a verified record holds it with that value."""

    where: str  # "line 2 (Energy import, ...) start reading 1"
    meter: str
    obis: str
    captured_ms: int
    value: str
    unit: str
    ok: bool
    reason: str = ""
    gateway: str | None = None  # the record that holds it
    seq: int | None = None

    def describe(self) -> str:
        what = (
            f"{self.where}: meter {self.meter} {self.obis} at {format_utc_ms(self.captured_ms)}"
            f" = {self.value} {self.unit}"
        )
        if self.ok:
            return f"{what} (gateway {self.gateway} seq {self.seq})"
        return f"{what}: {self.reason}"


@dataclass
class VerifyReport:
    header: dict[str, Any]
    keys: list[KeyUsed]
    keys_from: str  # "export" or "--public-key"
    records: list[RecordCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # about the file as a whole
    bill: list[BillCheck] | None = None

    @property
    def verified(self) -> int:
        return sum(1 for r in self.records if r.ok)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if not r.ok)

    @property
    def all_good(self) -> bool:
        bill_ok = self.bill is None or all(b.ok for b in self.bill)
        return not self.failed and not self.problems and bill_ok


# keys ------------------------------------------------------------------------------------


def load_pem_key(path: Path) -> KeyUsed:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerifyError(f"{path}: cannot read public key: {exc.strerror}") from None
    try:
        key = public_key_from_pem(data)
    except KeyFormatError as exc:
        raise VerifyError(f"{path}: {exc}") from None
    return KeyUsed(None, key_id_of(key).hex(), key, str(path))


def _export_keys(path: Path, header: dict[str, Any]) -> list[KeyUsed]:
    entries = header.get("keys")
    if not isinstance(entries, list):
        raise VerifyError(f"{path} line 1: header key 'keys' must be a list")
    keys = []
    for index, entry in enumerate(entries):
        where = f"{path} line 1 keys[{index}]"
        try:
            gateway = entry["gateway"]
            key_id = entry["key_id"]
            raw = base64.b64decode(entry["public_key"], validate=True)
            key = Ed25519PublicKey.from_public_bytes(raw)
        except (KeyError, TypeError) as exc:
            raise VerifyError(f"{where}: missing or wrong field {exc}") from None
        except (binascii.Error, ValueError) as exc:
            raise VerifyError(
                f"{where}: 'public_key' is not a base64 Ed25519 key ({exc})"
            ) from None
        if key_id_of(key).hex() != key_id:
            raise VerifyError(f"{where}: key_id {key_id!r} is not the id of its public key")
        keys.append(
            KeyUsed(
                str(gateway),
                key_id,
                key,
                "export",
                str(entry.get("status", "")),
                entry.get("revoked_at"),
            )
        )
    return keys


# the export ------------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            yield from enumerate(fh, start=1)
    except OSError as exc:
        raise VerifyError(f"{path}: cannot read: {exc.strerror}") from None


def _header(path: Path, text: str) -> dict[str, Any]:
    try:
        header = json.loads(text)
    except ValueError:
        raise VerifyError(f"{path} line 1: not JSON: not a meterlink export") from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise VerifyError(f'{path} line 1: no "format": "{EXPORT_FORMAT}" header')
    if header.get("version") != EXPORT_VERSION:
        raise VerifyError(
            f"{path} line 1: export version {header.get('version')!r}, "
            f"this verifier reads {EXPORT_VERSION}"
        )
    return header


def _check_line(
    number: int, text: str, by_id: dict[tuple[str | None, str], KeyUsed], any_gateway: bool
) -> RecordCheck:
    try:
        doc = json.loads(text)
        raw = base64.b64decode(doc["record"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        why = f"{REASON_MALFORMED}: not a record line ({type(exc).__name__}: {exc})"
        return RecordCheck(number, False, why)
    try:
        signed = decode_record(raw, f"line {number}")
    except DecodeError as exc:
        return RecordCheck(number, False, f"{REASON_MALFORMED}: {exc}", doc.get("gateway"))
    rec = signed.record
    kid = rec.key_id.hex()
    base = {
        "gateway": rec.gateway_id,
        "seq": rec.seq,
        "meter": rec.meter_id,
        "captured_ms": rec.captured_ms,
        "key_id": kid,
        "signed": signed,
    }
    # The line's plain fields are for reading the file; they must say what the record says.
    for name, actual in (
        ("gateway", rec.gateway_id),
        ("seq", rec.seq),
        ("meter", rec.meter_id),
        ("captured_ms", rec.captured_ms),
    ):
        if name in doc and doc[name] != actual:
            why = f"{REASON_MALFORMED}: line says {name} {doc[name]!r}, the record says {actual!r}"
            return RecordCheck(number, False, why, **base)
    key = by_id.get((None if any_gateway else rec.gateway_id, kid))
    if key is None:
        why = f"{REASON_UNKNOWN_KEY} {kid}"
        if not any_gateway:
            why += f" for gateway {rec.gateway_id}"
        return RecordCheck(number, False, why, **base)
    if not signed.verify(key.key):
        return RecordCheck(number, False, REASON_BAD_SIGNATURE, **base)
    return RecordCheck(number, True, "", **base)


def verify_export(
    path: Path, public_keys: list[KeyUsed] | None = None, keep_records: bool = True
) -> VerifyReport:
    """Verify every record line of the export at ``path``.

    With ``public_keys`` (keys the auditor obtained on its own) the keys in the file are
    ignored and a key verifies records of any gateway; otherwise the export's keys are used,
    each for its own gateway only. ``keep_records=False`` drops each decoded record once
    checked (memory stays flat on a large export; ``check_bill`` needs them kept).
    """
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise VerifyError(f"{path}: empty file: not a meterlink export")
    header = _header(path, first[1])
    if public_keys:
        keys, keys_from = list(public_keys), "--public-key"
        by_id = {(None, k.key_id): k for k in keys}
    else:
        keys, keys_from = _export_keys(path, header), "export"
        by_id = {(k.gateway, k.key_id): k for k in keys}
    report = VerifyReport(header, keys, keys_from)
    for number, text in lines:
        if not text.strip():
            continue
        check = _check_line(number, text, by_id, bool(public_keys))
        if not keep_records and check.signed is not None:
            check = replace(check, signed=None)
        report.records.append(check)
    expected = header.get("records")
    if isinstance(expected, int) and expected != len(report.records):
        report.problems.append(
            f"{path}: the header announces {expected} records, the file holds "
            f"{len(report.records)} (cut short or added to)"
        )
    return report


# the bill --------------------------------------------------------------------------------


def _cited_readings(path: Path, bill: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(bill, dict) or not isinstance(bill.get("lines"), list):
        raise VerifyError(f"{path}: not a bill (no 'lines'; made with `collector bill --json`?)")
    for li, line in enumerate(bill["lines"], start=1):
        label = f"bill line {li} ({line.get('description', '?')})"
        for bi, boundary in enumerate(line.get("readings") or ()):
            side = ("start", "end")[bi] if bi < 2 else f"boundary {bi + 1}"
            for ri, reading in enumerate(boundary.get("readings") or (), start=1):
                yield f"{label} {side} reading {ri}", reading


def check_bill(path: Path, records: list[RecordCheck]) -> list[BillCheck]:
    """Every reading the bill at ``path`` cites must be in a verified record, same value."""
    try:
        bill = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise VerifyError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise VerifyError(f"{path}: not JSON ({exc})") from None
    # (meter, obis, captured_ms) -> [(value, unit, gateway, seq, verified, reason)]
    found: dict[tuple[str, str, int], list[tuple[Decimal, str, str, int, bool, str]]] = {}
    for check in records:
        if check.signed is None:
            continue
        rec = check.signed.record
        for value in rec.values:
            ident = (rec.meter_id, str(value.obis), rec.captured_ms)
            entry = (value.value, value.unit, rec.gateway_id, rec.seq, check.ok, check.reason)
            found.setdefault(ident, []).append(entry)
    checks: list[BillCheck] = []
    for where, reading in _cited_readings(path, bill):
        try:
            meter, obis = str(reading["meter"]), str(reading["obis"])
            captured_ms, text = int(reading["captured_ms"]), str(reading["value"])
            unit = str(reading.get("unit", ""))
            cited = Decimal(text)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise VerifyError(
                f"{path}: {where}: needs meter, obis, captured_ms and value ({exc!r}); "
                "a bill made before `verify` existed does not carry them"
            ) from None
        want_gw, want_seq = reading.get("gateway"), reading.get("seq")
        ident_args = (where, meter, obis, captured_ms, text, unit)
        candidates = found.get((meter, obis, captured_ms), [])
        verified = [c for c in candidates if c[4]]
        if want_gw is not None:
            verified = [c for c in verified if c[2] == want_gw and c[3] == want_seq]
        match = next((c for c in verified if c[0] == cited and (not unit or c[1] == unit)), None)
        if match is not None:
            checks.append(BillCheck(*ident_args, True, "", match[2], match[3]))
        elif verified:
            _v, _u, gw, seq, _ok, _r = verified[0]
            why = f"value differs: the signed record (gateway {gw} seq {seq}) says {_v} {_u}"
            checks.append(BillCheck(*ident_args, False, why, gw, seq))
        elif candidates:
            _v, _u, gw, seq, _ok, reason = candidates[0]
            why = f"only in a record that does not verify (gateway {gw} seq {seq}: {reason})"
            checks.append(BillCheck(*ident_args, False, why, gw, seq))
        else:
            checks.append(BillCheck(*ident_args, False, "not in any record of the export"))
    return checks


# the command -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterlink verify",
        description="Check the signatures of exported records (and a bill's readings) offline.",
    )
    parser.add_argument("export", type=Path, help="file from `meterlink collector export`")
    parser.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        metavar="PEM",
        help="the gateway's public key, obtained independently (repeatable); the keys in the "
        "export are then ignored",
    )
    parser.add_argument("--bill", type=Path, help="a bill from `collector bill --json`")
    parser.add_argument("--failures-only", action="store_true", help="list failed records only")
    parser.add_argument("--json", action="store_true")
    return parser


def _print_text(report: VerifyReport, failures_only: bool) -> None:
    if report.keys_from == "export":
        print("keys used: the keys in the export (pass --public-key for a key you trust):")
    else:
        print("keys used: --public-key (the keys in the export are ignored):")
    for key in report.keys:
        print(f"  {key.describe()}")
    if not report.keys:
        print("  (none)")
    print("records:")
    for check in report.records:
        if check.ok and not failures_only:
            print(f"  ok    {check.describe()}")
        elif not check.ok:
            print(f"  FAIL  {check.describe()}")
    for problem in report.problems:
        print(f"  FAIL  {problem}")
    total = len(report.records)
    print(f"summary: {total} records, {report.verified} verified, {report.failed} failed")
    if report.bill is not None:
        print("bill readings:")
        for check in report.bill:
            print(f"  {'ok  ' if check.ok else 'FAIL'}  {check.describe()}")
        good = sum(1 for b in report.bill if b.ok)
        print(
            f"bill: {len(report.bill)} readings cited, {good} found with the same value in a"
            f" verified record, {len(report.bill) - good} not"
        )
    print("RESULT: all verified" if report.all_good else "RESULT: NOT all verified")


def _as_json(report: VerifyReport) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "keys_from": report.keys_from,
        "keys": [
            {"gateway": k.gateway, "key_id": k.key_id, "source": k.source, "status": k.status}
            for k in report.keys
        ],
        "records": [c.as_json() for c in report.records],
        "problems": report.problems,
        "summary": {
            "records": len(report.records),
            "verified": report.verified,
            "failed": report.failed,
        },
        "ok": report.all_good,
    }
    if report.bill is not None:
        doc["bill"] = [
            {
                "where": b.where,
                "meter": b.meter,
                "obis": b.obis,
                "captured_ms": b.captured_ms,
                "value": b.value,
                "unit": b.unit,
                "ok": b.ok,
                "reason": b.reason,
                "gateway": b.gateway,
                "seq": b.seq,
            }
            for b in report.bill
        ]
    return doc


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        keys = [load_pem_key(path) for path in args.public_key]
        report = verify_export(args.export, keys or None, keep_records=args.bill is not None)
        if args.bill is not None:
            report.bill = check_bill(args.bill, report.records)
    except VerifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_as_json(report), indent=2))
    else:
        _print_text(report, args.failures_only)
    return 0 if report.all_good else 1


if __name__ == "__main__":
    sys.exit(main())
