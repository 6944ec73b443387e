"""Signed records and batches for the collector's tests, made with the real protocol code."""

from __future__ import annotations

import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.ingest import Incoming
from protocols.batch import encode_batch
from protocols.obis import Obis
from protocols.record import ClockSource, Quality, Record, SignedRecord, Value, sign_record
from protocols.topics import readings_topic

T0 = 1_793_487_600_000  # 2026-11-01T00:00:00+01:00 (Europe/Amsterdam), in Unix ms
T_END = 1_796_079_600_000  # 2026-12-01T00:00:00+01:00

IMPORT = Obis.parse("1-0:1.8.0")
EXPORT = Obis.parse("1-0:2.8.0")
POWER = Obis.parse("1-0:1.7.0")


def write_public_key(key: Ed25519PrivateKey, path: Path) -> Path:
    """Write the public key as the agent does: SubjectPublicKeyInfo PEM."""
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    os.chmod(path, 0o600)
    return path


def record(
    key: Ed25519PrivateKey,
    gateway: str,
    meter: str,
    seq: int,
    captured_ms: int,
    values: Sequence[tuple[Obis, str, str]] | None = None,
) -> SignedRecord:
    if values is None:
        values = [(IMPORT, f"{1000 + seq}.5", "kWh"), (POWER, "1234", "W")]
    vals = tuple(Value(obis, Decimal(v), unit) for obis, v, unit in values)
    rec = Record(gateway, meter, seq, captured_ms, ClockSource.METER, Quality.NONE, vals)
    return sign_record(rec, key)


def message(
    gateway: str,
    batch_id: int,
    raws: Sequence[bytes],
    topic_gateway: str | None = None,
    received_ms: int = T0,
) -> Incoming:
    payload = encode_batch(gateway, batch_id, list(raws))
    return Incoming(readings_topic(topic_gateway or gateway), payload, received_ms)
