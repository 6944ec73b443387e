"""The collector as a real process against a real mosquitto: batch in, ack out, SIGTERM."""

from __future__ import annotations

import socket
import sqlite3
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.cli import main as collector_main
from protocols.batch import Ack, encode_batch
from protocols.status import GatewayStatus
from protocols.topics import ack_topic, readings_topic, status_topic
from tests.support.procs import Mosquitto, Proc, wait_for

from ._fixtures import T0, record, write_public_key

pytestmark = pytest.mark.integration
GW = "gw-int-1"


class NotifySocket:
    """A stand-in for systemd's notify socket: collects the datagrams the service sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(data.decode().split("\n"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.setblocking(False)
        while True:  # what arrived after the reader's last look
            try:
                self.messages.extend(self.sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                break
        self.sock.close()


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(
        f"""
[collector]
database = "collector.sqlite"
id = "collector-test"
stats_interval = 1
[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = 10
"""
    )
    return path


def test_batch_is_committed_then_acked_and_sigterm_exits_zero(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    key = Ed25519PrivateKey.generate()
    config = write_config(tmp_path, mosquitto.port)
    pem = write_public_key(key, tmp_path / "gw.pem")
    assert (
        collector_main(
            [
                "enrol",
                GW,
                "--public-key",
                str(pem),
                "--meters",
                "em-sdm-01",
                "--config",
                str(config),
            ]
        )
        == 0
    )

    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    collector = Proc([sys.executable, "-m", "collector", "run", str(config)], "collector", env=env)
    try:
        collector.wait_line(lambda line: "ready: subscribed" in line, timeout=30)
        wait_for(lambda: "READY=1" in notify.messages, 10, "READY=1 to systemd")
        wait_for(lambda: notify.messages.count("WATCHDOG=1") >= 2, 10, "WATCHDOG=1 pings")

        acks: list[Ack] = []
        got_ack = threading.Event()
        subscribed = threading.Event()
        gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=GW, protocol=mqtt.MQTTv5)

        def on_message(client, userdata, msg) -> None:
            acks.append(Ack.from_bytes(msg.payload))
            got_ack.set()

        gw.on_message = on_message
        gw.on_subscribe = lambda *a: subscribed.set()
        gw.connect("127.0.0.1", mosquitto.port)
        gw.loop_start()
        try:
            gw.subscribe(ack_topic(GW), qos=1)
            assert subscribed.wait(10)
            status = GatewayStatus(GW, "online", backlog=3, last_seq=3)
            gw.publish(status_topic(GW), status.to_bytes(), qos=1, retain=True)
            raws = [record(key, GW, "em-sdm-01", seq, T0 + seq * 60_000).raw for seq in (1, 2, 3)]
            gw.publish(readings_topic(GW), encode_batch(GW, 42, raws), qos=1)
            assert got_ack.wait(30), collector.output[-2000:]
        finally:
            gw.loop_stop()
            gw.disconnect()

        assert acks[0].batch_id == 42 and acks[0].handled == ((1, 3),) and acks[0].stored == 3
        db = tmp_path / "collector.sqlite"
        with sqlite3.connect(db) as conn:  # the ack came after the commit: rows are there
            assert conn.execute("SELECT COUNT(*) FROM records").fetchone() == (3,)
            assert conn.execute("SELECT COUNT(*) FROM readings").fetchone() == (6,)

        def status_stored():
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT state, backlog FROM gateway_status").fetchall()

        assert wait_for(status_stored, 20, "gateway status row") == [("online", 3)]
        collector.wait_line(lambda line: "rates per s:" in line, timeout=20)
    finally:
        code = collector.stop()
        notify.close()
    assert code == 0, collector.output[-3000:]
    assert "stopping: finishing the transaction in progress" in collector.output
    assert "STOPPING=1" in notify.messages


def test_run_with_a_broken_config_exits_2_naming_file_and_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[collector]\nid = "c1"\n[mqtt]\nport = "x"\n')
    assert collector_main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line 4" in err and "mqtt.port" in err


def test_collector_reconnects_after_a_broker_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    key = Ed25519PrivateKey.generate()
    config = write_config(tmp_path, mosquitto.port)
    pem = write_public_key(key, tmp_path / "gw.pem")
    enrol = ["enrol", GW, "--public-key", str(pem), "--meters", "em-sdm-01"]
    assert collector_main([*enrol, "--config", str(config)]) == 0
    collector = Proc([sys.executable, "-m", "collector", "run", str(config)], "collector")
    try:
        collector.wait_line(lambda line: "ready: subscribed" in line, timeout=30)
        mosquitto.stop()
        collector.wait_line(lambda line: "MQTT disconnected" in line, timeout=30)
        mosquitto.start()  # same port, same persistence directory
        collector.wait_line(lambda line: "session present: True" in line, timeout=60)
        # subscribed again: a batch published before that could find no subscriber (the
        # agent would resend it after its ack timeout; this test's gateway does not)
        collector.wait_line(lambda line: "MQTT subscribed (connection 2)" in line, timeout=30)

        got_ack = threading.Event()
        subscribed = threading.Event()
        gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=GW, protocol=mqtt.MQTTv5)
        gw.on_message = lambda *a: got_ack.set()
        gw.on_subscribe = lambda *a: subscribed.set()
        gw.connect("127.0.0.1", mosquitto.port)
        gw.loop_start()
        try:
            gw.subscribe(ack_topic(GW), qos=1)
            assert subscribed.wait(10)
            raw = record(key, GW, "em-sdm-01", 1, T0).raw
            gw.publish(readings_topic(GW), encode_batch(GW, 1, [raw]), qos=1)
            assert got_ack.wait(30), collector.output[-2000:]
        finally:
            gw.loop_stop()
            gw.disconnect()
    finally:
        code = collector.stop()
    assert code == 0
