"""Device profiles: a meter's register map as data, loaded from TOML.

A profile says which registers hold which quantity (by OBIS code), how to decode them and
which manufacturer document it was taken from. Schema (see ``config/profiles/*.toml``)::

    [profile]
    name = "eastron_sdm630"        # defaults to the file name without .toml
    manufacturer = "Eastron"
    model = "SDM630-Modbus V2"
    function = "input"             # default read function: "input" (FC04) or "holding" (FC03)
    order = "ABCD"                 # default byte/word order: ABCD, CDAB, BADC, DCBA
    max_gap = 10                   # bridge holes of up to this many registers (default 10)
    max_count = 80                 # registers per read the meter accepts (default 125)
    unmapped = "zero"              # what the real meter answers for unmapped addresses
                                   # inside its map: "zero" or "illegal" (exception 02)
    both_functions = false         # true: FC03 and FC04 read the same values

    [profile.document]
    title = "..."
    version = "..."
    url = "https://..."

    [[unreadable]]                 # optional: addresses never to be read across
    start = 0x0100
    stop = 0x0200                  # exclusive
    function = "input"             # optional; both when absent

    [[registers]]
    obis = "1-0:1.8.0"
    address = 0x0048               # 0-based protocol address (3xxxx minus 30001, 4xxxx minus 40001)
    type = "float32"               # int16 uint16 int32 uint32 int64 uint64 float32 float64
    order = "ABCD"                 # optional, else the profile's
    function = "input"             # optional, else the profile's
    scale = "0.1"                  # optional: a string (or decimal) is a multiplier,
                                   # an integer is a power of ten (-1 == "0.1")
    unit = "kWh"                   # a symbol of protocols/units.py
    description = "Total import kWh"

Numbers are parsed as ``Decimal`` (never float). Errors name the file, the key and the line.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..obis import Obis, ObisError, quantity_for
from ..tomltext import TomlTextError, loads_exact
from ..units import UnitError, unit_by_symbol
from .errors import ModbusProfileError
from .plan import (
    FUNCTION_HOLDING,
    FUNCTION_INPUT,
    MAX_READ_COUNT,
    AddressRange,
    Point,
    ReadRequest,
    plan_reads,
    split_response,
)
from .values import DataType, Order, decode, encode, register_count

__all__ = [
    "Document",
    "Profile",
    "RegisterSpec",
    "load_profile",
    "parse_profile",
]

_FUNCTIONS = {"input": FUNCTION_INPUT, "holding": FUNCTION_HOLDING}
_FUNCTION_NAMES = {v: k for k, v in _FUNCTIONS.items()}
_UNMAPPED = ("zero", "illegal")

_PROFILE_KEYS = {
    "name",
    "manufacturer",
    "model",
    "function",
    "order",
    "max_gap",
    "max_count",
    "unmapped",
    "both_functions",
    "document",
    "notes",
}
_DOCUMENT_KEYS = {"title", "version", "url", "date", "notes"}
_REGISTER_KEYS = {
    "obis",
    "address",
    "type",
    "order",
    "function",
    "scale",
    "unit",
    "description",
}
_UNREADABLE_KEYS = {"start", "stop", "function"}


@dataclass(frozen=True, slots=True)
class Document:
    """The manufacturer document a profile was taken from."""

    title: str
    version: str
    url: str


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """One value in the meter's register map."""

    obis: Obis
    function: int
    address: int
    dtype: DataType
    order: Order
    multiplier: Decimal
    exponent: int
    unit: str
    description: str = ""

    @property
    def count(self) -> int:
        return register_count(self.dtype)

    @property
    def label(self) -> str:
        """For messages: ``1-0:1.8.0@input:0x0048``."""
        return f"{self.obis}@{_FUNCTION_NAMES[self.function]}:0x{self.address:04X}"

    @property
    def step(self) -> Decimal:
        """The value of one raw count (the scale as one decimal)."""
        return self.multiplier.scaleb(self.exponent)

    def point(self) -> Point:
        return Point(self.function, self.address, self.count, self.obis)

    def decode(self, registers: Sequence[int]) -> Decimal:
        return decode(
            registers,
            self.dtype,
            self.order,
            multiplier=self.multiplier,
            exponent=self.exponent,
            name=self.label,
        )

    def encode(self, value: Decimal | int, *, rounding: str | None = None) -> list[int]:
        return encode(
            value,
            self.dtype,
            self.order,
            multiplier=self.multiplier,
            exponent=self.exponent,
            rounding=rounding,
            name=self.label,
        )


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    manufacturer: str
    model: str
    document: Document
    function: int
    order: Order
    registers: tuple[RegisterSpec, ...]
    max_gap: int = 10
    max_count: int = MAX_READ_COUNT
    unmapped: str = "zero"
    both_functions: bool = False
    unreadable: tuple[AddressRange, ...] = field(default=())
    source: str = "<profile>"

    def register(self, obis: Obis | str) -> RegisterSpec:
        code = Obis.parse(obis) if isinstance(obis, str) else obis
        for spec in self.registers:
            if spec.obis == code:
                return spec
        raise KeyError(f"{self.name}: no register for {code}")

    def plan(self) -> list[ReadRequest]:
        """Block reads that fetch every register of the profile."""
        return plan_reads(
            (spec.point() for spec in self.registers),
            max_gap=self.max_gap,
            max_count=self.max_count,
            unreadable=self.unreadable,
        )

    def decode_response(
        self, request: ReadRequest, registers: Sequence[int]
    ) -> dict[Obis, Decimal]:
        """Decode one block response into values by OBIS code."""
        by_obis = {spec.obis: spec for spec in self.registers}
        sliced = split_response(request, registers)
        return {obis: by_obis[obis].decode(regs) for obis, regs in sliced.items()}  # type: ignore[index]


