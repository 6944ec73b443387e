"""The load profile (Profile Generic, class 7): backfill by range from the last stored
entry to the meter's now.

Once per association: the profile's capture objects (attribute 3), its capture period
(attribute 4, for IDIS "compressed" rows with a null clock cell), the scaler_unit of every
register column and the meter's clock (attribute 2: its now and its deviation, in which the
range's from/to are written, as meters compare local times). Then the buffer (attribute 2)
by range (selector 1, restricted by the clock column) from the cursor to the meter's now in
chunks of at most ``CHUNK_MS`` (one day: 96 entries of 15 minutes, a few kB; less when
that would not fit in one APDU of the transport), each entry after the cursor once, in
time order. The first read ever starts at now minus ``backfill_limit``; later reads go
back to the cursor however old it is (an outage of any length is backfilled as far as the
meter still holds entries), at most ``MAX_CHUNKS`` GETs per read (the next cycle goes on
from there).

The cursor is the newest entry the agent's buffer has committed (the buffer stores it in
the same transaction as the entries' records): it never runs ahead of what is stored, and
survives restarts. Between a read and its commit, the entries handed out are remembered
(``handed_ms``) so that the next cycle does not read them again; if the buffer refused
captures since (a full disk, stop-capture), the reader falls back to the committed cursor
and reads them again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent.config import DlmsSettings
from protocols.clock import format_utc_ms
from protocols.dlms import DlmsDecodeError
from protocols.dlms.axdr import Tag
from protocols.dlms.cosem import CosemDateTime, ScalerUnit
from protocols.dlms.profile import (
    CLASS_PROFILE_GENERIC,
    CaptureObject,
    RangeDescriptor,
    decode_buffer,
    parse_capture_objects,
)
from protocols.obis import Obis
from protocols.record import Quality, Value

from .session import DlmsSession, ObjectError

__all__ = ["CHUNK_MS", "MAX_CHUNKS", "CommittedCursors", "ProfileReader", "ProfileRows"]

log = logging.getLogger("agent.dlms")

CHUNK_MS = 86_400_000  # one GET covers at most one day of the profile
MAX_CHUNKS = 62  # GETs of the buffer per read: two months; the next cycle continues
CLASS_CLOCK = 8
_REGISTER_CLASSES = (3, 4)


class CommittedCursors(Protocol):
    """What the agent's buffer tells the reader (``agent.buffer.Buffer`` is one)."""

    refused_total: int

    def profile_cursor(self, meter_id: str, obis: Obis) -> int | None:
        """The newest committed entry of ``obis`` for ``meter_id`` (Unix ms), or None."""
        ...


