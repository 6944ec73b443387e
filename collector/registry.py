"""The key registry: which gateways exist, their Ed25519 public keys, the meters they report.

A gateway's public key comes as the PEM file the agent writes (SubjectPublicKeyInfo). The key
id is the first 8 bytes of sha256 over the raw 32-byte key, in hex. Rotation: enrolling a
gateway again with another key adds that key; both stay active (records signed with the old
key may still sit in the gateway's buffer) until ``collector revoke`` retires the old.
Enrolling again with more meters adds their bindings; bindings are never removed here.

Each record names the key that signed it (its key id), so one lookup finds the key and one
verify checks it; a key the registry does not hold for that gateway is "unknown key", a
revoked one "revoked key", and only a known, active key that does not verify is "bad
signature".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.errors import EncodeError
from protocols.keys import KeyFormatError, public_key_from_pem
from protocols.record import SignedRecord, check_id

from . import reasons
from .errors import EnrolError
from .reasons import Rejection
from .store.base import GatewayKey, Store

__all__ = [
    "BAD_SIGNATURE",
    "EnrolResult",
    "Registry",
    "enrol_gateway",
    "key_id_of",
    "load_public_key",
    "revoke_key",
]


def key_id_of(raw: bytes) -> str:
    return hashlib.sha256(raw).digest()[:8].hex()


def load_public_key(path: Path) -> bytes:
    """The raw 32 bytes of the Ed25519 public key in a PEM file (SubjectPublicKeyInfo)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnrolError(f"{path}: cannot read public key: {exc.strerror}") from None
    try:
        key = public_key_from_pem(data)
    except KeyFormatError as exc:
        raise EnrolError(f"{path}: {exc}") from None
    return key.public_bytes_raw()


@dataclass(frozen=True)
class EnrolResult:
    gateway_id: str
    key_id: str
    key_added: bool
    meters: tuple[str, ...]


async def enrol_gateway(
    store: Store, gateway_id: str, public_key_pem: Path, meters: Iterable[str], now_ms: int
) -> EnrolResult:
    meter_list = tuple(dict.fromkeys(m.strip() for m in meters if m.strip()))
    try:
        check_id("gateway", gateway_id)
        for meter in meter_list:
            check_id("meter", meter)
    except EncodeError as exc:
        raise EnrolError(str(exc)) from None
    if not meter_list:
        raise EnrolError(f"gateway {gateway_id}: no meters given (--meters M1,M2,...)")
    raw = load_public_key(public_key_pem)
    key = GatewayKey(gateway_id, key_id_of(raw), raw, "active", now_ms)
    added = await store.enrol(gateway_id, key, meter_list, now_ms)
    return EnrolResult(gateway_id, key.key_id, added, meter_list)


class Registry:
    """An in-memory copy of the registry for ingest, reloaded when the store's version moves."""

    def __init__(self) -> None:
        self.version = -1
        self._enrolled: set[str] = set()
        # (gateway, raw key id) -> (key, status)
        self._keys: dict[tuple[str, bytes], tuple[Ed25519PublicKey, str]] = {}
        self._bound: set[tuple[str, str]] = set()

    async def refresh(self, store: Store) -> None:
        version = await store.registry_version()
        if version == self.version:
            return
        keys = await store.gateway_keys()
        self._enrolled = {k.gateway_id for k in keys}
        self._keys = {
            (k.gateway_id, bytes.fromhex(k.key_id)): (
                Ed25519PublicKey.from_public_bytes(k.public_key),
                k.status,
            )
            for k in keys
        }
        self._bound = set(await store.bindings())
        self.version = version

    def check(self, gateway_id: str, signed: SignedRecord) -> Rejection | None:
        """None if the record's signature and meter binding check out, else why not."""
        if gateway_id not in self._enrolled:
            return _NOT_ENROLLED
        key_id = signed.record.key_id
        entry = self._keys.get((gateway_id, key_id))
        if entry is None:
            return Rejection(reasons.UNKNOWN_KEY, f"unknown key {key_id.hex()} for gateway")
        key, status = entry
        if status != "active":
            return Rejection(reasons.REVOKED_KEY, f"revoked key {key_id.hex()}")
        if not signed.verify(key):
            return BAD_SIGNATURE
        if (gateway_id, signed.record.meter_id) not in self._bound:
            return _NOT_BOUND
        return None


_NOT_ENROLLED = Rejection(reasons.NOT_ENROLLED, reasons.NOT_ENROLLED)
BAD_SIGNATURE = Rejection(reasons.BAD_SIGNATURE, reasons.BAD_SIGNATURE)
_NOT_BOUND = Rejection(reasons.NOT_BOUND, reasons.NOT_BOUND)


async def revoke_key(store: Store, gateway_id: str, key_id: str, now_ms: int) -> str:
    """Revoke one key of a gateway; records signed with it are refused from the next
    transaction on ("revoked key ..."). Returns the key's status before."""
    key_id = key_id.strip().lower()
    if len(key_id) != 16 or any(c not in "0123456789abcdef" for c in key_id):
        raise EnrolError(f"--key-id {key_id!r}: a key id is 16 hex digits (see `collector stats`)")
    before = await store.revoke_key(gateway_id, key_id, now_ms)
    if before is None:
        known = [k.key_id for k in await store.gateway_keys() if k.gateway_id == gateway_id]
        raise EnrolError(
            f"gateway {gateway_id} has no key {key_id} "
            f"(its keys: {', '.join(known) if known else 'none, not enrolled'})"
        )
    return before