def load_profile(path: str | Path) -> Profile:
    """Load a profile from a TOML file; the default name is the file's stem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModbusProfileError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    return parse_profile(text, source=str(path), default_name=path.stem)


class _Reader:
    """Locates keys in the TOML text for error messages (tomllib gives lines only for
    syntax errors)."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def _table_line(self, header: str, index: int | None) -> int | None:
        pattern = re.compile(
            r"^\s*\[\[\s*" + re.escape(header) + r"\s*\]\]"
            if index is not None
            else r"^\s*\[\s*" + re.escape(header) + r"\s*\]"
        )
        seen = -1
        for number, line in enumerate(self.lines):
            if pattern.match(line):
                seen += 1
                if index is None or seen == index:
                    return number
        return None

    def line_of(self, table: str | None, index: int | None, key: str | None) -> int | None:
        start = 0
        if table is not None:
            found = self._table_line(table, index)
            if found is None:
                return None
            start = found
            if key is None:
                return start + 1
        if key is None:
            return None
        key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for number in range(start + (1 if table else 0), len(self.lines)):
            line = self.lines[number]
            if table is not None and re.match(r"^\s*\[", line):
                break
            if key_re.match(line):
                return number + 1
        return start + 1 if table is not None else None

    def error(
        self,
        message: str,
        table: str | None = None,
        index: int | None = None,
        key: str | None = None,
    ) -> ModbusProfileError:
        name = table or ""
        if index is not None:
            name += f"[{index}]"
        if key:
            name = f"{name}.{key}" if name else key
        return ModbusProfileError(
            message,
            source=self.source,
            key=name or None,
            line=self.line_of(table, index, key),
        )


def _str(
    r: _Reader,
    data: Mapping[str, Any],
    key: str,
    table: str,
    index: int | None = None,
    default: str | None = None,
) -> str:
    value = data.get(key, default)
    if value is None:
        raise r.error("missing", table, index, key)
    if not isinstance(value, str):
        raise r.error(f"must be a string, got {value!r}", table, index, key)
    return value


