"""Profile Generic (interface class 7, version 1; Blue Book 4.3.6), sans-IO.

* the capture objects (attribute 3): ``array of structure {class_id long-unsigned,
  logical_name octet-string(6), attribute_index integer, data_index long-unsigned}``;
* the selective access of the buffer (attribute 2): ``range_descriptor`` (selector 1:
  restricting object, from/to value, selected values) and ``entry_descriptor`` (selector 2:
  from/to entry, from/to selected value), encoded for the client (``to_bytes``: selector
  byte + A-XDR parameters, the shape dlms-cosem's ``GetRequestNormal`` puts after the
  "access selection present" byte) and parsed for the server (``parse_access``);
* the buffer (``array of structure``) decoded into :class:`BufferEntry`: the clock column as
  Unix ms, the status column, and each register column scaled exactly (``exact_value``)
  into ``protocols.record.Value``;
* the AMR profile status byte (IDIS / DSMR) mapped to ``Quality`` flags.

dlms-cosem 21.3.2 has a ``RangeDescriptor`` (client encode; its ``from_bytes`` cannot parse
selected values, and the one in ``protocol/xdlms`` does not parse at all), no
``EntryDescriptor`` encoding (``to_bytes`` raises ``NotImplementedError``), no parser of
the capture-object list, and a buffer parser that reads the capture period in minutes (the
Blue Book says seconds), silently drops null register columns and keeps no exact values:
the codecs are here, checked against its ``RangeDescriptor`` bytes in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..obis import Obis
from ..record import Quality, Value
from . import DlmsDecodeError, DlmsEncodeError
from .axdr import Data, Tag, encode_data
from .cosem import CosemDateTime, ScalerUnit, exact_value

__all__ = [
    "AMR_CLOCK_ADJUSTED",
    "AMR_CLOCK_INVALID",
    "AMR_CRITICAL_ERROR",
    "AMR_DATA_NOT_VALID",
    "AMR_DST",
    "AMR_POWER_DOWN",
    "CLASS_PROFILE_GENERIC",
    "SELECTOR_ENTRY",
    "SELECTOR_RANGE",
    "BufferEntry",
    "CaptureObject",
    "EntryDescriptor",
    "RangeDescriptor",
    "decode_buffer",
    "encode_capture_objects",
    "parse_access",
    "parse_capture_objects",
    "status_quality",
]

CLASS_PROFILE_GENERIC = 7
CLASS_DATA = 1
CLASS_REGISTER = 3
CLASS_EXTENDED_REGISTER = 4
CLASS_CLOCK = 8
SELECTOR_RANGE = 1
SELECTOR_ENTRY = 2

# AMR profile status (IDIS package 2 / DSMR 5 "profile status", one byte per entry)
AMR_CRITICAL_ERROR = 0x01  # ERR: a serious error (with DNV)
AMR_CLOCK_INVALID = 0x02  # CIV: the clock's power reserve ran out, time invalid (with DNV)
AMR_DATA_NOT_VALID = 0x04  # DNV: not for billing without further validation
AMR_DST = 0x08  # DST: daylight saving time active (a state, not an event)
AMR_CLOCK_ADJUSTED = 0x20  # CAD: clock adjusted by more than the synchronisation limit
AMR_POWER_DOWN = 0x80  # PDN: a total power outage during the capture period

_METER_STATUS_BITS = AMR_CRITICAL_ERROR | AMR_DATA_NOT_VALID | AMR_POWER_DOWN
_CLOCK_SUSPECT_BITS = AMR_CLOCK_INVALID | AMR_CLOCK_ADJUSTED


def status_quality(status: int) -> Quality:
    """The quality flags an AMR profile status byte stands for.

    ERR, DNV and PDN -> METER_STATUS (the meter says the entry needs validation; PDN: the
    period holds a power outage, so its energy is not a full period's); CIV and CAD ->
    CLOCK_SUSPECT (the entry's timestamp may be off). DST is the season, not a problem: the
    timestamp's deviation already carries it, and flagging it would mark half the year.
    Reserved bits (0x10, 0x40) are ignored."""
    flags = Quality.NONE
    if status & _METER_STATUS_BITS:
        flags |= Quality.METER_STATUS
    if status & _CLOCK_SUSPECT_BITS:
        flags |= Quality.CLOCK_SUSPECT
    return flags


# -- capture objects --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CaptureObject:
    """One column of a profile: which attribute of which object (``data_index`` 0: all of
    it)."""

    class_id: int
    obis: Obis
    attribute: int
    data_index: int = 0

    def to_data(self) -> Data:
        return Data.structure(
            Data(Tag.LONG_UNSIGNED, self.class_id),
            Data.octet_string(self.obis.to_bytes()),
            Data(Tag.INTEGER, self.attribute),
            Data(Tag.LONG_UNSIGNED, self.data_index),
        )

    def to_bytes(self) -> bytes:
        return encode_data(self.to_data())

    @classmethod
    def from_data(cls, item: Data, where: str = "capture object") -> CaptureObject:
        if item.tag is not Tag.STRUCTURE or len(item.items) != 4:
            raise DlmsDecodeError(f"{where}: expected a structure of 4 elements")
        class_id, name, attribute, data_index = item.items
        tags = (class_id.tag, name.tag, attribute.tag, data_index.tag)
        if tags != (Tag.LONG_UNSIGNED, Tag.OCTET_STRING, Tag.INTEGER, Tag.LONG_UNSIGNED):
            raise DlmsDecodeError(
                f"{where}: expected (long-unsigned, octet-string, integer, long-unsigned), "
                f"got ({', '.join(t.name for t in tags)})"
            )
        if len(name.octets) != 6:
            raise DlmsDecodeError(f"{where}: logical name of {len(name.octets)} bytes, not 6")
        return cls(
            class_id.integer, Obis.from_bytes(name.octets), attribute.integer, data_index.integer
        )

    def __str__(self) -> str:
        index = f"/{self.data_index}" if self.data_index else ""
        return f"{self.obis} (class {self.class_id}) attribute {self.attribute}{index}"


def encode_capture_objects(columns: Sequence[CaptureObject]) -> Data:
    """Attribute 3 as a server sends it."""
    return Data.array(*(c.to_data() for c in columns))


def parse_capture_objects(item: Data) -> tuple[CaptureObject, ...]:
    """Attribute 3 as a client receives it."""
    if item.tag is not Tag.ARRAY:
        raise DlmsDecodeError(f"capture objects: expected an array, got {item.tag.name}")
    return tuple(
        CaptureObject.from_data(column, f"capture object {index + 1}")
        for index, column in enumerate(item.items)
    )


# -- selective access -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RangeDescriptor:
    """Selector 1: the entries whose ``restricting`` column lies in ``[start, end]``
    (both included, Blue Book 4.3.6), columns ``selected`` (empty: all)."""

    restricting: CaptureObject
    start: CosemDateTime
    end: CosemDateTime
    selected: tuple[CaptureObject, ...] = ()

    ACCESS_SELECTOR = SELECTOR_RANGE

    @classmethod
    def by_time(
        cls,
        clock: CaptureObject,
        start_ms: int,
        end_ms: int,
        deviation: int = 0,
        selected: Sequence[CaptureObject] = (),
    ) -> RangeDescriptor:
        """From/to as the meter's local date-times at ``deviation`` (status 0)."""
        return cls(
            clock,
            CosemDateTime.from_unix_ms(start_ms, deviation),
            CosemDateTime.from_unix_ms(end_ms, deviation),
            tuple(selected),
        )

    def to_data(self) -> Data:
        return Data.structure(
            self.restricting.to_data(),
            Data.octet_string(self.start.to_bytes()),
            Data.octet_string(self.end.to_bytes()),
            Data.array(*(c.to_data() for c in self.selected)),
        )

    def to_bytes(self) -> bytes:
        """access-selector + access-parameters, as in a GET-request-normal."""
        return bytes((self.ACCESS_SELECTOR,)) + encode_data(self.to_data())

    @classmethod
    def from_data(cls, item: Data) -> RangeDescriptor:
        if item.tag is not Tag.STRUCTURE or len(item.items) != 4:
            raise DlmsDecodeError("range_descriptor: expected a structure of 4 elements")
        restricting, start, end, selected = item.items
        if selected.tag is not Tag.ARRAY:
            raise DlmsDecodeError("range_descriptor: selected_values is not an array")
        try:
            return cls(
                CaptureObject.from_data(restricting, "range_descriptor restricting_object"),
                _date_time(start, "from_value"),
                _date_time(end, "to_value"),
                tuple(
                    CaptureObject.from_data(c, f"range_descriptor selected value {i + 1}")
                    for i, c in enumerate(selected.items)
                ),
            )
        except DlmsDecodeError as exc:
            text = str(exc)
            raise DlmsDecodeError(
                text if text.startswith("range_descriptor") else f"range_descriptor: {text}"
            ) from None


def _date_time(item: Data, name: str) -> CosemDateTime:
    if item.tag not in (Tag.OCTET_STRING, Tag.DATE_TIME) or len(item.octets) != 12:
        raise DlmsDecodeError(f"range_descriptor {name}: expected a 12-byte date-time")
    return CosemDateTime.from_bytes(item.octets)


@dataclass(frozen=True, slots=True)
class EntryDescriptor:
    """Selector 2: entries ``from_entry..to_entry`` (1 = the oldest; ``to_entry`` 0 = the
    newest), columns ``from_value..to_value`` (1-based; ``to_value`` 0 = the last)."""

    from_entry: int = 1
    to_entry: int = 0
    from_value: int = 1
    to_value: int = 0

    ACCESS_SELECTOR = SELECTOR_ENTRY

    def __post_init__(self) -> None:
        for name, value, high in (
            ("from_entry", self.from_entry, 0xFFFFFFFF),
            ("to_entry", self.to_entry, 0xFFFFFFFF),
            ("from_selected_value", self.from_value, 0xFFFF),
            ("to_selected_value", self.to_value, 0xFFFF),
        ):
            if not 0 <= value <= high:
                raise DlmsEncodeError(f"entry_descriptor {name} {value} out of 0..{high}")

    def to_data(self) -> Data:
        return Data.structure(
            Data(Tag.DOUBLE_LONG_UNSIGNED, self.from_entry),
            Data(Tag.DOUBLE_LONG_UNSIGNED, self.to_entry),
            Data(Tag.LONG_UNSIGNED, self.from_value),
            Data(Tag.LONG_UNSIGNED, self.to_value),
        )

    def to_bytes(self) -> bytes:
        return bytes((self.ACCESS_SELECTOR,)) + encode_data(self.to_data())

    @classmethod
    def from_data(cls, item: Data) -> EntryDescriptor:
        if item.tag is not Tag.STRUCTURE or len(item.items) != 4:
            raise DlmsDecodeError("entry_descriptor: expected a structure of 4 elements")
        tags = tuple(i.tag for i in item.items)
        want = (Tag.DOUBLE_LONG_UNSIGNED, Tag.DOUBLE_LONG_UNSIGNED)
        want += (Tag.LONG_UNSIGNED, Tag.LONG_UNSIGNED)
        if tags != want:
            raise DlmsDecodeError(
                "entry_descriptor: expected (double-long-unsigned x2, long-unsigned x2), "
                f"got ({', '.join(t.name for t in tags)})"
            )
        return cls(*(i.integer for i in item.items))

    def selects(self, count: int) -> range:
        """The 0-based indexes of the entries selected out of ``count`` (oldest first)."""
        last = count if self.to_entry == 0 else min(self.to_entry, count)
        return range(max(self.from_entry, 1) - 1, last)


def parse_access(selector: int, parameters: Data) -> RangeDescriptor | EntryDescriptor:
    """The server side: an access-selector and its parameters (``DlmsDecodeError`` for
    any other selector or malformed parameters)."""
    if selector == SELECTOR_RANGE:
        return RangeDescriptor.from_data(parameters)
    if selector == SELECTOR_ENTRY:
        return EntryDescriptor.from_data(parameters)
    raise DlmsDecodeError(f"selective access: unknown access selector {selector}")


# -- the buffer -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BufferEntry:
    """One decoded row: its time (Unix ms), status byte (None: no status column), the
    quality the status stands for (+ the clock column's own), and the register values."""

    captured_ms: int
    status: int | None
    flags: Quality
    values: tuple[Value, ...]


def decode_buffer(
    buffer: Data,
    columns: Sequence[CaptureObject],
    scalers: Mapping[Obis, ScalerUnit],
    *,
    capture_period_s: int = 0,
    assume_deviation: int = 0,
    where: str = "buffer",
) -> list[BufferEntry]:
    """Rows of a Profile Generic buffer -> entries, in the order received.

    The clock column (class 8, attribute 2) gives the time; a null clock cell (IDIS
    "compressed" rows) is the previous row's time plus ``capture_period_s`` (an error if
    there is no previous row or no period). A Data/Register column named 0.0.96.10.x is the
    status (an integer type or a bit-string). Register and Extended
    Register value columns (attribute 2) become Values, scaled with ``scalers[obis]`` (a
    missing scaler is an error naming the column). A null register cell is left out (the
    meter has no value); other columns are ignored.
    """
    if buffer.tag is not Tag.ARRAY:
        raise DlmsDecodeError(f"{where}: expected an array of entries, got {buffer.tag.name}")
    clock_index = next(
        (i for i, c in enumerate(columns) if c.class_id == CLASS_CLOCK and c.attribute == 2),
        None,
    )
    if clock_index is None:
        raise DlmsDecodeError(f"{where}: no clock column among the capture objects")
    status_index = next((i for i, c in enumerate(columns) if _is_status(c)), None)
    value_indexes = [
        i
        for i, c in enumerate(columns)
        if c.class_id in (CLASS_REGISTER, CLASS_EXTENDED_REGISTER) and c.attribute == 2
    ]
    for i in value_indexes:
        if columns[i].obis not in scalers:
            raise DlmsDecodeError(f"{where}: no scaler_unit for column {i + 1} ({columns[i]})")
    entries: list[BufferEntry] = []
    previous_ms: int | None = None
    for row_number, row in enumerate(buffer.items, start=1):
        here = f"{where} entry {row_number}"
        if row.tag is not Tag.STRUCTURE:
            raise DlmsDecodeError(f"{here}: expected a structure, got {row.tag.name}")
        cells = row.items
        if len(cells) != len(columns):
            raise DlmsDecodeError(
                f"{here}: {len(cells)} columns, the capture objects list {len(columns)}"
            )
        flags = Quality.NONE
        clock = cells[clock_index]
        if clock.tag is Tag.NULL:
            if previous_ms is None or capture_period_s <= 0:
                raise DlmsDecodeError(f"{here}: clock column null with no previous entry time")
            captured_ms = previous_ms + capture_period_s * 1000
        else:
            try:
                stamp = CosemDateTime.from_data(clock)
                captured_ms = stamp.to_unix_ms(assume_deviation)
            except DlmsDecodeError as exc:
                raise DlmsDecodeError(f"{here} clock column: {exc}") from None
            flags |= stamp.quality
        status: int | None = None
        if status_index is not None:
            cell = cells[status_index]
            if cell.tag is Tag.BIT_STRING:
                status = int.from_bytes(cell.octets, "big") if cell.octets else 0
            elif cell.tag is not Tag.NULL:
                try:
                    status = cell.integer
                except DlmsDecodeError as exc:
                    raise DlmsDecodeError(f"{here} status column: {exc}") from None
            if status is not None:
                flags |= status_quality(status)
        values: list[Value] = []
        for i in value_indexes:
            cell = cells[i]
            if cell.tag is Tag.NULL:
                continue
            obis = columns[i].obis
            try:
                amount, unit = exact_value(obis, cell, scalers[obis])
            except DlmsDecodeError as exc:
                raise DlmsDecodeError(f"{here} column {i + 1} ({obis}): {exc}") from None
            values.append(Value(obis, amount, unit))
        entries.append(BufferEntry(captured_ms, status, flags, tuple(values)))
        previous_ms = captured_ms
    return entries


def _is_status(column: CaptureObject) -> bool:
    """The AMR profile status column: 0.0.96.10.n (Data or Register value)."""
    obis = column.obis
    return (
        column.attribute == 2
        and column.class_id in (CLASS_DATA, CLASS_REGISTER)
        and (obis.c, obis.d) == (96, 10)
    )
