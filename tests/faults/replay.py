"""Fault 8: the same batch delivered twice, and replayed hours (virtual) later.

A spy subscribed to the agent's readings topic keeps every batch the agent really sent; each run
republishes a random one of them twice at once, and another again after the agent has run on for
some virtual hours. Every replayed record must be counted as a duplicate and stored once.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from meterlink.procs import wait_for
from protocols.batch import decode_batch
from protocols.topics import readings_topic

from .common import check_run, drain, fleet_for
from .reconcile import Tally


def _duplicates(fleet) -> int:  # type: ignore[no-untyped-def]
    return fleet.query("SELECT coalesce(sum(duplicate_records), 0) FROM counters")[0][0]


def replay_batch(root: Path, rng: random.Random, runs: int) -> Tally:
    fleet = fleet_for(root)
    total = Tally()
    assert fleet.broker is not None
    batches: list[bytes] = []
    subscribed = threading.Event()
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda c, u, m: batches.append(bytes(m.payload))
    spy.on_subscribe = lambda *a: subscribed.set()
    spy.connect("127.0.0.1", fleet.broker.port)
    spy.loop_start()
    try:
        spy.subscribe(readings_topic(fleet.gateway), qos=1)
        assert subscribed.wait(10)
        fleet.start_collector()
        expected = 0
        for _ in range(runs):
            drain(fleet, hours=rng.uniform(1, 3))
            wait_for(lambda: batches, 10, "a batch seen by the spy")
            for payload in (rng.choice(batches),) * 2 + (rng.choice(batches),):
                expected += len(decode_batch(payload).records)
                spy.publish(readings_topic(fleet.gateway), payload, qos=1).wait_for_publish(10)
            wait_for(lambda e=expected: _duplicates(fleet) >= e, 30, "replays counted")
            drain(fleet, hours=rng.uniform(2, 4))  # hours later: replay an old batch again
            payload = batches[0]
            expected += len(decode_batch(payload).records)
            spy.publish(readings_topic(fleet.gateway), payload, qos=1).wait_for_publish(10)
            wait_for(lambda e=expected: _duplicates(fleet) >= e, 30, "late replay counted")
            check_run(fleet, total)
        total.notes.append(f"replayed records {expected}, duplicates counted {_duplicates(fleet)}")
    finally:
        spy.loop_stop()
        spy.disconnect()
        fleet.close()
    return total