def _int(
    r: _Reader,
    data: Mapping[str, Any],
    key: str,
    table: str,
    index: int | None,
    default: int | None,
    low: int,
    high: int,
) -> int:
    value = data.get(key, default)
    if value is None:
        raise r.error("missing", table, index, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise r.error(f"must be an integer, got {value!r}", table, index, key)
    if not low <= value <= high:
        raise r.error(f"{value} not in {low}..{high}", table, index, key)
    return value


def _function(
    r: _Reader,
    data: Mapping[str, Any],
    key: str,
    table: str,
    index: int | None,
    default: int | None,
) -> int:
    if key not in data:
        if default is None:
            raise r.error("missing", table, index, key)
        return default
    value = data[key]
    if not isinstance(value, str) or value not in _FUNCTIONS:
        raise r.error(f"must be 'input' or 'holding', got {value!r}", table, index, key)
    return _FUNCTIONS[value]


def _order(
    r: _Reader, data: Mapping[str, Any], table: str, index: int | None, default: Order | None
) -> Order:
    if "order" not in data:
        assert default is not None
        return default
    try:
        return Order(data["order"])
    except ValueError:
        raise r.error(
            f"must be one of {', '.join(o.value for o in Order)}, got {data['order']!r}",
            table,
            index,
            "order",
        ) from None


def _unknown_keys(
    r: _Reader, data: Mapping[str, Any], allowed: set[str], table: str, index: int | None = None
) -> None:
    for key in data:
        if key not in allowed:
            raise r.error(f"unknown key (allowed: {', '.join(sorted(allowed))})", table, index, key)


def _scale(r: _Reader, data: Mapping[str, Any], index: int) -> tuple[Decimal, int]:
    if "scale" not in data:
        return Decimal(1), 0
    value = data["scale"]
    if isinstance(value, bool):
        raise r.error(
            f"must be a decimal string or an integer exponent, got {value!r}",
            "registers",
            index,
            "scale",
        )
    if isinstance(value, int):
        if not -20 <= value <= 20:
            raise r.error(f"exponent {value} not in -20..20", "registers", index, "scale")
        return Decimal(1), value
    try:
        multiplier = Decimal(value) if isinstance(value, str) else value
    except InvalidOperation:
        raise r.error(f"not a decimal number: {value!r}", "registers", index, "scale") from None
    if not isinstance(multiplier, Decimal) or not multiplier.is_finite() or multiplier == 0:
        raise r.error(
            f"must be a finite non-zero decimal, got {value!r}", "registers", index, "scale"
        )
    # bounded like an integer scale: decoding stays exact within the codec's precision
    digits = len(multiplier.as_tuple().digits)
    if digits > 20 or not -20 <= multiplier.adjusted() <= 20:
        raise r.error(
            f"{value!r}: at most 20 significant digits, magnitude 1e-20..1e20",
            "registers",
            index,
            "scale",
        )
    return multiplier, 0


def parse_profile(
    text: str, *, source: str = "<profile>", default_name: str | None = None
) -> Profile:
    """Parse a profile from TOML text; ``source`` names it in errors."""
    try:
        data = loads_exact(text)
    except TomlTextError as exc:
        raise ModbusProfileError(f"not valid TOML: {exc}", source=source, line=exc.line) from None
    r = _Reader(text, source)
    for key in data:
        if key not in ("profile", "registers", "unreadable"):
            raise r.error(
                "unknown top-level key (allowed: profile, registers, unreadable)", key=key
            )
    head = data.get("profile")
    if not isinstance(head, dict):
        raise r.error("missing [profile] table", key="profile")
    _unknown_keys(r, head, _PROFILE_KEYS, "profile")
    if default_name is None and not source.startswith("<"):
        default_name = Path(source).stem
    name = _str(r, head, "name", "profile", default=default_name)
    function = _function(r, head, "function", "profile", None, FUNCTION_INPUT)
    order = _order(r, head, "profile", None, Order.ABCD)
    max_gap = _int(r, head, "max_gap", "profile", None, 10, 0, MAX_READ_COUNT)
    max_count = _int(r, head, "max_count", "profile", None, MAX_READ_COUNT, 1, MAX_READ_COUNT)
    unmapped = _str(r, head, "unmapped", "profile", default="zero")
    if unmapped not in _UNMAPPED:
        raise r.error(f"must be 'zero' or 'illegal', got {unmapped!r}", "profile", None, "unmapped")
    both = head.get("both_functions", False)
    if not isinstance(both, bool):
        raise r.error(f"must be true or false, got {both!r}", "profile", None, "both_functions")
    doc = head.get("document")
    if not isinstance(doc, dict):
        raise r.error(
            "missing [profile.document] (title, version, url)", "profile", None, "document"
        )
    _unknown_keys(r, doc, _DOCUMENT_KEYS, "profile.document")
    document = Document(
        _str(r, doc, "title", "profile.document"),
        _str(r, doc, "version", "profile.document"),
        _str(r, doc, "url", "profile.document"),
    )

    unreadable = []
    raw_unreadable = data.get("unreadable", [])
    if not isinstance(raw_unreadable, list):
        raise r.error("must be an array of tables [[unreadable]]", key="unreadable")
    for i, entry in enumerate(raw_unreadable):
        if not isinstance(entry, dict):
            raise r.error("must be a table [[unreadable]]", "unreadable", i)
        _unknown_keys(r, entry, _UNREADABLE_KEYS, "unreadable", i)
        start = _int(r, entry, "start", "unreadable", i, None, 0, 0xFFFF)
        stop = _int(r, entry, "stop", "unreadable", i, None, start + 1, 0x10000)
        func = _function(r, entry, "function", "unreadable", i, 0) or None
        unreadable.append(AddressRange(start, stop, func))

    raw_registers = data.get("registers")
    if not isinstance(raw_registers, list) or not raw_registers:
        raise r.error(
            "missing [[registers]]: a profile needs at least one register", key="registers"
        )
    specs: list[RegisterSpec] = []
    for i, entry in enumerate(raw_registers):
        if not isinstance(entry, dict):
            raise r.error("must be a table [[registers]]", "registers", i)
        specs.append(_register(r, entry, i, function, order))
    _check_overlaps(r, specs, unreadable)
    profile = Profile(
        name=name,
        manufacturer=_str(r, head, "manufacturer", "profile"),
        model=_str(r, head, "model", "profile"),
        document=document,
        function=function,
        order=order,
        registers=tuple(specs),
        max_gap=max_gap,
        max_count=max_count,
        unmapped=unmapped,
        both_functions=both,
        unreadable=tuple(unreadable),
        source=source,
    )
    return profile


def _register(
    r: _Reader, entry: Mapping[str, Any], i: int, function: int, order: Order
) -> RegisterSpec:
    _unknown_keys(r, entry, _REGISTER_KEYS, "registers", i)
    obis_text = _str(r, entry, "obis", "registers", i)
    try:
        obis = Obis.parse(obis_text)
    except ObisError as exc:
        raise r.error(str(exc), "registers", i, "obis") from None
    type_text = _str(r, entry, "type", "registers", i)
    try:
        dtype = DataType(type_text)
    except ValueError:
        raise r.error(
            f"unknown type {type_text!r} (known: {', '.join(t.value for t in DataType)})",
            "registers",
            i,
            "type",
        ) from None
    address = _int(r, entry, "address", "registers", i, None, 0, 0x10000 - register_count(dtype))
    unit = _str(r, entry, "unit", "registers", i)
    try:
        unit_info = unit_by_symbol(unit)
    except UnitError as exc:
        raise r.error(str(exc), "registers", i, "unit") from None
    quantity = quantity_for(obis)
    if quantity is not None and unit_by_symbol(quantity.unit).code != unit_info.code:
        raise r.error(
            f"{unit!r} is not a unit of {obis} ({quantity.name}, in {quantity.unit})",
            "registers",
            i,
            "unit",
        )
    multiplier, exponent = _scale(r, entry, i)
    spec = RegisterSpec(
        obis=obis,
        function=_function(r, entry, "function", "registers", i, function),
        address=address,
        dtype=dtype,
        order=_order(r, entry, "registers", i, order),
        multiplier=multiplier,
        exponent=exponent,
        unit=unit,
        description=_str(r, entry, "description", "registers", i, default=""),
    )
    return spec


def _check_overlaps(
    r: _Reader, specs: Sequence[RegisterSpec], unreadable: Sequence[AddressRange]
) -> None:
    seen_obis: dict[Obis, int] = {}
    for i, spec in enumerate(specs):
        if spec.obis in seen_obis:
            raise r.error(
                f"{spec.obis} already mapped by registers[{seen_obis[spec.obis]}]",
                "registers",
                i,
                "obis",
            )
        seen_obis[spec.obis] = i
        for gap in unreadable:
            if gap.hits(spec.function, spec.address, spec.address + spec.count):
                raise r.error(
                    f"lies in the unreadable range 0x{gap.start:04X}..0x{gap.stop - 1:04X}",
                    "registers",
                    i,
                    "address",
                )
    order = sorted(range(len(specs)), key=lambda k: (specs[k].function, specs[k].address))
    for before, after in itertools.pairwise(order):
        a, b = specs[before], specs[after]
        if a.function == b.function and b.address < a.address + a.count:
            raise r.error(
                f"registers 0x{b.address:04X}.. overlap registers[{before}] "
                f"({a.obis} at 0x{a.address:04X}, {a.count} registers)",
                "registers",
                after,
                "address",
            )
