"""The gateway's retained status message (and its last will), as JSON.

``state`` is ``online`` or ``offline``; the last will carries ``offline`` with reason
``connection lost`` so the broker marks a gateway that vanished. Counters let the fleet view
show backlog and loss without asking the gateway.

``meters`` (optional, left out when empty so that a gateway without DLMS meters sends
what older collectors accept) carries each DLMS meter's clock: its drift against the
gateway's clock at the last read, whether that is beyond the meter's ``clock_limit``, and
what the set-clock policy did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .errors import DecodeError

__all__ = ["GatewayStatus", "LossEvent", "MeterClockStatus"]

_I63 = 2**63


@dataclass(frozen=True, slots=True)
class MeterClockStatus:
    """One meter's clock as the gateway last measured it."""

    meter_id: str
    drift_ms: int | None = None  # meter clock - gateway clock; None: not measured (yet)
    at_ms: int | None = None  # gateway (virtual) clock of that measurement
    suspect: bool = False  # |drift| beyond the meter's clock_limit: captures flagged
    sets: int = 0  # clock SETs the meter accepted since the agent started
    set_error: str = ""  # the last refused or failed SET ("" after a success)

    @classmethod
    def from_json(cls, doc: object) -> MeterClockStatus:
        if not isinstance(doc, dict):
            raise DecodeError(f"status: meters: expected objects, got {type(doc).__name__}")
        for name, value in doc.items():
            kind = _METER_TYPES.get(name)
            if kind is None:
                raise DecodeError(f"status: meters: unknown field {name!r}")
            if value is None and name in ("drift_ms", "at_ms"):
                continue
            if type(value) is not kind:
                raise DecodeError(f"status: meters: {name!r} must be {kind.__name__}: {value!r}")
            if kind is int and not (-_I63 if name == "drift_ms" else 0) <= value < _I63:
                raise DecodeError(f"status: meters: {name!r} out of range: {value}")
        if "meter_id" not in doc:
            raise DecodeError("status: meters: meter_id is required")
        return cls(**doc)


_METER_TYPES: dict[str, type] = {
    "meter_id": str,
    "drift_ms": int,
    "at_ms": int,
    "suspect": bool,
    "sets": int,
    "set_error": str,
}


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    gateway_id: str
    state: str  # "online" | "offline"
    reason: str = ""
    at_ms: int | None = None  # gateway (virtual) clock when published; None in a last will
    backlog: int = 0  # records in the buffer not yet acked by the head-end
    dropped: int = 0  # records dropped by the buffer policy since install
    last_seq: int = 0  # highest sequence number captured
    version: str = ""
    meters: tuple[MeterClockStatus, ...] = ()  # DLMS meters' clocks (optional)

    def to_bytes(self) -> bytes:
        doc = asdict(self)
        if not self.meters:
            del doc["meters"]
        return json.dumps({"v": 1, **doc}, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> GatewayStatus:
        """Parse a status message; anything but a JSON object of the fields above, each of
        its own type (str, int, at_ms int or null), is a DecodeError."""
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"status: not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise DecodeError(f"status: not a JSON object but {type(doc).__name__}")
        if doc.pop("v", None) != 1:
            raise DecodeError("status: unknown version")
        meters = doc.pop("meters", [])
        if not isinstance(meters, list):
            raise DecodeError(f"status: field 'meters' must be a list: {meters!r}")
        for name, value in doc.items():
            kind = _FIELD_TYPES.get(name)
            if kind is None:
                raise DecodeError(f"status: unknown field {name!r}")
            if value is None and name == "at_ms":
                continue
            if type(value) is not kind:  # bool is not an int here
                raise DecodeError(f"status: field {name!r} must be {kind.__name__}: {value!r}")
            if kind is int and not 0 <= value < 2**63:
                raise DecodeError(f"status: field {name!r} out of range: {value}")
        if "gateway_id" not in doc or "state" not in doc:
            raise DecodeError("status: gateway_id and state are required")
        return cls(**doc, meters=tuple(MeterClockStatus.from_json(m) for m in meters))


_FIELD_TYPES: dict[str, type] = {
    "gateway_id": str,
    "state": str,
    "reason": str,
    "at_ms": int,
    "backlog": int,
    "dropped": int,
    "last_seq": int,
    "version": str,
}


@dataclass(frozen=True, slots=True)
class LossEvent:
    """Published on ``meterlink/v1/{gw}/events`` (QoS 1) when the buffer policy lost data.

    ``kind`` is ``dropped`` (drop-oldest deleted unacked records: ``ranges`` holds their
    inclusive seq ranges, ``loss_ids`` the first and last id of the agent's ``losses`` rows it
    reports, so a repeated event can be recognised) or ``refused`` (stop-capture or a full
    disk refused captures: no seq was assigned, ``ranges`` is empty). ``total`` is the
    gateway's running total of that kind since install.
    """

    gateway_id: str
    kind: str  # "dropped" | "refused"
    reason: str
    count: int
    total: int
    at_ms: int  # gateway (virtual) clock when published
    ranges: tuple[tuple[int, int], ...] = ()
    loss_ids: tuple[int, int] | None = None

    def to_bytes(self) -> bytes:
        doc = {
            "v": 1,
            "event": "loss",
            "gateway_id": self.gateway_id,
            "kind": self.kind,
            "reason": self.reason,
            "count": self.count,
            "total": self.total,
            "at_ms": self.at_ms,
            "ranges": [list(r) for r in self.ranges],
            "loss_ids": list(self.loss_ids) if self.loss_ids else None,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, payload: bytes) -> LossEvent:
        """Parse a loss event; anything else is a DecodeError."""
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"event: not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("v") != 1 or doc.get("event") != "loss":
            raise DecodeError("event: not a version 1 loss event")
        try:
            ranges = tuple(_pair(r) for r in doc["ranges"])
            ids = doc["loss_ids"]
            event = cls(
                _typed(doc, "gateway_id", str),
                _typed(doc, "kind", str),
                _typed(doc, "reason", str),
                _typed(doc, "count", int),
                _typed(doc, "total", int),
                _typed(doc, "at_ms", int),
                ranges,
                None if ids is None else _pair(ids),
            )
        except (KeyError, TypeError) as exc:
            raise DecodeError(f"event: missing or malformed field: {exc}") from None
        if event.kind not in ("dropped", "refused"):
            raise DecodeError(f"event: unknown kind {event.kind!r}")
        return event


def _typed(doc: dict, name: str, kind: type):  # type: ignore[no-untyped-def]
    value = doc[name]
    if type(value) is not kind:
        raise DecodeError(f"event: field {name!r} must be {kind.__name__}: {value!r}")
    return value


def _pair(value: object) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2 or not all(type(v) is int for v in value):
        raise DecodeError(f"event: expected a pair of integers, got {value!r}")
    return (value[0], value[1])
