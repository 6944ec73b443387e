"""Ingest: MQTT messages in, one committed transaction out, then the acks to send.

The order for each record is: topic gateway == record gateway -> gateway enrolled and
signature verified with one of its active keys -> meter bound to the gateway -> dedup by
(gateway, seq) -> dedup of each value by its identity (meter, OBIS, captured_ms). All
messages handed to one ``Ingestor.ingest`` call are written in ONE transaction; only after
its COMMIT does the caller get the outcomes (and so may ack the broker and the gateway).
Nothing here knows about MQTT clients: a benchmark or a test drives ``ingest`` directly.

Duplicates are found set-based: one ``IN (...)`` query per gateway for the sequence numbers
and one per meter for the capture times of the whole transaction, then dictionaries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from protocols.batch import MAX_BATCH_BYTES, Ack, decode_batch, seq_ranges
from protocols.clock import format_utc_ms
from protocols.errors import DecodeError
from protocols.obis import Obis
from protocols.record import SignedRecord, decode_record
from protocols.status import GatewayStatus
from protocols.topics import parse_topic, readings_topic

from . import reasons
from .reasons import Rejection
from .registry import BAD_SIGNATURE, Registry
from .store.base import (
    ConflictRow,
    IngestTx,
    IngestWrite,
    QuarantineRow,
    ReadingRow,
    RecordRow,
    StatusRow,
    Store,
    StoreConflict,
    StoredReading,
)
from .vee.engine import VeeEngine

if TYPE_CHECKING:
    from .latency import LatencyTracker

__all__ = [
    "DEFAULT_MAX_FUTURE_MS",
    "EARLIEST_MS",
    "Incoming",
    "IngestTotals",
    "Ingestor",
    "Outcome",
]

log = logging.getLogger("collector")

REASON_TOPIC_MISMATCH = reasons.TOPIC_MISMATCH
REASON_SEQ_REUSED = reasons.SEQ_REUSED
#: A record captured more than this ahead of the collector's clock is refused ("future-dated").
DEFAULT_MAX_FUTURE_MS = 86_400_000
#: A capture time before 2000-01-01T00:00:00Z is refused: no meterlink meter read then.
EARLIEST_MS = 946_684_800_000
#: Runs of one ingest transaction that lost races (``StoreConflict``) before giving up.
MAX_ATTEMPTS = 5
#: Of a message refused as a whole, quarantine keeps at most this many bytes.
MAX_QUARANTINE_RAW = MAX_BATCH_BYTES


@dataclass(frozen=True, slots=True)
class Incoming:
    """One received MQTT message; ``token`` is the caller's (e.g. mid, qos, connection)."""

    topic: str
    payload: bytes
    received_ms: int
    token: object = None


@dataclass(frozen=True, slots=True)
class Outcome:
    incoming: Incoming
    gateway_id: str | None  # the gateway named by the topic, if any
    ack: Ack | None  # to publish to the gateway's ack topic (None: nothing to ack)


@dataclass
class IngestTotals:
    """Running totals, for the rate log line and the benchmark."""

    batches: int = 0
    records: int = 0
    records_stored: int = 0
    readings_stored: int = 0
    duplicate_records: int = 0
    duplicate_readings: int = 0
    rejected: int = 0
    conflicts: int = 0
    statuses: int = 0
    transactions: int = 0
    retries: int = 0  # transactions run again after losing a race with another collector

    def snapshot(self) -> IngestTotals:
        return IngestTotals(**self.__dict__)

    def add(self, other: IngestTotals) -> None:
        for name, value in other.__dict__.items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class _BatchState:
    gateway_id: str
    batch_id: int
    handled: list[int] = field(default_factory=list)
    unparsed: list[int] = field(default_factory=list)
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0

    def ack(self) -> Ack:
        return Ack(
            self.gateway_id,
            self.batch_id,
            tuple(seq_ranges(self.handled)),
            self.stored,
            self.duplicates,
            self.rejected,
            self.conflicts,
            tuple(self.unparsed),
        )


