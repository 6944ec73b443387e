"""Uplink against a real mosquitto and a fake head-end: delete only after the head-end's ack."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.buffer import Buffer
from agent.config import MqttConfig
from agent.keys import GatewayKey, create_key
from agent.uplink import Uplink
from meterlink.notify import NotifySocket
from protocols.status import GatewayStatus
from protocols.topics import status_topic
from tests.agent._headend import FakeHeadEnd
from tests.agent._helpers import capture
from tests.support.procs import Mosquitto, Proc

pytestmark = pytest.mark.integration

GW = "gw-up-01"


@pytest.fixture
def key(tmp_path: Path) -> GatewayKey:
    return create_key(tmp_path / "keys")


async def until(condition: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Poll a condition with a deadline (the event is observable, its timing is not)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def mqtt_config(port: int, **kw) -> MqttConfig:
    base = {"port": port, "batch_max_records": 50, "max_inflight": 4, "ack_timeout_ns": 30 * 10**9}
    base.update(kw)
    return MqttConfig(**base)


async def start(tmp_path: Path, key: GatewayKey, cfg: MqttConfig) -> tuple[Buffer, Uplink]:
    buffer = await Buffer.open(tmp_path / "buffer.sqlite", GW, key.private)
    uplink = Uplink(GW, cfg, buffer)
    await uplink.start()
    return buffer, uplink


async def fill(buffer: Buffer, uplink: Uplink, n: int, start_ms: int = 1_700_000_000_000) -> None:
    await buffer.append([capture(f"m{i % 4}", start_ms + i) for i in range(n)])
    uplink.wake()


def test_records_are_deleted_only_after_the_head_end_ack(tmp_path, key, mosquitto: Mosquitto):
    headend = FakeHeadEnd(mosquitto.port, key.public)
    headend.acking = False

    async def scenario() -> None:
        # 4 batches of 125 in flight: all 500 records can be out while none is acked
        # (the head-end acks nothing at first: the batches come back after ack_timeout)
        cfg = mqtt_config(mosquitto.port, batch_max_records=125, ack_timeout_ns=2 * 10**9)
        buffer, uplink = await start(tmp_path, key, cfg)
        try:
            await fill(buffer, uplink, 500)
            await until(lambda: len(headend.seqs()) == 500, what="all records at the head-end")
            # every batch was PUBACKed by the broker, yet nothing left the buffer
            await until(lambda: all(b.pubacked for b in uplink.inflight.values()), what="PUBACKs")
            assert uplink.counters.batches_published > 0
            assert await buffer.backlog() == 500 and len(await buffer.seqs()) == 500
            headend.acking = True
            await until(lambda: buffer.count == 0, what="buffer drained after acks")
            assert await buffer.seqs() == []
            assert uplink.counters.records_acked == 500
        finally:
            await uplink.stop()
            await buffer.close()

    try:
        asyncio.run(scenario())
    finally:
        headend.close()
    assert headend.seqs() == set(range(1, 501))
    assert headend.bad_signatures == 0


def test_a_batch_not_acked_in_time_is_resent(tmp_path, key, mosquitto: Mosquitto):
    headend = FakeHeadEnd(mosquitto.port, key.public)
    headend.skip_first_delivery = True  # acks only the second delivery of each batch

    async def scenario() -> None:
        cfg = mqtt_config(mosquitto.port, ack_timeout_ns=300 * 10**6)
        buffer, uplink = await start(tmp_path, key, cfg)
        try:
            await fill(buffer, uplink, 120)
            await until(lambda: buffer.count == 0, what="buffer drained after resends")
            assert uplink.counters.batches_resent >= 3
        finally:
            await uplink.stop()
            await buffer.close()

    try:
        asyncio.run(scenario())
    finally:
        headend.close()
    assert headend.seqs() == set(range(1, 121))
    assert headend.duplicates() >= 120  # each record went twice, the same signed bytes


def test_broker_stop_and_restart_loses_nothing(tmp_path, key, mosquitto: Mosquitto):
    headend = FakeHeadEnd(mosquitto.port, key.public)

    async def scenario() -> None:
        buffer, uplink = await start(tmp_path, key, mqtt_config(mosquitto.port))
        try:
            await fill(buffer, uplink, 200)
            await until(lambda: buffer.count == 0, what="first records acked")
            await asyncio.to_thread(mosquitto.stop)
            await until(lambda: not uplink.connected, what="uplink sees the broker gone")
            # captures continue while the broker is down: they wait in the buffer
            await fill(buffer, uplink, 300, start_ms=1_700_000_100_000)
            assert buffer.count == 300
            await asyncio.to_thread(mosquitto.start)
            await until(lambda: buffer.count == 0, timeout=60, what="backlog drained")
        finally:
            await uplink.stop()
            await buffer.close()

    try:
        asyncio.run(scenario())
    finally:
        headend.close()
    assert headend.seqs() == set(range(1, 501))


def test_status_online_retained_and_offline_on_shutdown(tmp_path, key, mosquitto: Mosquitto):
    seen: list[GatewayStatus] = []
    got = threading.Event()

    def on_message(client, userdata, message) -> None:
        seen.append(GatewayStatus.from_bytes(message.payload))
        got.set()

    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = on_message
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.loop_start()
    watcher.subscribe(status_topic(GW), qos=1)

    async def scenario() -> None:
        buffer, uplink = await start(tmp_path, key, mqtt_config(mosquitto.port))
        await fill(buffer, uplink, 5)
        await until(lambda: any(s.state == "online" for s in seen), what="online status")
        await uplink.stop()
        await buffer.close()
        await until(lambda: seen[-1].state == "offline", what="offline status")

    try:
        asyncio.run(scenario())
    finally:
        watcher.disconnect()
        watcher.loop_stop()
    assert seen[-1].reason == "shutdown" and seen[-1].gateway_id == GW


def test_a_batch_the_broker_refuses_is_counted_and_kept(tmp_path: Path, key: GatewayKey) -> None:
    # The broker's ACL lets the gateway publish its status but not its readings: mosquitto
    # answers the readings with PUBACK reason 0x87 (not authorized), which paho reports
    # through on_publish like a success. The records must stay in the buffer.
    acl = f"topic readwrite meterlink/v1/{GW}/status\ntopic read meterlink/v1/{GW}/ack\n"
    broker = Mosquitto(tmp_path / "broker", acl=acl).start()

    async def scenario() -> tuple[int, int, int]:
        buffer, uplink = await start(tmp_path, key, mqtt_config(broker.port))
        try:
            await fill(buffer, uplink, 10)
            await until(lambda: uplink.counters.batches_refused >= 1, what="a refused PUBACK")
            return uplink.counters.batches_refused, uplink.counters.records_acked, buffer.count
        finally:
            await uplink.stop()
            await buffer.close()

    try:
        refused, acked, held = asyncio.run(scenario())
    finally:
        broker.stop()
    assert refused >= 1
    assert acked == 0
    assert held == 10


def agent_config(tmp_path: Path, broker_port: int) -> Path:
    """An agent with one meter nobody answers for: enough to watch its MQTT side."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[gateway]\nid = "{GW}"\nstate_dir = "state"\n\n[mqtt]\nport = {broker_port}\n\n'
        '[[meters]]\nid = "m1"\nhost = "127.0.0.1"\nport = 1\nunit = 1\n'
        'profile = "eastron_sdm630"\ninterval = "1h"\n'
    )
    return config


