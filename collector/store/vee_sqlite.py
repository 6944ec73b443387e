"""The VEE tables of the SQLite store (schema version 3) and their queries.

Nothing here is ever overwritten: a validation row is a finding; an operator's decision is
an audit row (the latest for a reading is in force); a derived interval that changes is
marked superseded (when, why) and its replacement added, so every estimate and what
replaced it stay in the history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import aiosqlite

__all__ = [
    "MIGRATION",
    "AuditRow",
    "IntervalRow",
    "PointRow",
    "SqliteVeeTx",
    "SwapRow",
    "ValidationRow",
    "VeeWrite",
]

MIGRATION = [
    # one row per finding of a rule about a reading; none = the reading passed every rule
    """CREATE TABLE validations (
        id INTEGER PRIMARY KEY,
        meter_id TEXT NOT NULL,
        obis TEXT NOT NULL,
        captured_ms INTEGER NOT NULL,
        rule TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('error', 'warn', 'info')),
        detail TEXT NOT NULL,
        detected_ms INTEGER NOT NULL)""",
    "CREATE INDEX validations_by_reading ON validations (meter_id, obis, captured_ms)",
    "CREATE INDEX validations_by_time ON validations (meter_id, captured_ms)",
    # readings validated and findings, per meter, rule and outcome (rule '' = validated)
    """CREATE TABLE vee_counters (
        meter_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        outcome TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (meter_id, rule, outcome)) WITHOUT ROWID""",
    # derived consumption; current rows have superseded_ms NULL
    """CREATE TABLE intervals (
        id INTEGER PRIMARY KEY,
        meter_id TEXT NOT NULL,
        obis TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        value TEXT,
        unit TEXT NOT NULL,
        quality TEXT NOT NULL CHECK (quality IN ('actual', 'estimated', 'edited', 'gap')),
        method TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        why TEXT NOT NULL,
        superseded_ms INTEGER,
        superseded_why TEXT)""",
    # one index for current rows and history alike (superseded rows are few): each index
    # costs every ingest transaction a b-tree insert per interval
    "CREATE INDEX intervals_by_time ON intervals (meter_id, obis, start_ms)",
    # operator decisions on readings: accept / reject / edit (value); the latest is in force
    """CREATE TABLE vee_audit (
        id INTEGER PRIMARY KEY,
        meter_id TEXT NOT NULL,
        obis TEXT NOT NULL,
        captured_ms INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('accept', 'reject', 'edit', 'swap')),
        value TEXT,
        flag_id INTEGER,
        reason TEXT NOT NULL,
        who TEXT NOT NULL,
        at_ms INTEGER NOT NULL)""",
    "CREATE INDEX vee_audit_by_reading ON vee_audit (meter_id, obis, captured_ms)",
    # meter replacements: readings before at_ms are the old register's, from it the new one's
    """CREATE TABLE vee_swaps (
        id INTEGER PRIMARY KEY,
        meter_id TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        old_final TEXT,
        new_initial TEXT,
        reason TEXT NOT NULL,
        who TEXT NOT NULL,
        recorded_ms INTEGER NOT NULL)""",
    "CREATE INDEX vee_swaps_by_meter ON vee_swaps (meter_id, at_ms)",
]


class PointRow(NamedTuple):
    """A stored reading with what VEE decided about it."""

    captured_ms: int
    value: str
    unit: str
    gateway_id: str
    seq: int
    action: str | None  # the latest operator decision: accept / reject / edit
    edited_value: str | None
    has_error: bool  # a finding with outcome 'error'


class ValidationRow(NamedTuple):
    meter_id: str
    obis: str
    captured_ms: int
    rule: str
    outcome: str
    detail: str
    detected_ms: int


class IntervalRow(NamedTuple):
    id: int
    meter_id: str
    obis: str
    start_ms: int
    end_ms: int
    value: str | None
    unit: str
    quality: str
    method: str
    created_ms: int
    created_by: str
    why: str
    superseded_ms: int | None
    superseded_why: str | None


class SwapRow(NamedTuple):
    id: int
    meter_id: str
    at_ms: int
    old_final: str | None
    new_initial: str | None
    reason: str
    who: str
    recorded_ms: int


class AuditRow(NamedTuple):
    id: int
    meter_id: str
    obis: str
    captured_ms: int
    action: str
    value: str | None
    flag_id: int | None
    reason: str
    who: str
    at_ms: int


# (meter, obis, start, end, value, unit, quality, method, created_ms, created_by, why)
NewInterval = tuple[str, str, int, int, str | None, str, str, str, int, str, str]


@dataclass
class VeeWrite:
    validations: list[ValidationRow] = field(default_factory=list)
    counters: dict[tuple[str, str, str], int] = field(default_factory=dict)
    superseded: list[tuple[int, str, int]] = field(default_factory=list)  # (ms, why, id)
    intervals: list[NewInterval] = field(default_factory=list)

    def merge(self, other: VeeWrite) -> None:
        self.validations += other.validations
        self.superseded += other.superseded
        self.intervals += other.intervals
        for key, n in other.counters.items():
            self.counters[key] = self.counters.get(key, 0) + n

    def count(self, meter_id: str, rule: str, outcome: str, n: int = 1) -> None:
        key = (meter_id, rule, outcome)
        self.counters[key] = self.counters.get(key, 0) + n


_POINT_SQL = (
    "SELECT r.captured_ms, r.value, r.unit, r.gateway_id, r.seq,"
    " (SELECT a.action FROM vee_audit a WHERE a.meter_id = r.meter_id AND a.obis = r.obis"
    "  AND a.captured_ms = r.captured_ms AND a.action != 'swap' ORDER BY a.id DESC LIMIT 1),"
    " (SELECT a.value FROM vee_audit a WHERE a.meter_id = r.meter_id AND a.obis = r.obis"
    "  AND a.captured_ms = r.captured_ms AND a.action != 'swap' ORDER BY a.id DESC LIMIT 1),"
    " EXISTS (SELECT 1 FROM validations v WHERE v.meter_id = r.meter_id AND v.obis = r.obis"
    "  AND v.captured_ms = r.captured_ms AND v.outcome = 'error')"
    " FROM readings r WHERE r.meter_id = ? AND r.obis = ?"
)


async def _rows(db: aiosqlite.Connection, sql: str, params: Iterable = ()) -> list:
    async with db.execute(sql, tuple(params)) as cur:
        return list(await cur.fetchall())


class SqliteVeeTx:
    """The VEE queries inside an open write transaction (ingest's, or an operator's)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def _rows(self, sql: str, params: Iterable) -> list:
        return await _rows(self._db, sql, params)

    async def _points(self, condition: str, params: tuple) -> list[PointRow]:
        rows = await _rows(self._db, _POINT_SQL + condition, params)
        return [PointRow(*r[:7], bool(r[7])) for r in rows]

    async def points_between(
        self, meter_id: str, obis: str, after_ms: int, upto_ms: int
    ) -> list[PointRow]:
        """Readings in (after, upto], oldest first."""
        return await self._points(
            " AND r.captured_ms > ? AND r.captured_ms <= ? ORDER BY r.captured_ms",
            (meter_id, obis, after_ms, upto_ms),
        )

    async def points_before(
        self, meter_id: str, obis: str, before_ms: int, limit: int
    ) -> list[PointRow]:
        """Up to ``limit`` readings at or before ``before_ms``, newest first."""
        return await self._points(
            " AND r.captured_ms <= ? ORDER BY r.captured_ms DESC LIMIT ?",
            (meter_id, obis, before_ms, limit),
        )

    async def points_after(
        self, meter_id: str, obis: str, after_ms: int, limit: int
    ) -> list[PointRow]:
        """Up to ``limit`` readings after ``after_ms``, oldest first."""
        return await self._points(
            " AND r.captured_ms > ? ORDER BY r.captured_ms LIMIT ?",
            (meter_id, obis, after_ms, limit),
        )

    async def current_intervals(
        self, meter_id: str, obis: str, from_ms: int, to_ms: int
    ) -> list[IntervalRow]:
        """Current intervals starting in [from, to), oldest first."""
        rows = await self._rows(
            "SELECT * FROM intervals WHERE meter_id = ? AND obis = ? AND start_ms >= ?"
            " AND start_ms < ? AND superseded_ms IS NULL ORDER BY start_ms",
            (meter_id, obis, from_ms, to_ms),
        )
        return [IntervalRow(*r) for r in rows]

    async def swaps(self, meter_id: str) -> list[SwapRow]:
        rows = await self._rows(
            "SELECT * FROM vee_swaps WHERE meter_id = ? ORDER BY at_ms", (meter_id,)
        )
        return [SwapRow(*r) for r in rows]

    async def values_between(
        self, meter_id: str, obis: str, after_ms: int, upto_ms: int
    ) -> list[tuple[str, str]]:
        """Stored (value, unit) of one quantity in (after, upto], oldest first."""
        rows = await self._rows(
            "SELECT value, unit FROM readings WHERE meter_id = ? AND obis = ? AND captured_ms > ?"
            " AND captured_ms <= ? ORDER BY captured_ms",
            (meter_id, obis, after_ms, upto_ms),
        )
        return [(r[0], r[1]) for r in rows]

    async def swapped_meters(self) -> set[str]:
        """Meters with a recorded swap (the table is small: one row per replacement)."""
        return {r[0] for r in await self._rows("SELECT DISTINCT meter_id FROM vee_swaps", ())}

    async def records_between(self, gateway_id: str, low_seq: int, high_seq: int) -> int:
        """How many records of the gateway are stored with low < seq < high."""
        rows = await self._rows(
            "SELECT COUNT(*) FROM records WHERE gateway_id = ? AND seq > ? AND seq < ?",
            (gateway_id, low_seq, high_seq),
        )
        return int(rows[0][0])

    async def audit(
        self, meter_id: str, obis: str, captured_ms: int, action: str, value: Decimal | None,
        flag_id: int | None, reason: str, who: str, at_ms: int,
    ) -> int:  # fmt: skip
        # RETURNING (SQLite 3.35+, PostgreSQL): no driver-specific lastrowid
        rows = await self._rows(
            "INSERT INTO vee_audit (meter_id, obis, captured_ms, action, value, flag_id, reason,"
            " who, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (meter_id, obis, captured_ms, action, None if value is None else str(value),
             flag_id, reason, who, at_ms),
        )  # fmt: skip
        return int(rows[0][0])

    async def add_swap(
        self, meter_id: str, at_ms: int, old_final: Decimal | None, new_initial: Decimal | None,
        reason: str, who: str, now_ms: int,
    ) -> int:  # fmt: skip
        rows = await self._rows(
            "INSERT INTO vee_swaps (meter_id, at_ms, old_final, new_initial, reason, who,"
            " recorded_ms) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (meter_id, at_ms, None if old_final is None else str(old_final),
             None if new_initial is None else str(new_initial), reason, who, now_ms),
        )  # fmt: skip
        return int(rows[0][0])

    async def write(self, out: VeeWrite) -> None:
        db = self._db
        if out.validations:
            await db.executemany(
                "INSERT INTO validations (meter_id, obis, captured_ms, rule, outcome, detail,"
                " detected_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                out.validations,
            )
        if out.counters:
            await db.executemany(
                "INSERT INTO vee_counters (meter_id, rule, outcome, count) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (meter_id, rule, outcome) DO UPDATE SET"
                " count = vee_counters.count + excluded.count",
                [(*key, n) for key, n in out.counters.items()],
            )
        if out.superseded:
            await db.executemany(
                "UPDATE intervals SET superseded_ms = ?, superseded_why = ? WHERE id = ?"
                " AND superseded_ms IS NULL",
                out.superseded,
            )
        if out.intervals:
            await db.executemany(
                "INSERT INTO intervals (meter_id, obis, start_ms, end_ms, value, unit, quality,"
                " method, created_ms, created_by, why) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                out.intervals,
            )


