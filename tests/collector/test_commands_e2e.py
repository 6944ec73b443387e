"""Remote commands end to end: ``collector command`` -> mosquitto -> the agent -> a DLMS
meter (``sim dlms``), the reply signed back, checked and stored by the collector; refusals
(replay, expiry, an untrusted key) and the gateway key's rotation with its grace period.
Everything runs as processes; one fleet serves the whole module (tests run in file order:
the rotation comes last)."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.commands.keys import load_command_key
from meterlink.procs import free_port, wait_for
from protocols.commands import Command, Reply, command_topic
from protocols.keys import public_key_from_pem

from ._commands_rig import GATEWAY, METER, OFFSET_S, Rig, agent_toml, one_shot, start_rig, stop_rig

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    fleet = start_rig(tmp_path_factory.mktemp("commands"))
    try:
        yield fleet
    finally:
        stop_rig(fleet)


def _stored_values(rig: Rig, captured_ms: int) -> dict[str, str]:
    rows = rig.query(
        "SELECT obis, value FROM readings WHERE meter_id = ? AND captured_ms = ?",
        (METER, captured_ms),
    )
    return dict(rows)


def test_ping_is_answered_signed_stored_and_listed(rig: Rig) -> None:
    code, doc = rig.command("ping")
    assert code == 0
    assert doc["state"] == "ok" and doc["reply"]["message"] == "pong"
    assert doc["reply"]["result"]["meters"] == [METER]
    (row,) = rig.query("SELECT gateway_id, action, reply_status FROM commands WHERE id = ?",
                       (doc["id"],))  # fmt: skip
    assert row == (GATEWAY, "ping", "ok")
    code, out = one_shot("collector", "commands", "--config", str(rig.collector_toml), cwd=rig.root)
    assert code == 0 and doc["id"] in out and "ping" in out and "pong" in out


def test_read_now_goes_through_the_signed_buffer_to_the_collector(rig: Rig) -> None:
    code, doc = rig.command("read-now", "--meter", METER)
    assert code == 0, doc
    captures = doc["reply"]["result"]["captures"]
    register = captures[-1]  # the register capture (profile entries, if any, come first)
    assert {v["obis"] for v in register["values"]} == {"1-0:1.8.0", "1-0:32.7.0"}
    wait_for(lambda: _stored_values(rig, register["captured_ms"]), timeout=30,
             what="the read-now capture stored at the head-end")  # fmt: skip
    stored = _stored_values(rig, register["captured_ms"])
    assert stored == {v["obis"]: v["value"] for v in register["values"]}


def test_read_now_of_an_unknown_meter_is_refused(rig: Rig) -> None:
    code, doc = rig.command("read-now", "--meter", "no-such-meter")
    assert code == 3
    assert doc["reply"]["status"] == "refused"
    assert "no meter 'no-such-meter'" in doc["reply"]["message"]


def test_set_clock_brings_the_meter_clock_to_the_gateways(rig: Rig) -> None:
    code, doc = rig.command("set-clock", "--meter", METER)
    assert code == 0, doc
    result = doc["reply"]["result"]
    # the simulator's clock ran 5 minutes ahead; after the SET it is read back close to ours
    assert abs(result["drift_before_ms"] - OFFSET_S * 1000) < 5000
    assert abs(result["drift_after_ms"]) < 5000


def test_backfill_captures_the_profile_entries_of_the_range(rig: Rig) -> None:
    now_ms = time.time_ns() // 1_000_000
    start = (now_ms - 6 * HOUR_MS) // 900_000 * 900_000  # on a 15-minute boundary
    end = start + 2 * HOUR_MS
    iso = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) for ms in (start, end)]
    code, doc = rig.command("backfill", "--meter", METER, "--from", iso[0], "--to", iso[1])
    assert code == 0, doc
    result = doc["reply"]["result"]
    assert result["entries"] == 9  # every 15 minutes, both ends included
    assert (result["first_ms"], result["last_ms"]) == (start, end)
    wait_for(lambda: _stored_values(rig, end) and _stored_values(rig, start), timeout=30,
             what="backfilled entries stored")  # fmt: skip


def test_backfill_of_a_range_too_long_is_refused(rig: Rig) -> None:
    code, doc = rig.command(
        "backfill", "--meter", METER, "--from", "2026-01-01T00:00:00Z", "--to", "2026-06-01T00:00Z"
    )
    assert code == 3 and doc["reply"]["status"] == "refused"
    assert "split it" in doc["reply"]["message"]


def test_push_config_applies_a_good_config_and_rolls_back_a_bad_one(rig: Rig) -> None:
    before = rig.agent_toml.read_text()
    good = agent_toml(rig.broker.port, [(METER, rig.sim_host, rig.sim_port)], interval="30m")
    pushed = rig.root / "good.toml"
    pushed.write_text(good)
    code, doc = rig.command("push-config", "--file", str(pushed), "--trial", "20s")
    assert code == 0, doc
    assert doc["reply"]["result"]["meters"] == [METER]
    assert rig.agent_toml.read_text() == good
    assert (rig.agent_toml.parent / "agent.toml.previous").read_text() == before

    closed = free_port()
    bad = agent_toml(
        rig.broker.port,
        [(METER, rig.sim_host, rig.sim_port), ("dl-gone", "127.0.0.1", closed)],
        interval="30m",
    )
    pushed.write_text(bad)
    code, doc = rig.command("push-config", "--file", str(pushed), "--trial", "10s")
    assert code == 3
    reply = doc["reply"]
    assert reply["status"] == "rolled-back"
    assert list(reply["result"]["failed"]) == ["dl-gone"]
    assert reply["result"]["ok"] == [METER]
    assert "previous config runs again" in reply["message"]
    assert rig.agent_toml.read_text() == good  # the file is the one that works
    code, doc = rig.command("ping")
    assert doc["reply"]["result"]["meters"] == [METER]  # the previous meters are polled
    code, doc = rig.command("read-now", "--meter", METER)
    assert code == 0, doc


def test_push_config_that_does_not_validate_is_refused_naming_the_line(rig: Rig) -> None:
    pushed = rig.root / "broken.toml"
    pushed.write_text(rig.agent_toml.read_text().replace('driver = "dlms"', 'driver = "dlms2"'))
    code, doc = rig.command("push-config", "--file", str(pushed))
    assert code == 3 and doc["reply"]["status"] == "refused"
    assert "new config not valid" in doc["reply"]["message"] and "dlms2" in doc["reply"]["message"]


class _Client:
    """A test-side MQTT client that publishes hand-made commands and collects replies."""

    def __init__(self, rig: Rig) -> None:
        self.replies: queue.Queue[Reply] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-cmd",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.on_message = lambda c, u, m: self.replies.put(Reply.parse(bytes(m.payload)))
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", rig.broker.port)
        self.client.loop_start()
        self.client.subscribe(f"meterlink/v1/{GATEWAY}/cmd/+/reply", qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def send(self, command: Command, private: Ed25519PrivateKey) -> None:
        topic = command_topic(command.gateway_id, command.command_id)
        self.client.publish(topic, command.sign(private), qos=1).wait_for_publish(10)

    def reply(self) -> Reply:
        return self.replies.get(timeout=30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def client(rig: Rig) -> Iterator[_Client]:
    c = _Client(rig)
    try:
        yield c
    finally:
        c.close()


def test_replayed_expired_and_untrusted_commands_are_refused(rig: Rig, client: _Client) -> None:
    key = load_command_key(rig.root / "collector" / "command.key")
    now = time.time_ns() // 1_000_000
    ping = Command(GATEWAY, f"{now:x}-replay", "ping", now, now + 60_000)
    client.send(ping, key.private)
    first = client.reply()
    assert (first.status, first.command_id) == ("ok", ping.command_id)
    client.send(ping, key.private)  # the same signed command again
    again = client.reply()
    assert (again.status, again.command_id) == ("refused", ping.command_id)
    assert "replay" in again.message
    seen = json.loads((rig.root / "agent" / "state" / "commands-seen.json").read_text())
    assert ping.command_id in seen  # kept across restarts until it expires

    expired = Command(GATEWAY, f"{now:x}-old", "ping", now - 120_000, now - 60_000)
    client.send(expired, key.private)
    reply = client.reply()
    assert (reply.command_id, reply.status) == (expired.command_id, "refused")
    assert "expired" in reply.message

    stranger = Ed25519PrivateKey.generate()
    forged = Command(GATEWAY, f"{now:x}-forged", "read-now", now, now + 60_000, {"meter": METER})
    client.send(forged, stranger)
    reply = client.reply()
    assert (reply.command_id, reply.status) == (forged.command_id, "refused")
    assert "does not trust" in reply.message

    moved = Command("gw-other", f"{now:x}-moved", "ping", now, now + 60_000)
    payload = moved.sign(key.private)  # signed for gw-other, published on our topic
    client.client.publish(command_topic(GATEWAY, moved.command_id), payload, qos=1)
    reply = client.reply()
    assert (reply.command_id, reply.status) == (moved.command_id, "refused")
    assert "gw-other" in reply.message
    # every reply is signed by the gateway's enrolled key
    assert reply.verify(public_key_from_pem((rig.keys_dir / "gateway.pub").read_bytes()))


def test_a_command_without_a_reply_in_time_exits_4_and_stays_waiting(rig: Rig) -> None:
    code, out = one_shot(
        "collector", "enrol", "gw-silent", "--public-key", str(rig.keys_dir / "gateway.pub"),
        "--meters", "m-silent", "--config", str(rig.collector_toml), cwd=rig.root,
    )  # fmt: skip
    assert code == 0, out
    code, out = one_shot(
        "collector", "command", "gw-silent", "ping", "--timeout", "1s",
        "--config", str(rig.collector_toml), cwd=rig.root,
    )  # fmt: skip
    assert code == 4 and "no reply in time" in out
    code, out = one_shot("collector", "commands", "--gateway", "gw-silent",
                         "--config", str(rig.collector_toml), cwd=rig.root)  # fmt: skip
    assert "waiting" in out


def test_bad_input_is_refused_before_anything_is_sent(rig: Rig) -> None:
    code, out = one_shot("collector", "command", "gw-unknown", "ping",
                         "--config", str(rig.collector_toml), cwd=rig.root)  # fmt: skip
    assert code == 2 and "not enrolled" in out
    key = rig.root / "collector" / "command.key"
    os.chmod(key, 0o644)
    try:
        code, out = one_shot("collector", "command", GATEWAY, "ping",
                             "--config", str(rig.collector_toml), cwd=rig.root)  # fmt: skip
    finally:
        os.chmod(key, 0o600)
    assert code == 2 and "mode 0644" in out and "BEGIN" not in out


def test_rotate_key_enrols_the_new_key_and_retires_the_old_after_the_grace(rig: Rig) -> None:
    old = json.loads(_gateways(rig))[0]["keys"][0]["key_id"]
    code, doc = rig.command("rotate-key")
    assert code == 0, doc
    result = doc["reply"]["result"]
    new = result["new_key_id"]
    assert result["old_key_id"] == old and new != old
    (gateway,) = [g for g in json.loads(_gateways(rig)) if g["gateway"] == GATEWAY]
    statuses = {k["key_id"]: k["status"] for k in gateway["keys"]}
    assert statuses == {old: "retiring", new: "active"}
    # the agent signs with the new key from now on: a new capture arrives signed with it
    code, doc = rig.command("read-now", "--meter", METER)
    assert code == 0, doc

    def key_ids() -> set[str]:
        return {bytes(raw[1:9]).hex() for (raw,) in rig.query("SELECT raw FROM records")}

    wait_for(lambda: new in key_ids(), timeout=30, what="a record signed with the new key")
    assert old in key_ids()  # records signed before the rotation stay valid
    gw_pub = (rig.keys_dir / "gateway.pub").read_bytes().decode()
    assert gw_pub == result["public_key"]
    assert (rig.keys_dir / "gateway.key").stat().st_mode & 0o777 == 0o600
    code, doc = rig.command("ping")  # replies are now signed with the new key, and accepted
    assert code == 0 and doc["reply"]["result"]["key_id"] == new


def _gateways(rig: Rig) -> str:
    code, out = one_shot("collector", "gateways", "--json", "--config", str(rig.collector_toml),
                         cwd=rig.root)  # fmt: skip
    assert code == 0, out
    return out[out.index("[") :]


def test_collector_gateways_lists_keys_meters_and_status(rig: Rig, tmp_path: Path) -> None:
    code, out = one_shot("collector", "gateways", "--config", str(rig.collector_toml),
                         cwd=rig.root)  # fmt: skip
    assert code == 0
    assert f"{GATEWAY}: online" in out and METER in out
    assert "retiring until" in out and "active" in out


def test_an_out_of_band_rotation_retires_the_old_key_when_its_grace_ends(
    rig: Rig, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    from collector.registry import key_id_of

    files, ids = [], []
    for i in range(3):
        public = Ed25519PrivateKey.generate().public_key()
        path = tmp_path / f"k{i}.pub"
        path.write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        files.append(str(path))
        ids.append(key_id_of(public.public_bytes_raw()))
    cfg = ("--config", str(rig.collector_toml))
    for args in (
        ("enrol", "gw-rot", "--public-key", files[0], "--meters", "m-rot"),
        ("rotate", "gw-rot", "--public-key", files[1], "--grace", "1h"),
        ("rotate", "gw-rot", "--public-key", files[2], "--grace", "1ms"),
    ):
        code, out = one_shot("collector", *args, *cfg, cwd=rig.root)
        assert code == 0, out
    (gateway,) = [g for g in json.loads(_gateways(rig)) if g["gateway"] == "gw-rot"]
    statuses = {k["key_id"]: k["status"] for k in gateway["keys"]}
    # k0: still in its hour of grace; k1: its 1 ms grace is over, revoked; k2: the key now
    assert statuses == {ids[0]: "retiring", ids[1]: "revoked", ids[2]: "active"}
    assert gateway["meters"] == ["m-rot"]
