"""Remote commands (head-end -> gateway) and their replies: signed JSON bodies on MQTT.

``meterlink/v1/{gateway}/cmd/{id}``        a command, signed by the head-end's command key
``meterlink/v1/{gateway}/cmd/{id}/reply``  its reply, signed by the gateway's record key

A payload is ``body || signature``: the body is a UTF-8 JSON object, the signature the 64
bytes of Ed25519 over ``context || body`` (the context separates these signatures from
records and from each other, as ``protocols/record.py`` does). JSON because a command carries
free-form arguments (a whole config file for ``push-config``) and is rare; the signature
covers the exact bytes sent, so no canonical JSON form is needed.

The gateway checks, in order: the signature against the head-end key it trusts (``key``
names it), that ``gateway`` and ``id`` are the topic's (a command cannot be moved to another
gateway or id), that ``expires_ms`` is not past and not further ahead than the gateway
accepts, and that it never saw ``id`` (replay). See docs/wire-format.md, "Commands".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import DecodeError, EncodeError
from .record import SIGNATURE_SIZE, check_id, key_id_of
from .topics import PREFIX

__all__ = [
    "ACTIONS",
    "COMMAND_CONTEXT",
    "MAX_PAYLOAD",
    "REPLY_CONTEXT",
    "REPLY_STATUSES",
    "REPLY_SUBSCRIPTION",
    "Command",
    "Reply",
    "command_subscription",
    "command_topic",
    "parse_command_topic",
    "reply_topic",
]

COMMAND_CONTEXT = b"meterlink/v1/command\x00"
REPLY_CONTEXT = b"meterlink/v1/reply\x00"
MAX_PAYLOAD = 256 * 1024  # a pushed config must fit; anything larger is refused unparsed
ACTIONS = ("ping", "read-now", "backfill", "set-clock", "push-config", "rotate-key")
#: ok: done; error: tried and failed (the message says why); refused: not run (bad
#: signature, expired, replayed, unknown action, bad arguments); rolled-back: push-config
#: applied but the new config failed its trial and the previous one runs again
REPLY_STATUSES = ("ok", "error", "refused", "rolled-back")
REPLY_SUBSCRIPTION = f"{PREFIX}/+/cmd/+/reply"
VERSION = 1


def command_topic(gateway_id: str, command_id: str) -> str:
    return f"{PREFIX}/{check_id('gateway', gateway_id)}/cmd/{check_id('command', command_id)}"


def reply_topic(gateway_id: str, command_id: str) -> str:
    return command_topic(gateway_id, command_id) + "/reply"


def command_subscription(gateway_id: str) -> str:
    """What a gateway subscribes to: its own commands (not their replies)."""
    return f"{PREFIX}/{check_id('gateway', gateway_id)}/cmd/+"


def parse_command_topic(topic: str) -> tuple[str, str, bool]:
    """``meterlink/v1/gw-1/cmd/ID[/reply]`` -> ``("gw-1", "ID", is_reply)``."""
    parts = topic.split("/")
    if (
        len(parts) not in (5, 6)
        or f"{parts[0]}/{parts[1]}" != PREFIX
        or parts[3] != "cmd"
        or (len(parts) == 6 and parts[5] != "reply")
    ):
        raise DecodeError(f"topic {topic!r} is not {PREFIX}/GATEWAY/cmd/ID[/reply]")
    try:
        check_id("gateway", parts[2])
        check_id("command", parts[4])
    except EncodeError as exc:
        raise DecodeError(f"topic {topic!r}: {exc}") from None
    return parts[2], parts[4], len(parts) == 6


def _split(payload: bytes, what: str) -> tuple[bytes, bytes, dict[str, Any]]:
    if len(payload) > MAX_PAYLOAD:
        raise DecodeError(f"{what}: {len(payload)} bytes, more than {MAX_PAYLOAD}")
    if len(payload) <= SIGNATURE_SIZE + 2:
        raise DecodeError(f"{what}: {len(payload)} bytes, too short for a body and signature")
    body, signature = payload[:-SIGNATURE_SIZE], payload[-SIGNATURE_SIZE:]
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{what}: body is not UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"{what}: body is {type(doc).__name__}, not an object")
    if doc.get("v") != VERSION:
        raise DecodeError(f"{what}: version {doc.get('v')!r}, expected {VERSION}")
    return body, signature, doc


def _field(doc: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = doc.get(name)
    if type(value) is not kind:
        got = "missing" if name not in doc else f"{type(value).__name__} {value!r}"
        raise DecodeError(f"{what}: field {name!r} must be {kind.__name__}, got {got}")
    return value


def _ids(doc: dict[str, Any], what: str) -> tuple[str, str, str]:
    gateway = _field(doc, "gateway", str, what)
    command_id = _field(doc, "id", str, what)
    key = _field(doc, "key", str, what)
    try:
        check_id("gateway", gateway)
        check_id("command", command_id)
    except EncodeError as exc:
        raise DecodeError(f"{what}: {exc}") from None
    if len(key) != 16 or any(c not in "0123456789abcdef" for c in key):
        raise DecodeError(f"{what}: field 'key' must be 16 lowercase hex digits, got {key!r}")
    return gateway, command_id, key


def _encode(doc: dict[str, Any], context: bytes, private: Ed25519PrivateKey) -> bytes:
    body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")
    payload = body + private.sign(context + body)
    if len(payload) > MAX_PAYLOAD:
        raise EncodeError(f"{len(payload)} bytes, more than {MAX_PAYLOAD}")
    return payload


def _verify(public: Ed25519PublicKey, context: bytes, body: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, context + body)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Command:
    """One command as signed; ``args`` depend on ``action`` (docs/wire-format.md)."""

    gateway_id: str
    command_id: str
    action: str
    issued_ms: int
    expires_ms: int
    args: dict[str, Any] = field(default_factory=dict)
    key_id: str = ""  # the head-end command key that signed it (hex)
    body: bytes = b""  # as received (parse) / as sent (sign)
    signature: bytes = b""

    def __repr__(self) -> str:  # the args may hold a whole config: not in logs
        return (
            f"Command({self.action} id={self.command_id} gateway={self.gateway_id} "
            f"expires_ms={self.expires_ms})"
        )

    def sign(self, private: Ed25519PrivateKey) -> bytes:
        if self.action not in ACTIONS:
            raise EncodeError(f"command action {self.action!r} is not one of {', '.join(ACTIONS)}")
        check_id("gateway", self.gateway_id)
        check_id("command", self.command_id)
        doc = {
            "v": VERSION,
            "id": self.command_id,
            "gateway": self.gateway_id,
            "key": key_id_of(private.public_key()).hex(),
            "issued_ms": self.issued_ms,
            "expires_ms": self.expires_ms,
            "action": self.action,
            "args": self.args,
        }
        return _encode(doc, COMMAND_CONTEXT, private)

    @classmethod
    def parse(cls, payload: bytes) -> Command:
        """Decode (no signature check: ``verify`` does it with the trusted key)."""
        body, signature, doc = _split(payload, "command")
        gateway, command_id, key = _ids(doc, "command")
        action = _field(doc, "action", str, "command")
        args = _field(doc, "args", dict, "command")
        issued = _field(doc, "issued_ms", int, "command")
        expires = _field(doc, "expires_ms", int, "command")
        return cls(gateway, command_id, action, issued, expires, args, key, body, signature)

    def verify(self, public: Ed25519PublicKey) -> bool:
        return _verify(public, COMMAND_CONTEXT, self.body, self.signature)


@dataclass(frozen=True, slots=True)
class Reply:
    """A gateway's answer to one command."""

    gateway_id: str
    command_id: str
    status: str  # REPLY_STATUSES
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    at_ms: int = 0  # the gateway's clock (Unix ms) when it replied
    key_id: str = ""  # the gateway key that signed it (hex)
    body: bytes = b""
    signature: bytes = b""

    def sign(self, private: Ed25519PrivateKey) -> bytes:
        if self.status not in REPLY_STATUSES:
            raise EncodeError(f"reply status {self.status!r} is not one of {REPLY_STATUSES}")
        doc = {
            "v": VERSION,
            "id": self.command_id,
            "gateway": self.gateway_id,
            "key": key_id_of(private.public_key()).hex(),
            "at_ms": self.at_ms,
            "status": self.status,
            "message": self.message,
            "result": self.result,
        }
        return _encode(doc, REPLY_CONTEXT, private)

    @classmethod
    def parse(cls, payload: bytes) -> Reply:
        body, signature, doc = _split(payload, "reply")
        gateway, command_id, key = _ids(doc, "reply")
        status = _field(doc, "status", str, "reply")
        if status not in REPLY_STATUSES:
            raise DecodeError(f"reply: status {status!r} is not one of {REPLY_STATUSES}")
        return cls(
            gateway,
            command_id,
            status,
            _field(doc, "message", str, "reply"),
            _field(doc, "result", dict, "reply"),
            _field(doc, "at_ms", int, "reply"),
            key,
            body,
            signature,
        )

    def verify(self, public: Ed25519PublicKey) -> bool:
        return _verify(public, REPLY_CONTEXT, self.body, self.signature)
