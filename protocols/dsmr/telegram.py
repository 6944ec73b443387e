"""One DSMR P1 telegram: framing, CRC-16 and the data lines (no meaning yet).

A telegram (NEN-EN-IEC 62056-21 mode D data readout, as DSMR and e-MUCS use it)::

    /XXX5Identification CR LF
    CR LF
    0-0:1.0.0(161113205757W) CR LF          one COSEM object per line: OBIS(value)(value)...
    1-0:1.8.1(001581.123*kWh) CR LF
    0-1:24.3.0(090212160000)(00)(60)(1)(0-1:24.2.1)(m3) CR LF
    (00001.001) CR LF                       DSMR 2.2/3: a value continued on its own line
    !6796 CR LF                             DSMR 4+ / e-MUCS: CRC-16 in 4 upper-case hex digits

The CRC is CRC-16/ARC (polynomial x^16+x^15+x^2+1, reflected 0xA001, initial value 0, no final
XOR) over every byte from ``/`` through ``!``. DSMR 2.2 and 3 end with ``!`` CR LF and carry no
CRC; a telegram that declares version 4 or later (``1-3:0.2.8``) or e-MUCS (``0-0:96.1.4``)
must carry one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import DecodeError, EncodeError
from ..obis import Obis, ObisError

__all__ = [
    "CRC_VERSION_OBJECTS",
    "DataObject",
    "DsmrCrcError",
    "DsmrError",
    "Telegram",
    "crc16",
    "encode_telegram",
    "parse_telegram",
]

#: Objects whose presence says "this version has a CRC": DSMR 4+ version, e-MUCS version.
VERSION_OBJECT = Obis(1, 3, 0, 2, 8)
EMUCS_VERSION_OBJECT = Obis(0, 0, 96, 1, 4)
CRC_VERSION_OBJECTS = (VERSION_OBJECT, EMUCS_VERSION_OBJECT)
MAX_LINE = 2048


class DsmrError(DecodeError):
    """Bytes that are not a valid DSMR telegram; the message names the line or offset."""


class DsmrCrcError(DsmrError):
    """A telegram whose CRC-16 does not match its bytes (counted apart: a noisy line)."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16/ARC (DSMR P1): reflected poly 0xA001, init 0. ``crc16(b"123456789") == 0xBB3D``."""
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class DataObject:
    """One COSEM object line: its OBIS code and the texts inside each ``( )``."""

    obis: Obis
    values: tuple[str, ...]
    line: int  # 1-based line number in the telegram (the header is line 1)


@dataclass(frozen=True, slots=True)
class Telegram:
    header: str  # the identification line without ``/`` and CR LF
    objects: tuple[DataObject, ...]
    crc: int | None  # None: a DSMR 2.2/3 telegram without CRC
    raw: bytes = field(repr=False)

    @property
    def manufacturer(self) -> str:
        return self.header[:3]

    @property
    def version(self) -> str:
        """``"2.2/3"`` (no version object, no CRC), ``"4.2"``, ``"5.0"``, ``"e-MUCS 50217"``..."""
        emucs = self.get(EMUCS_VERSION_OBJECT)
        if emucs is not None and emucs.values:
            return f"e-MUCS {emucs.values[0]}"
        dsmr = self.get(VERSION_OBJECT)
        if dsmr is not None and dsmr.values and len(dsmr.values[0]) == 2:
            return f"{dsmr.values[0][0]}.{dsmr.values[0][1]}"
        return "2.2/3" if self.crc is None else "4+"

    def get(self, obis: Obis) -> DataObject | None:
        for obj in self.objects:
            if obj.obis == obis:
                return obj
        return None


_HEADER_RE = re.compile(r"^/([A-Za-z]{3})([0-9A-Za-z])([\x20-\x7e]{0,96})$")
_LINE_RE = re.compile(
    r"^(\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(?:\*\d{1,3})?)((?:\([^()]*\))+)$"
)
_CONTINUATION_RE = re.compile(r"^((?:\([^()]*\))+)$")
_CRC_RE = re.compile(rb"^[0-9A-F]{4}$")


