"""The shipped production broker config (config/mosquitto/) run by a real mosquitto with
certificates from the shipped script: TLS with client certificates only, and an ACL under
which a gateway publishes only as itself and reads only its own acks and commands. Then the
agent and the collector themselves over that broker (their TLS options), a reading stored
and a command answered."""

from __future__ import annotations

import os
import queue
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from meterlink.broker import mosquitto_binary
from meterlink.notify import NotifySocket
from meterlink.procs import Proc, free_port, wait_for, wait_port

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "mosquitto"

pytestmark = pytest.mark.integration


@dataclass
class Broker:
    port: int
    certs: Path
    proc: Proc


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("tlsbroker")
    certs = root / "certs"
    made = Proc(
        [sys.executable, str(SHIPPED / "make_certs.py"), str(certs), "--client", "collector",
         "--client", "gw-a", "--client", "gw-b", "--client", "gw-tls"],
        "make_certs",
    )  # fmt: skip
    assert made.popen.wait(timeout=60) == 0, made.output
    made.stop()
    (certs / "acl.conf").write_text((SHIPPED / "acl.conf").read_text())
    port = free_port()
    data = root / "data"
    data.mkdir()
    conf = (SHIPPED / "mosquitto.conf").read_text()
    conf = conf.replace("/etc/mosquitto/meterlink/", f"{certs}/")
    conf = conf.replace("/var/lib/mosquitto/", f"{data}/")
    conf = conf.replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    conf = conf.replace("log_dest syslog", "log_dest stdout")
    if os.geteuid() == 0:
        conf += "user root\n"
    (root / "mosquitto.conf").write_text(conf)
    proc = Proc([mosquitto_binary(), "-c", str(root / "mosquitto.conf")], "mosquitto")
    try:
        wait_port(port)
        yield Broker(port, certs, proc)
    finally:
        proc.stop()


class Client:
    """A paho client over TLS as ``cn`` (None: no client certificate)."""

    def __init__(self, broker: Broker, cn: str | None, client_id: str | None = None) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.events: queue.Queue[tuple[str, object]] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{cn}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        certs = broker.certs
        self.client.tls_set(
            ca_certs=str(certs / "ca.crt"),
            certfile=str(certs / f"{cn}.crt") if cn else None,
            keyfile=str(certs / f"{cn}.key") if cn else None,
        )
        c = self.client
        c.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        c.on_connect = lambda _c, _u, _f, rc, _p: self.events.put(("connect", rc.value))
        c.on_subscribe = lambda _c, _u, _m, rcs, _p: self.events.put(
            ("subscribe", [rc.value for rc in rcs])
        )
        c.on_publish = lambda _c, _u, mid, rc, _p: self.events.put(("publish", (mid, rc.value)))
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        kind, code = self.events.get(timeout=10)
        assert (kind, code) == ("connect", 0)

    def subscribe(self, topic: str) -> list[int]:
        self.client.subscribe(topic, qos=1)
        kind, codes = self.events.get(timeout=10)
        assert kind == "subscribe"
        return codes  # type: ignore[return-value]

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1; the PUBACK's reason code (0x87: not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        while True:
            kind, value = self.events.get(timeout=10)
            if kind == "publish" and value[0] == info.mid:  # type: ignore[index]
                return value[1]  # type: ignore[index]

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[dict[str, Client]]:
    made = {cn: Client(broker, cn) for cn in ("collector", "gw-a", "gw-b")}
    try:
        yield made
    finally:
        for c in made.values():
            c.close()


def _refused(broker: Broker, certfile: Path | None, keyfile: Path | None) -> str:
    """Connect over TLS with these files: how the broker refused (it must)."""
    events: queue.Queue[str] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-refused",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    client.tls_set(
        ca_certs=str(broker.certs / "ca.crt"),
        certfile=str(certfile) if certfile else None,
        keyfile=str(keyfile) if keyfile else None,
    )
    client.on_connect = lambda _c, _u, _f, rc, _p: events.put(f"connack {rc}")
    client.on_disconnect = lambda _c, _u, _f, rc, _p: events.put(f"closed {rc}")
    try:
        client.connect("127.0.0.1", broker.port)
    except (ssl.SSLError, OSError) as exc:  # TLS 1.2: the handshake itself fails
        return f"handshake: {exc}"
    client.loop_start()
    try:
        # TLS 1.3: the client's handshake ends first, the broker then closes the connection
        event = events.get(timeout=15)
    finally:
        client.loop_stop()
    assert not event.startswith("connack Success"), event
    return event


def test_a_client_without_a_certificate_is_refused(broker: Broker) -> None:
    how = _refused(broker, None, None)
    assert how.startswith(("handshake", "closed")), how


