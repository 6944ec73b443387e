"""Feeding the fleet state from ingest, and keeping it in the store.

``TrackedIngestor`` stands in for the ``Ingestor`` the service calls: it lets the ingestor run
its transaction on a ``_SpyStore`` (the real store, whose transaction's ``write(rows)`` is
also remembered), and once that transaction has COMMITTED it applies those rows, the acks and
the status messages' per-meter clocks to the ``Fleet``. A transaction that fails changes
nothing (ingest retries the same messages). The ingest code is untouched by this.

``FleetKeeper`` loads the state at start, merges what changed into the store every
``flush_interval`` and at stop (several collectors may share the store: the merge adds
each one's share, see its docstring), takes back what the others merged, and follows the
registry (newly enrolled gateways and meters).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from sys import intern
from typing import Any

from protocols.errors import DecodeError
from protocols.status import GatewayStatus
from protocols.topics import parse_topic

from .metrics import FleetMetrics
from .state import (
    BAD_READ,
    MAX_ERROR,
    Fleet,
    GatewayState,
    MeterState,
    add_ranges,
    merge_gateway,
    merge_meter,
    status_is_older,
)

__all__ = ["FleetKeeper", "TrackedIngestor"]

log = logging.getLogger("collector.fleet")


class _SpyTx:
    def __init__(self, tx: Any, sink: list[Any]) -> None:
        self._tx = tx
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    async def write(self, rows: Any) -> None:
        await self._tx.write(rows)
        self._sink.append(rows)


class _SpyStore:
    """The store, with each ingest transaction's rows remembered in ``written``."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.written: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def ingest_transaction(self) -> AsyncIterator[_SpyTx]:
        self.written = []
        async with self._store.ingest_transaction() as tx:
            yield _SpyTx(tx, self.written)


