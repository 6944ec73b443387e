"""Two collector processes on one broker (one shared-subscription group) and one PostgreSQL
database (issue 9): one gateway's batches are split between them by the broker, every record
is stored once, and the fleet view that either collector serves counts every record; a
command sent through one collector and answered twice (a resent reply, which the broker
hands to the other collector too) is stored once, with its reply, as both collectors see it.

Real mosquitto, real PostgreSQL, real ``meterlink collector run`` processes; the gateway is
played by this test with the real protocol code (signed records, batches, statuses, replies).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.cli import main as collector_main
from meterlink.broker import Mosquitto
from meterlink.notify import NotifySocket
from meterlink.postgres import PostgresCluster
from meterlink.procs import Proc, free_port, wait_for
from protocols.batch import Ack, encode_batch
from protocols.commands import Command, Reply, command_subscription, reply_topic
from protocols.status import GatewayStatus
from protocols.topics import ack_topic, readings_topic, status_topic
from tests.support.loopback import meterlink_proc

from ._fixtures import T0, record, write_public_key
from .test_api_fleet import OP_TOKEN, READ_TOKEN, Http, prometheus_values, write_users

pytestmark = pytest.mark.integration

GW = "gw-multi"
METERS = ("em-m1", "em-m2")
BATCHES = 40  # of RECORDS each, seqs 1..BATCHES*RECORDS
RECORDS = 5
RESENT = 10  # the first RESENT batches are sent again (a gateway that missed their acks)


@dataclass
class Collector:
    name: str
    config: Path
    http: Http
    proc: Proc | None = None


@dataclass
class Rig:
    root: Path
    broker: Mosquitto
    pg_url: str
    key: Ed25519PrivateKey
    collectors: list[Collector] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    sockets: list[NotifySocket] = field(default_factory=list)

    def sql(self, text: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(text, params).fetchall()]

    def start(self, name: str, config: Path) -> Proc:
        """``meterlink collector run CONFIG``, once it told its READY."""
        sock = NotifySocket()
        self.sockets.append(sock)
        proc = meterlink_proc(
            "collector", "run", str(config), name=name, cwd=config.parent, env=sock.env,
            log_path=self.root / f"{name}.log",
        )  # fmt: skip
        self.procs.append(proc)
        sock.wait_for("READY", timeout=30, alive=proc.alive)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=20)
        for sock in self.sockets:
            sock.close()


def _config(
    root: Path, name: str, broker_port: int, pg_url: str, http_port: int, client_id: str = ""
) -> Path:
    """``root/NAME/collector.toml``: client id ``client_id`` (default NAME); [http] when
    ``http_port``; the fleet flushed every 200 ms; the command key shared in ``root``."""
    folder = root / name
    folder.mkdir()
    path = folder / "collector.toml"
    text = (
        f'[collector]\ndatabase = "{pg_url}"\nid = "{client_id or name}"\nbatch_coalesce = 4\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\ngroup = "collectors"\n\n'
        '[fleet]\nflush_interval = "200ms"\n\n'
        '[commands]\nkey = "../command.key"\n'
    )
    if http_port:
        write_users(folder / "users.toml")
        text += f'\n[http]\nport = {http_port}\nusers = "users.toml"\n'
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresCluster) -> Iterator[Rig]:
    """One broker, one database and two collectors for the module's tests (they touch
    different rows: batches, a command, a client id)."""
    root = tmp_path_factory.mktemp("multi")
    pg_url = postgres.create_database("multi_collector")
    broker = Mosquitto(root / "broker").start()
    key = Ed25519PrivateKey.generate()
    rig = Rig(root, broker, pg_url, key)
    try:
        for name in ("collector-a", "collector-b"):
            port = free_port()
            config = _config(root, name, broker.port, pg_url, port)
            rig.collectors.append(Collector(name, config, Http(port)))
        first = str(rig.collectors[0].config)
        pem = write_public_key(key, root / "gw.pem")
        enrol = ["enrol", GW, "--public-key", str(pem), "--meters", ",".join(METERS)]
        assert collector_main([*enrol, "--config", first]) == 0
        keys = meterlink_proc("collector", "keys", "init", "--config", first, name="keys")
        assert keys.popen.wait(timeout=60) == 0, keys.output
        for c in rig.collectors:
            c.proc = rig.start(c.name, c.config)
        yield rig
    finally:
        rig.stop()
        broker.stop()


class Gateway:
    """The gateway's side of MQTT, played by the test: publishes, collects acks and commands."""

    def __init__(self, port: int) -> None:
        self.acks: list[Ack] = []
        self.commands: list[Command] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Semaphore(0)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=GW, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.release()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for topic in (ack_topic(GW), command_subscription(GW)):
            self.client.subscribe(topic, qos=1)
            assert self._subscribed.acquire(timeout=10), f"subscription to {topic}"

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            if msg.topic == ack_topic(GW):
                self.acks.append(Ack.from_bytes(msg.payload))
            elif not msg.topic.endswith("/reply"):
                self.commands.append(Command.parse(msg.payload))

    def acked_batches(self) -> set[int]:
        with self._lock:
            return {a.batch_id for a in self.acks}

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _batch(key: Ed25519PrivateKey, batch_id: int) -> bytes:
    first = (batch_id - 1) * RECORDS + 1
    raws = [
        record(key, GW, METERS[seq % 2], seq, T0 + seq * 60_000).raw
        for seq in range(first, first + RECORDS)
    ]
    return encode_batch(GW, batch_id, raws)


