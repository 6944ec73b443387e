"""The simulated meter's security setup (HLS-GMAC, security suite 0): its keys file, its
own invocation counter and the last one it accepted from a client.

The keys file (``sim dlms --keys FILE``, ``keys =`` in a ``[[dlms]]`` table) is TOML and
must not be readable by group or others (mode 0600 or 0400)::

    authentication_key = "000102030405060708090a0b0c0d0e0f"  # 16 bytes, hex
    encryption_key = "101112131415161718191a1b1c1d1e1f"      # 16 bytes, hex
    system_title = "4d4c4b0000000001"                        # the meter's, 8 bytes, hex

The meter has one global unicast key pair, so it keeps one client invocation counter: an
APDU ciphered under that key whose counter is not above the last one accepted is refused
(replay protection), for the life of the process. The Data object 0.0.43.1.0.255
("invocation counter", Blue Book 4.4.7, readable by the public client) shows the last
accepted counter + 1: the lowest value the next APDU may carry.
"""

from __future__ import annotations

import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data, Tag
from protocols.dlms.security import SecurityContext
from protocols.obis import Obis

from .plain import PlainObject

if TYPE_CHECKING:
    from .objects import DlmsMeterState
    from .options import DlmsSimOptions

__all__ = [
    "OBIS_INVOCATION_COUNTER",
    "InvocationCounterObject",
    "KeyFileError",
    "MeterSecurity",
    "load_keys",
    "security_for",
]

OBIS_INVOCATION_COUNTER = Obis(0, 0, 43, 1, 0, 255)
CLASS_DATA = 1
MAX_COUNTER = 0xFFFFFFFF


class KeyFileError(ValueError):
    """A keys file that cannot be used; the message names the file, never a key."""


def load_keys(path: Path) -> SecurityContext:
    """The meter's system title and keys from ``path`` (TOML, mode 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the keys file: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: keys file has mode {stat.S_IMODE(mode):04o}; it must not be readable "
            f"by group or others (chmod 600 {path})"
        )
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        # a TOML error message may quote the line: keep only where it is
        found = re.search(r"at line \d+", str(exc))
        where = f" ({found.group(0)})" if found else ""
        raise KeyFileError(f"{path}: not a valid TOML file{where}") from None
    values: dict[str, bytes] = {}
    for key, size in (("authentication_key", 16), ("encryption_key", 16), ("system_title", 8)):
        text = table.get(key)
        if not isinstance(text, str):
            raise KeyFileError(f"{path}: {key} missing (a hex string of {size} bytes)")
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise KeyFileError(f"{path}: {key} is not hex") from None
        if len(value) != size:
            raise KeyFileError(f"{path}: {key} must be {size} bytes, got {len(value)}")
        values[key] = value
    unknown = sorted(set(table) - set(values))
    if unknown:
        raise KeyFileError(f"{path}: unknown keys {', '.join(unknown)}")
    return SecurityContext(
        values["system_title"], values["encryption_key"], values["authentication_key"]
    )


@dataclass(slots=True, repr=False)
class MeterSecurity:
    """One meter's security state: keys, its own counter, the last client counter seen."""

    context: SecurityContext
    own_counter: int = 0  # the last invocation counter the meter used
    client_counter: int | None = None  # the last client counter accepted (None: none yet)
    refused_replays: int = 0
    refused_deciphering: int = 0

    def __repr__(self) -> str:
        return (
            f"MeterSecurity(system_title={self.context.system_title.hex()}, "
            f"own_counter={self.own_counter}, client_counter={self.client_counter})"
        )

    @property
    def system_title(self) -> bytes:
        return self.context.system_title

    def next_own_counter(self) -> int:
        if self.own_counter >= MAX_COUNTER:
            raise OverflowError("the meter's invocation counter is exhausted")
        self.own_counter += 1
        return self.own_counter

    def fresh(self, counter: int) -> bool:
        """True if ``counter`` is above the last accepted client counter."""
        return self.client_counter is None or counter > self.client_counter

    def accept(self, counter: int) -> None:
        self.client_counter = counter

    @property
    def next_client_counter(self) -> int:
        """The lowest counter the next client APDU may carry."""
        return 0 if self.client_counter is None else self.client_counter + 1


@dataclass(frozen=True, slots=True)
class InvocationCounterObject(PlainObject):
    """Data object 0.0.43.1.0.255: the client invocation counter the meter expects next
    (double-long-unsigned)."""

    security: MeterSecurity = field(compare=False)
    obis: Obis = OBIS_INVOCATION_COUNTER
    class_id: int = CLASS_DATA
    version: int = 0

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        if attribute != 2:
            return AccessResult.OBJECT_UNAVAILABLE
        return Data(Tag.DOUBLE_LONG_UNSIGNED, min(self.security.next_client_counter, MAX_COUNTER))


def security_for(meter: DlmsMeterState, options: DlmsSimOptions) -> MeterSecurity | None:
    """The meter's security state when it is set up for HLS (None otherwise), loaded once
    per meter and kept in its invocation-counter object; :class:`KeyFileError` when the
    keys file is unusable."""
    if options.auth != "hls":
        return None
    existing = meter.objects.get(OBIS_INVOCATION_COUNTER)
    if isinstance(existing, InvocationCounterObject):
        return existing.security
    if options.keys is None:
        raise KeyFileError("auth hls needs a keys file (--keys FILE)")
    security = MeterSecurity(load_keys(options.keys))
    meter.objects[OBIS_INVOCATION_COUNTER] = InvocationCounterObject(security)
    return security