def test_a_client_with_a_certificate_of_another_ca_is_refused(
    broker: Broker, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    made = Proc([sys.executable, str(SHIPPED / "make_certs.py"), str(other), "--client", "gw-a"],
                "make_certs")  # fmt: skip
    assert made.popen.wait(timeout=60) == 0
    made.stop()
    how = _refused(broker, other / "gw-a.crt", other / "gw-a.key")
    assert how.startswith(("handshake", "closed")), how


def test_a_gateway_cannot_publish_as_another(clients: dict[str, Client]) -> None:
    collector, gw_a = clients["collector"], clients["gw-a"]
    assert collector.subscribe("meterlink/v1/+/readings") == [1]
    assert gw_a.publish("meterlink/v1/gw-b/readings", b"forged") == 0x87  # not authorized
    assert gw_a.publish("meterlink/v1/gw-b/status", b"forged") == 0x87
    assert gw_a.publish("meterlink/v1/gw-a/cmd/x1", b"self-command") == 0x87
    assert gw_a.publish("meterlink/v1/gw-a/readings", b"mine") == 0
    # messages between one publisher and one subscriber keep their order: the first one the
    # collector gets is gw-a's own, so the forged ones never reached it
    assert collector.next_message() == ("meterlink/v1/gw-a/readings", b"mine")


def test_a_gateway_cannot_read_another_gateways_commands(clients: dict[str, Client]) -> None:
    collector, gw_a, gw_b = clients["collector"], clients["gw-a"], clients["gw-b"]
    assert gw_b.subscribe("meterlink/v1/gw-b/cmd/+") == [1]
    # gw-a asks for gw-b's commands and acks, and for everything: mosquitto 2.0 grants the
    # SUBSCRIBE but checks every message against the ACL before delivering it
    for topic in ("meterlink/v1/gw-b/cmd/+", "meterlink/v1/gw-b/ack", "meterlink/v1/#"):
        gw_a.subscribe(topic)
    assert collector.publish("meterlink/v1/gw-b/cmd/c1", b"for b") == 0
    assert collector.publish("meterlink/v1/gw-b/ack", b"ack b") == 0
    assert collector.publish("meterlink/v1/gw-a/cmd/c2", b"for a") == 0
    assert gw_b.next_message() == ("meterlink/v1/gw-b/cmd/c1", b"for b")
    # in order from one publisher: had gw-a received b's messages, they would come first
    assert gw_a.next_message() == ("meterlink/v1/gw-a/cmd/c2", b"for a")
    assert gw_a.messages.empty()
    # a gateway may answer its own commands, the collector reads the replies
    assert collector.subscribe("meterlink/v1/+/cmd/+/reply") == [1]
    assert gw_a.publish("meterlink/v1/gw-b/cmd/c1/reply", b"forged reply") == 0x87
    assert gw_a.publish("meterlink/v1/gw-a/cmd/c2/reply", b"reply") == 0
    assert collector.next_message() == ("meterlink/v1/gw-a/cmd/c2/reply", b"reply")


def test_agent_and_collector_over_tls_store_readings_and_answer_a_command(
    broker: Broker, tmp_path: Path
) -> None:
    certs = broker.certs
    procs: list[Proc] = []
    sockets: list[NotifySocket] = []

    def meterlink(*args: str, name: str, **kw: object) -> Proc:
        proc = Proc([sys.executable, "-m", "meterlink", *args], name, cwd=tmp_path, **kw)  # type: ignore[arg-type]
        procs.append(proc)
        return proc

    def once(*args: str) -> str:
        proc = meterlink(*args, name=args[1])
        assert proc.popen.wait(timeout=60) == 0, proc.output
        return proc.output

    try:
        sim = meterlink("sim", "dlms", "--port", "0", "--meter-id", "dl-tls", name="sim")
        host, _, port = (
            sim.wait_line(lambda t: t.startswith("READY dlms")).split()[2].rpartition(":")
        )
        tls = (
            f'cafile = "{certs / "ca.crt"}"\ncertfile = "{certs}/{{cn}}.crt"\n'
            f'keyfile = "{certs}/{{cn}}.key"\n'
        )
        collector_toml = tmp_path / "collector.toml"
        collector_toml.write_text(
            '[collector]\ndatabase = "c.sqlite"\nid = "c-tls"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n' + tls.format(cn="collector")
        )
        agent_toml = tmp_path / "agent.toml"
        agent_toml.write_text(
            '[gateway]\nid = "gw-tls"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n' + tls.format(cn="gw-tls")
            + f'\n[[meters]]\nid = "dl-tls"\ndriver = "dlms"\nhost = "{host}"\nport = {port}\n'
            'objects = ["1-0:1.8.0"]\ninterval = "1h"\ntimeout = "2s"\n'
        )  # fmt: skip
        once("agent", "keys", "init", "--config", str(agent_toml))
        once("collector", "keys", "init", "--config", str(collector_toml))
        once("collector", "enrol", "gw-tls", "--public-key", "state/keys/gateway.pub",
             "--meters", "dl-tls", "--config", str(collector_toml))  # fmt: skip
        (tmp_path / "state/keys/headend-command.pub").write_bytes(
            (tmp_path / "command.pub").read_bytes()
        )
        for name, args in (
            ("collector", ("collector", "run", str(collector_toml))),
            ("agent", ("agent", "run", str(agent_toml))),
        ):
            sock = NotifySocket()
            sockets.append(sock)
            proc = meterlink(*args, name=name, env=sock.env)
            sock.wait_for("READY", timeout=30, alive=proc.alive)
        import sqlite3

        def query(sql: str) -> list[tuple]:
            con = sqlite3.connect(f"file:{tmp_path / 'c.sqlite'}?mode=ro", uri=True)
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()

        # the agent subscribed to its commands before it published "online" (same connection)
        wait_for(
            lambda: query("SELECT state FROM gateway_status") == [("online",)],
            timeout=30,
            what="gw-tls online at the head-end",
        )
        out = once("collector", "command", "gw-tls", "read-now", "--meter", "dl-tls",
                   "--config", str(collector_toml))  # fmt: skip
        assert "reply: ok" in out

        def stored() -> int:
            return query("SELECT count(*) FROM readings")[0][0]

        wait_for(lambda: stored() >= 1, timeout=30, what="a reading stored over TLS")
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=20)
        for sock in sockets:
            sock.close()


def test_the_script_writes_private_keys_0600(broker: Broker) -> None:
    for key in broker.certs.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
