"""The gateway's retained status message (and its last will), as JSON.

``state`` is ``online`` or ``offline``; the last will carries ``offline`` with reason
``connection lost`` so the broker marks a gateway that vanished. Counters let the fleet view
show backlog and loss without asking the gateway.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .errors import DecodeError

__all__ = ["GatewayStatus"]


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

    def to_bytes(self) -> bytes:
        return json.dumps({"v": 1, **asdict(self)}, separators=(",", ":")).encode()

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
        return cls(**doc)


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