def parse_telegram(raw: bytes) -> Telegram:
    """Check and split one whole telegram, ``/`` through the CR LF after ``!`` (and its CRC).

    Raises :class:`DsmrCrcError` for a CRC mismatch and :class:`DsmrError` for anything else
    (the message names the line number or byte offset)."""
    if not raw.startswith(b"/"):
        raise DsmrError(f"telegram, offset 0: expected '/', got {raw[:16]!r}")
    bang = raw.find(b"!")
    if bang < 0:
        raise DsmrError(f"telegram of {len(raw)} bytes has no '!' (truncated)")
    tail = raw[bang + 1 :]
    if not tail.endswith(b"\r\n") or b"\n" in tail[:-1]:
        raise DsmrError(
            f"telegram, offset {bang}: '!' must be followed by the CRC and CR LF, got {tail[:16]!r}"
        )
    crc_text = tail[:-2]
    body = raw[: bang + 1]
    crc: int | None
    if not crc_text:
        crc = None
    elif _CRC_RE.match(crc_text):
        crc = int(crc_text, 16)
        computed = crc16(body)
        if computed != crc:
            raise DsmrCrcError(
                f"telegram, offset {bang + 1}: CRC {crc:04X} does not match the computed "
                f"{computed:04X} over {len(body)} bytes"
            )
    else:
        raise DsmrError(
            f"telegram, offset {bang + 1}: {crc_text[:16]!r} is not a CRC (4 upper-case hex digits)"
        )
    for offset, byte in enumerate(body):
        if byte > 0x7E or (byte < 0x20 and byte not in (0x0D, 0x0A)):
            raise DsmrError(f"telegram, offset {offset}: byte {byte:#04x} is not printable ASCII")
    text = body[:-1].decode("ascii")
    if not text.endswith("\r\n"):
        raise DsmrError(f"telegram, offset {bang}: '!' must start a line")
    lines = text[:-2].split("\r\n")
    if any("\r" in line or "\n" in line for line in lines):
        number = next(i for i, line in enumerate(lines, 1) if "\r" in line or "\n" in line)
        raise DsmrError(f"telegram line {number}: a line must end with CR LF")
    header = _HEADER_RE.match(lines[0])
    if header is None:
        raise DsmrError(f"telegram line 1: {lines[0][:40]!r} is not a header /XXXZIdent")
    objects = _objects(lines)
    telegram = Telegram(lines[0][1:], tuple(objects), crc, raw)
    if crc is None:
        for obis in CRC_VERSION_OBJECTS:
            obj = telegram.get(obis)
            if obj is not None:
                raise DsmrError(
                    f"telegram line {obj.line}: version {telegram.version} requires a CRC after '!'"
                )
    return telegram


def encode_telegram(header: str, lines: list[str] | tuple[str, ...], crc: bool = True) -> bytes:
    """A telegram from its header (without ``/``) and object lines: CR LF line ends, the
    empty line after the header, ``!`` and, with ``crc``, the CRC-16 (for simulators)."""
    text = f"/{header}\r\n\r\n" + "".join(f"{line}\r\n" for line in lines) + "!"
    try:
        body = text.encode("ascii")
    except UnicodeEncodeError:
        raise EncodeError("DSMR telegrams are ASCII") from None
    out = body + (f"{crc16(body):04X}".encode("ascii") if crc else b"") + b"\r\n"
    try:
        parse_telegram(out)
    except DsmrError as exc:
        raise EncodeError(f"telegram would not parse: {exc}") from None
    return out


def _objects(lines: list[str]) -> list[DataObject]:
    objects: list[DataObject] = []
    for number, line in enumerate(lines[1:], 2):
        if not line:
            continue
        if len(line) > MAX_LINE:
            raise DsmrError(f"telegram line {number}: {len(line)} characters (at most {MAX_LINE})")
        match = _LINE_RE.match(line)
        if match is not None:
            try:
                obis = Obis.parse(match.group(1))
            except ObisError as exc:
                raise DsmrError(f"telegram line {number}: {exc}") from None
            objects.append(DataObject(obis, _values(match.group(2)), number))
            continue
        match = _CONTINUATION_RE.match(line)
        if match is not None and objects:
            prev = objects.pop()
            objects.append(DataObject(prev.obis, prev.values + _values(match.group(1)), prev.line))
            continue
        raise DsmrError(
            f"telegram line {number}: {line[:40]!r} is not an object line OBIS(value)..."
        )
    return objects


def _values(groups: str) -> tuple[str, ...]:
    return tuple(groups[1:-1].split(")("))
