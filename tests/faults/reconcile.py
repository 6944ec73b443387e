"""Reconciliation after a fault run: where is every sequence number the agent assigned?

Each seq 1..last of a gateway is exactly one of: stored at the head-end once with exactly its
signed values (re-decoded from the raw bytes the collector keeps, compared with ``readings``),
still in the agent's buffer, or in the agent's ``losses`` table (dropped by the explicit buffer
policy). Anything else is ``lost``; the same capture stored under two seqs is ``twice``.
Read the head-end first and the (stopped) agent's buffer second: a seq not stored at the first
read is still held by a stopped agent. The head-end is a SQLite file (one collector) or a
PostgreSQL database URL (several collectors); the same queries read either.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from protocols.record import decode_record
from tests.support.fleet import pg_query

__all__ = ["Tally", "integrity_ok", "reconcile"]


@dataclass(slots=True)
class Tally:
    runs: int = 0
    records: int = 0  # seqs assigned: 1..last
    readings: int = 0  # values in the records stored or held (dropped ones are gone)
    stored_once: int = 0
    in_buffer: int = 0
    dropped: int = 0  # in the agent's losses table (buffer policy), counted
    lost: int = 0
    twice: int = 0
    altered: int = 0  # a stored value that differs from its signed value
    duplicate_identity: int = 0  # values stored under another record with the same identity
    conflicts: int = 0  # same identity, different value: kept in the conflicts table
    clock_suspect: int = 0  # records flagged CLOCK_SUSPECT
    read_errors: int = 0  # failed or refused polls counted by the agent
    held: int = 0  # seqs a killed collector held unacked (multi-collector faults)
    resent: int = 0  # batches the agent sent again after its ack timeout (idem)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.twice == 0 and self.altered == 0

    def problems(self) -> str:
        return "; ".join(self.notes[-10:])


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def integrity_ok(path: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file: 'ok' or the first problems."""
    con = _ro(path)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    return "ok" if rows == [("ok",)] else "; ".join(r[0] for r in rows[:5])


def _head_end(source: Path | str, sql: str, *params: object) -> list[tuple]:
    """Rows of ``sql`` from the head-end: a SQLite file or a PostgreSQL URL."""
    if isinstance(source, str):
        return pg_query(source, sql, *params)
    con = _ro(source)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def reconcile(head_end: Path | str, gateway: str, buffer_path: Path) -> Tally:
    tally = Tally()
    stored = {
        seq: bytes(raw)
        for seq, raw in _head_end(
            head_end, "SELECT seq, raw FROM records WHERE gateway_id = ?", gateway
        )
    }
    readings = {
        (m, o, ms): (v, g, s)
        for m, o, ms, v, g, s in _head_end(
            head_end, "SELECT meter_id, obis, captured_ms, value, gateway_id, seq FROM readings"
        )
    }
    conflicts = set(
        _head_end(
            head_end,
            "SELECT meter_id, obis, captured_ms, new_seq FROM conflicts WHERE new_gateway_id = ?",
            gateway,
        )
    )
    buf = _ro(buffer_path)
    try:
        last = int(buf.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]) - 1
        held = dict(buf.execute("SELECT seq, raw FROM records"))
        losses = buf.execute("SELECT first_seq, last_seq FROM losses").fetchall()
        tally.read_errors = buf.execute(
            "SELECT coalesce(sum(read_errors), 0) FROM meter_stats"
        ).fetchone()[0]
    finally:
        buf.close()
    dropped = {s for lo, hi in losses for s in range(lo, hi + 1)}
    tally.records = last
    captures: dict[tuple[str, int, tuple], int] = {}
    for seq in range(1, last + 1):
        if seq in stored:
            tally.stored_once += 1
        elif seq in held:
            tally.in_buffer += 1
        elif seq in dropped:
            tally.dropped += 1
        else:
            tally.lost += 1
            tally.notes.append(f"{gateway} seq {seq} lost")
    for seq in set(stored) - set(range(1, last + 1)):
        tally.twice += 1
        tally.notes.append(f"{gateway} seq {seq} stored but beyond the agent's last seq {last}")
    for raw in held.values():
        tally.readings += len(decode_record(raw).record.values)
    for seq, raw in stored.items():
        rec = decode_record(raw).record
        tally.readings += len(rec.values)
        if rec.flags & 0x04:
            tally.clock_suspect += 1
        values = tuple((str(v.obis), v.value) for v in rec.values)
        key = (rec.meter_id, rec.captured_ms, values)
        if key in captures:
            tally.twice += 1
            tally.notes.append(f"{gateway} seqs {captures[key]} and {seq}: the same capture")
        captures[key] = seq
        for v in rec.values:
            obis = str(v.obis)
            row = readings.get((rec.meter_id, obis, rec.captured_ms))
            if row is None:
                tally.lost += 1
                tally.notes.append(f"{gateway} seq {seq} {obis}: no reading stored")
            elif (row[1], row[2]) == (gateway, seq):
                if Decimal(row[0]) != v.value:
                    tally.altered += 1
                    tally.notes.append(f"{gateway} seq {seq} {obis}: {row[0]} != {v.value}")
            elif Decimal(row[0]) == v.value:
                tally.duplicate_identity += 1
            elif (rec.meter_id, obis, rec.captured_ms, seq) in conflicts:
                tally.conflicts += 1
            else:
                tally.altered += 1
                tally.notes.append(f"{gateway} seq {seq} {obis}: other value, no conflict row")
    return tally
