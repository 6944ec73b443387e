"""The fleet state: one ``GatewayState`` per gateway, one ``MeterState`` per meter.

It is fed after each committed ingest transaction (``collector.fleet.tracking``) with what that
transaction wrote (records, readings, quarantine, statuses) and the acks it produced, and kept
in memory: the fleet overview for 10,000 gateways must not be 10,000 queries. It is written to
the store (``fleet_gateways`` / ``fleet_meters``, JSON documents) every ``flush_interval`` and
at shutdown, and read back at start, so it survives a restart; a crash loses at most one flush
interval of it, and the next retained status and batches bring it up to date again.

Online/offline: a gateway is ``online`` when its last status said so and it was heard from
(a status or a batch) within ``offline_after``; its last will (``offline``, ``connection
lost``), a clean ``offline`` status, or silence make it ``offline``. The silence rule is
applied when read (``state_at``), so no timer has to run for it.

Several collectors (one shared-subscription group, one PostgreSQL database) each see part of
every gateway's batches, but every status. Their flushes are merges, never overwrites
(``merge_gateway``, ``merge_meter``): counters add what this collector counted since its
last sync (the *basis*, the state as it was when it first changed after that sync),
timestamps take the newest, seq ranges the union, and the groups that come from one message
(the last status, the newest good capture, the last error, a meter's clock) the newest one.
``collector.fleet.tracking.FleetKeeper`` runs the merge in a write transaction and brings
what the other collectors wrote back into this state, so every collector shows the whole
fleet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from decimal import ROUND_DOWN, Decimal
from sys import intern
from typing import Any

from protocols.record import Quality

__all__ = [
    "Fleet",
    "GatewayState",
    "MeterState",
    "add_ranges",
    "gaps_of",
    "merge_gateway",
    "merge_meter",
    "status_is_older",
]

#: Capture flags that make a record not a good read of the meter.
BAD_READ = int(Quality.PARTIAL | Quality.METER_STATUS)
MAX_RANGES = 256  # seq ranges kept per gateway; older holes beyond that are forgotten
MAX_ERROR = 300  # characters of an error text kept
#: A status that looks older than the stored one (``status_is_older``) but was received this
#: much later than it is taken as newer after all: the gateway's clock was set back.
STATUS_REORDER_MS = 600_000


def add_ranges(ranges: list[list[int]], new: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Merge inclusive ``[low, high]`` ranges (sorted, non-adjacent) with ``new`` ones."""
    items = sorted([list(r) for r in ranges] + [[lo, hi] for lo, hi in new])
    merged: list[list[int]] = []
    for lo, hi in items:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    if len(merged) > MAX_RANGES:
        # keep the newest: fold the oldest into one range (their holes are no longer shown)
        cut = len(merged) - MAX_RANGES + 1
        merged = [[merged[0][0], merged[cut - 1][1]], *merged[cut:]]
    return merged


def gaps_of(ranges: list[list[int]]) -> list[tuple[int, int]]:
    """The holes below the highest seen seq (the agent numbers from 1)."""
    gaps: list[tuple[int, int]] = []
    expected = 1
    for lo, hi in ranges:
        if lo > expected:
            gaps.append((expected, lo - 1))
        expected = hi + 1
    return gaps


