"""Storage of the head-end: a narrow interface (``base``) and its SQLite implementation."""

from .base import (
    ConflictRow,
    CounterDelta,
    GatewayKey,
    IngestTx,
    IngestWrite,
    QuarantineRow,
    ReadingPoint,
    ReadingRow,
    RecordRow,
    StatusRow,
    Store,
    StoreConflict,
    StoredReading,
)
from .sqlite import SqliteStore, open_store

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
    "SqliteStore",
    "StatusRow",
    "Store",
    "StoreConflict",
    "StoredReading",
    "open_store",
]
