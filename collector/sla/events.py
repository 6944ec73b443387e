"""The gateways' connectivity history (table ``sla_gateway_events``, schema step 9).

``EventRecorder`` is attached to the service's ``TrackedIngestor`` (``attach``): it sees
the status rows of every committed ingest transaction (the same rows the fleet view is fed
with: only enrolled gateways, payload and topic agreeing), keeps each gateway's last known
state, and writes a row when it changes (online -> offline -> online). A status repeating
the state (the periodic refresh, the retained copy a restarted collector gets again) writes
nothing, so the table grows with outages, not with traffic. The write is its own small
transaction after the ingest commit; if it fails, the outage is logged and the ingest is
unaffected (the SLA then lacks that piece of evidence, never readings).

``offline_spans`` turns the rows into ``[start, end)`` spans of the collector's clock during
which a gateway was offline (still offline: until ``now``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EventRecorder", "OfflineSpan", "attach", "offline_spans"]

log = logging.getLogger("collector.sla")

_INSERT = (
    "INSERT INTO sla_gateway_events (gateway_id, at_ms, state, reason, gateway_at_ms)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (gateway_id, at_ms, state) DO NOTHING"
)
_LAST_STATES = (
    "SELECT e.gateway_id, e.state FROM sla_gateway_events e JOIN"
    " (SELECT gateway_id, max(at_ms) AS last_ms FROM sla_gateway_events GROUP BY gateway_id) l"
    " ON e.gateway_id = l.gateway_id AND e.at_ms = l.last_ms"
)


@dataclass(frozen=True, slots=True)
class OfflineSpan:
    start_ms: int
    end_ms: int
    reason: str

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        return self.start_ms < end_ms and start_ms < self.end_ms


class EventRecorder:
    """Writes connectivity changes; see the module docstring."""

    def __init__(
        self,
        store: Any,
        virtual_ms: Callable[[int], int],
        enrolled: Callable[[str], bool] = lambda _gw: True,
    ) -> None:
        self.store = store
        self.virtual_ms = virtual_ms
        self.enrolled = enrolled
        self._last: dict[str, str] | None = None  # gateway -> last recorded state
        self._written: dict[str, int] = {}  # gateway -> at_ms of this recorder's last row
        self._pending: list[tuple[str, int, str, str, int | None]] = []

    def note(self, statuses: Iterable[Any]) -> None:
        """Queue the statuses of one committed transaction (``StatusRow``s); ``flush`` writes."""
        for status in statuses:
            if not self.enrolled(status.gateway_id):
                continue
            self._pending.append(
                (status.gateway_id, self.virtual_ms(status.received_ms), status.state,
                 status.reason, status.at_ms)
            )  # fmt: skip

    async def flush(self) -> int:
        """Write the queued statuses that change a gateway's state; returns rows written."""
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        if self._last is None:
            self._last = {gw: state for gw, state in await self.store._rows(_LAST_STATES)}
        rows = []
        for gateway_id, at_ms, state, reason, gateway_at_ms in sorted(pending, key=lambda r: r[1]):
            if self._last.get(gateway_id) == state:
                continue
            previous = self._written.get(gateway_id)
            if previous is not None and at_ms <= previous:
                # two changes within one millisecond (a stop and a start in one transaction):
                # keep their order in the table, which is read ordered by at_ms
                at_ms = previous + 1
            self._last[gateway_id] = state
            self._written[gateway_id] = at_ms
            rows.append((gateway_id, at_ms, state, reason, gateway_at_ms))
        if rows:
            async with self.store._write() as db:
                await db.executemany(_INSERT, rows)
            for gateway_id, at_ms, state, reason, _g in rows:
                log.info("sla: gateway %s %s at %d (%s)", gateway_id, state, at_ms, reason or "-")
        return len(rows)

    def forget(self) -> None:
        """After a failed write: read the last states again before the next one."""
        self._last = None


def attach(ingestor: Any, store: Any, virtual_ms: Callable[[int], int]) -> EventRecorder:
    """Record connectivity from ``ingestor`` (a ``TrackedIngestor``): its ``apply`` (after
    each commit) queues the transaction's statuses, its ``ingest`` then writes them."""
    fleet = getattr(ingestor, "fleet", None)
    enrolled = (lambda gw: gw in fleet.gateways) if fleet is not None else (lambda _gw: True)
    recorder = EventRecorder(store, virtual_ms, enrolled)
    apply, ingest = ingestor.apply, ingestor.ingest

    def apply_and_note(messages: Sequence[Any], written: list[Any], outcomes: list[Any]) -> None:
        try:
            for rows in written:
                recorder.note(rows.statuses)
        except Exception:  # the readings are committed: evidence for the SLA only
            log.exception("sla: gateway statuses not noted")
        apply(messages, written, outcomes)

    async def ingest_and_record(messages: Sequence[Any]) -> list[Any]:
        outcomes = await ingest(messages)
        try:
            await recorder.flush()
        except Exception:
            recorder.forget()
            log.exception("sla: gateway connectivity change not recorded")
        return outcomes

    ingestor.apply = apply_and_note
    ingestor.ingest = ingest_and_record
    return recorder


async def offline_spans(
    store: Any, gateway_id: str, from_ms: int, to_ms: int, now_ms: int
) -> list[OfflineSpan]:
    """The spans within ``[from_ms, to_ms)`` during which ``gateway_id`` was offline, as
    recorded; merged where several collectors recorded the same outage."""
    before = await store._rows(
        "SELECT at_ms, state, reason FROM sla_gateway_events WHERE gateway_id = ? AND at_ms < ?"
        " ORDER BY at_ms DESC LIMIT 1",
        (gateway_id, from_ms),
    )
    rows = await store._rows(
        "SELECT at_ms, state, reason FROM sla_gateway_events WHERE gateway_id = ?"
        " AND at_ms >= ? AND at_ms < ? ORDER BY at_ms",
        (gateway_id, from_ms, to_ms),
    )
    spans: list[OfflineSpan] = []
    start: int | None = None
    reason = ""
    for at_ms, state, why in [*before, *rows]:
        if state == "offline" and start is None:
            start, reason = max(at_ms, from_ms), why
        elif state != "offline" and start is not None:
            if at_ms > start:
                spans.append(OfflineSpan(start, at_ms, reason))
            start = None
    if start is not None:
        end = min(to_ms, max(now_ms, start))
        if end > start:
            spans.append(OfflineSpan(start, end, reason))
    return spans
