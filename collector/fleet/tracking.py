"""Feeding the fleet state from ingest, and keeping it in the store.

``TrackedIngestor`` stands in for the ``Ingestor`` the service calls: it lets the ingestor run
its transaction on a ``_SpyStore`` (the real store, whose transaction's ``write(rows)`` is
also remembered), and once that transaction has COMMITTED it applies those rows, the acks and
the status messages' per-meter clocks to the ``Fleet``. A transaction that fails changes
nothing (ingest retries the same messages). The ingest code is untouched by this.

``FleetKeeper`` loads the state at start, writes what changed every ``flush_interval`` and
at stop, and follows the registry (newly enrolled gateways and meters).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from .state import BAD_READ, MAX_ERROR, Fleet, GatewayState, MeterState, add_ranges

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
                gw.status, gw.reason = status.state, status.reason
                gw.status_at_ms = status.at_ms
                gw.status_received_ms = status.received_ms
                gw.last_seen_ms = max(gw.last_seen_ms or 0, status.received_ms)
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
    """Loads, flushes and follows the registry for one ``Fleet`` on one store."""

    def __init__(self, store: Any, fleet: Fleet, flush_interval_ms: int = 5000) -> None:
        self.store = store
        self.fleet = fleet
        self.flush_interval_s = flush_interval_ms / 1000
        self._registry_version: int | None = None
        self._task: asyncio.Task | None = None

    async def load(self) -> None:
        known: set[str] = set()
        async for chunk in self.store.fleet.load_gateways():
            for gateway_id, doc in chunk:
                self.fleet.gateways[gateway_id] = GatewayState.from_doc(gateway_id, doc)
                known.add(gateway_id)
        async for rows in self.store.fleet.load_meters():
            for meter_id, gateway_id, doc in rows:
                self.fleet.meters[meter_id] = MeterState.from_doc(meter_id, gateway_id, doc)
        await self.follow_registry()
        # a database from before the fleet tables: rebuild what the stored rows tell
        new = [gw for gw in self.fleet.gateways if gw not in known]
        if new:
            ranges = await self.store.fleet.seq_ranges(new)
            rejected = await self.store.fleet.rejections()
            for gateway_id in new:
                gw = self.fleet.gateway(gateway_id)
                gw.seen = ranges.get(gateway_id, [])
                gw.rejected = rejected.get(gateway_id, {})
        log.info(
            "fleet: %d gateways, %d meters loaded", len(self.fleet.gateways), len(self.fleet.meters)
        )

    async def follow_registry(self) -> None:
        version = await self.store.registry_version()
        if version != self._registry_version:
            self._registry_version = version
            self.fleet.bind(await self.store.bindings())

    async def flush(self) -> None:
        fleet = self.fleet
        gateways, meters = fleet.dirty_gateways, fleet.dirty_meters
        fleet.dirty_gateways, fleet.dirty_meters = set(), set()
        try:
            await self.store.fleet.save(
                [(g, fleet.gateways[g].to_doc()) for g in sorted(gateways)],
                [(m, fleet.meters[m].gateway_id, fleet.meters[m].to_doc()) for m in sorted(meters)],
                time.time_ns() // 1_000_000,
            )
        except BaseException:
            fleet.dirty_gateways |= gateways  # written next time
            fleet.dirty_meters |= meters
            raise

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
