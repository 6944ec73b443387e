"""The DLMS secrets of the agent: passwords and keys by meter id, and the HLS client
invocation counter of each meter, persisted so that it never goes backwards.

Secrets file (``secrets = "dlms-secrets.toml"`` in a meter's ``[meters.dlms]``), TOML, not
readable by group or others (mode 0600 or 0400; anything else is refused)::

    [meters.dl-1]            # auth = "lls"
    password = "12345678"

    [meters.dl-2]            # auth = "hls-gmac", security suite 0
    authentication_key = "000102030405060708090a0b0c0d0e0f"   # 16 bytes, hex
    encryption_key = "101112131415161718191a1b1c1d1e1f"       # 16 bytes, hex

Errors name the file and the meter, never a secret; :class:`MeterSecrets` hides its
values from ``repr``.

Invocation counter (``STATE_DIR/dlms/METER.ic``, one decimal line): the lowest counter
the agent has not used yet. It is written atomically (temporary file, fsync, rename,
directory fsync) *before* any counter below it is put on the wire, and never lowered, so
a crash or a restart can only skip values, never reuse one (reusing a counter with the
same key would reuse an AES-GCM nonce). Counters are reserved in blocks of
:data:`COUNTER_BLOCK` to keep the fsyncs off the per-APDU path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "COUNTER_BLOCK",
    "CounterStore",
    "MeterSecrets",
    "SecretsError",
    "default_system_title",
    "load_meter_secrets",
]

COUNTER_BLOCK = 64
MAX_COUNTER = 0xFFFFFFFF
TITLE_MANUFACTURER = b"MLK"  # not a registered FLAG id: the gateway's own titles


class SecretsError(ValueError):
    """A secrets or counter file that cannot be used; names the file, never a secret."""


@dataclass(frozen=True, slots=True, repr=False)
class MeterSecrets:
    password: bytes | None = None
    authentication_key: bytes | None = None
    encryption_key: bytes | None = None

    def __repr__(self) -> str:
        return "MeterSecrets(<hidden>)"


def check_private(path: Path) -> None:
    """Refuse a file that group or others may read or write."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"{path}: secrets file has mode {stat.S_IMODE(mode):04o}; it must not be "
            f"accessible by group or others (chmod 600 {path})"
        )


def load_meter_secrets(path: Path | None, meter_id: str, auth: str) -> MeterSecrets:
    """The secrets of ``meter_id`` for ``auth`` ("lls" or "hls-gmac") from ``path``."""
    if path is None:
        raise SecretsError(f"meter {meter_id}: auth {auth} needs a secrets file")
    check_private(path)
    try:
        table = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretsError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:  # its message may quote the line: not shown
        found = re.search(r"at line \d+", str(exc))
        where = f" ({found.group(0)})" if found else ""
        raise SecretsError(f"{path}: not valid TOML{where}") from None
    meters = table.get("meters")
    entry = meters.get(meter_id) if isinstance(meters, dict) else None
    where = f"{path} [meters.{meter_id}]"
    if not isinstance(entry, dict):
        raise SecretsError(f"{where}: no such table (meter {meter_id} has auth {auth})")
    if auth == "lls":
        password = entry.get("password")
        if not isinstance(password, str) or not password:
            raise SecretsError(f"{where}: password missing (a non-empty string)")
        return MeterSecrets(password=password.encode())
    if auth == "hls-gmac":
        keys = {}
        for name in ("authentication_key", "encryption_key"):
            text = entry.get(name)
            if not isinstance(text, str):
                raise SecretsError(f"{where}: {name} missing (16 bytes, hex)")
            try:
                value = bytes.fromhex(text)
            except ValueError:
                raise SecretsError(f"{where}: {name} is not hex") from None
            if len(value) != 16:
                raise SecretsError(f"{where}: {name} must be 16 bytes, got {len(value)}")
            keys[name] = value
        return MeterSecrets(
            authentication_key=keys["authentication_key"], encryption_key=keys["encryption_key"]
        )
    raise SecretsError(f"meter {meter_id}: auth {auth!r} has no secrets")


def default_system_title(meter_id: str) -> bytes:
    """The client system title used when the config gives none: "MLK" and the first five
    bytes of SHA-256 of the meter id (stable across restarts; set ``system_title`` when
    several gateways share a meter's keys)."""
    return TITLE_MANUFACTURER + hashlib.sha256(meter_id.encode()).digest()[:5]


class CounterStore:
    """The persisted lower bound of a meter's next client invocation counter."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.limit = self.load()  # the persisted value: no counter below it is free

    def load(self) -> int:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise SecretsError(f"{self.path}: cannot read the invocation counter: {exc}") from None
        try:
            value = int(text.strip())
        except ValueError:
            raise SecretsError(
                f"{self.path}: invocation counter file is corrupt; refusing to guess "
                "(a reused counter reuses an AES-GCM nonce)"
            ) from None
        if not 0 <= value <= MAX_COUNTER + 1:
            raise SecretsError(f"{self.path}: invocation counter {value} out of range")
        return value

    def reserve(self, needed: int, block: int = COUNTER_BLOCK) -> None:
        """Make sure counters below ``needed`` may be used: if ``needed`` is above the
        persisted limit, persist ``needed + block`` (capped) first."""
        if needed <= self.limit:
            return
        if needed > MAX_COUNTER + 1:
            raise SecretsError(f"{self.path}: the invocation counter is exhausted (2^32)")
        self._write(min(needed + block, MAX_COUNTER + 1))

    def _write(self, value: int) -> None:
        if value < self.limit:
            raise AssertionError("an invocation counter limit never goes down")
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{value}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(temp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.limit = value