def _stored_by(c: Collector) -> float:
    """Records this collector process stored (its own Prometheus counter)."""
    _status, _headers, body = c.http.call("/metrics")
    return float(prometheus_values(body.decode())["meterlink_ingest_records_total"])


def test_two_collectors_split_one_gateways_batches_store_each_record_once_and_both_fleet_views_count_all(  # noqa: E501
    rig: Rig,
) -> None:
    total = BATCHES * RECORDS
    gw = Gateway(rig.broker.port)
    try:
        status = GatewayStatus(GW, "online", at_ms=T0, backlog=total, last_seq=total)
        gw.publish(status_topic(GW), status.to_bytes(), retain=True)
        for batch_id in range(1, BATCHES + 1):
            gw.publish(readings_topic(GW), _batch(rig.key, batch_id))
        wait_for(lambda: gw.acked_batches() == set(range(1, BATCHES + 1)), 60, "every ack")
        for batch_id in range(1, RESENT + 1):  # acks lost: the gateway sends them again
            gw.publish(readings_topic(GW), _batch(rig.key, batch_id))
        wait_for(lambda: len(gw.acks) >= BATCHES + RESENT, 60, "the resent batches' acks")
        status = GatewayStatus(GW, "online", at_ms=T0 + 1000, backlog=0, last_seq=total)
        gw.publish(status_topic(GW), status.to_bytes(), retain=True)
    finally:
        gw.close()

    # every record once in the one database
    assert rig.sql("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM records") == [
        (total, total, 1, total)
    ]
    assert rig.sql("SELECT count(*) FROM readings") == [(total * 2,)]
    # both collectors took part: the broker spread the batches between them
    stored = [_stored_by(c) for c in rig.collectors]
    assert sum(stored) == total and all(n > 0 for n in stored), stored
    # the status: stored once per gateway, the newest one
    wait_for(
        lambda: rig.sql("SELECT backlog, at_ms FROM gateway_status") == [(0, T0 + 1000)],
        20,
        "the newest status stored",
    )

    def fleet_view(c: Collector) -> dict:
        return c.http.json(f"/api/gateways/{GW}", token=READ_TOKEN)

    def counts(view: dict) -> tuple:
        return (view["records"], view["batches"], view["duplicates"], view["missing_records"],
                view["last_seq"], view["backlog"], view["state"])  # fmt: skip

    expected = (total, BATCHES + RESENT, RESENT * RECORDS, 0, total, 0, "online")
    for c in rig.collectors:  # each collector's view: the whole gateway, not its share
        wait_for(lambda c=c: counts(fleet_view(c)) == expected, 30, f"{c.name}'s fleet view")
        for meter in METERS:
            view = c.http.json(f"/api/meters/{meter}", token=READ_TOKEN)
            assert (view["captures"], view["good_captures"]) == (total // 2, total // 2)
            assert view["last_captured_ms"] == T0 + (total - (meter == METERS[1])) * 60_000
    # and the stored documents, as a collector that starts now would load them
    [(doc,)] = rig.sql("SELECT doc FROM fleet_gateways WHERE gateway_id = %s", (GW,))
    doc = doc if isinstance(doc, dict) else json.loads(doc)
    assert (doc["records"], doc["batches"], doc["duplicates"]) == expected[:3]
    assert doc["seen"] == [[1, total]]
    meters = rig.sql("SELECT doc FROM fleet_meters ORDER BY meter_id")
    assert [json.loads(d)["records"] if isinstance(d, str) else d["records"]
            for (d,) in meters] == [total // 2, total // 2]  # fmt: skip


def test_a_command_sent_through_one_collector_is_stored_once_with_its_reply(rig: Rig) -> None:
    a, b = rig.collectors
    gw = Gateway(rig.broker.port)
    try:
        # the command goes out through collector A's API without waiting for the reply
        status, _h, body = a.http.call(
            f"/api/gateways/{GW}/commands",
            token=OP_TOKEN,
            method="POST",
            data=json.dumps({"action": "ping", "wait_s": 0}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert status == 202, body
        command_id = json.loads(body)["id"]
        wait_for(lambda: len(gw.commands) == 1, 20, "the command at the gateway")
        assert gw.commands[0].command_id == command_id
        reply = Reply(GW, command_id, "ok", "pong", {}, T0).sign(rig.key)
        # sent twice (the gateway did not see the first PUBACK): the shared reply
        # subscription hands one copy to each collector
        for _ in range(2):
            gw.publish(reply_topic(GW, command_id), reply)
    finally:
        gw.close()

    def replied(c: Collector) -> dict | None:
        doc = c.http.json(f"/api/commands/{command_id}", token=READ_TOKEN)
        return doc["reply"]

    for c in (b, a):
        wait_for(lambda c=c: replied(c) is not None, 20, f"the reply, as {c.name} shows it")
        assert replied(c)["status"] == "ok" and replied(c)["message"] == "pong"
    rows = rig.sql("SELECT reply_status, reply_raw FROM commands WHERE id = %s", (command_id,))
    assert rows == [("ok", reply)]
    # one collector stored it; the other found it stored (a duplicate, not logged as stored)
    logs = [c.proc.output for c in rig.collectors if c.proc is not None]
    line = f"reply of gateway {GW} to command {command_id}: ok"
    assert sum(len(re.findall(line, text)) for text in logs) == 1, logs


def test_a_second_collector_with_the_same_client_id_is_refused_or_explained(rig: Rig) -> None:
    a = rig.collectors[0]
    assert a.proc is not None
    # on the same database: refused at start, naming the id
    config = _config(rig.root, "twin-pg", rig.broker.port, rig.pg_url, 0, a.name)
    twin = meterlink_proc("collector", "run", str(config), name="twin-pg", cwd=config.parent)
    try:
        assert twin.popen.wait(timeout=60) == 2, twin.output
    finally:
        twin.stop()
    assert f"[collector] id '{a.name}' is in use by another collector" in twin.output
    # elsewhere (another database): the broker throws one of them off at every connect,
    # which both logs explain
    config = _config(rig.root, "twin-sqlite", rig.broker.port, rig.pg_url, 0, a.name)
    config.write_text(config.read_text().replace(rig.pg_url, "twin.sqlite"))
    twin = rig.start("twin-sqlite", config)
    try:
        wanted = f"Is another process connected with this collector's client id '{a.name}'?"
        wait_for(lambda: wanted in a.proc.output + twin.output, 30, "the takeover explained")
    finally:
        twin.stop(timeout=20)
    assert a.proc.alive()
