"""The sla tables of the store (schema step 9, owned by the SLA feature: collector/sla).

``sla_gateway_events`` is the gateways' connectivity history: one row each time a gateway's
state changes as the head-end hears it (an ``online`` status after an ``offline`` one, an
``offline`` status: a clean stop, or the broker's last will ``connection lost``). The fleet
view keeps only the latest status (``gateway_status``, ``fleet_gateways``); the SLA needs to
know *when* a gateway was offline to explain late and missing intervals. ``at_ms`` is the
collector's clock (the fleet's virtual clock in tests) when the status arrived, the clock the
derived intervals' ``created_ms`` are on. Several collectors each hear every status: each
one's rows are kept (the key holds the arrival time), and evaluation merges overlapping
offline spans, so a duplicate changes nothing.
"""

from __future__ import annotations

__all__ = ["MIGRATION"]

#: SQLite DDL; collector.store.postgres_schema translates it for PostgreSQL.
MIGRATION: list[str] = [
    """CREATE TABLE sla_gateway_events (
        gateway_id TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        gateway_at_ms INTEGER,
        PRIMARY KEY (gateway_id, at_ms, state))""",
]
