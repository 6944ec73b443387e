"""The agent's TOML configuration, loaded into frozen dataclasses.

Every problem is collected (not only the first) and named by file, line and key. ``tomllib``
reports a line only for syntax errors; for a value that parses but means nothing (a negative
port, an unknown policy) the key's line is found in the text: the table header
(``[mqtt]``, the n-th ``[[meters]]``) and then the first ``key =`` line after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from protocols.clock import ClockSetting, ClockSettingError
from protocols.errors import EncodeError
from protocols.obis import Obis, ObisError
from protocols.record import check_id
from protocols.tomltext import TomlTextError, loads_exact

__all__ = [
    "AgentConfig",
    "BufferConfig",
    "ConfigError",
    "ConfigIssue",
    "DlmsSettings",
    "GatewayConfig",
    "MeterConfig",
    "MqttConfig",
    "SerialSettings",
    "load_config",
    "parse_duration",
]

WHEN_FULL = ("drop-oldest", "stop-capture")
DRIVERS = ("modbus-tcp", "dlms", "modbus-rtu", "iec62056", "dsmr-p1")
SERIAL_DRIVERS = ("modbus-rtu", "iec62056", "dsmr-p1")
#: DSMR version -> (baud, bytesize, parity, stopbits, telegram period s) of its P1 port
DSMR_VERSIONS: dict[str, tuple[int, int, str, int, int]] = {
    "2.2": (9600, 7, "E", 1, 10),
    "3": (9600, 7, "E", 1, 10),
    "4": (115200, 8, "N", 1, 10),
    "5": (115200, 8, "N", 1, 1),
    "e-mucs": (115200, 8, "N", 1, 1),
    "fluvius": (115200, 8, "N", 1, 1),  # e-MUCS, as the simulator names it
}
BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
DLMS_DEFAULT_PORT = 4059  # IEC 62056-47, the TCP wrapper
DLMS_PUBLIC_CLIENT = 16
DLMS_TRANSPORTS = ("wrapper", "hdlc")
DLMS_AUTH = ("none", "lls", "hls-gmac")
#: what a dlms meter without ``objects`` reads (Register objects, attributes 2 and 3)
DLMS_DEFAULT_OBJECTS = tuple(
    Obis.parse(code)
    for code in ("1-0:1.8.0", "1-0:2.8.0", "1-0:16.7.0", "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")
)
MIN_INTERVAL_NS = 10**9  # virtual time
MAX_TIMEOUT_NS = 60 * 10**9  # real time, per request
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def parse_duration(value: object) -> int:
    """``"15m"``, ``"30s"``, ``"1h"``, ``"250ms"``, ``"1d"`` or integer seconds -> nanoseconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '15m' or integer seconds, got {value!r}")
    if isinstance(value, int):
        ns = value * 10**9
    elif isinstance(value, Decimal):
        ns = int(value * 10**9)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(
                f"not a duration: {value!r} (use e.g. '15m', '30s', '1h', '250ms' or seconds)"
            )
        ns = int(Decimal(match.group(1)) * _UNIT_NS[match.group(2)])
    else:
        raise ValueError(f"expected a duration like '15m' or integer seconds, got {value!r}")
    if ns <= 0:
        raise ValueError(f"a duration must be > 0, got {value!r}")
    return ns


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: Path
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more configuration problems; ``issues`` lists all of them."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    id: str
    state_dir: Path
    clock: ClockSetting


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive: int = 30
    batch_max_records: int = 500
    max_inflight: int = 8
    ack_timeout_ns: int = 30 * 10**9
    session_expiry_s: int = 7 * 86400
    status_interval_ns: int = 60 * 10**9
    # TLS to the broker (config/mosquitto/): the CA, and this gateway's client certificate
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def ack_timeout(self) -> float:
        return self.ack_timeout_ns / 1e9


@dataclass(frozen=True, slots=True)
class BufferConfig:
    max_records: int = 1_000_000
    when_full: str = "drop-oldest"