def keys_init(config: Path) -> None:
    init = subprocess.run(
        [sys.executable, "-m", "agent", "keys", "init", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr


def test_last_will_marks_a_killed_gateway_offline(tmp_path: Path, key: GatewayKey) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    statuses: list[GatewayStatus] = []
    seen = {"online": threading.Event(), "offline": threading.Event()}

    def on_message(client, userdata, message) -> None:
        status = GatewayStatus.from_bytes(message.payload)
        statuses.append(status)
        seen[status.state].set()

    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = on_message
    watcher.connect("127.0.0.1", broker.port)
    watcher.loop_start()
    watcher.subscribe(status_topic(GW), qos=1)
    config = agent_config(tmp_path, broker.port)
    agent = None
    try:
        keys_init(config)
        agent = Proc.python("agent", "run", str(config), name="agent")
        assert seen["online"].wait(15), f"no online status: {agent.output}"
        agent.kill()  # SIGKILL: no clean disconnect, so the broker publishes the will
        assert seen["offline"].wait(15), f"no offline status after SIGKILL: {statuses}"
        assert (statuses[-1].state, statuses[-1].reason) == ("offline", "connection lost")
    finally:
        if agent is not None:
            agent.stop()
        watcher.loop_stop()
        watcher.disconnect()
        broker.stop()


def test_agent_tells_systemd_ready_feeds_the_watchdog_and_says_stopping(
    tmp_path: Path, key: GatewayKey
) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    config = agent_config(tmp_path, broker.port)
    notify = NotifySocket()
    agent = None
    try:
        keys_init(config)
        agent = Proc(
            [sys.executable, "-m", "agent", "run", str(config)],
            "agent",
            env={**notify.env, "WATCHDOG_USEC": "200000"},  # a ping every 0.1 s
        )
        notify.wait_for("READY", timeout=30, alive=agent.alive)
        for _ in range(3):
            notify.messages.clear()
            notify.wait_for("WATCHDOG", timeout=5, alive=agent.alive)
        assert agent.stop() == 0
        notify.wait_for("STOPPING", timeout=5)
    finally:
        if agent is not None:
            agent.stop()
        notify.close()
        broker.stop()


def test_records_the_head_end_did_not_accept_stay_and_are_not_resent_in_a_loop(
    tmp_path: Path, key: GatewayKey, mosquitto: Mosquitto
) -> None:
    headend = FakeHeadEnd(mosquitto.port, key.public)
    headend.refuse = {5, 6}  # acked without these two, as the collector does for forgeries

    async def scenario() -> tuple[int, int]:
        buffer, uplink = await start(tmp_path, key, mqtt_config(mosquitto.port))
        try:
            await fill(buffer, uplink, 20)
            await until(lambda: buffer.count == 2, what="all but the refused acked")
            assert sorted(await buffer.seqs()) == [5, 6]
            # more live records flow through many publisher rounds; 5 and 6 wait their turn
            await fill(buffer, uplink, 10, start_ms=1_700_000_100_000)
            await until(lambda: buffer.count == 2, what="the new records acked")
            return headend.received[5], headend.received[6]
        finally:
            await uplink.stop()
            await buffer.close()

    async def after_enrolment() -> int:
        # e.g. the gateway was enrolled meanwhile: a restarted uplink offers them again
        buffer, uplink = await start(tmp_path, key, mqtt_config(mosquitto.port))
        try:
            await until(lambda: buffer.count == 0, what="the held records delivered")
            return buffer.count
        finally:
            await uplink.stop()
            await buffer.close()

    try:
        assert asyncio.run(scenario()) == (1, 1)
        headend.refuse.clear()
        assert asyncio.run(after_enrolment()) == 0
    finally:
        headend.close()
    assert headend.seqs() == set(range(1, 31))
