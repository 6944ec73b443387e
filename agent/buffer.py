"""The store-and-forward buffer: signed records in SQLite until the head-end acks them.

Guarantees (see docs/agent.md):

* A record is committed before it is published: the uplink only reads committed rows (every
  call goes through one lock, so a read never sees another call's open transaction).
* The sequence number is assigned in the transaction that inserts the record and advances
  ``meta.next_seq``: a crash rolls back both, so seqs are gap-free and never reused. Only
  one writer (this object) assigns seqs, so the in-memory counter always equals the
  committed one.
* ``synchronous=FULL``: in WAL mode, ``NORMAL`` does not fsync the WAL at each commit, so a
  power cut can undo transactions that were already committed -- and published. The seq
  would then be reused for a different reading after the restart, and the head-end would see
  two readings under one seq. ``FULL`` fsyncs the WAL at every commit; group commit keeps
  that to one fsync per group of captures.
* A record is deleted only by ``delete_acked`` (the head-end committed it) or by the
  drop-oldest policy, which writes the dropped range into ``losses`` and counts it.
* A full disk: the database is capped (``PRAGMA max_page_count``) at a share of the space it
  may use (its own files + the filesystem's free space at open, and ``max_bytes`` if set), so
  SQLITE_FULL comes from our cap while the filesystem still has room for the WAL, deletes and
  updates: the policy can drop (or the uplink can drain) on a full buffer. Batch ids are
  reserved in blocks (one write per ``BATCH_ID_BLOCK`` batches, never reused after a crash),
  and noting the batch on its records is best effort, so starting a batch needs no space.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.batch import seq_ranges
from protocols.obis import Obis
from protocols.record import ClockSource, Quality, Record, Value, key_id_of, sign_record

__all__ = [
    "AppendResult",
    "Buffer",
    "BufferError",
    "Capture",
    "DiskFullError",
    "ReadError",
]

log = logging.getLogger("agent.buffer")

SCHEMA_VERSION = 1
DB_SHARE = 0.4  # of the space the buffer may use: the rest is for the WAL, -shm and deletes
BATCH_ID_BLOCK = 1000  # batch ids reserved per meta write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    meter_id TEXT NOT NULL,
    captured_ms INTEGER NOT NULL,
    raw BLOB NOT NULL,
    batch INTEGER
);
CREATE TABLE IF NOT EXISTS meter_stats (
    meter_id TEXT PRIMARY KEY,
    records INTEGER NOT NULL DEFAULT 0,
    readings INTEGER NOT NULL DEFAULT 0,
    read_errors INTEGER NOT NULL DEFAULT 0,
    skipped_slots INTEGER NOT NULL DEFAULT 0,
    last_capture_ms INTEGER,
    last_error TEXT,
    last_error_ms INTEGER
);
CREATE TABLE IF NOT EXISTS profile_cursor (
    meter_id TEXT NOT NULL,
    obis TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (meter_id, obis)
);
CREATE TABLE IF NOT EXISTS losses (
    id INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
"""

_STATS_RECORD = """
INSERT INTO meter_stats (meter_id, records, readings, last_capture_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (meter_id) DO UPDATE SET records = records + excluded.records,
    readings = readings + excluded.readings,
    last_capture_ms = max(coalesce(last_capture_ms, 0), excluded.last_capture_ms)
"""
_STATS_ERROR = """
INSERT INTO meter_stats (meter_id, read_errors, last_error, last_error_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (meter_id) DO UPDATE SET read_errors = read_errors + excluded.read_errors,
    last_error = excluded.last_error, last_error_ms = excluded.last_error_ms
"""
_PROFILE_CURSOR = """
INSERT INTO profile_cursor (meter_id, obis, last_ms) VALUES (?, ?, ?)
ON CONFLICT (meter_id, obis) DO UPDATE SET last_ms = max(last_ms, excluded.last_ms)
"""
_STATS_SKIPPED = """
INSERT INTO meter_stats (meter_id, skipped_slots) VALUES (?, ?)
ON CONFLICT (meter_id) DO UPDATE SET skipped_slots = skipped_slots + excluded.skipped_slots
"""


class BufferError(Exception):
    """The buffer file cannot be used as it is (other gateway, newer schema, ...)."""


