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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, Decimal
from sys import intern
from typing import Any

from protocols.record import Quality

__all__ = ["Fleet", "GatewayState", "MeterState", "add_ranges", "gaps_of"]

#: Capture flags that make a record not a good read of the meter.
BAD_READ = int(Quality.PARTIAL | Quality.METER_STATUS)
MAX_RANGES = 256  # seq ranges kept per gateway; older holes beyond that are forgotten
MAX_ERROR = 300  # characters of an error text kept


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


class Fleet:
    """All gateways and meters; ``dirty_*`` name what changed since the last flush."""

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
        self._sorted_gateways: list[str] | None = None
        self._sorted_meters: list[str] | None = None

    def gateway(self, gateway_id: str) -> GatewayState:
        state = self.gateways.get(gateway_id)
        if state is None:
            state = self.gateways[gateway_id] = GatewayState(gateway_id)
            self._sorted_gateways = None
        self.dirty_gateways.add(gateway_id)
        return state

    def meter(self, meter_id: str, gateway_id: str = "") -> MeterState:
        state = self.meters.get(meter_id)
        if state is None:
            state = self.meters[meter_id] = MeterState(meter_id, gateway_id)
            self._sorted_meters = None
        if gateway_id:
            state.gateway_id = gateway_id
        self.dirty_meters.add(meter_id)
        return state

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
