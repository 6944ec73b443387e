"""A tiny fake head-end for agent tests: subscribes, decodes, verifies, and acks on demand."""

from __future__ import annotations

import threading
from collections import Counter

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocols.batch import Ack, decode_batch, seq_ranges
from protocols.topics import ack_topic


class FakeHeadEnd:
    """Stores seqs as it receives them; ``ack`` decides per batch whether to answer."""

    def __init__(self, port: int, public_key: Ed25519PublicKey, client_id: str = "headend") -> None:
        self.public_key = public_key
        self.lock = threading.Lock()
        self.received: Counter[int] = Counter()  # seq -> times received
        self.stored: dict[int, bytes] = {}
        self.batches: list[int] = []
        self.bad_signatures = 0
        self.acking = True
        self.skip_first_delivery = False
        self.refuse: set[int] = set()  # seqs acked as rejected (not handled), like a forgery
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "head-end did not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe("meterlink/v1/+/readings", qos=1)

    def _on_message(self, client, userdata, message) -> None:
        batch = decode_batch(message.payload)
        seqs = []
        with self.lock:
            self.batches.append(batch.batch_id)
            first_time = all(self.received[r.record.seq] == 0 for r in batch.records)
            for signed in batch.records:
                if not signed.verify(self.public_key):
                    self.bad_signatures += 1
                    continue
                seq = signed.record.seq
                self.received[seq] += 1
                if seq in self.refuse:
                    continue
                self.stored.setdefault(seq, signed.raw)
                seqs.append(seq)
            ack = self.acking and not (self.skip_first_delivery and first_time)
        if ack and seqs:
            reply = Ack(batch.gateway_id, batch.batch_id, tuple(seq_ranges(seqs)), stored=len(seqs))
            client.publish(ack_topic(batch.gateway_id), reply.to_bytes(), qos=1)

    def seqs(self) -> set[int]:
        with self.lock:
            return set(self.stored)

    def duplicates(self) -> int:
        with self.lock:
            return sum(n - 1 for n in self.received.values())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