@dataclass(slots=True)
class GatewayState:
    gateway_id: str
    status: str = ""  # the last status message's state: "online" | "offline" | "" (none yet)
    reason: str = ""
    status_at_ms: int | None = None  # the gateway's clock in that status (None: a last will)
    status_received_ms: int | None = None
    last_seen_ms: int | None = None  # last status or batch from it (collector wall clock)
    version: str = ""
    backlog: int = 0
    dropped: int = 0
    last_seq: int = 0
    clock_offset_ms: int | None = None  # gateway clock - collector clock, at the last status
    batches: int = 0
    records: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    seen: list[list[int]] = field(default_factory=list)  # seq ranges handled by the head-end
    meters: list[str] = field(default_factory=list)  # bound meters (registry)

    def state_at(self, now_ms: int, offline_after_ms: int) -> str:
        """``online`` | ``offline`` | ``unknown`` (enrolled, never heard from)."""
        if self.last_seen_ms is None:
            return "unknown"
        if self.status == "offline":
            return "offline"
        if now_ms - self.last_seen_ms > offline_after_ms:
            return "offline"
        return "online"

    def offline_reason(self, now_ms: int, offline_after_ms: int) -> str:
        if self.status == "offline":
            return self.reason or "offline status"
        if self.last_seen_ms is not None and now_ms - self.last_seen_ms > offline_after_ms:
            return f"silent for more than {offline_after_ms // 1000}s"
        return ""

    @property
    def oldest_unacked_seq(self) -> int | None:
        """The oldest record the gateway still holds, from its last status (backlog counts the
        newest ``backlog`` seqs up to ``last_seq``)."""
        return self.last_seq - self.backlog + 1 if self.backlog > 0 else None

    @property
    def gaps(self) -> list[tuple[int, int]]:
        return gaps_of(self.seen)

    @property
    def missing(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.gaps)

    def view(self, now_ms: int, offline_after_ms: int) -> dict[str, Any]:
        gaps = self.gaps
        return {
            "gateway_id": self.gateway_id,
            "state": self.state_at(now_ms, offline_after_ms),
            "offline_reason": self.offline_reason(now_ms, offline_after_ms),
            "status": self.status or None,
            "status_reason": self.reason,
            "status_at_ms": self.status_at_ms,
            "last_seen_ms": self.last_seen_ms,
            "agent_version": self.version,
            "backlog": self.backlog,
            "oldest_unacked_seq": self.oldest_unacked_seq,
            "dropped": self.dropped,
            "last_seq": self.last_seq,
            "clock_offset_ms": self.clock_offset_ms,
            "batches": self.batches,
            "records": self.records,
            "duplicates": self.duplicates,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "sequence_gaps": len(gaps),
            "missing_records": sum(hi - lo + 1 for lo, hi in gaps),
            "gap_ranges": [list(g) for g in gaps[:20]],
            "meters": len(self.meters),
        }

    def status_group(self) -> tuple:
        """What the last status message set (every collector receives every status)."""
        return (self.status, self.reason, self.status_at_ms, self.status_received_ms,
                self.version, self.backlog, self.dropped, self.last_seq,
                self.clock_offset_ms)  # fmt: skip

    def copy(self) -> GatewayState:
        """A snapshot: later changes to this state do not reach it (``rejected`` is the only
        field changed in place; ``seen`` is always replaced)."""
        return replace(self, rejected=dict(self.rejected))

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["gateway_id"], doc["meters"]
        return doc

    @classmethod
    def from_doc(cls, gateway_id: str, doc: dict[str, Any]) -> GatewayState:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        known.pop("meters", None)
        return cls(gateway_id, **known)