class TrackedIngestor:
    """An ``Ingestor`` whose committed transactions update ``fleet`` (and ``metrics``)."""

    def __init__(
        self,
        make_ingestor: Callable[[Any], Any],
        store: Any,
        fleet: Fleet,
        virtual_ms: Callable[[int], int],
        metrics: FleetMetrics | None = None,
    ) -> None:
        """``make_ingestor(store)`` builds the real ingestor on the store it is given;
        ``virtual_ms(wall_ms)`` is the collector's clock at a wall-clock instant."""
        self._spy = _SpyStore(store)
        self.inner = make_ingestor(self._spy)
        self.fleet = fleet
        self.virtual_ms = virtual_ms
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ingest(self, messages: Sequence[Any]) -> list[Any]:
        outcomes = await self.inner.ingest(messages)
        written, self._spy.written = self._spy.written, []
        try:
            self.apply(messages, written, outcomes)
        except Exception:  # the readings are committed; a fleet view bug must not undo acks
            log.exception("fleet state not updated for a transaction")
        return outcomes

    def apply(self, messages: Sequence[Any], written: list[Any], outcomes: list[Any]) -> None:
        fleet = self.fleet
        for rows in written:
            for status in rows.statuses:
                if status.gateway_id not in fleet.gateways:
                    continue  # not enrolled: a topic anyone can publish to adds no gateway
                gw = fleet.gateway(status.gateway_id)
                gw.last_seen_ms = max(gw.last_seen_ms or 0, status.received_ms)
                heard = GatewayState(
                    status.gateway_id,
                    status_at_ms=status.at_ms,
                    status_received_ms=status.received_ms,
                    last_seq=status.last_seq,
                )
                if status_is_older(heard, gw):
                    # a copy that reached this collector late (another collector's newer
                    # one is already merged in): the gateway has said more since
                    continue
                gw.status, gw.reason = status.state, status.reason
                gw.status_at_ms = status.at_ms
                gw.status_received_ms = status.received_ms
                gw.version = status.version or gw.version
                gw.backlog, gw.dropped, gw.last_seq = (
                    status.backlog,
                    status.dropped,
                    status.last_seq,
                )
                if status.at_ms is not None:
                    gw.clock_offset_ms = status.at_ms - self.virtual_ms(status.received_ms)
            # ingest's hot path writes plain tuples in ReadingRow / RecordRow field order
            bad = {(r[0], r[2]) for r in rows.readings if r[5] & BAD_READ}
            newest: dict[str, int] = {}  # meter -> capture time of its newest good record
            for gateway_id, _seq, meter_id, captured_ms, _raw, received_ms in rows.records:
                gw = fleet.gateway(gateway_id)
                gw.records += 1
                gw.last_seen_ms = max(gw.last_seen_ms or 0, received_ms)
                meter = fleet.meter(meter_id, gateway_id)
                meter.records += 1
                meter.last_received_ms = received_ms
                meter.last_captured_ms = max(meter.last_captured_ms or 0, captured_ms)
                if (meter_id, captured_ms) in bad:
                    meter.last_error = "partial capture or meter error status (record flags)"
                    meter.last_error_ms = captured_ms
                    continue
                meter.good += 1
                if meter.last_good_ms is None or captured_ms >= meter.last_good_ms:
                    meter.last_good_ms = captured_ms
                    meter.last_good_at_ms = fleet.real_ms(captured_ms)
                    newest[meter_id] = captured_ms
            if newest:
                values: dict[str, dict[str, list[str]]] = {}
                for meter_id, obis, captured_ms, value, unit, *_rest in rows.readings:
                    if newest.get(meter_id) == captured_ms:
                        values.setdefault(meter_id, {})[intern(obis)] = [value, intern(unit)]
                for meter_id, good in values.items():
                    fleet.meters[meter_id].last_good = good
            for q in rows.quarantine:
                kind = q.kind or "other"
                if q.gateway_id and q.gateway_id in fleet.gateways:
                    # only enrolled gateways: a hostile message naming any id in its topic
                    # must not add a gateway to the fleet view (it is counted in the
                    # quarantine and the metrics all the same)
                    gw = fleet.gateway(q.gateway_id)
                    gw.rejected[kind] = gw.rejected.get(kind, 0) + 1
                if q.meter_id and q.meter_id in fleet.meters:
                    meter = fleet.meter(q.meter_id)
                    meter.rejected += 1
                    meter.last_error = f"rejected: {q.reason}"[:MAX_ERROR]
                    meter.last_error_ms = q.received_ms
            for (gw_id, _meter), delta in rows.counters.items():
                if delta.duplicate_records:
                    fleet.gateway(gw_id).duplicates += delta.duplicate_records
            if self.metrics is not None:
                self.metrics.observe(rows)
        for outcome in outcomes:
            ack = outcome.ack
            if ack is None or outcome.gateway_id not in fleet.gateways:
                continue  # no ack, or not an enrolled gateway
            gw = fleet.gateway(outcome.gateway_id)
            gw.batches += 1
            if ack.handled:
                gw.seen = add_ranges(gw.seen, ack.handled)
                gw.last_seen_ms = max(gw.last_seen_ms or 0, outcome.incoming.received_ms)
        for message in messages:
            if not message.topic.endswith("/status") or not message.payload:
                continue
            self._meter_clocks(message)

    def _meter_clocks(self, message: Any) -> None:
        """DLMS meters' clocks from a status message (the stored status row drops them)."""
        try:
            gateway_id, _kind = parse_topic(message.topic)
            status = GatewayStatus.from_bytes(message.payload)
        except DecodeError:
            return  # quarantined by ingest
        if status.gateway_id != gateway_id or gateway_id not in self.fleet.gateways:
            return
        for clock in status.meters:
            meter = self.fleet.meter(clock.meter_id, gateway_id)
            meter.clock_drift_ms = clock.drift_ms
            meter.clock_suspect = clock.suspect
            meter.clock_set_error = clock.set_error


