"""``meterlink agent scan dlms``: what a DLMS meter has, and a config section to read it.

One association (the public client unless told otherwise), the current association's
object list (Association LN 0.0.40.0.0.255, attribute 2), then per Register (class 3)
and Extended Register (class 4) its scaler_unit and value, the Clock's time and short
Data values (a serial number). The result prints as a table and as a ready-to-paste
``[[meters]]`` section whose ``objects`` are the energy, power and voltage registers
found (the quantities meterlink knows, ``protocols.obis``) and whose ``load_profile`` is
1-0:99.1.0 when the meter has that Profile Generic.

Errors: no answer / refused connection / refused association come out as ``ScanError``
with the text the driver would log; an object that cannot be read is shown with its
error in the table, never stopping the scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from dlms_cosem.enumerations import CosemInterface

from agent.config import DLMS_DEFAULT_PORT, DlmsSettings
from protocols.clock import format_utc_ms
from protocols.dlms import DlmsDecodeError
from protocols.dlms.axdr import Data, Tag
from protocols.dlms.cosem import CosemDateTime, ScalerUnit, exact_value
from protocols.obis import Obis, ObisError, quantity_for

from .meter import make_transport
from .session import DlmsSession, ObjectError

__all__ = [
    "ASSOCIATION",
    "LOAD_PROFILE",
    "ScanError",
    "ScanResult",
    "ScannedObject",
    "config_section",
    "format_table",
    "parse_object_list",
    "scan",
]

CLASS_ASSOCIATION_LN = 15
ASSOCIATION = Obis(0, 0, 40, 0, 0, 255)
LOAD_PROFILE = Obis(1, 0, 99, 1, 0, 255)
SERIAL = Obis(0, 0, 96, 1, 0, 255)
REGISTER_CLASSES = (3, 4)  # Register, Extended Register: value with a scaler_unit
CONFIG_UNITS = ("kWh", "kvarh", "W", "V")  # energy, power, voltage: the config's objects
_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ScanError(Exception):
    """The meter could not be scanned at all (no answer, association refused, no list)."""


@dataclass(slots=True)
class ScannedObject:
    class_id: int
    version: int
    obis: Obis
    value: str = ""  # registers: "12.345 kWh"; clock: the time; data: a short value
    error: str = ""
    amount: Decimal | None = None
    unit: str = ""

    @property
    def class_name(self) -> str:
        return class_name(self.class_id)


@dataclass(slots=True)
class ScanResult:
    description: str  # the transport, e.g. "127.0.0.1:4059 (wPort 16->1)"
    objects: list[ScannedObject] = field(default_factory=list)

    def find(self, obis: Obis) -> ScannedObject | None:
        return next((o for o in self.objects if o.obis == obis), None)

    @property
    def config_objects(self) -> list[Obis]:
        """The registers a meter section reads: energy, power and voltage ones meterlink
        knows, that answered."""
        out = []
        for obj in self.objects:
            quantity = quantity_for(obj.obis)
            if (
                obj.class_id in REGISTER_CLASSES
                and not obj.error
                and quantity is not None
                and quantity.unit in CONFIG_UNITS
            ):
                out.append(obj.obis)
        return out


def class_name(class_id: int) -> str:
    """``Register``, ``Extended register``, ``Association LN`` (dlms-cosem's names)."""
    try:
        name = CosemInterface(class_id).name
    except ValueError:
        return f"class {class_id}"
    words = name.lower().split("_")
    text = " ".join(words)
    for short in ("ln", "sn", "iec", "hdlc", "tcp", "udp", "ip", "mbus", "plc", "gprs", "lte"):
        text = re.sub(rf"\b{short}\b", short.upper(), text)
    return text[:1].upper() + text[1:]


def parse_object_list(item: Data) -> list[ScannedObject]:
    """Association LN attribute 2 -> (class, version, logical name) per element;
    ``DlmsDecodeError`` naming the element when it is not the Blue Book's structure."""
    if item.tag is not Tag.ARRAY:
        raise DlmsDecodeError(f"object_list: expected an array, got {item.tag.name}")
    found = []
    for index, element in enumerate(item.items):
        try:
            fields = element.items
            if len(fields) < 3:
                raise DlmsDecodeError(f"{len(fields)} fields, expected 4")
            obis = Obis.from_bytes(fields[2].octets)
            found.append(ScannedObject(fields[0].integer, fields[1].integer, obis))
        except (DlmsDecodeError, ObisError) as exc:
            raise DlmsDecodeError(f"object_list element {index}: {exc}") from None
    return found


async def scan(
    settings: DlmsSettings,
    host: str = "",
    port: int = DLMS_DEFAULT_PORT,
    timeout: float = 5.0,
    read_values: bool = True,
) -> ScanResult:
    """Associate, read the object list (and the values: registers, clock, short data,
    profile sizes), release."""
    transport = make_transport(settings, host, port, timeout)
    session = DlmsSession(transport, settings, "scan")
    result = ScanResult(transport.description)
    try:
        try:
            await transport.open()
            await session.open()
        except (ConnectionError, TimeoutError) as exc:
            raise ScanError(_named(transport.description, exc)) from None
        try:
            raw = await session.get(CLASS_ASSOCIATION_LN, ASSOCIATION, 2)
            result.objects = parse_object_list(raw)
        except (ObjectError, DlmsDecodeError) as exc:
            raise ScanError(
                f"dlms at {transport.description}: cannot read the object list: {exc}"
            ) from None
        except (ConnectionError, TimeoutError) as exc:
            raise ScanError(_named(transport.description, exc)) from None
        if read_values:
            for obj in result.objects:
                try:
                    await _read_value(session, obj)
                except (ConnectionError, TimeoutError) as exc:
                    obj.error = str(exc)
                    break  # the stream is out of step: the rest stays unread
    finally:
        await session.close()
    return result


def _named(description: str, exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if description in text else f"dlms at {description}: {text}"


async def _read_value(session: DlmsSession, obj: ScannedObject) -> None:
    try:
        if obj.class_id in REGISTER_CLASSES:
            scaler = ScalerUnit.from_data(await session.get(obj.class_id, obj.obis, 3))
            amount, unit = exact_value(
                obj.obis, await session.get(obj.class_id, obj.obis, 2), scaler
            )
            obj.amount, obj.unit = amount, unit
            obj.value = f"{amount} {unit}".strip()
        elif obj.class_id == 8:
            stamp = CosemDateTime.from_data(await session.get(8, obj.obis, 2))
            obj.value = format_utc_ms(stamp.to_unix_ms(0))
            if stamp.deviation is None:
                obj.value += " (deviation not specified: taken as UTC)"
        elif obj.class_id == 1:
            obj.value = _short(await session.get(1, obj.obis, 2))
        elif obj.class_id == 7:  # Profile Generic: capture period and entries in use
            period = (await session.get(7, obj.obis, 4)).integer
            used = (await session.get(7, obj.obis, 7)).integer
            every = f"every {period // 60} min" if period % 60 == 0 else f"every {period} s"
            obj.value = f"{used} entries, {every}" if period else f"{used} entries"
    except (ObjectError, DlmsDecodeError) as exc:
        obj.error = str(exc)


def _short(item: Data) -> str:
    if item.tag is Tag.OCTET_STRING and isinstance(item.value, bytes):
        text = item.value.decode("ascii", "replace")
        return repr(text) if text.isprintable() else item.value.hex()
    if item.tag is Tag.VISIBLE_STRING:
        return repr(item.value)
    if item.tag in (Tag.ARRAY, Tag.STRUCTURE):
        return f"{item.tag.name.lower()} of {len(item.items)}"
    return str(item.value) if item.value is not None else item.tag.name.lower()


def format_table(result: ScanResult) -> str:
    """One line per object: OBIS, class, version, value (or error)."""
    rows = [("OBIS", "class", "ver", "value")]
    for obj in result.objects:
        shown = obj.value or (f"({obj.error})" if obj.error else "")
        rows.append((str(obj.obis), f"{obj.class_id} {obj.class_name}", str(obj.version), shown))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    ]
    return "\n".join(lines)


def _label(obis: Obis) -> str:
    quantity = quantity_for(obis)
    return f"{quantity.name}, {quantity.unit}" if quantity is not None else ""


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_section(
    result: ScanResult,
    settings: DlmsSettings,
    host: str = "",
    port: int = DLMS_DEFAULT_PORT,
    meter_id: str = "",
) -> str:
    """A ``[[meters]]`` section that reads this meter with the same addressing."""
    if not meter_id:
        serial = result.find(SERIAL)
        raw = serial.value.strip("'\"") if serial is not None and serial.value else ""
        meter_id = _ID_SAFE.sub("-", raw).strip("-") or _ID_SAFE.sub(
            "-", f"dlms-{settings.serial.rsplit('/', 1)[-1] if settings.serial else host}-"
            f"{settings.server_address}"
        ).strip("-")  # fmt: skip
    lines = ["[[meters]]", f"id = {_toml_string(meter_id)}", 'driver = "dlms"']
    if settings.transport != "wrapper":
        lines.append(f"transport = {_toml_string(settings.transport)}")
    if settings.serial:
        lines.append(f"serial = {_toml_string(settings.serial)}")
        lines.append(f"baud = {settings.baud}")
        if settings.mode_e:
            lines.append("mode_e = true")
    else:
        lines.append(f"host = {_toml_string(host)}")
        lines.append(f"port = {port}")
    lines.append(f"client_address = {settings.client_address}")
    lines.append(f"server_address = {settings.server_address}")
    if settings.transport == "hdlc":
        lines.append(f"physical_address = {settings.physical_address}")
    objects = result.config_objects
    if objects:
        lines.append("objects = [")
        lines += [f"    {_toml_string(str(o))},  # {_label(o)}" for o in objects]
        lines.append("]")
    else:
        lines.append("# no energy, power or voltage registers found: list objects = [...]")
    profile = result.find(LOAD_PROFILE)
    if profile is not None and profile.class_id == 7:
        lines.append(f"load_profile = {_toml_string(str(LOAD_PROFILE))}")
    lines.append('interval = "15m"')
    return "\n".join(lines) + "\n"