@dataclass(slots=True)
class ProfileRows:
    """What one read of the profile gave: entries in time order, and what went wrong."""

    entries: list[tuple[int, tuple[Value, ...], Quality]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    skipped_to: int | None = None  # the read stopped at MAX_CHUNKS with no entry up to here


class ProfileReader:
    """The load-profile backfill of one meter (``settings.load_profile``)."""

    def __init__(
        self,
        meter_id: str,
        settings: DlmsSettings,
        cursors: CommittedCursors | None = None,
        gateway_ms: Callable[[], int] | None = None,
    ) -> None:
        assert settings.load_profile is not None
        self.meter_id = meter_id
        self.obis: Obis = settings.load_profile
        self.backfill_limit_ms = settings.backfill_limit_ns // 1_000_000
        self.cursors = cursors
        self.gateway_ms = gateway_ms  # the gateway's clock: bounds a meter clock far ahead
        self.clock_limit_ms = settings.clock_limit_ns // 1_000_000
        self.handed_ms: int | None = None  # newest entry handed out in this process
        self._refusals = cursors.refused_total if cursors is not None else 0

    def start_ms(self, meter_now_ms: int) -> tuple[int, bool]:
        """Where the next read begins, and whether that instant itself is wanted (first
        read) or already stored (the cursor)."""
        committed = None
        if self.cursors is not None:
            committed = self.cursors.profile_cursor(self.meter_id, self.obis)
            if self.cursors.refused_total != self._refusals:
                # captures were refused since: what was handed out may not be stored
                self._refusals = self.cursors.refused_total
                self.handed_ms = None
        known = [ms for ms in (committed, self.handed_ms) if ms is not None]
        if known:
            return max(known), False
        return meter_now_ms - self.backfill_limit_ms, True

    def handed(self, rows: ProfileRows) -> None:
        """The entries of ``rows`` went to the scheduler (call when the read succeeded)."""
        if rows.entries:
            self.handed_ms = max(self.handed_ms or 0, rows.entries[-1][0])
        elif rows.skipped_to is not None:  # MAX_CHUNKS days without an entry: go past them
            self.handed_ms = max(self.handed_ms or 0, rows.skipped_to)

    async def read(self, session: DlmsSession, assume_deviation: int = 0) -> ProfileRows:
        """Read the entries after the cursor up to the meter's now (one association)."""
        rows = ProfileRows()
        where = f"meter {self.meter_id}: load profile {self.obis}"
        try:
            columns = parse_capture_objects(await session.get(CLASS_PROFILE_GENERIC, self.obis, 3))
            period_s = (await session.get(CLASS_PROFILE_GENERIC, self.obis, 4)).integer
            scalers: dict[Obis, ScalerUnit] = {}
            for column in columns:
                wanted = column.class_id in _REGISTER_CLASSES and column.attribute == 2
                if wanted and column.obis not in scalers:
                    raw = await session.get(column.class_id, column.obis, 3)
                    scalers[column.obis] = ScalerUnit.from_data(raw)
            clock_column = next(
                (c for c in columns if c.class_id == CLASS_CLOCK and c.attribute == 2), None
            )
            if clock_column is None:
                raise DlmsDecodeError("no clock column among the capture objects")
            now = CosemDateTime.from_data(await session.get(CLASS_CLOCK, clock_column.obis, 2))
            deviation = now.deviation if now.deviation is not None else assume_deviation
            now_ms = now.to_unix_ms(assume_deviation)
            if self.gateway_ms is not None:
                # a meter clock far ahead: entries stamped beyond the gateway's now plus the
                # clock limit are not read (the cursor would run into the future and stall
                # the profile once the clock is set right)
                now_ms = min(now_ms, self.gateway_ms() + self.clock_limit_ms)
            rows.requests += 4 + len(scalers)
        except (ObjectError, DlmsDecodeError) as exc:
            rows.errors.append(f"{where}: {exc}")
            return rows
        start, inclusive = self.start_ms(now_ms)
        last = start - 1 if inclusive else start
        chunk_ms = _chunk_ms(session, columns, period_s)
        chunk_start = start
        for _chunk in range(MAX_CHUNKS):
            if chunk_start >= now_ms:
                break
            chunk_end = min(chunk_start + chunk_ms, now_ms)
            try:
                found = await self._chunk(
                    session,
                    clock_column,
                    columns,
                    scalers,
                    (chunk_start, chunk_end),
                    deviation,
                    period_s,
                    assume_deviation,
                )
            except (ObjectError, DlmsDecodeError) as exc:
                rows.errors.append(f"{where}: {exc}")
                break
            finally:
                rows.requests += 1
            for entry in sorted(found, key=lambda e: e[0]):
                if entry[0] > last:
                    rows.entries.append(entry)
                    last = entry[0]
            chunk_start = chunk_end
        else:
            if chunk_start < now_ms and not rows.entries and not rows.errors:
                rows.skipped_to = chunk_start
        return rows

    async def _chunk(
        self,
        session: DlmsSession,
        clock_column: CaptureObject,
        columns: tuple[CaptureObject, ...],
        scalers: dict[Obis, ScalerUnit],
        span: tuple[int, int],
        deviation: int,
        period_s: int,
        assume_deviation: int,
    ) -> list[tuple[int, tuple[Value, ...], Quality]]:
        access = RangeDescriptor.by_time(clock_column, span[0], span[1], deviation)
        buffer = await session.get(CLASS_PROFILE_GENERIC, self.obis, 2, access=access)
        if buffer.tag is not Tag.ARRAY:
            raise DlmsDecodeError(f"buffer is {buffer.tag.name}, not an array")
        entries = decode_buffer(
            buffer,
            columns,
            scalers,
            capture_period_s=period_s,
            assume_deviation=assume_deviation,
            where=f"buffer {_utc(span[0])}..{_utc(span[1])}",
        )
        return [(e.captured_ms, e.values, e.flags) for e in entries]


def _chunk_ms(session: DlmsSession, columns: tuple[CaptureObject, ...], period_s: int) -> int:
    """One day, or less when a day of entries would not fit in one APDU of the transport
    (rows estimated at 16 bytes of clock and 9 per other column: never relying on block
    transfer for a range)."""
    max_apdu = int(getattr(session.transport, "max_apdu", 0xFFFF))
    if period_s <= 0:
        return CHUNK_MS
    row = 2 + 16 + 9 * (len(columns) - 1)
    per_get = max((max_apdu - 32) // row, 1)
    return max(min(CHUNK_MS, per_get * period_s * 1000), period_s * 1000)


def _utc(ms: int) -> str:
    return format_utc_ms(ms)