class FleetKeeper:
    """Loads, flushes and follows the registry for one ``Fleet`` on one store.

    **Several collectors, one database.** Each collector's ``Fleet`` holds what its own
    transactions committed; a flush *merges* that into the stored documents, never
    overwrites them. The merge runs in one write transaction (``store._write()``: on
    PostgreSQL it takes the global writer advisory lock, so fleet writers take turns):

    1. read the fleet stamp (``meta.fleet_stamp``): every fleet write bumps it, under that
       lock, so stamps follow the order of the commits; each row's ``updated_ms`` is the
       stamp of the write that last changed it;
    2. if it moved past this keeper's watermark, read the rows the other collectors changed
       since (``updated_ms > watermark``): for every other row, the stored document is the
       one this collector last synced with;
    3. write each dirty state as ``merge_gateway`` / ``merge_meter`` of the stored document
       and what this collector learnt since its basis (counters add their delta, times take
       the newest, seq ranges their union, the newest status wins);
    4. after the commit, take the merged documents and the other collectors' rows into the
       in-memory state (``Fleet.take_*``), and move the watermark.

    With nothing dirty, a flush only reads what the others changed (step 2 without a
    transaction), so the dashboard, the API and /metrics of every collector show the whole
    fleet, at most about one ``flush_interval`` behind the collector that saw a message.

    **Offline detection: every collector evaluates, nobody raises events.** Online, offline
    and stale are not stored and not announced: ``GatewayState.state_at`` /
    ``MeterState.stale_at`` judge them when read, from the merged state (last status, newest
    ``last_seen_ms``), which every collector holds alike. So two collectors cannot disagree
    beyond one flush interval at the ``offline_after`` boundary (keep ``offline_after`` well
    above ``flush_interval``), and there is no event to deduplicate and no leader to elect.
    Whoever adds offline *events* later: derive them from this merged state and key them by
    (gateway, the ``last_seen_ms`` that went silent), inserted with ``ON CONFLICT DO
    NOTHING``, so that N collectors raise one.
    """

    def __init__(self, store: Any, fleet: Fleet, flush_interval_ms: int = 5000) -> None:
        self.store = store
        self.fleet = fleet
        self.flush_interval_s = flush_interval_ms / 1000
        self._registry_version: int | None = None
        self._task: asyncio.Task | None = None
        self._watermark = 0  # the newest fleet stamp whose rows this state holds
        self._lock = asyncio.Lock()  # one flush at a time (the loop, the API, stop)

    async def load(self) -> None:
        reads = self.store.fleet
        # the stamp before the rows: a row written meanwhile is read again at the next flush
        self._watermark = _stamp_of(await reads._rows(_STAMP_SQL))
        known: set[str] = set()
        async for chunk in reads.load_gateways():
            for gateway_id, doc in chunk:
                self.fleet.gateways[gateway_id] = GatewayState.from_doc(gateway_id, doc)
                known.add(gateway_id)
        async for rows in reads.load_meters():
            for meter_id, gateway_id, doc in rows:
                self.fleet.meters[meter_id] = MeterState.from_doc(meter_id, gateway_id, doc)
        await self.follow_registry()
        # a database from before the fleet tables: rebuild what the stored rows tell
        new = [gw for gw in self.fleet.gateways if gw not in known]
        if new:
            ranges = await reads.seq_ranges(new)
            rejected = await reads.rejections()
            for gateway_id in new:
                gw = self.fleet.gateway(gateway_id)
                gw.seen = ranges.get(gateway_id, [])
                gw.rejected = rejected.get(gateway_id, {})
            # rebuilt, not counted: written as they are where no collector wrote them yet,
            # never added to what another collector wrote meanwhile
            self.fleet.rebase()
        log.info(
            "fleet: %d gateways, %d meters loaded", len(self.fleet.gateways), len(self.fleet.meters)
        )

    async def follow_registry(self) -> None:
        version = await self.store.registry_version()
        if version != self._registry_version:
            self._registry_version = version
            self.fleet.bind(await self.store.bindings())

    async def flush(self) -> None:
        """Merge what changed into the store, and take what the other collectors wrote."""
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        """Merge the dirty states ``FLUSH_CHUNK`` at a time, one transaction each, then take
        what the other collectors wrote meanwhile.

        Chunks keep each write transaction short: a flush of 100,000 changed meters in one
        transaction held the store's writer (and this event loop, encoding JSON) for 0.4-0.7 s,
        a stall every ``flush_interval`` for every ingest batch queued behind it. Between
        chunks ingest gets its turn. A chunk snapshots its states when it starts (taken off
        the dirty set with their basis, copied), so a change made while earlier chunks were
        written is either in its snapshot or dirty again with a newer basis, never both."""
        fleet = self.fleet
        mine: list[int] = []  # the stamps of this flush's writes
        others = False  # has another collector written since the watermark?
        chunks = [("g", ids) for ids in _chunked(sorted(fleet.dirty_gateways))]
        chunks += [("m", ids) for ids in _chunked(sorted(fleet.dirty_meters))]
        for kind, ids in chunks:
            # the stamp this chunk finds if nobody else wrote since the watermark
            seen = None if others else (mine[-1] if mine else self._watermark)
            if kind == "g":
                basis_g = {g: fleet.basis_gateways.pop(g) for g in ids}
                fleet.dirty_gateways.difference_update(ids)
                try:
                    last, stamp, gateways, meters = await self._merge(
                        {g: (fleet.gateways[g].copy(), basis_g[g]) for g in ids}, {}, seen
                    )
                except BaseException:
                    fleet.dirty_gateways.update(ids)  # written next time, from the same basis
                    fleet.basis_gateways.update(basis_g)
                    raise
            else:
                basis_m = {m: fleet.basis_meters.pop(m) for m in ids}
                fleet.dirty_meters.difference_update(ids)
                try:
                    last, stamp, gateways, meters = await self._merge(
                        {}, {m: (fleet.meters[m].copy(), basis_m[m]) for m in ids}, seen
                    )
                except BaseException:
                    fleet.dirty_meters.update(ids)
                    fleet.basis_meters.update(basis_m)
                    raise
            others = others or last != seen
            mine.append(stamp)
            # Ingest may have changed states while the transaction ran: those are dirty again,
            # with a basis taken before that change; take_* keeps that change on top.
            for state in gateways:
                fleet.take_gateway(state)
            for meter in meters:
                fleet.take_meter(meter)
        last, gateways, meters = await self._changes(mine, others)
        for state in gateways:
            fleet.take_gateway(state)
        for meter in meters:
            fleet.take_meter(meter)
        self._watermark = max(self._watermark, last)

    async def _merge(
        self,
        gateways: dict[str, tuple[GatewayState, GatewayState]],
        meters: dict[str, tuple[MeterState, MeterState]],
        seen: int | None,
    ) -> tuple[int, int, list[GatewayState], list[MeterState]]:
        """Steps 1-3 of the class docstring for one chunk: (the stamp found, the stamp
        written, the merged states). Step 2 reads only this chunk's rows, and only if the
        stamp is not ``seen`` (None: another collector wrote during this flush); the rest
        of what the others changed is read once at the end (``_changes``)."""
        async with self.store.fleet._write() as db:
            last = _stamp_of(await _fetch(db, _STAMP_SQL))
            stored_gateways: dict[str, GatewayState] = {}
            stored_meters: dict[str, MeterState] = {}
            changed = last != seen and last > self._watermark
            if changed and gateways:
                for gateway_id, doc, _ms in await _fetch(
                    db, _since(_GATEWAYS_SINCE, "gateway_id", len(gateways)),
                    (self._watermark, *gateways),
                ):  # fmt: skip
                    stored_gateways[gateway_id] = GatewayState.from_doc(gateway_id, _doc(doc))
            if changed and meters:
                for meter_id, gateway_id, doc, _ms in await _fetch(
                    db, _since(_METERS_SINCE, "meter_id", len(meters)), (self._watermark, *meters)
                ):
                    stored_meters[meter_id] = MeterState.from_doc(meter_id, gateway_id, _doc(doc))
            merged_gateways: list[GatewayState] = []
            for gateway_id, (mine, basis) in sorted(gateways.items()):
                stored = stored_gateways.get(gateway_id)
                # not changed by another collector since this one synced: stored == basis
                merged_gateways.append(
                    mine if stored is None else merge_gateway(stored, mine, basis)
                )
            merged_meters: list[MeterState] = []
            for meter_id, (mine_m, basis_m) in sorted(meters.items()):
                stored_m = stored_meters.get(meter_id)
                merged_meters.append(
                    mine_m if stored_m is None else merge_meter(stored_m, mine_m, basis_m)
                )
            # unique among all collectors' writes: they take turns under the write lock
            stamp = max(time.time_ns() // 1_000_000, last + 1)
            if merged_gateways:
                await db.executemany(
                    "INSERT INTO fleet_gateways (gateway_id, doc, updated_ms) VALUES (?, ?, ?)"
                    " ON CONFLICT (gateway_id) DO UPDATE SET doc = excluded.doc,"
                    " updated_ms = excluded.updated_ms",
                    [(gw.gateway_id, _json(gw.to_doc()), stamp) for gw in merged_gateways],
                )
            if merged_meters:
                await db.executemany(
                    "INSERT INTO fleet_meters (meter_id, gateway_id, doc, updated_ms)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
                    " gateway_id = excluded.gateway_id, doc = excluded.doc,"
                    " updated_ms = excluded.updated_ms",
                    [(m.meter_id, m.gateway_id, _json(m.to_doc()), stamp) for m in merged_meters],
                )
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('fleet_stamp', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(stamp),),
            )
        return last, stamp, merged_gateways, merged_meters

    async def _changes(
        self, mine: Sequence[int] = (), others: bool = False
    ) -> tuple[int, list[GatewayState], list[MeterState]]:
        """What the other collectors wrote since the watermark (reads only): every row whose
        stamp is newer and not one of ``mine`` (this flush's own writes, already taken).
        ``others``: whether a chunk saw another collector's stamp."""
        reads = self.store.fleet
        last = _stamp_of(await reads._rows(_STAMP_SQL))
        if last <= self._watermark or (not others and mine and last == mine[-1]):
            return last, [], []  # nobody else wrote since
        # two statements, two snapshots: the watermark moves to the stamp read first only,
        # so a write that only the second statement saw is read again next time (harmless)
        skip = f" AND updated_ms NOT IN ({', '.join('?' * len(mine))})" if mine else ""
        gateways = [
            GatewayState.from_doc(gateway_id, _doc(doc))
            for gateway_id, doc, _ms in await reads._rows(
                _GATEWAYS_SINCE + skip, (self._watermark, *mine)
            )
        ]
        meters = [
            MeterState.from_doc(meter_id, gateway_id, _doc(doc))
            for meter_id, gateway_id, doc, _ms in await reads._rows(
                _METERS_SINCE + skip, (self._watermark, *mine)
            )
        ]
        return last, gateways, meters

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.follow_registry()
                await self.flush()
            except Exception:
                log.exception("fleet state not written; trying again in %.0fs",
                              self.flush_interval_s)  # fmt: skip

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="fleet-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