@dataclass(frozen=True, slots=True)
class DlmsSettings:
    """What a ``driver = "dlms"`` meter needs beyond its address (docs/dlms.md)."""

    transport: str = "wrapper"  # "wrapper" (IEC 62056-47) | "hdlc" (IEC 62056-46)
    serial: str = ""  # hdlc over a serial port: the device node; "" = over TCP (host:port)
    baud: int = 9600  # serial: the HDLC baud rate (8N1)
    mode_e: bool = False  # serial: IEC 62056-21 mode E start at 300 baud 7E1, then HDLC
    client_address: int = DLMS_PUBLIC_CLIENT  # wPort / HDLC client address
    server_address: int = 1  # logical device (wPort, or the HDLC upper address)
    physical_address: int = 17  # hdlc: the server's lower (physical) address
    auth: str = "none"  # "none" | "lls" (password) | "hls-gmac" (suite 0)
    secrets: Path | None = None  # file (mode 0600) with passwords and keys, by meter id
    system_title: bytes = b""  # hls-gmac: the client's 8-byte system title ("" = derived)
    objects: tuple[Obis, ...] = DLMS_DEFAULT_OBJECTS
    load_profile: Obis | None = None  # Profile Generic to backfill, e.g. 1-0:99.1.0
    backfill_limit_ns: int = 31 * 86400 * 10**9  # virtual: how far back a first read goes
    clock_limit_ns: int = 30 * 10**9  # |meter - gateway| above this flags CLOCK_SUSPECT
    clock_set_ns: int | None = None  # set the meter's clock when |drift| exceeds this


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """A meter on a serial line (drivers ``modbus-rtu``, ``iec62056``, ``dsmr-p1``).

    The line setting (baud .. stopbits) belongs to the port: every meter on one device must
    give the same (checked at load). ``iec62056`` starts each readout at 300 baud 7E1 and
    switches to the meter's offer (at most ``max_baud``); its ``baud`` is that 300."""

    device: str
    baud: int = 9600
    bytesize: int = 8
    parity: str = "E"
    stopbits: int = 1
    address: str = ""  # iec62056: device address ("" = the only meter on the line)
    max_baud: int = 19200  # iec62056: highest rate accepted in the option select
    channel: int = 0  # dsmr-p1: 0 = the electricity meter, 1..4 = its M-Bus devices
    version: str = "5"  # dsmr-p1: 2.2, 3, 4, 5, e-mucs
    max_age_ns: int = 5 * 10**9  # dsmr-p1: real time; an older latest telegram is an error

    @property
    def line(self) -> tuple[int, int, str, int]:
        return (self.baud, self.bytesize, self.parity, self.stopbits)

    @property
    def setting(self) -> str:
        """``9600 8E1``."""
        return f"{self.baud} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(frozen=True, slots=True)
class MeterConfig:
    id: str
    driver: str
    host: str
    port: int
    unit: int
    profile: str
    profile_path: Path
    interval_ns: int  # virtual time
    timeout_ns: int  # real time, per request
    retries: int
    line: int | None = None  # of its [[meters]] header, for messages
    dlms: DlmsSettings | None = None  # driver "dlms" only
    serial: SerialSettings | None = None  # drivers modbus-rtu, iec62056, dsmr-p1

    @property
    def timeout(self) -> float:
        return self.timeout_ns / 1e9

    @property
    def connection(self) -> tuple[str, str, int]:
        """Meters with the same (driver, host, port) share one connection (one bus); a
        serial DLMS meter's bus is its serial device (host "", port 0 in the config)."""
        if self.dlms is not None and self.dlms.serial:
            return (self.driver, self.dlms.serial, 0)
        if self.serial is not None:
            return (self.driver, self.serial.device, 0)
        return (self.driver, self.host, self.port)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    path: Path
    gateway: GatewayConfig
    mqtt: MqttConfig
    buffer: BufferConfig
    meters: tuple[MeterConfig, ...] = field(default=())

    @property
    def keys_dir(self) -> Path:
        return self.gateway.state_dir / "keys"

    @property
    def buffer_path(self) -> Path:
        return self.gateway.state_dir / "buffer.sqlite"