class FlagRow(NamedTuple):
    id: int
    meter_id: str
    obis: str
    captured_ms: int
    rule: str
    outcome: str
    detail: str
    detected_ms: int
    decision: str | None  # the latest operator decision on the reading, if any


class SqliteVeeReads:
    """Reads for the CLI (``vee report``) and for rating (derived intervals)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def _rows(self, sql: str, params: Iterable = ()) -> list:
        return await _rows(self._db, sql, params)

    async def intervals(
        self, meter_id: str, obis: str, start_ms: int, end_ms: int, history: bool = False
    ) -> list[IntervalRow]:
        """Derived intervals of a meter and quantity that start in [start, end): the current
        ones (what rating uses), or with ``history`` also every superseded one."""
        current = "" if history else " AND superseded_ms IS NULL"
        rows = await self._rows(
            "SELECT * FROM intervals WHERE meter_id = ? AND obis = ? AND start_ms >= ?"
            f" AND start_ms < ?{current} ORDER BY start_ms, id",
            (meter_id, obis, start_ms, end_ms),
        )
        return [IntervalRow(*r) for r in rows]

    async def flags(
        self, meter_id: str | None, since_ms: int | None, limit: int, outcomes: Iterable[str]
    ) -> list[FlagRow]:
        wanted = list(outcomes)
        sql = (
            "SELECT v.id, v.meter_id, v.obis, v.captured_ms, v.rule, v.outcome, v.detail,"
            " v.detected_ms, (SELECT a.action FROM vee_audit a WHERE a.meter_id = v.meter_id"
            " AND a.obis = v.obis AND a.captured_ms = v.captured_ms AND a.action != 'swap'"
            " ORDER BY a.id DESC LIMIT 1) FROM validations v WHERE v.outcome IN"
            f" ({','.join('?' * len(wanted))})"
        )
        params: list = list(wanted)
        if meter_id is not None:
            sql += " AND v.meter_id = ?"
            params.append(meter_id)
        if since_ms is not None:
            sql += " AND v.captured_ms >= ?"
            params.append(since_ms)
        sql += " ORDER BY v.meter_id, v.captured_ms, v.id LIMIT ?"
        params.append(limit)
        return [FlagRow(*r) for r in await self._rows(sql, params)]

    async def flag(self, flag_id: int) -> FlagRow | None:
        rows = await self._rows(
            "SELECT v.id, v.meter_id, v.obis, v.captured_ms, v.rule, v.outcome, v.detail,"
            " v.detected_ms, NULL FROM validations v WHERE v.id = ?",
            (flag_id,),
        )
        return FlagRow(*rows[0]) if rows else None

    async def estimates(
        self, meter_id: str | None, since_ms: int | None, limit: int
    ) -> list[IntervalRow]:
        """Current intervals that are not actual (estimated, edited, gap)."""
        sql = "SELECT * FROM intervals WHERE superseded_ms IS NULL AND quality != 'actual'"
        params: list = []
        if meter_id is not None:
            sql += " AND meter_id = ?"
            params.append(meter_id)
        if since_ms is not None:
            sql += " AND start_ms >= ?"
            params.append(since_ms)
        sql += " ORDER BY meter_id, obis, start_ms LIMIT ?"
        params.append(limit)
        return [IntervalRow(*r) for r in await self._rows(sql, params)]

    async def counters(self, meter_id: str | None) -> list[tuple[str, str, str, int]]:
        sql = "SELECT meter_id, rule, outcome, count FROM vee_counters"
        params: list = []
        if meter_id is not None:
            sql += " WHERE meter_id = ?"
            params.append(meter_id)
        return [tuple(r) for r in await self._rows(sql + " ORDER BY 1, 2, 3", params)]

    async def audit(self, meter_id: str | None, limit: int) -> list[AuditRow]:
        sql = "SELECT * FROM vee_audit"
        params: list = []
        if meter_id is not None:
            sql += " WHERE meter_id = ?"
            params.append(meter_id)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [AuditRow(*r) for r in await self._rows(sql, params)]

    async def swaps(self, meter_id: str | None) -> list[SwapRow]:
        sql = "SELECT * FROM vee_swaps"
        params: list = []
        if meter_id is not None:
            sql += " WHERE meter_id = ?"
            params.append(meter_id)
        return [SwapRow(*r) for r in await self._rows(sql + " ORDER BY meter_id, at_ms", params)]

    async def sequence_gaps(self) -> list[tuple[str, int, int, int]]:
        """(gateway, first missing seq, last missing seq, how many of them are in quarantine)
        for every hole in a gateway's stored sequence."""
        rows = await self._rows(
            "SELECT gateway_id, prev + 1, seq - 1 FROM (SELECT gateway_id, seq,"
            " LAG(seq) OVER (PARTITION BY gateway_id ORDER BY seq) AS prev FROM records) AS s"
            " WHERE seq - prev > 1 ORDER BY gateway_id, seq"
        )
        out = []
        for gateway_id, first, last in rows:
            held = await self._rows(
                "SELECT COUNT(DISTINCT seq) FROM quarantine WHERE gateway_id = ? AND seq >= ?"
                " AND seq <= ?",
                (gateway_id, first, last),
            )
            out.append((gateway_id, first, last, int(held[0][0])))
        return out


