"""The storage interface of the head-end (SQLite now, PostgreSQL later).

It is deliberately narrow: ingest needs two set-based look-ups and one bulk write inside one
transaction; the registry, the CLI and rating need a few reads. Row types are plain tuples
or small dataclasses of str/int/bytes so that any DB-API driver can take them as they are.
Decimal values travel as ``str(Decimal)`` (TEXT), never as floats.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

__all__ = [
    "ConflictRow",
    "CounterDelta",
    "GatewayKey",
    "IngestTx",
    "IngestWrite",
    "QuarantineRow",
    "ReadingPoint",
    "ReadingRow",
    "RecordRow",
    "StatusRow",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoredReading",
]


class StoreError(RuntimeError):
    """A database failure other than a lost race (connection lost, disk full, a bug)."""


class StoreConflict(Exception):
    """A write transaction lost a race with another writer (another collector committed the
    same identity first, or the database broke a deadlock): it was rolled back, and running
    it again will see the other's commit. The SQLite store, one writer at a time, never
    raises it; the PostgreSQL store does, and ``Ingestor.ingest`` runs the batch again."""


@dataclass(frozen=True)
class GatewayKey:
    gateway_id: str
    key_id: str  # first 8 bytes of sha256(raw public key), hex
    public_key: bytes  # raw Ed25519 public key, 32 bytes
    status: str  # "active" | "revoked"
    enrolled_ms: int


class RecordRow(NamedTuple):
    gateway_id: str
    seq: int
    meter_id: str
    captured_ms: int
    raw: bytes  # body + signature exactly as received: re-verifiable at any time
    received_ms: int


class ReadingRow(NamedTuple):
    meter_id: str
    obis: str
    captured_ms: int
    value: str  # str(Decimal)
    unit: str
    flags: int
    clock_source: int
    gateway_id: str
    seq: int


class StoredReading(NamedTuple):
    value: str
    unit: str
    gateway_id: str
    seq: int


class ConflictRow(NamedTuple):
    meter_id: str
    obis: str
    captured_ms: int
    stored_value: str
    stored_unit: str
    stored_gateway_id: str
    stored_seq: int
    new_value: str
    new_unit: str
    new_gateway_id: str
    new_seq: int
    detected_ms: int


class QuarantineRow(NamedTuple):
    received_ms: int
    topic: str
    gateway_id: str  # the gateway named by the topic
    seq: int | None
    meter_id: str | None
    reason: str  # the full text: kind and detail (key id, byte position, ...)
    raw: bytes
    kind: str = ""  # the stable reason it is counted under (collector/reasons.py)


class StatusRow(NamedTuple):
    gateway_id: str
    state: str
    reason: str
    at_ms: int | None
    backlog: int
    dropped: int
    last_seq: int
    version: str
    received_ms: int


@dataclass
class CounterDelta:
    records_stored: int = 0
    readings_stored: int = 0
    duplicate_records: int = 0
    duplicate_readings: int = 0
    rejected: int = 0
    conflicts: int = 0


@dataclass
class IngestWrite:
    """Everything one ingest transaction writes."""

    records: list[RecordRow] = field(default_factory=list)
    readings: list[ReadingRow] = field(default_factory=list)
    conflicts: list[ConflictRow] = field(default_factory=list)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    counters: dict[tuple[str, str], CounterDelta] = field(default_factory=dict)
    statuses: list[StatusRow] = field(default_factory=list)

    def merge(self, other: IngestWrite) -> None:
        """Add ``other``'s rows and counters to these."""
        self.records += other.records
        self.readings += other.readings
        self.conflicts += other.conflicts
        self.quarantine += other.quarantine
        self.statuses += other.statuses
        for key, delta in other.counters.items():
            mine = self.count(*key)
            for name, value in delta.__dict__.items():
                setattr(mine, name, getattr(mine, name) + value)

    def count(self, gateway_id: str, meter_id: str | None) -> CounterDelta:
        key = (gateway_id, meter_id or "")
        delta = self.counters.get(key)
        if delta is None:
            delta = self.counters[key] = CounterDelta()
        return delta


class ReadingPoint(NamedTuple):
    captured_ms: int
    value: str
    unit: str


class IngestTx(Protocol):
    """One open write transaction; committed when its context exits without error."""

    async def existing_records(
        self, wanted: Mapping[str, Collection[int]]
    ) -> dict[tuple[str, int], bytes]:
        """Raw bytes of the stored records among ``{gateway: seqs}``."""
        ...

    async def existing_readings(
        self, wanted: Mapping[str, Collection[int]]
    ) -> dict[tuple[str, str, int], StoredReading]:
        """Stored readings among ``{meter: capture times}``, keyed (meter, obis, captured_ms)."""
        ...

    async def write(self, rows: IngestWrite) -> None: ...

    def vee(self) -> Any:
        """The VEE queries and writes in this transaction (``collector.vee.engine.VeeTx``)."""
        ...


class Store(Protocol):
    async def close(self) -> None: ...

    def ingest_transaction(self) -> AbstractAsyncContextManager[IngestTx]: ...

    # registry
    async def registry_version(self) -> int: ...
    async def gateway_keys(self) -> list[GatewayKey]: ...
    async def bindings(self) -> list[tuple[str, str]]: ...
    async def enrol(
        self, gateway_id: str, key: GatewayKey, meters: Collection[str], now_ms: int
    ) -> bool:
        """Enrol (or extend) a gateway; True if ``key`` was new for it."""
        ...

    async def revoke_key(self, gateway_id: str, key_id: str, now_ms: int) -> str | None:
        """Mark a gateway's key revoked (bumps the registry version); returns its status
        before (``active`` or ``revoked``), None if the gateway has no such key."""
        ...

    # reads for the CLI and rating
    async def counters(self) -> list[tuple[str, str, CounterDelta]]: ...
    async def quarantine_by_reason(self) -> list[tuple[str, int]]:
        """(reason kind, count), most frequent first."""
        ...

    async def quarantine_entries(self, limit: int) -> list[tuple[int, QuarantineRow]]: ...
    async def gateway_statuses(self) -> list[StatusRow]: ...
    async def reading_at_or_before(
        self, meter_id: str, obis: str, instant_ms: int
    ) -> ReadingPoint | None: ...
    async def reading_at_or_after(
        self, meter_id: str, obis: str, instant_ms: int
    ) -> ReadingPoint | None: ...
    async def conflict_count(self, meter_id: str, start_ms: int, end_ms: int) -> int: ...