class _Locator:
    """Finds the line of ``key`` in table ``table`` (the ``index``-th one for ``[[arrays]]``)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def header_line(self, table: str, index: int | None = None) -> int | None:
        if index is None:
            pattern = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]")
        else:
            pattern = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
        seen = -1
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line):
                seen += 1
                if index is None or seen == index:
                    return number
        return None

    def key_line(self, table: str, index: int | None, key: str) -> int | None:
        start = self.header_line(table, index)
        if start is None:
            return None
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(start + 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if re.match(r"^\s*\[", line):
                break
            if key_re.match(line):
                return number
        return start


class _Section:
    """Typed access to one table, recording issues instead of raising."""

    def __init__(self, loader: _Loader, table: str, data: Any, index: int | None = None) -> None:
        self.loader = loader
        self.table = table
        self.index = index
        self.data = data if isinstance(data, dict) else {}
        self.used: set[str] = set()
        if not isinstance(data, dict) and data is not None:
            self.fail("", f"[{table}] must be a table")

    @property
    def prefix(self) -> str:
        return self.table if self.index is None else f"{self.table}[{self.index}]"

    def fail(self, key: str, message: str) -> None:
        line = (
            self.loader.locator.key_line(self.table, self.index, key)
            if key
            else (self.loader.locator.header_line(self.table, self.index))
        )
        self.loader.issues.append(
            ConfigIssue(
                self.loader.path, line, f"{self.prefix}.{key}" if key else self.prefix, message
            )
        )

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        *,
        low: int | None = None,
        high: int | None = None,
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing (required)")
                return None
            return default
        value = self.data[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.fail(key, f"expected {names}, got {value!r}")
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            if low is not None and value < low:
                self.fail(key, f"must be >= {low}, got {value}")
                return None
            if high is not None and value > high:
                self.fail(key, f"must be <= {high}, got {value}")
                return None
        return value

    def duration(self, key: str, default: Any = ...) -> int | None:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.fail(key, "missing (required)")
                return None
            return parse_duration(default)
        try:
            return parse_duration(self.data[key])
        except ValueError as exc:
            self.fail(key, str(exc))
            return None

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                self.fail(key, "unknown key")


class _Loader:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.locator = _Locator(text)
        self.issues: list[ConfigIssue] = []


def _resolve_profile(config_dir: Path, profile: str) -> Path:
    """A name (``eastron_sdm630``) is looked up in ``config/profiles/``; anything with a
    slash or a ``.toml`` suffix is a path relative to the config file."""
    if "/" in profile or profile.endswith(".toml"):
        return (config_dir / profile).resolve()
    candidates = [
        config_dir / "profiles" / f"{profile}.toml",
        config_dir.parent / "profiles" / f"{profile}.toml",
        Path(__file__).resolve().parents[1] / "config" / "profiles" / f"{profile}.toml",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return candidates[-1]


def _dlms_objects(sec: _Section) -> tuple[Obis, ...] | None:
    """``objects = ["1-0:1.8.0", ...]``: the Register objects of a dlms meter."""
    raw = sec.get("objects", list, None)
    if raw is None:
        return None if "objects" in sec.data else DLMS_DEFAULT_OBJECTS
    if not raw:
        sec.fail("objects", "must list at least one OBIS code")
        return None
    found: list[Obis] = []
    for item in raw:
        try:
            obis = Obis.parse(item) if isinstance(item, str) else None
        except ObisError as exc:
            sec.fail("objects", str(exc))
            return None
        if obis is None:
            sec.fail("objects", f"expected OBIS code strings like '1-0:1.8.0', got {item!r}")
            return None
        if obis in found:
            sec.fail("objects", f"{obis} listed twice")
            return None
        found.append(obis)
    return tuple(found)


def _dlms_settings(sec: _Section, config_dir: Path) -> DlmsSettings | None:
    """The keys of a ``driver = "dlms"`` meter; None when one of them is wrong (each wrong
    key is reported)."""
    ok = True

    def take(key: str, kind: type, default: Any, **bounds: int) -> Any:
        nonlocal ok
        value = sec.get(key, kind, default, **bounds)
        if value is None and default is not None:
            ok = False
        return value

    def choice(key: str, options: tuple[str, ...]) -> str:
        nonlocal ok
        value = take(key, str, options[0])
        if value is not None and value not in options:
            sec.fail(key, f"must be one of {', '.join(options)}, got {value!r}")
            ok = False
        return value or options[0]

    def duration(key: str, default: str | None) -> int | None:
        nonlocal ok
        if key in sec.data and sec.data[key] == "off":
            sec.used.add(key)
            return None
        if key not in sec.data and default is None:
            sec.used.add(key)
            return None
        value = sec.duration(key, default)
        if value is None:
            ok = False
        return value

    def obis(key: str) -> Obis | None:
        nonlocal ok
        text = take(key, str, None)
        if text is None:
            return None
        try:
            return Obis.parse(text)
        except ObisError as exc:
            sec.fail(key, str(exc))
            ok = False
            return None

    transport = choice("transport", DLMS_TRANSPORTS)
    serial = take("serial", str, "")
    if serial and not serial.startswith("/"):
        serial = str(config_dir / serial)  # like every serial driver: relative to the config
    if serial and transport != "hdlc":
        sec.fail("serial", 'a serial port needs transport = "hdlc"')
        ok = False
    baud = take("baud", int, 9600, low=300, high=115200)
    mode_e = take("mode_e", bool, False)
    if mode_e and not serial:
        sec.fail("mode_e", "the IEC 62056-21 mode E start is for a serial port (serial = ...)")
        ok = False
    auth = choice("auth", DLMS_AUTH)
    secrets_text = take("secrets", str, "")
    secrets = (config_dir / secrets_text).resolve() if secrets_text else None
    if auth != "none" and secrets is None:
        sec.fail("auth", f'auth = "{auth}" needs secrets = "FILE" (mode 0600) with its keys')
        ok = False
    title_text = take("system_title", str, "")
    system_title = b""
    if title_text:
        try:
            system_title = bytes.fromhex(title_text)
        except ValueError:
            system_title = b"?"
        if len(system_title) != 8:
            sec.fail("system_title", f"must be 8 bytes in hex (16 digits), got {title_text!r}")
            ok = False
    objects = _dlms_objects(sec)
    if objects is None:
        ok = False
    settings = DlmsSettings(
        transport=transport,
        serial=serial or "",
        baud=baud or 9600,
        mode_e=bool(mode_e),
        client_address=take("client_address", int, DLMS_PUBLIC_CLIENT, low=1, high=127) or 0,
        server_address=take("server_address", int, 1, low=0, high=0x3FFF) or 0,
        physical_address=take("physical_address", int, 17, low=0, high=0x3FFF) or 0,
        auth=auth,
        secrets=secrets,
        system_title=system_title,
        objects=objects or (),
        load_profile=obis("load_profile"),
        backfill_limit_ns=duration("backfill_limit", "31d") or 0,
        clock_limit_ns=duration("clock_limit", "30s") or 0,
        clock_set_ns=duration("clock_set", None),
    )
    return settings if ok else None


def _serial_settings(sec: _Section, driver: str, config_dir: Path) -> SerialSettings | None:
    """The keys of a serial meter (``modbus-rtu``, ``iec62056``, ``dsmr-p1``); None when one
    of them is wrong (each wrong key is reported). A relative device path is taken from the
    config file's directory."""
    ok = True

    def take(key: str, kind: type, default: Any, **bounds: int) -> Any:
        nonlocal ok
        value = sec.get(key, kind, default, **bounds)
        if value is None and default is not None:
            ok = False
        return value

    def one_of(key: str, value: Any, options: tuple[Any, ...]) -> Any:
        nonlocal ok
        if value is not None and value not in options:
            sec.fail(key, f"must be one of {', '.join(str(o) for o in options)}, got {value!r}")
            ok = False
            return None
        return value

    device_key = "port" if driver == "modbus-rtu" else "serial"
    device = take(device_key, str, ...)
    if device is not None and not device.strip():
        sec.fail(device_key, "must name a serial device, e.g. /dev/ttyUSB0")
        ok = False
    if device and not device.startswith("/"):
        device = str(config_dir / device)
    if driver == "modbus-rtu":
        baud = one_of("baud", take("baud", int, 9600), BAUD_RATES)
        parity = one_of("parity", take("parity", str, "E"), ("N", "E", "O"))
        stopbits = one_of("stopbits", take("stopbits", int, 1), (1, 2))
        settings = SerialSettings(device or "", baud or 9600, 8, parity or "E", stopbits or 1)
    elif driver == "iec62056":
        address = take("address", str, "")
        if address is not None and (
            len(address) > 32 or not all(c.isascii() and (c.isalnum() or c == " ") for c in address)
        ):
            sec.fail("address", f"at most 32 characters of 0-9 A-Z a-z and space, got {address!r}")
            ok = False
        max_baud = one_of(
            "max_baud", take("max_baud", int, 19200), (300, 600, 1200, 2400, 4800, 9600, 19200)
        )
        settings = SerialSettings(
            device or "", 300, 7, "E", 1, address=address or "", max_baud=max_baud or 19200
        )
    else:  # dsmr-p1
        version = take("version", str, "5")
        if version is not None and version not in DSMR_VERSIONS:
            sec.fail("version", f"must be one of {', '.join(DSMR_VERSIONS)}, got {version!r}")
            ok = False
            version = None
        baud_, bytesize, parity, stopbits, period = DSMR_VERSIONS[version or "5"]
        baud = one_of("baud", take("baud", int, baud_), BAUD_RATES)
        channel = take("channel", int, 0, low=0, high=4)
        default_age = "5s" if period == 1 else "30s"
        max_age = sec.duration("max_age", default_age)
        if max_age is None:
            ok = False
        settings = SerialSettings(
            device or "", baud or baud_, bytesize, parity, stopbits,
            channel=channel or 0, version=version or "5", max_age_ns=max_age or 0,
        )  # fmt: skip
    return settings if ok else None


