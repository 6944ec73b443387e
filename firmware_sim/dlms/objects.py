"""The simulated meter's COSEM objects, all from the same
:class:`~firmware_sim.model.MeterModel` as the Modbus simulator.

========================  =====  ============================  ===========================
OBIS                      class  attribute 2                   attribute 3 (scaler_unit)
========================  =====  ============================  ===========================
0.0.1.0.0.255 Clock       8      date-time (octet-string 12)   time_zone (attr 3), status 4
1.0.1.8.0.255 / 2.8.0     3      double-long-unsigned          0, Wh
1.0.3.8.0.255 / 4.8.0     3      double-long-unsigned          0, varh
1.0.16.7.0.255 (+21/41/61) 3     double-long                   -1, W
1.0.32.7.0.255 (+52/72)   3      long-unsigned                 -1, V
1.0.31.7.0.255 (+51/71)   3      long-unsigned                 -2, A
1.0.14.7.0.255            3      long-unsigned                 -2, Hz
0.0.96.1.0.255 Data       1      octet-string (serial number)
========================  =====  ============================  ===========================

Energy registers are truncated (a meter's counters never run ahead of the energy), the
rest rounded half-even. Each object answers GET (and SET where it allows it) for its own
attributes; :meth:`DlmsMeterState.get` dispatches by logical name and checks the class:
unknown objects answer data-access-result object-undefined (4), a known logical name under
another class object-class-inconsistent (9), a missing attribute object-unavailable (11).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Protocol

from protocols.clock import ClockSetting
from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data, Tag
from protocols.dlms.cosem import ScalerUnit
from protocols.obis import Obis, quantity_for
from protocols.units import convert, unit_by_code

from ..model import MeterModel
from .plain import PlainObject

__all__ = [
    "CLASS_DATA",
    "CLASS_REGISTER",
    "DLMS_OBJECTS",
    "CosemObject",
    "DataObject",
    "DlmsMeterState",
    "RegisterObject",
    "register_integer",
]

CLASS_DATA = 1
CLASS_REGISTER = 3
OBIS_SERIAL = Obis(0, 0, 96, 1, 0, 255)


class CosemObject(Protocol):
    """One interface object of the simulated logical device."""

    obis: Obis
    class_id: int
    version: int

    def get(
        self, meter: DlmsMeterState, attribute: int, selector: Data | None
    ) -> Data | AccessResult:
        """Attribute ``attribute`` (>= 2); ``selector`` is the selective access
        (``structure {selector, parameters}``) or None."""
        ...

    def set(self, meter: DlmsMeterState, attribute: int, value: Data) -> AccessResult:
        """SET attribute ``attribute`` (>= 2); SUCCESS or why not."""
        ...


@dataclass(frozen=True, slots=True)
class RegisterObject(PlainObject):
    obis: Obis
    tag: Tag  # A-XDR type of the value
    scaler: int
    unit_code: int  # DLMS unit enumeration
    class_id: int = CLASS_REGISTER
    version: int = 0

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        if attribute == 2:
            value = meter.model.values_at(meter.virtual_ns()).get(self.obis, Decimal(0))
            return Data(self.tag, register_integer(self, value))
        if attribute == 3:
            return ScalerUnit(self.scaler, self.unit_code).to_data()
        return AccessResult.OBJECT_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class DataObject(PlainObject):
    """A Data object (class 1) with a fixed value."""

    obis: Obis
    value: Data
    class_id: int = CLASS_DATA
    version: int = 0

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        return self.value if attribute == 2 else AccessResult.OBJECT_UNAVAILABLE


def _reg(code: str, tag: Tag, scaler: int, unit_code: int) -> RegisterObject:
    return RegisterObject(Obis.parse(code), tag, scaler, unit_code)


#: The registers the simulated meter has, by OBIS code.
DLMS_OBJECTS: dict[Obis, RegisterObject] = {
    r.obis: r
    for r in (
        _reg("1-0:1.8.0", Tag.DOUBLE_LONG_UNSIGNED, 0, 30),
        _reg("1-0:2.8.0", Tag.DOUBLE_LONG_UNSIGNED, 0, 30),
        _reg("1-0:3.8.0", Tag.DOUBLE_LONG_UNSIGNED, 0, 32),
        _reg("1-0:4.8.0", Tag.DOUBLE_LONG_UNSIGNED, 0, 32),
        _reg("1-0:16.7.0", Tag.DOUBLE_LONG, -1, 27),
        _reg("1-0:21.7.0", Tag.DOUBLE_LONG, -1, 27),
        _reg("1-0:41.7.0", Tag.DOUBLE_LONG, -1, 27),
        _reg("1-0:61.7.0", Tag.DOUBLE_LONG, -1, 27),
        _reg("1-0:32.7.0", Tag.LONG_UNSIGNED, -1, 35),
        _reg("1-0:52.7.0", Tag.LONG_UNSIGNED, -1, 35),
        _reg("1-0:72.7.0", Tag.LONG_UNSIGNED, -1, 35),
        _reg("1-0:31.7.0", Tag.LONG_UNSIGNED, -2, 33),
        _reg("1-0:51.7.0", Tag.LONG_UNSIGNED, -2, 33),
        _reg("1-0:71.7.0", Tag.LONG_UNSIGNED, -2, 33),
        _reg("1-0:14.7.0", Tag.LONG_UNSIGNED, -2, 44),
    )
}


def register_integer(spec: RegisterObject, value: Decimal) -> int:
    """The integer a register shows for ``value`` (in its quantity's canonical unit)."""
    quantity = quantity_for(spec.obis)
    base = unit_by_code(spec.unit_code).symbol
    if quantity is not None and quantity.unit != base:
        value = convert(value, quantity.unit, base)
    cumulative = quantity is not None and quantity.cumulative
    rounding = ROUND_FLOOR if cumulative else ROUND_HALF_EVEN
    return int(value.scaleb(-spec.scaler).to_integral_value(rounding=rounding))


@dataclass(slots=True)
class DlmsMeterState:
    """One simulated DLMS meter: its model, clock, objects and counters."""

    model: MeterModel
    clock: ClockSetting
    clock_offset_ms: int = 0  # the meter's clock minus the true (virtual) time
    deviation: int = 0  # minutes, UTC = local + deviation
    clock_status: int = 0
    drift_ppm: int = 0  # the clock gains this many µs per virtual second (``drift-ppm``)
    drift_from_ns: int = 0  # virtual instant from which the drift accumulates
    clock_adjusted_ms: int | None = None  # the meter's time right after its clock was SET
    wall_ns: Callable[[], int] = time.time_ns
    profile_period_s: int = 900  # capture period of the load profile
    objects: dict[Obis, CosemObject] = field(default_factory=dict)
    associations: int = 0
    rejected: int = 0
    gets: int = 0
    sets: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        if not self.objects:
            for obj in standard_objects(self):
                self.objects[obj.obis] = obj

    def virtual_ns(self) -> int:
        return self.clock.virtual_ns(self.wall_ns())

    def meter_clock_ms(self, virtual_ns: int) -> int:
        """The meter's clock (Unix ms) at true virtual instant ``virtual_ns``: the offset
        plus the drift gained since ``drift_from_ns`` (``clock.py``)."""
        drift_ms = (virtual_ns - self.drift_from_ns) * self.drift_ppm // 10**12
        return virtual_ns // 1_000_000 + self.clock_offset_ms + drift_ms

    def lookup(self, class_id: int, obis: Obis) -> CosemObject | AccessResult:
        obj = self.objects.get(obis)
        if obj is None:
            return AccessResult.OBJECT_UNDEFINED
        if class_id != obj.class_id:
            return AccessResult.OBJECT_CLASS_INCONSISTENT
        return obj

    def get(
        self, class_id: int, obis: Obis, attribute: int, selector: Data | None = None
    ) -> Data | AccessResult:
        """The value of one attribute, or why there is none."""
        obj = self.lookup(class_id, obis)
        if isinstance(obj, AccessResult):
            return obj
        if attribute == 1:
            return Data.octet_string(obis.to_bytes())
        if attribute < 1:
            return AccessResult.OBJECT_UNAVAILABLE
        return obj.get(self, attribute, selector)

    def set(self, class_id: int, obis: Obis, attribute: int, value: Data) -> AccessResult:
        obj = self.lookup(class_id, obis)
        if isinstance(obj, AccessResult):
            return obj
        if attribute == 1:
            return AccessResult.READ_WRITE_DENIED
        return obj.set(self, attribute, value)

    def command(self, words: list[str]) -> str:
        """A control command (one line on the simulator's stdin, see ``cli``): the answer
        line. Modules add theirs to :data:`COMMANDS`."""
        handler = COMMANDS.get(words[0]) if words else None
        if handler is None:
            return f"ERROR unknown command: {' '.join(words)!r}; known: {', '.join(COMMANDS)}"
        return handler(self, words[1:])


#: control commands by name: ``handler(meter, args) -> answer line`` ("OK ..."/"ERROR ..."),
#: registered by the modules that own what they change (``clock``, ``profile``)
COMMANDS: dict[str, Callable[[DlmsMeterState, list[str]], str]] = {}


def standard_objects(meter: DlmsMeterState) -> list[CosemObject]:
    """The objects every simulated meter has (one line per kind of object). The modules
    are imported here: they import this one for the meter's state."""
    from .association import AssociationObject
    from .clock import ClockObject
    from .extended import MaxDemandObject, PowerFailuresObject
    from .profile import profile_objects

    objects: list[CosemObject] = [ClockObject()]
    objects += DLMS_OBJECTS.values()
    objects.append(DataObject(OBIS_SERIAL, Data.octet_string(meter.model.meter_id.encode())))
    objects += [MaxDemandObject(), PowerFailuresObject()]
    objects.append(AssociationObject())
    objects += profile_objects(meter)
    return objects
