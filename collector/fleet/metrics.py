"""The collector's Prometheus metrics (prometheus-client), served at ``/metrics``.

Counters are fed by each committed ingest transaction (``FleetMetrics.observe``); the fleet
gauges (gateways by state, backlog, stale meters) are computed from the ``Fleet`` when
scraped, and the VEE findings are read from the store's counters just before. No label
carries a gateway or meter id: 10,000 gateways would be 10,000 series per metric; the API has
the per-gateway figures.

Several collectors: the counters are this process's own transactions (sum them over the
collectors); the gauges are the whole fleet as merged in the database (the same on every
collector, give or take one flush interval: take one of them, or max(), never their sum).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .state import Fleet

__all__ = ["CONTENT_TYPE", "FleetMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _FleetGauges(Collector):
    def __init__(self, owner: FleetMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        owner = self.owner
        if owner.fleet is not None:
            s = owner.fleet.summary(owner.now_ms())
            g = GaugeMetricFamily(
                "meterlink_gateways",
                "Gateways by state (online, offline, unknown)",
                labels=["state"],
            )
            for state in ("online", "offline", "unknown"):
                g.add_metric([state], s[f"gateways_{state}"])
            yield g
            yield GaugeMetricFamily(
                "meterlink_gateway_backlog_records",
                "Records held in the gateways' buffers, not yet acked (sum of last statuses)",
                value=s["backlog"],
            )
            yield GaugeMetricFamily(
                "meterlink_missing_records",
                "Sequence numbers below each gateway's highest that never arrived (sum)",
                value=s["missing_records"],
            )
            yield GaugeMetricFamily("meterlink_meters", "Meters known", value=s["meters"])
            yield GaugeMetricFamily(
                "meterlink_meters_stale",
                "Meters without a good reading within [fleet] stale_after",
                value=s["meters_stale"],
            )
        vee = GaugeMetricFamily(
            "meterlink_vee_findings",
            "VEE findings in the store by rule and outcome",
            labels=["rule", "outcome"],
        )
        for rule, outcome, n in owner.vee_totals:
            vee.add_metric([rule, outcome], n)
        yield vee


class FleetMetrics:
    """One registry per collector (not the process-wide default: tests run several)."""

    def __init__(self, fleet: Fleet | None, now_ms: Callable[[], int] | None = None) -> None:
        self.fleet = fleet
        self.now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.vee_totals: list[tuple[str, str, int]] = []
        self.registry = CollectorRegistry()
        r = self.registry
        self.transactions = Counter(
            "meterlink_ingest_transactions", "Ingest transactions committed", registry=r
        )
        self.records = Counter(
            "meterlink_ingest_records", "Records stored (new, verified)", registry=r
        )
        self.readings = Counter("meterlink_ingest_readings", "Readings stored", registry=r)
        self.duplicates = Counter(
            "meterlink_ingest_duplicates",
            "Dedup hits: records or readings already stored",
            ["kind"],
            registry=r,
        )
        self.rejected = Counter(
            "meterlink_ingest_rejected",
            "Messages or records quarantined, by reason",
            ["reason"],
            registry=r,
        )
        self.conflicts = Counter(
            "meterlink_ingest_conflicts", "Readings that disagree with a stored one", registry=r
        )
        self.statuses = Counter(
            "meterlink_status_messages", "Gateway status messages (and last wills)", registry=r
        )
        r.register(_FleetGauges(self))

    def observe(self, rows: Any) -> None:
        """Count one committed transaction's ``IngestWrite``."""
        self.transactions.inc()
        self.records.inc(len(rows.records))
        self.readings.inc(len(rows.readings))
        self.statuses.inc(len(rows.statuses))
        dup_records = dup_readings = conflicts = 0
        for delta in rows.counters.values():
            dup_records += delta.duplicate_records
            dup_readings += delta.duplicate_readings
            conflicts += delta.conflicts
        if dup_records:
            self.duplicates.labels("records").inc(dup_records)
        if dup_readings:
            self.duplicates.labels("readings").inc(dup_readings)
        if conflicts:
            self.conflicts.inc(conflicts)
        for q in rows.quarantine:
            self.rejected.labels(q.kind or "other").inc()

    async def refresh(self, store: Any) -> None:
        """Read what lives only in the store (VEE findings) before a scrape."""
        fleet_reads = getattr(store, "fleet", None)
        if fleet_reads is not None:
            self.vee_totals = await fleet_reads.flag_totals()

    def render(self) -> bytes:
        return generate_latest(self.registry)