def _check_serial_buses(
    loaded: list[tuple[_Section, MeterConfig]],
) -> None:
    """One device, one protocol and one line setting; no two meters at one address."""
    first: dict[str, tuple[_Section, MeterConfig]] = {}
    addresses: dict[tuple[str, object], str] = {}
    for sec, meter in loaded:
        device = meter.connection[1]
        if meter.serial is None and not (meter.dlms is not None and meter.dlms.serial):
            continue
        key_name = "port" if meter.driver == "modbus-rtu" else "serial"
        other = first.get(device)
        if other is None:
            first[device] = (sec, meter)
        else:
            o_sec, o_meter = other
            if o_meter.driver != meter.driver:
                sec.fail(
                    key_name,
                    f"{device} is also the port of {o_sec.prefix} ({o_meter.id!r}, driver "
                    f"{o_meter.driver}): one serial port carries one protocol",
                )
                continue
            s, o = meter.serial, o_meter.serial
            if s is not None and o is not None:
                for key, mine, theirs in (
                    ("version", s.version, o.version),
                    ("baud", s.baud, o.baud),
                    ("parity", s.parity, o.parity),
                    ("stopbits", s.stopbits, o.stopbits),
                ):
                    if mine != theirs:
                        sec.fail(
                            key,
                            f"{mine!r} but {o_sec.prefix} ({o_meter.id!r}) on the same port "
                            f"{device} has {theirs!r}: the meters of one port share its setting",
                        )
                        break
        if meter.serial is None or meter.driver == "modbus-rtu":
            continue  # modbus-rtu units and dlms addresses: checked with the TCP ones
        if meter.driver == "iec62056":
            what: object = ("address", meter.serial.address)
            label = f"device address {meter.serial.address!r}"
            key = "address"
        else:
            what = ("channel", meter.serial.channel)
            label = f"channel {meter.serial.channel}"
            key = "channel"
        seen = addresses.get((device, what))
        if seen is not None:
            sec.fail(key, f"duplicate address: {label} on {device} is also {seen}")
        addresses.setdefault((device, what), f"meter {meter.id!r} ({sec.prefix})")


