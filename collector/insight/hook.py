"""Alert rules evaluated as data arrives: a hook the ingestor runs after each commit.

``attach(ingestor, config, store, clock_ms)`` (called once by ``collector/service.py``) adds
``UsageAlerts.after_commit`` to the ingestor's ``after_commit`` hooks. After a transaction
committed (its readings, and VEE's derived intervals of them, are in the store), the hook
looks at the meters the transaction stored readings of, finds the live rules of the service
points those meters are on, evaluates them on the local days the new readings can have
changed (``alerts.rule_days``) and raises what is due. The store keeps one alert per (rule,
day), so a re-delivered batch, another collector evaluating the same day, or a second look
raise nothing twice.

A failure here is logged and never undoes or delays an ack: the readings are committed
already. Rules on an account or service point the accounts file no longer has are skipped
(logged once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import CollectorError
from ..store.insight_sqlite import insight_of
from .alerts import evaluate_rule, rule_days
from .rules import rule_from_row

__all__ = ["UsageAlerts", "attach"]

log = logging.getLogger("collector.insight")


class UsageAlerts:
    def __init__(self, store: Any, billing: Any, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.billing = billing
        self.clock_ms = clock_ms
        self.raised = 0  # alerts this process raised
        self._warned: set[tuple[int, str]] = set()
        self._points: dict[str, list[tuple[str, Any]]] = {}  # meter -> (account id, point)
        for account in billing.accounts.values():
            for point in account.service_points:
                for span in point.meters:
                    self._points.setdefault(span.meter_id, []).append((account.id, point))

    async def after_commit(self, rows: Any) -> None:
        try:
            await self.evaluate(rows.readings)
        except Exception:  # the readings are committed; an alert bug must not stop ingest
            log.exception("usage alerts not evaluated for a transaction")

    async def evaluate(self, readings: Any) -> int:
        """Evaluate the rules the readings (ingest row tuples: meter, obis, captured ms, ...)
        can affect; returns how many alerts were new."""
        touched: dict[str, tuple[int, int]] = {}
        for r in readings:
            meter, ms = r[0], r[2]
            if meter not in self._points:
                continue
            lo_hi = touched.get(meter)
            touched[meter] = (ms, ms) if lo_hi is None else (min(lo_hi[0], ms), max(lo_hi[1], ms))
        if not touched:
            return 0
        insight = insight_of(self.store)
        accounts = {a for meter in touched for a, _point in self._points[meter]}
        live = await insight.rules_of(accounts)
        if not live:
            return 0
        due: list[tuple] = []
        now = self.clock_ms()
        for row in live:
            account = self.billing.accounts.get(row.account_id)
            if account is None:
                self._warn(row.id, f"rule {row.id}: no account {row.account_id!r} any more")
                continue
            try:
                rule = rule_from_row(account, row)
            except CollectorError as exc:
                self._warn(row.id, f"rule {row.id} of {row.account_id}: {exc}")
                continue
            point = next(p for p in account.service_points if p.id == rule.service_point)
            lo = hi = None
            for span in point.meters:
                if span.meter_id in touched:
                    a, b = touched[span.meter_id]
                    a, b = max(a, span.start_ms), min(b, span.end_ms)
                    if a <= b:
                        lo = a if lo is None else min(lo, a)
                        hi = b if hi is None else max(hi, b)
            if lo is None or hi is None:
                continue
            days = rule_days(lo, hi, account.timezone)
            due.extend(await evaluate_rule(self.store, account, point, rule, days, now))
        new = await insight.raise_alerts(due)
        if new:
            self.raised += new
            log.info("usage alerts: %d raised", new)
        return new

    def _warn(self, rule_id: int, message: str) -> None:
        key = (rule_id, message)
        if key not in self._warned:
            self._warned.add(key)
            log.warning("usage alerts: %s (skipped)", message)


def attach(ingestor: Any, config: Any, store: Any, clock_ms: Callable[[], int]) -> None:
    """Hook usage alerts into ``ingestor`` (an ``Ingestor`` with ``after_commit``), when the
    config has ``[billing]`` (accounts) and VEE on (the rules read VEE's intervals)."""
    if config.billing is None or not config.vee.enabled:
        return
    hooks = getattr(ingestor, "after_commit", None)
    if hooks is None:
        log.warning("usage alerts: this ingestor has no after_commit hooks; alerts off")
        return
    from ..rating.run import load_billing

    try:
        billing = load_billing(config.billing.accounts, config.billing.tariffs)
    except CollectorError as exc:
        log.warning("usage alerts off: %s", exc)
        return
    hooks.append(UsageAlerts(store, billing, clock_ms).after_commit)
