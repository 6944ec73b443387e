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
        try:
            doc = json.loads(payload)
            if doc.pop("v", None) != 1:
                raise DecodeError("status: unknown version")
            return cls(**doc)
        except DecodeError:
            raise
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"status: not a valid status message: {exc}") from None
