"""The configured value objects of a meter, whatever their interface class.

``objects = [...]`` in the config lists OBIS codes only: the class is the meter's business.
Each object is first asked for as a Register (class 3); a meter that answers
object-class-inconsistent (9) is asked again as an Extended Register (class 4), then as a
Data object (class 1). The class found is kept for the meter's life (a meter does not
change an object's class), the scaler_unit for one association.

* Register (3): value (2) x 10^scaler in the unit of scaler_unit (3), exact.
* Extended Register (4): the same, and its status (4): a status other than 0 (or a status
  that is not a number) flags the value ``METER_STATUS``. Its capture_time (5) is not read:
  a value has no time of its own in a record (the capture's time is the meter's clock).
* Data (1): a numeric value taken as it is, as a count (no scaler, no unit); a value that
  is not a number (a serial number, a text) is an error for that object only.
"""

from __future__ import annotations

from decimal import Decimal

from protocols.dlms import DlmsDecodeError
from protocols.dlms.axdr import Data, Tag
from protocols.dlms.cosem import ScalerUnit, exact_value
from protocols.obis import Obis
from protocols.record import Quality, Value

from .session import DlmsSession, ObjectError

__all__ = ["CLASS_DATA", "CLASS_EXTENDED_REGISTER", "CLASS_REGISTER", "ObjectReader"]

CLASS_DATA = 1
CLASS_REGISTER = 3
CLASS_EXTENDED_REGISTER = 4
OBJECT_CLASS_INCONSISTENT = 9
#: the classes tried, in order, for an object whose class is not known yet
_CANDIDATES = (CLASS_REGISTER, CLASS_EXTENDED_REGISTER, CLASS_DATA)
_NUMBERS = {
    Tag.DOUBLE_LONG,
    Tag.DOUBLE_LONG_UNSIGNED,
    Tag.INTEGER,
    Tag.LONG,
    Tag.UNSIGNED,
    Tag.LONG_UNSIGNED,
    Tag.LONG64,
    Tag.LONG64_UNSIGNED,
    Tag.ENUM,
}


class ObjectReader:
    """Reads a meter's value objects in one association at a time."""

    def __init__(self, meter_id: str, objects: tuple[Obis, ...]) -> None:
        self.meter_id = meter_id
        self.objects = objects
        self.classes: dict[Obis, int] = {}  # found by asking; kept across associations

    async def read(self, session: DlmsSession) -> tuple[list[Value], list[str]]:
        """The values read, and one error text per object that could not be read."""
        values: list[Value] = []
        errors: list[str] = []
        for obis in self.objects:
            try:
                values.append(await self._read_one(session, obis))
            except (ObjectError, DlmsDecodeError) as exc:
                errors.append(f"meter {self.meter_id}: {obis}: {exc}")
        return values, errors

    async def _read_one(self, session: DlmsSession, obis: Obis) -> Value:
        known = self.classes.get(obis)
        for class_id in (known,) if known is not None else _CANDIDATES:
            try:
                value = await self._read_as(session, class_id, obis)
            except ObjectError as exc:
                if known is None and exc.result == OBJECT_CLASS_INCONSISTENT:
                    continue  # another class: ask again
                raise
            self.classes[obis] = class_id
            return value
        raise ObjectError(
            "not a Register, Extended Register or Data object (the meter answered "
            "object-class-inconsistent for each)"
        )

    async def _read_as(self, session: DlmsSession, class_id: int, obis: Obis) -> Value:
        if class_id == CLASS_DATA:
            raw = await session.get(CLASS_DATA, obis, 2)
            if raw.tag not in _NUMBERS or not isinstance(raw.value, int):
                raise ObjectError(f"Data value is {raw.tag.name.lower()}, not a number")
            return Value(obis, Decimal(raw.value), "")
        scaler_unit = ScalerUnit.from_data(await session.get(class_id, obis, 3))
        amount, unit = exact_value(obis, await session.get(class_id, obis, 2), scaler_unit)
        flags = Quality.NONE
        if class_id == CLASS_EXTENDED_REGISTER:
            status = await session.get(class_id, obis, 4)
            if not _is_zero(status):
                flags |= Quality.METER_STATUS
        return Value(obis, amount, unit, flags)


def _is_zero(status: Data) -> bool:
    """An Extended Register's status: an unsigned or a bit-string; null means no status."""
    if status.tag is Tag.NULL:
        return True
    if isinstance(status.value, int):
        return status.value == 0
    if isinstance(status.value, bytes | bytearray):
        return not any(status.value)
    return False
