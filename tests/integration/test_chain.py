"""The whole chain as real processes: simulated meters -> agent -> mosquitto -> collector.

Each test reconciles at the end: every record the agent captured (sequence 1..last, gap-free)
is stored at the head-end exactly once with exactly its signed values, whatever happened on
the way (a SIGKILLed agent, a stopped broker).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.keys import load_key
from meterlink.broker import Mosquitto
from meterlink.procs import wait_for
from protocols.batch import Ack, decode_batch, encode_batch
from protocols.obis import Obis
from protocols.record import ClockSource, Quality, Record, Value, sign_record
from protocols.topics import ack_topic, readings_topic
from tests.support.fleet import GATEWAY, START, Fleet

START_MS = int(START.timestamp() * 1000)  # within the fleet clock: not future-dated

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    system = Fleet(tmp_path).setup()
    try:
        yield system
    finally:
        system.close()


def test_every_captured_record_is_stored_exactly_once(fleet: Fleet) -> None:
    fleet.start_collector()
    agent = fleet.start_agent(until_hours=fleet.virtual_hours() + 8)
    assert agent.popen.wait(timeout=120) == 0, agent.output
    records = fleet.assert_exactly_once()
    # 6 meters, 15-minute slots over 8 virtual hours (less the agent's start): >= 20 each
    assert records >= 6 * 20
    per_meter = {m["meter_id"]: m["records"] for m in fleet.agent_status()["meters"]}
    assert set(per_meter) == {m["id"] for m in fleet.meters}
    stored = {
        meter: count
        for meter, count in fleet.query("SELECT meter_id, count(*) FROM records GROUP BY meter_id")
    }
    assert stored == per_meter


def test_agent_sigkilled_mid_run_loses_and_duplicates_nothing(fleet: Fleet) -> None:
    fleet.start_collector()
    for kill_after in (15, 45, 80):
        agent = fleet.start_agent()
        wait_for(lambda n=kill_after: fleet.stored_records() >= n, 60, f"{kill_after} records")
        assert agent.kill(signal.SIGKILL) == -signal.SIGKILL
    agent = fleet.start_agent(until_hours=fleet.virtual_hours() + 3)
    assert agent.popen.wait(timeout=120) == 0, agent.output
    fleet.assert_exactly_once()


def test_broker_stopped_and_restarted_loses_nothing(fleet: Fleet) -> None:
    fleet.start_collector()
    agent = fleet.start_agent(until_hours=fleet.virtual_hours() + 10)
    wait_for(lambda: fleet.stored_records() >= 20, 60, "first records stored")
    assert fleet.broker is not None
    fleet.broker.stop()
    # the agent keeps capturing into its buffer while the broker is away
    before = fleet.agent_status()["last_seq"]
    wait_for(lambda: fleet.agent_status()["last_seq"] >= before + 30, 60, "captures offline")
    assert fleet.agent_status()["backlog"] >= 30
    fleet.broker.start()  # same port, same persistence folder
    assert agent.popen.wait(timeout=120) == 0, agent.output
    fleet.assert_exactly_once()


def _publish_and_await_ack(port: int, payload: bytes, batch_id: int) -> Ack:
    got: list[Ack] = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client, userdata, message) -> None:
        ack = Ack.from_bytes(message.payload)
        if ack.batch_id == batch_id:
            got.append(ack)
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe(ack_topic(GATEWAY), qos=1)
        assert subscribed.wait(10)
        client.publish(readings_topic(GATEWAY), payload, qos=1).wait_for_publish(10)
        assert done.wait(30), "no ack from the collector"
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0]


def _record(key: Ed25519PrivateKey, seq: int, meter: str, value: str) -> bytes:
    record = Record(
        GATEWAY, meter, seq, START_MS + seq, ClockSource.GATEWAY, Quality.NONE,
        (Value(Obis.parse("1-0:1.8.0"), Decimal(value), "kWh"),),
    )  # fmt: skip
    return sign_record(record, key).raw


def test_tampered_and_foreign_records_are_rejected_counted_and_kept(fleet: Fleet) -> None:
    fleet.start_collector()
    assert fleet.broker is not None
    gateway_key = load_key(fleet.root / "agent/state/keys").private
    meter = fleet.meters[0]["id"]
    good = _record(gateway_key, 900_001, meter, "100.5")
    tampered = bytearray(_record(gateway_key, 900_002, meter, "100.6"))
    tampered[-70] ^= 0x01  # a byte of the value, under the signature
    foreign = _record(Ed25519PrivateKey.generate(), 900_003, meter, "100.7")
    unbound = _record(gateway_key, 900_004, "em-not-bound", "1.0")
    payload = encode_batch(GATEWAY, 77, [good, bytes(tampered), foreign, unbound])
    ack = _publish_and_await_ack(fleet.broker.port, payload, 77)
    assert ack.stored == 1 and ack.rejected == 3
    # acked: the stored record and the authentic one held in quarantine (unbound meter);
    # never the two that do not verify (a forger must not make the gateway delete a record)
    assert sorted(ack.seqs()) == [900_001, 900_004]
    reasons = sorted(r for (r,) in fleet.query("SELECT reason FROM quarantine"))
    assert len(reasons) == 3
    assert sum(r == "bad signature" for r in reasons) == 1, reasons
    assert sum(r.startswith("unknown key") for r in reasons) == 1, reasons
    assert sum("not bound" in r for r in reasons) == 1, reasons
    assert fleet.query("SELECT seq FROM records") == [(900_001,)]
    assert fleet.query("SELECT value FROM readings") == [("100.5",)]
    stats = fleet.collector_stats()
    assert sum(c["rejected"] for c in stats["counters"]) == 3


def test_a_replayed_batch_is_counted_and_stores_nothing_twice(fleet: Fleet) -> None:
    fleet.start_collector()
    assert fleet.broker is not None
    # listen to what the agent really sends (a plain subscription sees every batch)
    batches: list[bytes] = []
    seen = threading.Event()
    spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    spy.on_message = lambda c, u, m: (batches.append(m.payload), seen.set())
    subscribed = threading.Event()
    spy.on_subscribe = lambda *a: subscribed.set()
    spy.connect("127.0.0.1", fleet.broker.port)
    spy.loop_start()
    try:
        spy.subscribe(readings_topic(GATEWAY), qos=1)
        assert subscribed.wait(10)
        agent = fleet.start_agent(until_hours=fleet.virtual_hours() + 3)
        assert agent.popen.wait(timeout=120) == 0, agent.output
        assert seen.wait(10)
    finally:
        spy.loop_stop()
        spy.disconnect()
    records_before = fleet.stored_records()
    readings_before = fleet.query("SELECT count(*) FROM readings")[0][0]
    replay = decode_batch(batches[0])
    ack = _publish_and_await_ack(fleet.broker.port, batches[0], replay.batch_id)
    assert ack.stored == 0
    assert ack.duplicates == len(replay.records)
    assert fleet.stored_records() == records_before
    assert fleet.query("SELECT count(*) FROM readings")[0][0] == readings_before
    dup = sum(c["duplicate_records"] for c in fleet.collector_stats()["counters"])
    assert dup >= len(replay.records)
    fleet.assert_exactly_once()


def test_broker_restart_keeps_port_and_persistence(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "b").start()
    try:
        port = broker.port
        broker.stop()
        broker.start()
        assert broker.port == port
        assert (tmp_path / "b" / "mosquitto-data").is_dir()
    finally:
        broker.stop()