class DiskFullError(BufferError):
    """SQLite reported SQLITE_FULL ("database or disk is full"): nothing was committed."""


def _is_disk_full(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc)


async def _rollback(db: aiosqlite.Connection) -> None:
    # SQLite may already have rolled back on its own (SQLITE_FULL does): ignore "no transaction".
    with contextlib.suppress(sqlite3.OperationalError):
        await db.execute("ROLLBACK")


@dataclass(frozen=True, slots=True)
class Capture:
    """One poll of one meter: what the buffer turns into a signed record."""

    meter_id: str
    captured_ms: int
    values: tuple[Value, ...]
    flags: Quality = Quality.NONE
    clock_source: ClockSource = ClockSource.GATEWAY
    #: a load-profile entry of this Profile Generic (DLMS), stamped with the entry's time:
    #: storing it advances the profile's cursor in the same transaction
    profile: Obis | None = None


@dataclass(frozen=True, slots=True)
class ReadError:
    """A failed poll (or a refused capture), counted in the meter's stats."""

    meter_id: str
    at_ms: int
    text: str
    skipped_slots: int = 0  # an overrun: slots missed, counted (text may be empty)


@dataclass(slots=True)
class AppendResult:
    seqs: list[int] = field(default_factory=list)
    refused: int = 0
    dropped: int = 0


def _sign_rows(
    records: Sequence[Record], key: Ed25519PrivateKey
) -> list[tuple[int, str, int, bytes]]:
    key_id = key_id_of(key.public_key())
    return [(r.seq, r.meter_id, r.captured_ms, sign_record(r, key, key_id).raw) for r in records]


