"""The key registry: which gateways exist, their Ed25519 public keys, the meters they report.

A gateway's public key comes as the PEM file the agent writes (SubjectPublicKeyInfo). The key
id is the first 8 bytes of sha256 over the raw 32-byte key, in hex. Rotation: enrolling a
gateway again with another key adds that key; both stay active (records signed with the old
key may still sit in the gateway's buffer) until revocation (a later issue) retires the old.
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

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.errors import EncodeError
from protocols.record import SignedRecord, check_id

from .errors import EnrolError
from .store.base import GatewayKey, Store

__all__ = ["EnrolResult", "Registry", "enrol_gateway", "key_id_of", "load_public_key"]


def key_id_of(raw: bytes) -> str:
    return hashlib.sha256(raw).digest()[:8].hex()


def load_public_key(path: Path) -> bytes:
    """The raw 32 bytes of the Ed25519 public key in a PEM file (SubjectPublicKeyInfo)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnrolError(f"{path}: cannot read public key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise EnrolError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EnrolError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


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

    def check(self, gateway_id: str, signed: SignedRecord) -> str | None:
        """None if the record's signature and meter binding check out, else the reason."""
        if gateway_id not in self._enrolled:
            return "gateway not enrolled"
        key_id = signed.record.key_id
        entry = self._keys.get((gateway_id, key_id))
        if entry is None:
            return f"unknown key {key_id.hex()} for gateway"
        key, status = entry
        if status != "active":
            return f"{status} key {key_id.hex()}"
        if not signed.verify(key):
            return "bad signature"
        if (gateway_id, signed.record.meter_id) not in self._bound:
            return "meter not bound to gateway"
        return None
