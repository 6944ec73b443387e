"""Why the collector refuses a message or a record: one stable kind per cause.

Every quarantine entry has a ``kind`` (one of these, counted by ``collector stats``) and a
``reason`` text that starts with the kind and adds the detail (key id, byte position, ...).
The table in docs/collector.md says what each means and what the operator does about it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["KINDS", "Rejection"]


class Rejection(NamedTuple):
    kind: str
    reason: str


BAD_TOPIC = "bad topic"
UNEXPECTED_TOPIC = "unexpected topic kind"
OVERSIZED = "oversized batch"
TRUNCATED = "truncated batch"
COUNT_LIES = "record count exceeds message"
UNPARSEABLE_BATCH = "unparseable batch"
UNPARSEABLE_RECORD = "unparseable record"
UNPARSEABLE_STATUS = "unparseable status"
TOPIC_MISMATCH = "topic gateway mismatch"
NOT_ENROLLED = "gateway not enrolled"
UNKNOWN_KEY = "unknown key"
REVOKED_KEY = "revoked key"
BAD_SIGNATURE = "bad signature"
TAMPERED_VALUE = "tampered value"
TAMPERED_TIME = "tampered capture time"
NOT_BOUND = "meter not bound to gateway"
FUTURE = "future-dated"
TOO_OLD = "capture time before 2000"
SEQ_REUSED = "sequence reused with different content"
INTERNAL = "internal error"

KINDS = (
    BAD_TOPIC,
    UNEXPECTED_TOPIC,
    OVERSIZED,
    TRUNCATED,
    COUNT_LIES,
    UNPARSEABLE_BATCH,
    UNPARSEABLE_RECORD,
    UNPARSEABLE_STATUS,
    TOPIC_MISMATCH,
    NOT_ENROLLED,
    UNKNOWN_KEY,
    REVOKED_KEY,
    BAD_SIGNATURE,
    TAMPERED_VALUE,
    TAMPERED_TIME,
    NOT_BOUND,
    FUTURE,
    TOO_OLD,
    SEQ_REUSED,
    INTERNAL,
)