# The fleet tables' SQL (schema in collector/fleet/sqlite.py): portable to both stores.
_STAMP_SQL = "SELECT value FROM meta WHERE key = 'fleet_stamp'"
_GATEWAYS_SINCE = "SELECT gateway_id, doc, updated_ms FROM fleet_gateways WHERE updated_ms > ?"
_METERS_SINCE = (
    "SELECT meter_id, gateway_id, doc, updated_ms FROM fleet_meters WHERE updated_ms > ?"
)


#: States written per fleet transaction (see ``FleetKeeper._flush``).
FLUSH_CHUNK = 500


def _chunked(ids: list[str], size: int | None = None) -> list[list[str]]:
    step = size or FLUSH_CHUNK
    return [ids[k : k + step] for k in range(0, len(ids), step)]


def _since(sql: str, key: str, count: int) -> str:
    """``sql`` (a ``*_SINCE`` query) narrowed to ``count`` keys."""
    return f"{sql} AND {key} IN ({', '.join('?' * count)})"


async def _fetch(db: Any, sql: str, params: tuple = ()) -> list:
    async with db.execute(sql, params) as cur:
        return list(await cur.fetchall())


def _stamp_of(rows: list) -> int:
    return int(rows[0][0]) if rows else 0


def _doc(doc: str | dict) -> dict:
    return doc if isinstance(doc, dict) else json.loads(doc)


def _json(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"))