class SqliteVeeOperatorTx(SqliteVeeTx):
    """Operator actions: the look-ups they need besides the engine's."""

    async def reading(self, meter_id: str, obis: str, captured_ms: int) -> tuple | None:
        rows = await _rows(
            self._db,
            "SELECT value, unit FROM readings WHERE meter_id = ? AND obis = ? AND captured_ms = ?",
            (meter_id, obis, captured_ms),
        )
        return tuple(rows[0]) if rows else None

    async def flag(self, flag_id: int) -> tuple | None:
        rows = await _rows(
            self._db,
            "SELECT meter_id, obis, captured_ms, rule, outcome, detail FROM validations"
            " WHERE id = ?",
            (flag_id,),
        )
        return tuple(rows[0]) if rows else None

    async def register_obis(self, meter_id: str) -> list[str]:
        """The quantities the meter has derived intervals for."""
        rows = await _rows(
            self._db, "SELECT DISTINCT obis FROM intervals WHERE meter_id = ?", (meter_id,)
        )
        return [r[0] for r in rows]

    async def undecided_decreases(self, meter_id: str, from_ms: int) -> list[tuple[str, int, int]]:
        """(obis, captured_ms, flag id) of register decreases from ``from_ms`` on that no
        operator has decided on yet."""
        rows = await _rows(
            self._db,
            "SELECT v.obis, v.captured_ms, v.id FROM validations v WHERE v.meter_id = ?"
            " AND v.captured_ms >= ? AND v.rule = 'monotonic' AND v.outcome = 'error'"
            " AND NOT EXISTS (SELECT 1 FROM vee_audit a WHERE a.meter_id = v.meter_id"
            " AND a.obis = v.obis AND a.captured_ms = v.captured_ms AND a.action != 'swap')"
            " ORDER BY v.captured_ms",
            (meter_id, from_ms),
        )
        return [tuple(r) for r in rows]