@dataclass(slots=True)
class MeterState:
    meter_id: str
    gateway_id: str = ""
    records: int = 0  # captures received (stored, not duplicates)
    good: int = 0  # of them, not partial and without a meter error status
    last_received_ms: int | None = None
    last_captured_ms: int | None = None
    last_good_ms: int | None = None  # capture time of the newest good capture
    # that capture time on the wall clock (equal to it unless the collector runs on the
    # fleet's accelerated virtual clock): staleness is judged on it, like offline silence
    last_good_at_ms: int | None = None
    last_good: dict[str, list[str]] = field(default_factory=dict)  # obis -> [value, unit]
    last_error: str = ""
    last_error_ms: int | None = None
    rejected: int = 0
    clock_drift_ms: int | None = None  # DLMS meters: meter clock - gateway clock
    clock_suspect: bool = False
    clock_set_error: str = ""

    def success_rate(self) -> str | None:
        """Good captures / captures, as a decimal string with 4 places (no float)."""
        if self.records == 0:
            return None
        rate = Decimal(self.good) / Decimal(self.records)
        return str(rate.quantize(Decimal("0.0001"), rounding=ROUND_DOWN))

    def stale_at(self, now_ms: int, stale_after_ms: int) -> bool:
        """No good capture within ``stale_after_ms`` of ``now_ms`` (wall clock)."""
        at = self.last_good_at_ms if self.last_good_at_ms is not None else self.last_good_ms
        return at is None or now_ms - at > stale_after_ms

    def view(self, now_ms: int, stale_after_ms: int) -> dict[str, Any]:
        return {
            "meter_id": self.meter_id,
            "gateway_id": self.gateway_id or None,
            "stale": self.stale_at(now_ms, stale_after_ms),
            "last_good_ms": self.last_good_ms,
            "last_good": [
                {"obis": obis, "value": v[0], "unit": v[1]}
                for obis, v in sorted(self.last_good.items())
            ],
            "last_captured_ms": self.last_captured_ms,
            "last_received_ms": self.last_received_ms,
            "captures": self.records,
            "good_captures": self.good,
            "read_success_rate": self.success_rate(),
            "last_error": self.last_error or None,
            "last_error_ms": self.last_error_ms,
            "rejected": self.rejected,
            "clock_drift_ms": self.clock_drift_ms,
            "clock_suspect": self.clock_suspect,
            "clock_set_error": self.clock_set_error or None,
        }

    def clock_group(self) -> tuple:
        """The meter's clock as the gateway's last status reported it."""
        return (self.clock_drift_ms, self.clock_suspect, self.clock_set_error)

    def copy(self) -> MeterState:
        """A snapshot (``last_good`` is always replaced, never changed in place)."""
        return replace(self)

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["meter_id"], doc["gateway_id"]
        return doc

    @classmethod
    def from_doc(cls, meter_id: str, gateway_id: str, doc: dict[str, Any]) -> MeterState:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        known.pop("gateway_id", None)
        good = known.get("last_good")
        if good:
            # OBIS codes and units repeat across 100,000 meters: one string object each
            known["last_good"] = {intern(k): [v[0], intern(v[1])] for k, v in good.items()}
        return cls(meter_id, intern(gateway_id), **known)


def _newest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


def status_is_older(a: GatewayState, b: GatewayState) -> bool:
    """``a``'s last status is an older message than ``b``'s.

    Collectors receive each status at their own pace (one may be behind with its queue), so
    the order is the gateway's: older means stamped earlier by its clock (``status_at_ms``)
    and no higher captured seq (``last_seq``: a gateway whose clock was set back but that
    captured since is newer; a reinstalled one, its seqs from 1 again, has a later clock).
    A last will (no ``at_ms``) is the broker's word that the connection is gone and is never
    older. A status received more than ``STATUS_REORDER_MS`` after ``b`` is not older
    either: the gateway's clock was set back, and the newest message is the one to show.
    The store's ``gateway_status`` upsert applies the same rule.
    """
    if a.status_at_ms is None or b.status_at_ms is None:
        return False
    if a.status_at_ms >= b.status_at_ms or a.last_seq > b.last_seq:
        return False
    return (a.status_received_ms or 0) <= (b.status_received_ms or 0) + STATUS_REORDER_MS


def merge_gateway(
    stored: GatewayState, mine: GatewayState, basis: GatewayState | None
) -> GatewayState:
    """``stored`` (what the database holds, written by any collector) with what ``mine``
    learnt since ``basis`` (``mine`` as it was at the last sync; None: nothing learnt).

    Counters: stored + (mine - basis). Newest wins for ``last_seen_ms`` and for the status
    group (only when ``mine`` received a status since ``basis``, and it is not an older one
    than the stored: ``status_is_older``). Seq ranges: the union. Commutative for several
    writers, and applying the same delta once more is the only way to count twice: the
    caller syncs ``basis`` with every merge it writes.
    """
    out = replace(stored, rejected=dict(stored.rejected), meters=mine.meters)
    if basis is None:
        return out
    out.batches += mine.batches - basis.batches
    out.records += mine.records - basis.records
    out.duplicates += mine.duplicates - basis.duplicates
    for kind in mine.rejected.keys() | basis.rejected.keys():
        n = out.rejected.get(kind, 0) + mine.rejected.get(kind, 0) - basis.rejected.get(kind, 0)
        if n > 0:
            out.rejected[kind] = n
        else:
            out.rejected.pop(kind, None)
    out.last_seen_ms = _newest(stored.last_seen_ms, mine.last_seen_ms)
    if mine.seen:
        out.seen = add_ranges(stored.seen, mine.seen)
    if mine.status_group() != basis.status_group() and not status_is_older(mine, stored):
        out.status, out.reason = mine.status, mine.reason
        out.status_at_ms, out.status_received_ms = mine.status_at_ms, mine.status_received_ms
        out.version, out.backlog, out.dropped = mine.version, mine.backlog, mine.dropped
        out.last_seq, out.clock_offset_ms = mine.last_seq, mine.clock_offset_ms
    return out