def _tls_files(mq: _Section, config_dir: Path) -> dict[str, Path | None]:
    """[mqtt] cafile, certfile, keyfile (relative to the config file): TLS with a client
    certificate; certfile and keyfile need cafile, and each other."""
    files: dict[str, Path | None] = {}
    for name in ("cafile", "certfile", "keyfile"):
        text = mq.get(name, str, "")
        files[name] = (config_dir / text).resolve() if text else None
        if text and not files[name].is_file():  # type: ignore[union-attr]
            mq.fail(name, f"file not found: {files[name]}")
    if (files["certfile"] is None) != (files["keyfile"] is None):
        mq.fail("certfile", "certfile and keyfile go together")
    if files["certfile"] is not None and files["cafile"] is None:
        mq.fail("cafile", "a client certificate needs cafile (TLS)")
    return files


def load_config(path: str | Path, clock_override: str | None = None) -> AgentConfig:
    """Load and check a config file; raises ConfigError listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        doc = loads_exact(text)
    except TomlTextError as exc:
        raise ConfigError([ConfigIssue(path, exc.line, "", f"TOML syntax: {exc}")]) from None
    loader = _Loader(path, text)
    config_dir = path.resolve().parent

    for key in doc:
        if key not in ("gateway", "mqtt", "buffer", "meters", "metrics"):  # agent/metrics.py
            line = loader.locator.header_line(key) or loader.locator.key_line(key, None, key)
            loader.issues.append(ConfigIssue(path, line, key, "unknown table"))

    gw = _Section(loader, "gateway", doc.get("gateway"))
    if "gateway" not in doc:
        loader.issues.append(ConfigIssue(path, None, "gateway", "missing [gateway] table"))
    gw_id = gw.get("id", str)
    if gw_id is not None:
        try:
            check_id("gateway", gw_id)
        except EncodeError as exc:
            gw.fail("id", str(exc))
    state_dir = gw.get("state_dir", str, "state")
    clock_text = clock_override if clock_override is not None else gw.get("clock", str, "system")
    gw.used.add("clock")
    clock = ClockSetting.system()
    try:
        clock = ClockSetting.parse(clock_text or "system")
    except ClockSettingError as exc:
        if clock_override is not None:
            loader.issues.append(ConfigIssue(path, None, "--clock", str(exc)))
        else:
            gw.fail("clock", str(exc))
    gw.finish()

    mq = _Section(loader, "mqtt", doc.get("mqtt"))
    mqtt = MqttConfig(
        host=mq.get("host", str, "127.0.0.1") or "127.0.0.1",
        port=mq.get("port", int, 1883, low=1, high=65535) or 1883,
        keepalive=mq.get("keepalive", int, 30, low=5, high=65535) or 30,
        batch_max_records=mq.get("batch_max_records", int, 500, low=1, high=10000) or 500,
        max_inflight=mq.get("max_inflight", int, 8, low=1, high=1000) or 8,
        ack_timeout_ns=mq.duration("ack_timeout", "30s") or 30 * 10**9,
        session_expiry_s=(mq.duration("session_expiry", "7d") or 7 * 86400 * 10**9) // 10**9,
        status_interval_ns=mq.duration("status_interval", "60s") or 60 * 10**9,
        **_tls_files(mq, config_dir),
    )
    mq.finish()

    bu = _Section(loader, "buffer", doc.get("buffer"))
    when_full = bu.get("when_full", str, "drop-oldest")
    if when_full is not None and when_full not in WHEN_FULL:
        bu.fail("when_full", f"must be one of {', '.join(WHEN_FULL)}, got {when_full!r}")
        when_full = None
    buffer = BufferConfig(
        max_records=bu.get("max_records", int, 1_000_000, low=1) or 1_000_000,
        when_full=when_full or "drop-oldest",
    )
    bu.finish()

    meters: list[MeterConfig] = []
    raw_meters = doc.get("meters", [])
    if not isinstance(raw_meters, list):
        loader.issues.append(ConfigIssue(path, None, "meters", "must be [[meters]] tables"))
        raw_meters = []
    seen_ids: dict[str, int] = {}
    seen_units: dict[tuple[str, int, int], str] = {}  # (host, port, unit) -> which meter
    loaded: list[tuple[_Section, MeterConfig]] = []
    for index, raw in enumerate(raw_meters):
        sec = _Section(loader, "meters", raw, index)
        meter_id = sec.get("id", str)
        if meter_id is not None:
            try:
                check_id("meter", meter_id)
            except EncodeError as exc:
                sec.fail("id", str(exc))
            if meter_id in seen_ids:
                first = seen_ids[meter_id]
                sec.fail("id", f"duplicate meter id {meter_id!r} (also meters[{first}])")
            seen_ids.setdefault(meter_id, index)
        driver = sec.get("driver", str, "modbus-tcp")
        if driver is not None and driver not in DRIVERS:
            sec.fail("driver", f"unknown driver {driver!r}; known: {', '.join(DRIVERS)}")
        dlms = driver == "dlms"
        on_serial = driver in SERIAL_DRIVERS
        settings: DlmsSettings | None = None
        line_settings: SerialSettings | None = None
        if dlms:
            settings = _dlms_settings(sec, config_dir)
        if on_serial:
            line_settings = _serial_settings(sec, driver, config_dir)
        # The address has no defaults: a meter read at a guessed address would record
        # another meter's values under this id.
        serial = settings.serial if settings is not None else ""
        if line_settings is not None:
            serial = line_settings.device
        host = "" if serial or on_serial else sec.get("host", str)
        if host is not None and not host.strip() and not serial and not on_serial:
            sec.fail("host", "must not be empty")
            host = None
        default_port = (
            0
            if serial
            else (
                ...
                if not dlms or settings is None or settings.transport == "hdlc"
                else DLMS_DEFAULT_PORT
            )
        )
        port = 0 if serial or on_serial else sec.get("port", int, default_port, low=1, high=65535)
        if on_serial and driver != "modbus-rtu":
            unit = 0  # iec62056: a device address, dsmr-p1: a channel (checked per port)
        elif dlms:
            # the logical device behind host:port (or on the serial bus): duplicate check
            unit = (
                None
                if settings is None
                else settings.server_address * 0x4000 + settings.physical_address
            )
        else:
            unit = sec.get("unit", int, low=1, high=255)
        if not dlms and unit is not None and 247 < unit < 255:
            sec.fail("unit", f"must be 1..247 (or 255 for a device addressed directly), got {unit}")
            unit = None
        address = serial or host
        unit_addressed = driver not in ("iec62056", "dsmr-p1")  # those: _check_serial_buses
        if address is not None and port is not None and unit is not None and unit_addressed:
            other = seen_units.get((address.lower(), port, unit))
            if other is not None:
                what = f"unit {unit}" if not dlms else "logical device"
                sec.fail(
                    "unit" if not dlms else "server_address",
                    f"duplicate address: {what} at {address}:{port} is also {other}",
                )
            seen_units.setdefault(
                (address.lower(), port, unit),
                f"meter {meter_id!r} (meters[{index}])" if meter_id else f"meters[{index}]",
            )
        profile = "" if dlms or driver in ("iec62056", "dsmr-p1") else sec.get("profile", str)
        profile_path = _resolve_profile(config_dir, profile) if profile else Path()
        if profile and not profile_path.is_file():
            sec.fail("profile", f"profile {profile!r} not found (looked for {profile_path})")
        interval = sec.duration("interval", "15m")
        if interval is not None and interval < MIN_INTERVAL_NS:
            sec.fail("interval", f"must be at least 1s, got {sec.data['interval']!r}")
            interval = None
        timeout = sec.duration("timeout", "3s" if driver == "iec62056" else "1s")
        if timeout is not None and timeout > MAX_TIMEOUT_NS:
            sec.fail("timeout", f"must be at most 60s, got {sec.data['timeout']!r}")
            timeout = None
        retries = sec.get("retries", int, 2, low=0, high=10)
        sec.finish()
        if None in (meter_id, driver, host, port, unit, profile, interval, timeout, retries):
            continue
        if dlms and settings is None:
            continue
        if on_serial and line_settings is None:
            continue
        meters.append(
            MeterConfig(
                meter_id,
                driver,
                host,
                port,
                unit,
                profile,
                profile_path,
                interval,
                timeout,
                retries,
                loader.locator.header_line("meters", index),
                settings,
                line_settings,
            )
        )
        loaded.append((sec, meters[-1]))
    _check_serial_buses(loaded)

    if loader.issues:
        raise ConfigError(loader.issues)
    assert gw_id is not None and state_dir is not None
    state = Path(state_dir)
    if not state.is_absolute():
        state = config_dir / state
    return AgentConfig(path, GatewayConfig(gw_id, state, clock), mqtt, buffer, tuple(meters))
