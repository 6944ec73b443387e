"""The MQTT topic scheme, version 1.

``meterlink/v1/{gateway}/readings``       agent -> head-end, batches (QoS 1)
``meterlink/v1/{gateway}/ack``            head-end -> agent, committed sequence numbers (QoS 1)
``meterlink/v1/{gateway}/status``         agent, retained; last will marks the gateway offline
``meterlink/v1/{gateway}/events``         agent -> head-end, notable events (buffer loss, ...)
``meterlink/v1/{gateway}/cmd/{id}``       head-end -> agent
``meterlink/v1/{gateway}/cmd/{id}/reply`` agent -> head-end

Collectors share the readings with ``$share/collectors/meterlink/v1/+/readings``.
"""

from __future__ import annotations

from .errors import DecodeError
from .record import check_id

__all__ = [
    "PREFIX",
    "SHARED_READINGS",
    "ack_topic",
    "events_topic",
    "parse_topic",
    "readings_topic",
    "shared_subscription",
    "status_topic",
]

PREFIX = "meterlink/v1"
SHARED_READINGS = f"$share/collectors/{PREFIX}/+/readings"


def shared_subscription(group: str = "collectors", kind: str = "readings") -> str:
    return f"$share/{group}/{PREFIX}/+/{kind}"


def _topic(gateway_id: str, kind: str) -> str:
    return f"{PREFIX}/{check_id('gateway', gateway_id)}/{kind}"


def readings_topic(gateway_id: str) -> str:
    return _topic(gateway_id, "readings")


def ack_topic(gateway_id: str) -> str:
    return _topic(gateway_id, "ack")


def status_topic(gateway_id: str) -> str:
    return _topic(gateway_id, "status")


def events_topic(gateway_id: str) -> str:
    return _topic(gateway_id, "events")


def parse_topic(topic: str) -> tuple[str, str]:
    """``meterlink/v1/gw-1/readings`` -> ``("gw-1", "readings")``."""
    parts = topic.split("/")
    if len(parts) < 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise DecodeError(f"topic {topic!r} is not under {PREFIX}/")
    return parts[2], "/".join(parts[3:])