def merge_meter(stored: MeterState, mine: MeterState, basis: MeterState | None) -> MeterState:
    """As ``merge_gateway``, for a meter: counters add, the newest capture / good capture /
    error wins (by its time; the stored one on a tie), the clock group is ``mine`` when a
    status changed it since ``basis``."""
    out = replace(stored)
    if basis is None:
        return out
    if mine.gateway_id:
        out.gateway_id = mine.gateway_id
    out.records += mine.records - basis.records
    out.good += mine.good - basis.good
    out.rejected += mine.rejected - basis.rejected
    out.last_received_ms = _newest(stored.last_received_ms, mine.last_received_ms)
    out.last_captured_ms = _newest(stored.last_captured_ms, mine.last_captured_ms)
    if mine.last_good_ms is not None and (
        stored.last_good_ms is None or mine.last_good_ms > stored.last_good_ms
    ):
        out.last_good_ms, out.last_good_at_ms = mine.last_good_ms, mine.last_good_at_ms
        out.last_good = mine.last_good
    if mine.last_error_ms is not None and (
        stored.last_error_ms is None or mine.last_error_ms > stored.last_error_ms
    ):
        out.last_error, out.last_error_ms = mine.last_error, mine.last_error_ms
    if mine.clock_group() != basis.clock_group():
        out.clock_drift_ms, out.clock_suspect = mine.clock_drift_ms, mine.clock_suspect
        out.clock_set_error = mine.clock_set_error
    return out


