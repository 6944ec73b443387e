"""The command wire format (protocols/commands.py) and the agent's checks before it runs a
command (agent/commands.py): signature, topic, expiry, replay across restarts. The command
round trips with real processes are in tests/collector/test_commands_e2e.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.commands import MAX_AHEAD_MS, SEEN_FILE, CommandAgent, Refused, load_trusted_keys
from agent.config import load_config
from agent.keys import create_key
from protocols.commands import (
    COMMAND_CONTEXT,
    MAX_PAYLOAD,
    REPLY_CONTEXT,
    Command,
    Reply,
    command_subscription,
    command_topic,
    parse_command_topic,
    reply_topic,
)
from protocols.errors import DecodeError, EncodeError

HEADEND = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _now() -> int:
    return time.time_ns() // 1_000_000


def _command(cid: str = "c-1", action: str = "ping", **kw: object) -> Command:
    now = _now()
    fields: dict = {"issued_ms": now, "expires_ms": now + 60_000, "args": {}}
    fields.update(kw)
    return Command("gw-1", cid, action, **fields)  # type: ignore[arg-type]


def test_a_signed_command_parses_back_and_verifies_only_with_its_key() -> None:
    payload = _command(args={"meter": "m-1"}).sign(HEADEND)
    parsed = Command.parse(payload)
    assert (parsed.gateway_id, parsed.command_id, parsed.action) == ("gw-1", "c-1", "ping")
    assert parsed.args == {"meter": "m-1"}
    assert parsed.verify(HEADEND.public_key())
    assert not parsed.verify(Ed25519PrivateKey.generate().public_key())
    # one byte changed in the body: the signature no longer holds
    tampered = payload.replace(b'"m-1"', b'"m-2"')
    assert not Command.parse(tampered).verify(HEADEND.public_key())
    # a command signature is not a reply signature (different contexts)
    with pytest.raises(InvalidSignature):
        HEADEND.public_key().verify(payload[-64:], REPLY_CONTEXT + payload[:-64])
    HEADEND.public_key().verify(payload[-64:], COMMAND_CONTEXT + payload[:-64])


def test_parse_errors_name_the_field() -> None:
    body = json.dumps({"v": 1, "id": "c-1", "gateway": "gw-1", "key": "00" * 8}).encode()
    with pytest.raises(DecodeError, match="command: field 'action' must be str, got missing"):
        Command.parse(body + bytes(64))
    with pytest.raises(DecodeError, match="not UTF-8 JSON"):
        Command.parse(b"\xff" * 80)
    with pytest.raises(DecodeError, match="too short"):
        Command.parse(b"{}")
    with pytest.raises(DecodeError, match=f"more than {MAX_PAYLOAD}"):
        Command.parse(b" " * (MAX_PAYLOAD + 1))
    bad_id = json.dumps({"v": 1, "id": "a/b", "gateway": "gw-1", "key": "00" * 8}).encode()
    with pytest.raises(DecodeError, match="command id 'a/b'"):
        Command.parse(bad_id + bytes(64))
    with pytest.raises(EncodeError, match="reboot"):
        _command(action="reboot").sign(HEADEND)


def test_topics() -> None:
    assert command_topic("gw-1", "c-1") == "meterlink/v1/gw-1/cmd/c-1"
    assert reply_topic("gw-1", "c-1") == "meterlink/v1/gw-1/cmd/c-1/reply"
    assert command_subscription("gw-1") == "meterlink/v1/gw-1/cmd/+"
    assert parse_command_topic("meterlink/v1/gw-1/cmd/c-1") == ("gw-1", "c-1", False)
    assert parse_command_topic("meterlink/v1/gw-1/cmd/c-1/reply") == ("gw-1", "c-1", True)
    for bad in ("meterlink/v1/gw-1/ack", "meterlink/v1/gw-1/cmd/c-1/x", "x/v1/gw/cmd/c"):
        with pytest.raises(DecodeError):
            parse_command_topic(bad)


def test_a_pushed_config_does_not_show_in_a_commands_repr() -> None:
    command = _command(action="push-config", args={"config": "[gateway]\nsecret = 1\n"})
    assert "secret" not in repr(command) and "push-config" in repr(command)


def test_reply_round_trip() -> None:
    key = Ed25519PrivateKey.generate()
    reply = Reply.parse(Reply("gw-1", "c-1", "rolled-back", "why", {"failed": {}}, 5).sign(key))
    assert (reply.status, reply.message, reply.result, reply.at_ms) == (
        "rolled-back", "why", {"failed": {}}, 5,
    )  # fmt: skip
    assert reply.verify(key.public_key())


def _trust(keys_dir: Path, name: str = "headend-command.pub") -> None:
    pem = HEADEND.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (keys_dir / name).write_bytes(pem)


def _agent(tmp_path: Path) -> CommandAgent:
    cfg_path = tmp_path / "agent.toml"
    if not cfg_path.exists():
        cfg_path.write_text('[gateway]\nid = "gw-1"\nstate_dir = "state"\n')
    config = load_config(cfg_path)
    keys_dir = config.keys_dir
    key = create_key(keys_dir) if not (keys_dir / "gateway.key").exists() else None
    if key is None:
        from agent.keys import load_key

        key = load_key(keys_dir)
    # The checks need only the config: a stand-in for the running service (no meters, no
    # uplink), since _check neither reads meters nor publishes.
    service = SimpleNamespace(config=config, schedulers=[])
    return CommandAgent(service, key)  # type: ignore[arg-type]


def test_checks_refuse_untrusted_moved_expired_far_and_replayed_commands(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    command = Command.parse(_command().sign(HEADEND))
    with pytest.raises(Refused, match="does not trust"):
        agent._check(command, "gw-1", "c-1")
    _trust(agent.config.keys_dir)  # installed while running: picked up
    with pytest.raises(Refused, match="on the topic of id 'c-2'"):
        agent._check(command, "gw-1", "c-2")
    other = Command.parse(Command("gw-2", "c-1", "ping", _now(), _now() + 1000).sign(HEADEND))
    with pytest.raises(Refused, match="gateway 'gw-2'"):
        agent._check(other, "gw-1", "c-1")
    old = Command.parse(_command("c-old", expires_ms=_now() - 1).sign(HEADEND))
    with pytest.raises(Refused, match="expired"):
        agent._check(old, "gw-1", "c-old")
    far = Command.parse(_command("c-far", expires_ms=_now() + MAX_AHEAD_MS + 60_000).sign(HEADEND))
    with pytest.raises(Refused, match="days ahead"):
        agent._check(far, "gw-1", "c-far")
    agent._check(command, "gw-1", "c-1")  # passes once
    with pytest.raises(Refused, match="replay"):
        agent._check(command, "gw-1", "c-1")
    # after a restart the id is still known
    restarted = _agent(tmp_path)
    with pytest.raises(Refused, match="replay"):
        restarted._check(command, "gw-1", "c-1")
    # a seen-list that cannot be read refuses every command rather than forget ids
    (agent.config.gateway.state_dir / SEEN_FILE).write_text("{not json")
    broken = _agent(tmp_path)
    fresh = Command.parse(_command("c-new").sign(HEADEND))
    with pytest.raises(Refused, match="replay"):
        broken._check(fresh, "gw-1", "c-new")


def test_trusted_keys_are_every_headend_command_file(tmp_path: Path) -> None:
    _trust(tmp_path, "headend-command.pub")
    second = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "headend-command-2.pub").write_bytes(
        second.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "headend-command-bad.pub").write_text("not a key")
    keys = load_trusted_keys(tmp_path)
    assert len(keys) == 2


def test_a_reply_too_large_is_sent_truncated_with_the_register_capture(tmp_path: Path) -> None:
    import asyncio

    agent = _agent(tmp_path)
    sent: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> int:
        sent.append((topic, payload))
        return 0

    # the uplink's publish is the only part replaced: it records what would go to the broker
    agent.service.uplink = SimpleNamespace(_publish_confirmed=publish)  # type: ignore[attr-defined]
    entry = {"captured_ms": 1, "values": [{"obis": "1-0:1.8.0", "value": "1" * 100}]}
    result = {"captures": [entry] * 3000 + [{"captured_ms": 2, "values": []}], "errors": []}
    ok = asyncio.run(agent._reply(_command("c-big"), "ok", "read", result))
    assert ok
    reply = Reply.parse(sent[0][1])
    assert "too large" in reply.result["truncated"]
    assert reply.result["captures"] == [{"captured_ms": 2, "values": []}]
    assert reply.result["capture_count"] == 3001
