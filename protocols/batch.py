"""The batch: many signed records in one MQTT message, and the head-end's ack for it.

A batch is framing only: it is not signed, each record in it is. The head-end acks by
sequence numbers (not by batch id or MQTT message id) so that an ack stays right however
the agent regroups records when it resends them. Layouts: ``docs/wire-format.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import DecodeError, EncodeError
from .record import SignedRecord, check_id, decode_record
from .varint import Reader, put_uvarint

__all__ = [
    "BATCH_VERSION",
    "MAX_BATCH_BYTES",
    "Ack",
    "Batch",
    "BatchItemError",
    "decode_batch",
    "encode_batch",
    "seq_ranges",
]

BATCH_VERSION = 1
#: A batch larger than this is refused (mosquitto's default message limit is far higher;
#: this bounds the memory one message can cost the head-end).
MAX_BATCH_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BatchItemError:
    """A record in a batch that did not parse: where it was and why. The rest still count."""

    index: int
    raw: bytes
    error: str


@dataclass(frozen=True, slots=True)
class Batch:
    gateway_id: str
    batch_id: int
    records: tuple[SignedRecord, ...]
    bad: tuple[BatchItemError, ...] = ()


def encode_batch(gateway_id: str, batch_id: int, records: Sequence[bytes]) -> bytes:
    """Frame already-signed record bytes (as stored in the agent's buffer) into a batch."""
    out = bytearray((BATCH_VERSION,))
    raw_id = check_id("gateway", gateway_id).encode("ascii")
    out.append(len(raw_id))
    out += raw_id
    put_uvarint(out, batch_id)
    put_uvarint(out, len(records))
    for raw in records:
        put_uvarint(out, len(raw))
        out += raw
    if len(out) > MAX_BATCH_BYTES:
        raise EncodeError(f"batch of {len(out)} bytes exceeds {MAX_BATCH_BYTES}")
    return bytes(out)


def decode_batch(payload: bytes, where: str = "batch") -> Batch:
    """Split a batch into records. A record that does not parse is returned in ``bad`` with
    its bytes and the reason; only a broken frame (header, lengths) fails the whole batch."""
    if len(payload) > MAX_BATCH_BYTES:
        raise DecodeError(f"{where}: {len(payload)} bytes exceeds {MAX_BATCH_BYTES}")
    reader = Reader(payload, where)
    version = reader.u8("batch version")
    if version != BATCH_VERSION:
        raise reader.fail(f"unknown batch version {version}")
    gateway_id = reader.text("gateway id", 64)
    batch_id = reader.uvarint("batch id")
    count = reader.uvarint("record count")
    if count > len(payload):
        raise reader.fail(f"record count {count} larger than the message")
    reader.where = f"{where} {batch_id} from {gateway_id}"
    records: list[SignedRecord] = []
    bad: list[BatchItemError] = []
    for index in range(count):
        size = reader.uvarint("record length")
        raw = reader.take(size, f"record {index}")
        try:
            records.append(decode_record(raw, f"{reader.where} record {index}"))
        except DecodeError as exc:
            bad.append(BatchItemError(index, raw, str(exc)))
    if not reader.at_end():
        raise reader.fail("bytes after the last record")
    return Batch(gateway_id, batch_id, tuple(records), tuple(bad))


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Collapse sequence numbers into sorted inclusive ranges: [1,2,3,7] -> [(1,3),(7,7)]."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


@dataclass(frozen=True, slots=True)
class Ack:
    """The head-end's word that it committed a batch: which records it holds for good.

    ``handled`` lists every sequence number the head-end has durably dealt with: stored,
    already stored (duplicate) or kept in quarantine (rejected). The agent may delete those
    records from its buffer; resending them could not change the outcome.
    """

    gateway_id: str
    batch_id: int
    handled: tuple[tuple[int, int], ...]
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    unparsed: tuple[int, ...] = field(default=())  # batch positions that did not parse

    def seqs(self) -> Iterable[int]:
        for low, high in self.handled:
            yield from range(low, high + 1)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "gateway": self.gateway_id,
                "batch": self.batch_id,
                "handled": [list(r) for r in self.handled],
                "stored": self.stored,
                "duplicates": self.duplicates,
                "rejected": self.rejected,
                "conflicts": self.conflicts,
                "unparsed": list(self.unparsed),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> Ack:
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"ack: not JSON: {exc}") from None
        try:
            if doc.get("v") != 1:
                raise DecodeError(f"ack: unknown version {doc.get('v')!r}")
            handled = tuple((_count(lo), _count(hi)) for lo, hi in doc["handled"])
            for low, high in handled:
                if not 1 <= low <= high:
                    raise DecodeError(f"ack: bad range {low}..{high}")
            return cls(
                _text(doc["gateway"]),
                _count(doc["batch"]),
                handled,
                _count(doc.get("stored", 0)),
                _count(doc.get("duplicates", 0)),
                _count(doc.get("rejected", 0)),
                _count(doc.get("conflicts", 0)),
                tuple(_count(i) for i in doc.get("unparsed", ())),
            )
        except DecodeError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DecodeError(f"ack: not a valid ack message: {exc}") from None


def _count(value: object) -> int:
    """A JSON integer of an ack: 0..2**64-1 (not a bool, float or string)."""
    if type(value) is not int or not 0 <= value < 2**64:
        raise DecodeError(f"ack: {value!r} is not an integer 0..2**64-1")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"ack: gateway {value!r} is not a string")
    return value