class Buffer:
    """One SQLite file per gateway; every call is serialised through one asyncio lock."""

    def __init__(self, db: aiosqlite.Connection, path: Path, readonly: bool) -> None:
        self._db = db
        self.path = path
        self.readonly = readonly
        self._lock = asyncio.Lock()
        self.gateway_id = ""
        self._key: Ed25519PrivateKey | None = None
        self.max_records = 0
        self.when_full = "drop-oldest"
        self.next_seq = 1
        self.count = 0
        self.dropped_total = 0
        self.refused_total = 0
        self._full_logged = False
        self._closed = False
        # per meter, the newest capture time committed (meter_stats.last_capture_ms): a capture
        # not after it means the gateway clock went back (Modbus meters have no clock)
        self.last_capture_ms: dict[str, int] = {}
        self.clock_suspect_total = 0
        self._suspect_logged: set[str] = set()
        self.max_pages = 0  # PRAGMA max_page_count set at open (0: not capped)
        self.page_size = 4096
        self._batch_next = 0  # next batch id to hand out
        self._batch_limit = 0  # first id not reserved in meta (persisted)
        self.losses_reported = 0  # highest losses.id published upstream (meta)
        self.refused_reported = 0  # refused_total when last published upstream (meta)
        # per (meter, profile OBIS text), the newest load-profile entry committed (Unix ms)
        self.profile_cursors: dict[tuple[str, str], int] = {}

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        gateway_id: str,
        key: Ed25519PrivateKey | None,
        max_records: int = 1_000_000,
        when_full: str = "drop-oldest",
        max_bytes: int | None = None,
    ) -> Buffer:
        """Open (or create) the buffer; ``max_bytes`` caps the database file (else the cap
        is ``DB_SHARE`` of its own files plus the filesystem's free space)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        buf = cls(db, path, readonly=False)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.executescript(_SCHEMA)
            buf.gateway_id = gateway_id
            buf._key = key
            buf.max_records = max_records
            buf.when_full = when_full
            await buf._load_meta(create=True)
            await buf._cap(max_bytes)
        except BaseException:
            await db.close()
            raise
        return buf

    async def _cap(self, max_bytes: int | None) -> None:
        """Cap the database below the space it may use (see the module doc)."""
        db = self._db
        self.page_size = int((await db.execute_fetchall("PRAGMA page_size"))[0][0])  # type: ignore[index]
        pages = int((await db.execute_fetchall("PRAGMA page_count"))[0][0])  # type: ignore[index]
        own = sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )
        st = os.statvfs(self.path.parent)
        room = int((own + st.f_bavail * st.f_frsize) * DB_SHARE)
        if max_bytes is not None:
            room = min(room, max_bytes)
        cap = max(room // self.page_size, pages)
        rows = await db.execute_fetchall(f"PRAGMA max_page_count = {cap}")
        self.max_pages = int(rows[0][0])  # type: ignore[index]
        # checkpoint often enough that the WAL stays small next to the cap, and give the
        # file back after a checkpoint (journal_size_limit)
        wal_pages = max(min(1000, cap // 4), 8)
        await db.execute(f"PRAGMA wal_autocheckpoint = {wal_pages}")
        await db.execute(f"PRAGMA journal_size_limit = {wal_pages * self.page_size}")
        log.info(
            "%s: database capped at %d pages of %d bytes (%.1f MiB)",
            self.path,
            self.max_pages,
            self.page_size,
            self.max_pages * self.page_size / 2**20,
        )

    @classmethod
    async def open_readonly(cls, path: Path) -> Buffer:
        """For ``agent status`` while the agent runs: no writes, no schema changes."""
        if not path.exists():
            raise BufferError(f"{path}: no buffer (has the agent run with this config?)")
        db = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        buf = cls(db, path, readonly=True)
        try:
            # one read transaction: the running agent commits between statements otherwise,
            # and a record read after a newer next_seq would look like an altered file
            await db.execute("BEGIN")
            try:
                await buf._load_meta(create=False)
            finally:
                await db.execute("COMMIT")
        except BaseException:
            await db.close()
            raise
        return buf

    async def _load_meta(self, create: bool) -> None:
        meta = dict(await self._db.execute_fetchall("SELECT key, value FROM meta"))
        if not meta:
            if not create:
                raise BufferError(f"{self.path}: empty buffer (no meta)")
            await self._db.execute("BEGIN IMMEDIATE")
            await self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("gateway_id", self.gateway_id),
                    ("next_seq", "1"),
                    ("next_batch_id", "1"),
                    ("dropped_total", "0"),
                    ("refused_total", "0"),
                ],
            )
            await self._db.execute("COMMIT")
            meta = dict(await self._db.execute_fetchall("SELECT key, value FROM meta"))
        version = int(meta.get("schema_version", "0"))
        if version != SCHEMA_VERSION:
            raise BufferError(
                f"{self.path}: buffer schema version {version}, this agent knows {SCHEMA_VERSION}"
            )
        if create and meta["gateway_id"] != self.gateway_id:
            raise BufferError(
                f"{self.path}: buffer belongs to gateway {meta['gateway_id']!r}, not "
                f"{self.gateway_id!r} (sequence numbers are per gateway: use another state_dir)"
            )
        self.gateway_id = meta["gateway_id"]
        self.next_seq = int(meta["next_seq"])
        self.dropped_total = int(meta["dropped_total"])
        self.refused_total = int(meta["refused_total"])
        self._batch_next = self._batch_limit = int(meta["next_batch_id"])
        self.losses_reported = int(meta.get("losses_reported", "0"))
        self.refused_reported = int(meta.get("refused_reported", "0"))
        self.last_capture_ms = {
            meter: ms
            for meter, ms in await self._db.execute_fetchall(
                "SELECT meter_id, last_capture_ms FROM meter_stats "
                "WHERE last_capture_ms IS NOT NULL"
            )
        }
        if create or await self._db.execute_fetchall(
            "SELECT 1 FROM sqlite_master WHERE name = 'profile_cursor'"
        ):
            self.profile_cursors = {
                (meter, obis): ms
                for meter, obis, ms in await self._db.execute_fetchall(
                    "SELECT meter_id, obis, last_ms FROM profile_cursor"
                )
            }
        rows = await self._db.execute_fetchall("SELECT count(*), max(seq) FROM records")
        self.count, max_seq = rows[0]  # type: ignore[index]
        if max_seq is not None and max_seq >= self.next_seq:
            raise BufferError(
                f"{self.path}: record seq {max_seq} >= meta next_seq {self.next_seq}: "
                "the buffer file was altered"
            )

    async def _abort(self, exc: BaseException) -> None:
        """Roll back the open transaction; a full disk is raised as :class:`DiskFullError`
        (the caller re-raises anything else)."""
        await _rollback(self._db)
        if _is_disk_full(exc):
            raise DiskFullError(f"{self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            await self._db.close()

    async def __aenter__(self) -> Buffer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing -----------------------------------------------------------------------

    async def append(
        self, captures: Sequence[Capture], errors: Sequence[ReadError] = (), now_ms: int = 0
    ) -> AppendResult:
        """Sign and store ``captures`` and count ``errors``, all in ONE transaction."""
        if self._key is None or self.readonly:
            raise BufferError(f"{self.path}: opened without a key or read-only")
        result = AppendResult()
        errors = list(errors)
        async with self._lock:
            accepted = list(captures)
            if self.when_full == "stop-capture":
                room = max(self.max_records - self.count, 0)
                if len(accepted) > room:
                    refused = accepted[room:]
                    accepted = accepted[:room]
                    result.refused = len(refused)
                    errors += [ReadError(c.meter_id, c.captured_ms, "buffer full") for c in refused]
                    if not self._full_logged:
                        self._full_logged = True
                        log.warning(
                            "buffer full (%d records, when_full=stop-capture): refusing new "
                            "captures until the head-end acks records",
                            self.count,
                        )
                elif self._full_logged and room > len(accepted):
                    self._full_logged = False
                    log.info("buffer has room again: capturing resumes")
            records: list[Record] = []
            stats: dict[str, list[int]] = {}
            seq = self.next_seq
            last = dict(self.last_capture_ms)
            suspect = 0
            cursors: dict[tuple[str, str], int] = {}
            for cap in accepted:
                flags = cap.flags
                previous = last.get(cap.meter_id)
                if cap.profile is not None:
                    # a load-profile entry: the meter's own past time, behind the newest
                    # capture by design; its order is the profile cursor's, not checked here
                    key = (cap.meter_id, str(cap.profile))
                    cursors[key] = max(cursors.get(key, cap.captured_ms), cap.captured_ms)
                elif previous is not None and cap.captured_ms <= previous:
                    # the gateway clock stepped back: the timestamp is not after the meter's
                    # previous capture. Stored (never dropped, never overwriting), but flagged.
                    flags |= Quality.CLOCK_SUSPECT
                    suspect += 1
                    if cap.meter_id not in self._suspect_logged:
                        self._suspect_logged.add(cap.meter_id)
                        log.warning(
                            "meter %s: capture at %d ms is not after the previous capture at "
                            "%d ms (gateway clock stepped back?): flagged CLOCK_SUSPECT",
                            cap.meter_id,
                            cap.captured_ms,
                            previous,
                        )
                else:
                    self._suspect_logged.discard(cap.meter_id)
                if cap.profile is None:
                    last[cap.meter_id] = max(previous or cap.captured_ms, cap.captured_ms)
                records.append(
                    Record(
                        self.gateway_id,
                        cap.meter_id,
                        seq,
                        cap.captured_ms,
                        cap.clock_source,
                        flags,
                        cap.values,
                    )
                )
                result.seqs.append(seq)
                entry = stats.setdefault(cap.meter_id, [0, 0, 0])
                entry[0] += 1
                entry[1] += len(cap.values)
                entry[2] = max(entry[2], cap.captured_ms)
                seq += 1
            # Signing is CPU work that releases the GIL: off the event loop, so pollers and
            # the uplink keep running while a large group is signed. The lock keeps the seqs.
            rows = await asyncio.to_thread(_sign_rows, records, self._key)
            db = self._db
            await db.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    await db.executemany(
                        "INSERT INTO records (seq, meter_id, captured_ms, raw) VALUES (?,?,?,?)",
                        rows,
                    )
                    await db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'next_seq'", (str(seq),)
                    )
                    await db.executemany(
                        _STATS_RECORD, [(m, r, n, t) for m, (r, n, t) in stats.items()]
                    )
                    if cursors:
                        await db.executemany(
                            _PROFILE_CURSOR, [(m, o, ms) for (m, o), ms in cursors.items()]
                        )
                dropped_ranges: list[tuple[int, int]] = []
                overflow = self.count + len(rows) - self.max_records
                if overflow > 0 and self.when_full == "drop-oldest":
                    dropped = [
                        r[0]
                        for r in await db.execute_fetchall(
                            "SELECT seq FROM records ORDER BY seq LIMIT ?", (overflow,)
                        )
                    ]
                    await db.execute("DELETE FROM records WHERE seq <= ?", (dropped[-1],))
                    dropped_ranges = seq_ranges(dropped)
                    at = now_ms or (accepted[-1].captured_ms if accepted else 0)
                    await db.executemany(
                        "INSERT INTO losses (first_seq, last_seq, count, reason, at_ms) "
                        "VALUES (?, ?, ?, 'buffer full: drop-oldest', ?)",
                        [(lo, hi, hi - lo + 1, at) for lo, hi in dropped_ranges],
                    )
                    result.dropped = len(dropped)
                    await db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'dropped_total'",
                        (str(self.dropped_total + len(dropped)),),
                    )
                if result.refused:
                    await db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'refused_total'",
                        (str(self.refused_total + result.refused),),
                    )
                if errors:
                    await db.executemany(
                        _STATS_ERROR,
                        [(e.meter_id, 1, e.text, e.at_ms) for e in errors if e.text],
                    )
                    await db.executemany(
                        _STATS_SKIPPED,
                        [(e.meter_id, e.skipped_slots) for e in errors if e.skipped_slots],
                    )
                await db.execute("COMMIT")
            except BaseException as exc:
                await self._abort(exc)
                raise
            self.last_capture_ms = last
            for key, ms in cursors.items():
                self.profile_cursors[key] = max(self.profile_cursors.get(key, ms), ms)
            self.clock_suspect_total += suspect
            self.next_seq = seq
            self.count += len(rows) - result.dropped
            self.dropped_total += result.dropped
            self.refused_total += result.refused
        if result.dropped:
            log.warning(
                "buffer full (max_records=%d, when_full=drop-oldest): dropped %d oldest "
                "unacked records, seqs %s (total dropped %d)",
                self.max_records,
                result.dropped,
                ", ".join(f"{lo}-{hi}" for lo, hi in dropped_ranges),
                self.dropped_total,
            )
        return result

    async def drop_oldest(self, n: int, reason: str, now_ms: int) -> int:
        """Delete the ``n`` oldest records as the drop-oldest policy does (losses, counted),
        then checkpoint the WAL so the pages can be reused; used when the disk is full."""
        async with self._lock:
            db = self._db
            dropped_ranges: list[tuple[int, int]] = []
            await db.execute("BEGIN IMMEDIATE")
            try:
                dropped = [
                    r[0]
                    for r in await db.execute_fetchall(
                        "SELECT seq FROM records ORDER BY seq LIMIT ?", (n,)
                    )
                ]
                if dropped:
                    await db.execute("DELETE FROM records WHERE seq <= ?", (dropped[-1],))
                    dropped_ranges = seq_ranges(dropped)
                    await db.executemany(
                        "INSERT INTO losses (first_seq, last_seq, count, reason, at_ms) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(lo, hi, hi - lo + 1, reason, now_ms) for lo, hi in dropped_ranges],
                    )
                    await db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'dropped_total'",
                        (str(self.dropped_total + len(dropped)),),
                    )
                await db.execute("COMMIT")
            except BaseException as exc:
                await self._abort(exc)
                raise
            with contextlib.suppress(sqlite3.OperationalError):
                await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.count -= len(dropped)
            self.dropped_total += len(dropped)
        if dropped:
            log.warning(
                "%s: dropped %d oldest unacked records, seqs %s (total dropped %d)",
                reason,
                len(dropped),
                ", ".join(f"{lo}-{hi}" for lo, hi in dropped_ranges),
                self.dropped_total,
            )
        return len(dropped)

    async def note_refused(self, captures: Sequence[Capture], reason: str) -> None:
        """Count captures that could not be stored (the disk is full); best effort on disk."""
        async with self._lock:
            self.refused_total += len(captures)
            with contextlib.suppress(sqlite3.OperationalError):
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    await self._db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'refused_total'",
                        (str(self.refused_total),),
                    )
                    await self._db.executemany(
                        _STATS_ERROR, [(c.meter_id, 1, reason, c.captured_ms) for c in captures]
                    )
                    await self._db.execute("COMMIT")
                except BaseException:
                    await _rollback(self._db)
                    raise

    async def delete_acked(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete the records the head-end acknowledged (inclusive seq ranges)."""
        ranges = list(ranges)
        if not ranges:
            return 0
        async with self._lock:
            db = self._db
            await db.execute("BEGIN IMMEDIATE")
            try:
                deleted = 0
                for low, high in ranges:
                    cursor = await db.execute(
                        "DELETE FROM records WHERE seq BETWEEN ? AND ?", (low, high)
                    )
                    deleted += cursor.rowcount
                await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise
            self.count -= deleted
            return deleted

    async def start_batch(self, seqs: Sequence[int]) -> int:
        """A batch id never used before, noted (best effort) on its records.

        Ids come from a block reserved in ``meta.next_batch_id`` (one write per
        ``BATCH_ID_BLOCK`` batches; after a crash the next block starts above every id
        handed out, so none is reused). The batch column is informational (``status`` shows
        what was sent and not acked): if the disk is full it is skipped, the batch still goes
        out. What decides a resend is the uplink's in-flight table and the head-end's acks.
        """
        async with self._lock:
            db = self._db
            if self._batch_next >= self._batch_limit:
                limit = self._batch_next + BATCH_ID_BLOCK
                await db.execute("BEGIN IMMEDIATE")
                try:
                    await db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'next_batch_id'", (str(limit),)
                    )
                    await db.execute("COMMIT")
                except BaseException as exc:
                    await self._abort(exc)
                    raise
                self._batch_limit = limit
            batch_id = self._batch_next
            self._batch_next += 1
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    for low, high in seq_ranges(seqs):
                        await db.execute(
                            "UPDATE records SET batch = ? WHERE seq BETWEEN ? AND ?",
                            (batch_id, low, high),
                        )
                    await db.execute("COMMIT")
                except BaseException:
                    await _rollback(db)
                    raise
            except sqlite3.OperationalError as exc:
                if not _is_disk_full(exc):
                    raise
                log.debug("batch %d not noted on its records: %s", batch_id, exc)
            return batch_id

    def profile_cursor(self, meter_id: str, obis: Obis) -> int | None:
        """The newest committed load-profile entry of ``obis`` for ``meter_id`` (Unix ms,
        the meter's time), None before the first; the dlms driver's backfill starts after
        it (``agent.drivers.dlms.profile``)."""
        return self.profile_cursors.get((meter_id, str(obis)))

    # -- loss reporting ----------------------------------------------------------------

    async def unreported_losses(self) -> list[tuple[int, int, int, int, str]]:
        """``losses`` rows not yet published upstream: (id, first_seq, last_seq, count,
        reason), oldest first."""
        async with self._lock:
            rows = await self._db.execute_fetchall(
                "SELECT id, first_seq, last_seq, count, reason FROM losses WHERE id > ? "
                "ORDER BY id",
                (self.losses_reported,),
            )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def mark_reported(self, losses_id: int, refused_total: int) -> None:
        """The head-end's broker took the events up to these: remember it (best effort on
        disk: a failed write means the events are sent again after a restart)."""
        async with self._lock:
            self.losses_reported = max(self.losses_reported, losses_id)
            self.refused_reported = max(self.refused_reported, refused_total)
            db = self._db
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    await db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [
                            ("losses_reported", str(self.losses_reported)),
                            ("refused_reported", str(self.refused_reported)),
                        ],
                    )
                    await db.execute("COMMIT")
                except BaseException:
                    await _rollback(db)
                    raise
            except sqlite3.OperationalError as exc:
                log.warning("loss report state not saved (%s): events may repeat", exc)

    # -- reading -----------------------------------------------------------------------

    async def _scan(
        self, order: str, n: int, exclude: set[int] | frozenset[int]
    ) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        bound: int | None = None
        op = ">" if order == "ASC" else "<"
        async with self._lock:
            while len(out) < n:
                want = n - len(out) + len(exclude)
                if bound is None:
                    sql = f"SELECT seq, raw FROM records ORDER BY seq {order} LIMIT ?"
                    rows = await self._db.execute_fetchall(sql, (want,))
                else:
                    sql = (
                        f"SELECT seq, raw FROM records WHERE seq {op} ? "
                        f"ORDER BY seq {order} LIMIT ?"
                    )
                    rows = await self._db.execute_fetchall(sql, (bound, want))
                rows = list(rows)
                for seq, raw in rows:
                    if seq not in exclude:
                        out.append((seq, raw))
                        if len(out) == n:
                            break
                if len(rows) < want:
                    break
                bound = rows[-1][0]
        return out

    async def oldest(
        self, n: int, exclude: set[int] | frozenset[int] = frozenset()
    ) -> list[tuple[int, bytes]]:
        """Up to ``n`` unacked records, oldest first, skipping ``exclude`` (in flight)."""
        return await self._scan("ASC", n, exclude)

    async def newest_unsent(
        self, n: int, exclude: set[int] | frozenset[int] = frozenset()
    ) -> list[tuple[int, bytes]]:
        """Up to ``n`` unacked records, the newest, skipping ``exclude``; ascending order."""
        rows = await self._scan("DESC", n, exclude)
        rows.reverse()
        return rows

    async def backlog(self) -> int:
        """Records held (captured, not yet acked by the head-end)."""
        if self.readonly:
            async with self._lock:
                rows = await self._db.execute_fetchall("SELECT count(*) FROM records")
            return int(rows[0][0])  # type: ignore[index]
        return self.count

    async def seqs(self) -> list[int]:
        """Every seq held (tests and diagnostics)."""
        async with self._lock:
            rows = await self._db.execute_fetchall("SELECT seq FROM records ORDER BY seq")
        return [r[0] for r in rows]

    async def summary(self) -> dict[str, Any]:
        """What ``agent status`` prints: a consistent snapshot (one read transaction)."""
        async with self._lock:
            db = self._db
            await db.execute("BEGIN")
            try:
                meta = dict(await db.execute_fetchall("SELECT key, value FROM meta"))
                ((count, oldest_seq, oldest_ms, newest_seq, sent),) = await db.execute_fetchall(
                    "SELECT count(*), min(seq), min(captured_ms), max(seq), count(batch) "
                    "FROM records"
                )
                unsent = await db.execute_fetchall(
                    "SELECT seq, captured_ms FROM records WHERE batch IS NULL ORDER BY seq LIMIT 1"
                )
                meters = await db.execute_fetchall(
                    "SELECT meter_id, records, readings, read_errors, skipped_slots, "
                    "last_capture_ms, last_error, last_error_ms FROM meter_stats "
                    "ORDER BY meter_id"
                )
                losses = await db.execute_fetchall(
                    "SELECT first_seq, last_seq, count, reason, at_ms FROM losses ORDER BY id"
                )
                held = await db.execute_fetchall(
                    "SELECT meter_id, count(*) FROM records GROUP BY meter_id"
                )
            finally:
                await db.execute("COMMIT")
        unsent_row = list(unsent)
        return {
            "gateway_id": meta["gateway_id"],
            "schema_version": int(meta["schema_version"]),
            "next_seq": int(meta["next_seq"]),
            "last_seq": int(meta["next_seq"]) - 1,
            "next_batch_id": max(int(meta["next_batch_id"]), self._batch_next),
            "backlog": count,
            "sent_not_acked": sent,
            "oldest_seq": oldest_seq,
            "oldest_captured_ms": oldest_ms,
            "newest_seq": newest_seq,
            "oldest_unsent_seq": unsent_row[0][0] if unsent_row else None,
            "oldest_unsent_captured_ms": unsent_row[0][1] if unsent_row else None,
            "backlog_by_meter": dict(held),  # type: ignore[arg-type]
            "dropped_total": int(meta["dropped_total"]),
            "refused_total": int(meta["refused_total"]),
            "meters": [
                {
                    "meter_id": m[0],
                    "records": m[1],
                    "readings": m[2],
                    "read_errors": m[3],
                    "skipped_slots": m[4],
                    "last_capture_ms": m[5],
                    "last_error": m[6],
                    "last_error_ms": m[7],
                }
                for m in meters
            ],
            "losses": [
                {"first_seq": lo, "last_seq": hi, "count": c, "reason": r, "at_ms": at}
                for lo, hi, c, r, at in losses
            ],
            "profile_cursors": [
                {"meter_id": m, "profile": o, "last_entry_ms": ms}
                for (m, o), ms in sorted(self.profile_cursors.items())
            ],
        }