class Fleet:
    """All gateways and meters; ``dirty_*`` name what changed since the last flush, and
    ``basis_*`` hold each of them as it was before that first change (``merge_gateway``)."""

    def __init__(
        self,
        offline_after_ms: int = 600_000,
        stale_after_ms: int = 7_200_000,
        real_ms: Callable[[int], int] | None = None,
    ) -> None:
        """``real_ms(collector_ms)``: the wall-clock instant of an instant of the collector's
        clock (the identity unless it runs on the fleet's virtual clock). Every "now" given
        to this state is the wall clock (``now_ms()``)."""
        self.offline_after_ms = offline_after_ms
        self.stale_after_ms = stale_after_ms
        self.real_ms: Callable[[int], int] = real_ms or (lambda ms: ms)
        self.gateways: dict[str, GatewayState] = {}
        self.meters: dict[str, MeterState] = {}
        self.dirty_gateways: set[str] = set()
        self.dirty_meters: set[str] = set()
        self.basis_gateways: dict[str, GatewayState] = {}
        self.basis_meters: dict[str, MeterState] = {}
        self._sorted_gateways: list[str] | None = None
        self._sorted_meters: list[str] | None = None

    def gateway(self, gateway_id: str) -> GatewayState:
        """The state of ``gateway_id`` (made if new), marked dirty: call it before changing
        the state, so that its basis is taken before the first change."""
        state = self.gateways.get(gateway_id)
        if state is None:
            state = self.gateways[gateway_id] = GatewayState(gateway_id)
            self._sorted_gateways = None
        if gateway_id not in self.dirty_gateways:
            self.dirty_gateways.add(gateway_id)
            self.basis_gateways[gateway_id] = state.copy()
        return state

    def meter(self, meter_id: str, gateway_id: str = "") -> MeterState:
        """As ``gateway``: the meter's state, marked dirty, before it is changed."""
        state = self.meters.get(meter_id)
        if state is None:
            state = self.meters[meter_id] = MeterState(meter_id, gateway_id)
            self._sorted_meters = None
        if meter_id not in self.dirty_meters:
            self.dirty_meters.add(meter_id)
            self.basis_meters[meter_id] = state.copy()
        if gateway_id:
            state.gateway_id = gateway_id
        return state

    def rebase(self) -> None:
        """Take what is in memory now as the basis of every dirty state: what it holds was
        not learnt from messages (rebuilt from stored rows) and must not be added again to
        what another collector already wrote."""
        for gateway_id in self.dirty_gateways:
            self.basis_gateways[gateway_id] = self.gateways[gateway_id].copy()
        for meter_id in self.dirty_meters:
            self.basis_meters[meter_id] = self.meters[meter_id].copy()

    def take_gateway(self, stored: GatewayState) -> None:
        """What the database holds for a gateway (another collector wrote it), with what
        this collector learnt since its basis on top (``merge_gateway``)."""
        gateway_id = stored.gateway_id
        current = self.gateways.get(gateway_id)
        if current is None:
            self.gateways[gateway_id] = stored
            self._sorted_gateways = None
            return
        basis = self.basis_gateways.get(gateway_id)
        self.gateways[gateway_id] = merge_gateway(stored, current, basis)
        if basis is not None:
            self.basis_gateways[gateway_id] = stored.copy()

    def take_meter(self, stored: MeterState) -> None:
        """As ``take_gateway``, for a meter."""
        meter_id = stored.meter_id
        current = self.meters.get(meter_id)
        if current is None:
            self.meters[meter_id] = stored
            self._sorted_meters = None
            return
        basis = self.basis_meters.get(meter_id)
        self.meters[meter_id] = merge_meter(stored, current, basis)
        if basis is not None:
            self.basis_meters[meter_id] = stored.copy()

    def bind(self, bindings: Iterable[tuple[str, str]]) -> None:
        """The registry's (gateway, meter) pairs: every enrolled gateway and meter is listed,
        heard from or not (a meter bound to several gateways shows the last one)."""
        per_gateway: dict[str, list[str]] = {}
        for gateway_id, meter_id in bindings:
            per_gateway.setdefault(gateway_id, []).append(meter_id)
        for gateway_id, meters in per_gateway.items():
            gw = self.gateways.get(gateway_id)
            if gw is None:
                gw = self.gateways[gateway_id] = GatewayState(gateway_id)
                self._sorted_gateways = None
            gw.meters = sorted(meters)
            for meter_id in meters:
                state = self.meters.get(meter_id)
                if state is None:
                    self.meters[meter_id] = MeterState(meter_id, gateway_id)
                    self._sorted_meters = None
                elif not state.gateway_id:
                    state.gateway_id = gateway_id

    def gateway_ids(self) -> list[str]:
        if self._sorted_gateways is None:
            self._sorted_gateways = sorted(self.gateways)
        return self._sorted_gateways

    def meter_ids(self) -> list[str]:
        if self._sorted_meters is None:
            self._sorted_meters = sorted(self.meters)
        return self._sorted_meters

    @staticmethod
    def now_ms() -> int:
        """The wall clock, in Unix ms: what ``state_at`` / ``stale_at`` / views take."""
        return time.time_ns() // 1_000_000

    def summary(self, now_ms: int) -> dict[str, Any]:
        """Counts for the fleet overview and the metrics (``now_ms``: wall clock)."""
        states = {"online": 0, "offline": 0, "unknown": 0}
        backlog = gaps = 0
        for gw in self.gateways.values():
            states[gw.state_at(now_ms, self.offline_after_ms)] += 1
            backlog += gw.backlog
            gaps += gw.missing if gw.seen else 0
        stale_after = self.stale_after_ms
        stale = sum(1 for m in self.meters.values() if m.stale_at(now_ms, stale_after))
        failing = sum(1 for m in self.meters.values() if m.last_error and m.records > m.good)
        return {
            "gateways": len(self.gateways),
            "gateways_online": states["online"],
            "gateways_offline": states["offline"],
            "gateways_unknown": states["unknown"],
            "backlog": backlog,
            "missing_records": gaps,
            "meters": len(self.meters),
            "meters_stale": stale,
            "meters_with_errors": failing,
        }
