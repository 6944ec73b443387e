"""The operator's VEE actions: accept, reject or edit a reading, record a meter swap.

Each is one write transaction: an audit row (who, when, why; never an update of the
reading) and the re-derivation of the intervals it touches, whose replaced rows are kept
as superseded. The latest decision on a reading is in force: accept (use it despite its
error finding), reject (do not use it: the span is estimated as a gap), edit (use this
value instead; the intervals it bounds are ``edited``). Register decreases flagged after
the reading are checked again against the new state (``_recheck_decreases``).
"""

from __future__ import annotations

from decimal import Decimal

from protocols.clock import format_utc_ms

from ..errors import CollectorError
from ..store.sqlite import SqliteStore
from ..store.vee_sqlite import SqliteVeeOperatorTx
from .base import Point
from .engine import VeeEngine, swap_of
from .monotonic import pair_delta
from .series import point_of

__all__ = ["VeeActionError", "decide", "edit", "record_swap"]


class VeeActionError(CollectorError):
    """An operator action that cannot be done (unknown flag or reading, no reason)."""


async def _recheck_decreases(
    tx: SqliteVeeOperatorTx, engine: VeeEngine, meter_id: str, obis: str, after_ms: int,
    audit_id: int, now_ms: int,
) -> list[int]:  # fmt: skip
    """After a decision on a reading, the register decreases flagged after it may no longer
    be decreases (a high glitch rejected or edited): each that now follows its previous
    usable point gets an ``accept`` audit row by ``vee`` saying why. Returns their times."""
    rules = engine.settings.for_meter(meter_id)
    if not rules.cumulative(obis):
        return []
    swaps = [swap_of(row) for row in await tx.swaps(meter_id)]
    cleared = []
    for flag_obis, ms, flag_id in await tx.undecided_decreases(meter_id, after_ms + 1):
        if flag_obis != obis:
            continue
        before = [p for p in map(point_of, await tx.points_before(meter_id, obis, ms - 1, 8)) if p]
        rows = await tx.points_between(meter_id, obis, ms - 1, ms)
        if not before or not rows:
            continue
        row = rows[0]
        point = Point(ms, Decimal(row.value), row.unit, row.gateway_id, row.seq)
        delta, _how = pair_delta(before[0], point, obis, rules, swaps)
        if delta is None:
            continue
        await tx.audit(
            meter_id, obis, ms, "accept", None, flag_id,
            f"re-checked after audit #{audit_id}: no longer a decrease"
            f" ({before[0].value} -> {point.value})", "vee", now_ms,
        )  # fmt: skip
        cleared.append(ms)
    return cleared


def _need_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise VeeActionError("a reason is required (--reason)")
    return reason


async def decide(
    store: SqliteStore, engine: VeeEngine, flag_id: int, action: str, reason: str, who: str,
    now_ms: int,
) -> str:  # fmt: skip
    """Accept or reject the reading a finding is about."""
    if action not in ("accept", "reject"):
        raise VeeActionError(f"unknown action {action!r}")
    reason = _need_reason(reason)
    async with store.vee_transaction() as tx:
        flag = await tx.flag(flag_id)
        if flag is None:
            raise VeeActionError(f"no finding #{flag_id} (see `vee report`)")
        meter_id, obis, captured_ms, rule, _outcome, _detail = flag
        audit_id = await tx.audit(
            meter_id, obis, captured_ms, action, None, flag_id, reason, who, now_ms
        )
        cleared = await _recheck_decreases(
            tx, engine, meter_id, obis, captured_ms, audit_id, now_ms
        )
        out = await engine.rederive(
            tx, meter_id, obis, [captured_ms, *cleared], now_ms, f"operator {who}",
            f"{action} of finding #{flag_id} ({rule}): {reason}",
        )  # fmt: skip
    return (
        f"audit #{audit_id}: {action}ed meter {meter_id} {obis} at {format_utc_ms(captured_ms)}"
        f" (finding #{flag_id}, {rule}); {len(out.intervals)} interval(s) derived again"
    )


async def edit(
    store: SqliteStore, engine: VeeEngine, meter_id: str, obis: str, captured_ms: int,
    value: Decimal, reason: str, who: str, now_ms: int,
) -> str:  # fmt: skip
    """Use ``value`` for a stored reading (the reading itself stays as received)."""
    reason = _need_reason(reason)
    if not value.is_finite():
        raise VeeActionError(f"--value must be a finite number, got {value}")
    async with store.vee_transaction() as tx:
        stored = await tx.reading(meter_id, obis, captured_ms)
        if stored is None:
            raise VeeActionError(
                f"meter {meter_id}: no stored reading of {obis} at {format_utc_ms(captured_ms)}"
            )
        audit_id = await tx.audit(
            meter_id, obis, captured_ms, "edit", value, None, reason, who, now_ms
        )
        cleared = await _recheck_decreases(
            tx, engine, meter_id, obis, captured_ms, audit_id, now_ms
        )
        out = await engine.rederive(
            tx, meter_id, obis, [captured_ms, *cleared], now_ms, f"operator {who}",
            f"edit {stored[0]} -> {value} {stored[1]}: {reason}",
        )  # fmt: skip
    return (
        f"audit #{audit_id}: meter {meter_id} {obis} at {format_utc_ms(captured_ms)}:"
        f" {stored[0]} -> {value} {stored[1]}; {len(out.intervals)} interval(s) derived again"
    )


async def record_swap(
    store: SqliteStore, engine: VeeEngine, meter_id: str, at_ms: int,
    old_final: Decimal | None, new_initial: Decimal | None, reason: str, who: str, now_ms: int,
) -> str:  # fmt: skip
    """Record that the meter was replaced at ``at_ms``. Register decreases from then on
    that were flagged as errors are accepted (explained by the swap, an audit row each),
    and the intervals around the swap are derived again: the old register's readings are
    never subtracted from the new one's."""
    reason = _need_reason(reason)
    if (old_final is None) != (new_initial is None):
        raise VeeActionError("give both --old-final and --new-initial, or neither")
    async with store.vee_transaction() as tx:
        swap_id = await tx.add_swap(meter_id, at_ms, old_final, new_initial, reason, who, now_ms)
        explained = await tx.undecided_decreases(meter_id, at_ms)
        touched: dict[str, list[int]] = {}
        for obis, captured_ms, flag_id in explained:
            await tx.audit(
                meter_id, obis, captured_ms, "accept", None, flag_id,
                f"explained by meter swap #{swap_id}: {reason}", who, now_ms,
            )  # fmt: skip
            touched.setdefault(obis, []).append(captured_ms)
        for obis in await tx.register_obis(meter_id):
            touched.setdefault(obis, []).append(at_ms)
        derived = 0
        for obis, times in touched.items():
            out = await engine.rederive(
                tx, meter_id, obis, times, now_ms, f"operator {who}",
                f"meter swap #{swap_id} at {format_utc_ms(at_ms)}: {reason}",
            )  # fmt: skip
            derived += len(out.intervals)
    return (
        f"swap #{swap_id}: meter {meter_id} replaced at {format_utc_ms(at_ms)};"
        f" {len(explained)} decrease finding(s) accepted; {derived} interval(s) derived again"
    )
