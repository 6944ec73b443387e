"""A subscriber to a gateway's events topic that survives broker restarts (persistent session)."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocols.errors import DecodeError
from protocols.status import LossEvent
from protocols.topics import events_topic

__all__ = ["EventSpy"]


class EventSpy:
    """Keeps every LossEvent published for ``gateway``; ``bad`` holds payloads that did not
    parse. QoS 1 with a persistent session: events published while the spy reconnects after a
    broker restart are queued for it by the broker."""

    def __init__(self, port: int, gateway: str) -> None:
        self.events: list[LossEvent] = []
        self.bad: list[bytes] = []
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"events-spy-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        topic = events_topic(gateway)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("events spy: no SUBACK within 10 s")

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            try:
                self.events.append(LossEvent.from_bytes(bytes(message.payload)))
            except DecodeError:
                self.bad.append(bytes(message.payload))

    def dropped_seqs(self) -> set[int]:
        with self._lock:
            return {
                s
                for e in self.events
                if e.kind == "dropped"
                for lo, hi in e.ranges
                for s in range(lo, hi + 1)
            }

    def refused(self) -> int:
        with self._lock:
            return max((e.total for e in self.events if e.kind == "refused"), default=0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