_OBIS_TEXT: dict[Obis, str] = {}


#: Rejections of records whose signature verified with the gateway's active key: they are
#: the gateway's own, held here in quarantine, so the ack lets the gateway delete them. A
#: record that did not verify is never acked: the ack must not let a forger who can publish
#: on a gateway's topic make the gateway delete its genuine record of that sequence number,
#: and a gateway not yet enrolled keeps its records until it is.
_AUTHENTIC_REJECTIONS = frozenset({reasons.NOT_BOUND, reasons.FUTURE, reasons.TOO_OLD})


def _obis_text(obis: Obis) -> str:
    text = _OBIS_TEXT.get(obis)
    if text is None:
        text = str(obis)
        if len(_OBIS_TEXT) < 4096:
            _OBIS_TEXT[obis] = text
    return text


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Ingestor:
    """Runs the pipeline over a list of messages in one transaction of ``store``."""

    def __init__(
        self,
        store: Store,
        registry: Registry | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
        vee: VeeEngine | None = None,
    ) -> None:
        """``clock_ms`` is the collector's clock (the fleet's virtual clock when it runs on
        one): records captured more than ``max_future_ms`` ahead of it are refused.
        ``vee``: validation, estimation and derived consumption of the stored readings, run
        in the same transaction (``collector/vee``); None: off."""
        self.vee = vee
        self.store = store
        self.registry = registry or Registry()
        self.clock_ms = clock_ms
        self.max_future_ms = max_future_ms
        self.totals = IngestTotals()
        #: awaited with each committed transaction's rows (e.g. usage alerts, collector/insight);
        #: a hook must not raise: the transaction is committed and its acks are due
        self.after_commit: list[Callable[[IngestWrite], Awaitable[None]]] = []
        #: fed with each committed transaction's records and commit time (collector/latency.py)
        self.latency: LatencyTracker | None = None

    async def ingest(self, messages: Sequence[Incoming]) -> list[Outcome]:
        """Verify, dedup and store ``messages`` in one transaction; return what to ack.

        Raises if the transaction fails; then nothing of it was written and nothing may be
        acked (the broker will redeliver). A transaction that lost a race with another
        collector (``StoreConflict``: rolled back) is run again from the messages: its
        look-ups then see the other's commit, and what it had stored is a duplicate here.
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._ingest_once(messages)
            except StoreConflict as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                self.totals.retries += 1
                log.info("ingest transaction rolled back (%s); running it again", exc)
        raise AssertionError("unreachable")

    async def _ingest_once(self, messages: Sequence[Incoming]) -> list[Outcome]:
        totals = IngestTotals()
        # Checks (parse, verify, bind) need no lock: they run before the write transaction.
        await self.registry.refresh(self.store)
        rows = IngestWrite()
        checked: list[tuple[Incoming, str | None, _BatchState | None]] = []
        # (batch state, signed record, received_ms) that passed every check but dedup
        candidates: list[tuple[_BatchState, SignedRecord, int]] = []
        # records whose signature failed: compared with the genuine record of that (gateway,
        # seq), if one is stored, to say what was altered
        suspects: list[tuple[_BatchState, SignedRecord, Incoming]] = []
        latest_ms = self.clock_ms() + self.max_future_ms
        for message in messages:
            checked.append(
                self._check_isolated(message, rows, candidates, suspects, totals, latest_ms)
            )
        async with self.store.ingest_transaction() as tx:
            # Dedup by (gateway, seq), against the store and within this transaction.
            wanted: dict[str, set[int]] = {}
            for _state, signed, _ms in candidates:
                wanted.setdefault(signed.record.gateway_id, set()).add(signed.record.seq)
            for _state, signed, _message in suspects:
                wanted.setdefault(signed.record.gateway_id, set()).add(signed.record.seq)
            stored_raw = await tx.existing_records(wanted) if wanted else {}
            fresh: list[tuple[_BatchState, SignedRecord, int]] = []
            for state, signed, received_ms in candidates:
                rec = signed.record
                key = (rec.gateway_id, rec.seq)
                state.handled.append(rec.seq)
                prior = stored_raw.get(key)
                if prior is None:
                    stored_raw[key] = signed.raw
                    fresh.append((state, signed, received_ms))
                elif prior == signed.raw:
                    state.duplicates += 1
                    rows.count(rec.gateway_id, rec.meter_id).duplicate_records += 1
                    totals.duplicate_records += 1
                else:
                    self._reject(
                        rows,
                        state,
                        totals,
                        QuarantineRow(
                            received_ms,
                            readings_topic(rec.gateway_id),
                            rec.gateway_id,
                            rec.seq,
                            rec.meter_id,
                            REASON_SEQ_REUSED,
                            signed.raw,
                            reasons.SEQ_REUSED,
                        ),
                    )
            for state, signed, message in suspects:
                rec = signed.record
                why = _tamper_rejection(signed, stored_raw.get((rec.gateway_id, rec.seq)))
                self._quarantine(
                    rows, state, totals, message, rec.gateway_id, why, signed.raw,
                    seq=rec.seq, meter_id=rec.meter_id,
                )  # fmt: skip
            await self._store_fresh(tx, fresh, rows, totals)
            await tx.write(rows)
            if self.vee is not None and rows.readings:
                # same transaction: a reading is never committed without its validation
                await self.vee.after_ingest(tx.vee(), rows, self.clock_ms())
            committed_ms = self.clock_ms()
            if rows.records:  # the records' commit time: the last statement before COMMIT
                await tx.stamp_commit(committed_ms)
        # committed: only now may the caller ack anything
        if self.latency is not None and rows.records:
            self.latency.observe(rows.records, committed_ms)
        for hook in self.after_commit:
            await hook(rows)
        totals.transactions = 1
        self._add(totals)
        return [
            Outcome(message, gateway_id, None if state is None else state.ack())
            for message, gateway_id, state in checked
        ]

    # ------------------------------------------------------------------------------------

    def _add(self, totals: IngestTotals) -> None:
        self.totals.add(totals)

    def _check_isolated(
        self,
        message: Incoming,
        rows: IngestWrite,
        candidates: list[tuple[_BatchState, SignedRecord, int]],
        suspects: list[tuple[_BatchState, SignedRecord, Incoming]],
        totals: IngestTotals,
        latest_ms: int,
    ) -> tuple[Incoming, str | None, _BatchState | None]:
        """``_check`` one message into scratch rows, merged only if it went through: a
        message that trips an unforeseen error is quarantined whole ("internal error") and
        cannot take the other messages of the transaction down with it."""
        own_rows, own_totals = IngestWrite(), IngestTotals()
        own_candidates: list[tuple[_BatchState, SignedRecord, int]] = []
        own_suspects: list[tuple[_BatchState, SignedRecord, Incoming]] = []
        try:
            result = self._check(
                message, own_rows, own_candidates, own_suspects, own_totals, latest_ms
            )
        except Exception as exc:
            log.exception("message on %s could not be checked; quarantined", message.topic)
            own_rows, own_totals = IngestWrite(), IngestTotals()
            own_candidates, own_suspects = [], []
            gateway_id = message.topic.split("/")[2] if message.topic.count("/") >= 3 else ""
            why = Rejection(reasons.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
            self._refuse(own_rows, own_totals, message, gateway_id, why)
            result = (message, None, None)
        rows.merge(own_rows)
        candidates.extend(own_candidates)
        suspects.extend(own_suspects)
        totals.add(own_totals)
        return result

    @staticmethod
    def _reject(
        rows: IngestWrite, state: _BatchState | None, totals: IngestTotals, row: QuarantineRow
    ) -> None:
        """Keep ``row`` in quarantine and count it as rejected."""
        rows.quarantine.append(row)
        rows.count(row.gateway_id, row.meter_id).rejected += 1
        totals.rejected += 1
        if state is not None:
            state.rejected += 1

    def _quarantine(
        self,
        rows: IngestWrite,
        state: _BatchState | None,
        totals: IngestTotals,
        message: Incoming,
        gateway_id: str,
        why: Rejection,
        raw: bytes,
        seq: int | None = None,
        meter_id: str | None = None,
    ) -> None:
        """Quarantine what arrived in ``message`` (all of it, or one record of it)."""
        row = QuarantineRow(
            message.received_ms, message.topic, gateway_id, seq, meter_id, why.reason, raw, why.kind
        )
        self._reject(rows, state, totals, row)

    def _refuse(
        self,
        rows: IngestWrite,
        totals: IngestTotals,
        message: Incoming,
        gateway_id: str,
        why: Rejection,
    ) -> None:
        """Quarantine a whole message that cannot be taken apart into records (of a huge
        one, the first ``MAX_QUARANTINE_RAW`` bytes)."""
        raw = message.payload[:MAX_QUARANTINE_RAW]
        self._quarantine(rows, None, totals, message, gateway_id, why, raw)

    def _check(
        self,
        message: Incoming,
        rows: IngestWrite,
        candidates: list[tuple[_BatchState, SignedRecord, int]],
        suspects: list[tuple[_BatchState, SignedRecord, Incoming]],
        totals: IngestTotals,
        latest_ms: int,
    ) -> tuple[Incoming, str | None, _BatchState | None]:
        ms = message.received_ms
        try:
            gateway_id, kind = parse_topic(message.topic)
        except DecodeError as exc:
            self._refuse(
                rows, totals, message, "", Rejection(reasons.BAD_TOPIC, f"bad topic: {exc}")
            )
            return message, None, None
        if kind == "status":
            self._status(message, gateway_id, rows, totals)
            return message, gateway_id, None
        if kind != "readings":
            why = Rejection(reasons.UNEXPECTED_TOPIC, f"unexpected topic kind {kind!r}")
            self._refuse(rows, totals, message, gateway_id, why)
            return message, gateway_id, None
        totals.batches += 1
        if len(message.payload) > MAX_BATCH_BYTES:
            why = Rejection(
                reasons.OVERSIZED,
                f"oversized batch: {len(message.payload)} bytes, more than {MAX_BATCH_BYTES}"
                f" (the first {MAX_QUARANTINE_RAW} kept)",
            )
            self._refuse(rows, totals, message, gateway_id, why)
            return message, gateway_id, None
        try:
            batch = decode_batch(message.payload, f"batch on {message.topic}")
        except DecodeError as exc:
            self._refuse(rows, totals, message, gateway_id, _batch_rejection(exc))
            return message, gateway_id, None
        if batch.gateway_id != gateway_id:
            why = Rejection(
                reasons.TOPIC_MISMATCH,
                f"{REASON_TOPIC_MISMATCH} (batch header names {batch.gateway_id!r})",
            )
            self._refuse(rows, totals, message, gateway_id, why)
            return message, gateway_id, None
        state = _BatchState(gateway_id, batch.batch_id)
        for bad in batch.bad:
            state.unparsed.append(bad.index)
            self._quarantine(
                rows,
                state,
                totals,
                message,
                gateway_id,
                Rejection(reasons.UNPARSEABLE_RECORD, f"unparseable record: {bad.error}"),
                bad.raw,
            )
        registry = self.registry
        for signed in batch.records:
            rec = signed.record
            totals.records += 1
            if rec.gateway_id != gateway_id:
                reason: Rejection | None = _TOPIC_MISMATCH
            else:
                reason = registry.check(gateway_id, signed)
                if reason is None:
                    reason = _capture_time_rejection(rec.captured_ms, latest_ms)
            if reason is _BAD_SIGNATURE:
                suspects.append((state, signed, message))  # quarantined in the transaction
                continue
            if reason is not None:
                if reason.kind in _AUTHENTIC_REJECTIONS:
                    state.handled.append(rec.seq)
                self._quarantine(
                    rows,
                    state,
                    totals,
                    message,
                    gateway_id,
                    reason,
                    signed.raw,
                    seq=rec.seq,
                    meter_id=rec.meter_id,
                )
                continue
            candidates.append((state, signed, ms))
        return message, gateway_id, state

    def _status(
        self, message: Incoming, gateway_id: str, rows: IngestWrite, totals: IngestTotals
    ) -> None:
        if not message.payload:
            return  # a retained status being cleared
        ms = message.received_ms
        try:
            status = GatewayStatus.from_bytes(message.payload)
        except DecodeError as exc:
            why = Rejection(reasons.UNPARSEABLE_STATUS, f"unparseable status: {exc}")
            self._refuse(rows, totals, message, gateway_id, why)
            return
        if status.gateway_id != gateway_id:
            self._refuse(rows, totals, message, gateway_id, _TOPIC_MISMATCH)
            return
        totals.statuses += 1
        rows.statuses.append(
            StatusRow(
                gateway_id,
                str(status.state),
                str(status.reason),
                status.at_ms,
                int(status.backlog),
                int(status.dropped),
                int(status.last_seq),
                str(status.version),
                ms,
            )
        )

    async def _store_fresh(
        self,
        tx: IngestTx,
        fresh: list[tuple[_BatchState, SignedRecord, int]],
        rows: IngestWrite,
        totals: IngestTotals,
    ) -> None:
        """Store new records and their readings; dedup each value by its identity.

        Fast path: a record whose (meter, captured_ms) is neither in the store nor earlier
        in this transaction cannot hold a duplicate value, so its values are appended
        without a look-up each. Only captures seen before are compared value by value.
        """
        if not fresh:
            return
        wanted: dict[str, set[int]] = {}
        for _state, signed, _ms in fresh:
            rec = signed.record
            wanted.setdefault(rec.meter_id, set()).add(rec.captured_ms)
        known: dict[tuple[str, str, int], StoredReading] = await tx.existing_readings(wanted)
        known_captures = {(meter, ms) for meter, _obis, ms in known}
        earlier: dict[tuple[str, int], SignedRecord] = {}  # captures stored by this transaction
        detected_ms = self.clock_ms()
        records_out = rows.records
        readings_out = rows.readings
        for state, signed, received_ms in fresh:
            rec = signed.record
            gateway_id, meter_id, seq, captured_ms = (
                rec.gateway_id,
                rec.meter_id,
                rec.seq,
                rec.captured_ms,
            )
            records_out.append(
                RecordRow(gateway_id, seq, meter_id, captured_ms, signed.raw, received_ms)
            )
            state.stored += 1
            totals.records_stored += 1
            delta = rows.count(gateway_id, meter_id)
            delta.records_stored += 1
            record_flags = int(rec.flags)
            clock_source = int(rec.clock_source)
            capture = (meter_id, captured_ms)
            first = earlier.get(capture)
            if first is not None:
                _remember(known, first)
                known_captures.add(capture)
                del earlier[capture]
            if capture not in known_captures:
                earlier[capture] = signed
                readings_out.extend(
                    (
                        meter_id,
                        _obis_text(value.obis),
                        captured_ms,
                        str(value.value),
                        value.unit,
                        record_flags | int(value.flags),
                        clock_source,
                        gateway_id,
                        seq,
                    )
                    for value in rec.values
                )
                stored = len(rec.values)
                delta.readings_stored += stored
                totals.readings_stored += stored
                continue
            stored = duplicates = 0
            for value in rec.values:
                obis = _obis_text(value.obis)
                ident = (meter_id, obis, captured_ms)
                prior = known.get(ident)
                text = str(value.value)
                if prior is None:
                    known[ident] = StoredReading(text, value.unit, gateway_id, seq)
                    readings_out.append(
                        ReadingRow(
                            meter_id,
                            obis,
                            captured_ms,
                            text,
                            value.unit,
                            record_flags | int(value.flags),
                            clock_source,
                            gateway_id,
                            seq,
                        )
                    )
                    stored += 1
                elif prior.unit == value.unit and Decimal(prior.value) == value.value:
                    duplicates += 1
                else:
                    rows.conflicts.append(
                        ConflictRow(
                            meter_id,
                            obis,
                            captured_ms,
                            prior.value,
                            prior.unit,
                            prior.gateway_id,
                            prior.seq,
                            text,
                            value.unit,
                            gateway_id,
                            seq,
                            detected_ms,
                        )
                    )
                    delta.conflicts += 1
                    state.conflicts += 1
                    totals.conflicts += 1
            delta.readings_stored += stored
            delta.duplicate_readings += duplicates
            totals.readings_stored += stored
            totals.duplicate_readings += duplicates


_TOPIC_MISMATCH = Rejection(reasons.TOPIC_MISMATCH, REASON_TOPIC_MISMATCH)


_BAD_SIGNATURE = BAD_SIGNATURE


def _tamper_rejection(signed: SignedRecord, genuine_raw: bytes | None) -> Rejection:
    """Why a record whose signature failed is refused: if the genuine record of its
    (gateway, seq) is stored, say what was altered; otherwise "bad signature"."""
    if genuine_raw is None or genuine_raw == signed.raw:
        return BAD_SIGNATURE
    try:
        genuine = decode_record(genuine_raw).record
    except DecodeError:  # pragma: no cover - stored records were decoded before
        return BAD_SIGNATURE
    rec = signed.record
    changed = [
        f"{v.obis} {v.value} {v.unit} (stored genuine: {g.value} {g.unit})"
        for v, g in zip(rec.values, genuine.values, strict=False)
        if (v.obis, v.value, v.unit, v.flags) != (g.obis, g.value, g.unit, g.flags)
    ]
    if len(rec.values) != len(genuine.values):
        changed.append(f"{len(rec.values)} values (stored genuine: {len(genuine.values)})")
    when = ""
    if rec.captured_ms != genuine.captured_ms:
        when = f"captured {_when(rec.captured_ms)} (stored genuine: {_when(genuine.captured_ms)})"
    if changed:
        detail = "; ".join(changed + ([when] if when else []))
        return Rejection(reasons.TAMPERED_VALUE, f"tampered value: seq {rec.seq}: {detail}")
    if when:
        return Rejection(reasons.TAMPERED_TIME, f"tampered capture time: seq {rec.seq}: {when}")
    return Rejection(
        reasons.BAD_SIGNATURE,
        f"bad signature: seq {rec.seq} differs from the stored genuine record"
        " (not in a value or the capture time)",
    )


def _batch_rejection(exc: DecodeError) -> Rejection:
    """Tell a cut-off message (or a length field that lies) and a lying record count from
    any other broken frame."""
    text = f"unparseable batch: {exc}"  # the text every broken frame has had since v1
    if "record count" in text and "larger than the message" in text:
        return Rejection(reasons.COUNT_LIES, text)
    if "truncated" in text:
        return Rejection(reasons.TRUNCATED, text)
    return Rejection(reasons.UNPARSEABLE_BATCH, text)


def _capture_time_rejection(captured_ms: int, latest_ms: int) -> Rejection | None:
    """A signed record whose capture time cannot be right: before 2000 or far ahead."""
    if captured_ms < EARLIEST_MS:
        return Rejection(reasons.TOO_OLD, f"capture time before 2000: {_when(captured_ms)}")
    if captured_ms > latest_ms:
        return Rejection(
            reasons.FUTURE,
            f"future-dated: captured {_when(captured_ms)}, the collector accepts up to"
            f" {_when(latest_ms)}",
        )
    return None


def _when(ms: int) -> str:
    try:
        return format_utc_ms(ms)
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"


def _remember(known: dict[tuple[str, str, int], StoredReading], signed: SignedRecord) -> None:
    """Enter the values of a record stored earlier in this transaction into ``known``."""
    rec = signed.record
    for value in rec.values:
        ident = (rec.meter_id, _obis_text(value.obis), rec.captured_ms)
        known.setdefault(
            ident, StoredReading(str(value.value), value.unit, rec.gateway_id, rec.seq)
        )
