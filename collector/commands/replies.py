"""Replies from gateways: verified with the gateway's enrolled key, stored with their command.

A reply counts only if the key that signed it is an active key of the gateway that the
topic names (a revoked key's replies are dropped, logged). The first reply of a command is
stored; later ones (a replayed command's "refused") are not. A ``rotate-key`` reply that is
``ok`` enrols the new key it carries (signed by the old key: that is the proof the new key
belongs to the gateway) and schedules the old key's revocation after ``key_grace``, so that
records the gateway signed with it before the switch are still accepted meanwhile.

Several collectors: a reply may reach more than one process (the sender's own client, which
subscribed to the reply topic, and the collector of the group that the broker chose; or two
collectors, when the gateway sent it again). It is stored once: ``set_reply`` reads and
writes the command row in one write transaction (on PostgreSQL under the store's global
writer lock), so the second process finds the reply there (``duplicate``), and only the one
that stored a ``rotate-key`` reply enrols the new key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.commands import Reply, parse_command_topic
from protocols.errors import DecodeError
from protocols.keys import KeyFormatError, public_key_from_pem

from ..registry import key_id_of
from ..store.base import GatewayKey

if TYPE_CHECKING:
    from ..store.sqlite import SqliteStore

__all__ = ["ReplyOutcome", "retire_due", "take_reply"]

log = logging.getLogger("collector.commands")


@dataclass(frozen=True)
class ReplyOutcome:
    reply: Reply | None
    stored: str  # stored | duplicate | unknown | rejected
    why: str = ""


async def take_reply(
    store: SqliteStore, topic: str, payload: bytes, now_ms: int, grace_ms: int
) -> ReplyOutcome:
    """Check and store one reply message (``store``: the SQLite store)."""
    try:
        gateway_id, command_id, is_reply = parse_command_topic(topic)
        if not is_reply:
            raise DecodeError(f"{topic}: a command, not a reply")
        reply = Reply.parse(payload)
    except DecodeError as exc:
        log.warning("reply on %s dropped: %s", topic, exc)
        return ReplyOutcome(None, "rejected", str(exc))
    if (reply.gateway_id, reply.command_id) != (gateway_id, command_id):
        why = f"reply names {reply.gateway_id}/{reply.command_id} on the topic of {topic}"
        log.warning("reply dropped: %s", why)
        return ReplyOutcome(reply, "rejected", why)
    keys = {k.key_id: k for k in await store.gateway_keys() if k.gateway_id == gateway_id}
    key = keys.get(reply.key_id)
    if key is None or key.status != "active":
        why = f"signed by {'unknown' if key is None else 'revoked'} key {reply.key_id}"
        log.warning("reply of gateway %s to command %s dropped: %s", gateway_id, command_id, why)
        return ReplyOutcome(reply, "rejected", why)
    if not reply.verify(Ed25519PublicKey.from_public_bytes(key.public_key)):
        log.warning("reply of gateway %s to %s dropped: bad signature", gateway_id, command_id)
        return ReplyOutcome(reply, "rejected", "bad signature")
    stored = await store.commands.set_reply(
        command_id,
        gateway_id,
        reply.status,
        reply.message,
        reply.result,
        reply.at_ms,
        now_ms,
        reply.key_id,
        payload,
    )
    if stored == "stored":
        row = await store.commands.get(command_id)
        if row is not None and row.action == "rotate-key" and reply.status == "ok":
            why = await _rotated(store, gateway_id, reply, now_ms, grace_ms)
            if why:
                return ReplyOutcome(reply, stored, why)
    return ReplyOutcome(reply, stored)


async def _rotated(
    store: SqliteStore, gateway_id: str, reply: Reply, now_ms: int, grace_ms: int
) -> str:
    """Enrol the new key of a rotate-key reply; the old one retires after the grace."""
    try:
        pem = reply.result.get("public_key", "")
        raw = public_key_from_pem(pem.encode() if isinstance(pem, str) else b"").public_bytes_raw()
    except KeyFormatError as exc:
        log.warning("gateway %s: rotate-key reply without a usable key: %s", gateway_id, exc)
        return f"new key not usable: {exc}"
    new_id = key_id_of(raw)
    if new_id != reply.result.get("new_key_id"):
        return f"new key id {new_id} is not the one the reply names"
    meters = [m for gw, m in await store.bindings() if gw == gateway_id]
    await store.enrol(
        gateway_id, GatewayKey(gateway_id, new_id, raw, "active", now_ms), meters, now_ms
    )
    await store.commands.schedule_retirement(gateway_id, reply.key_id, now_ms + grace_ms, new_id)
    log.info(
        "gateway %s: key %s enrolled (rotation); old key %s revoked in %.0f h",
        gateway_id,
        new_id,
        reply.key_id,
        grace_ms / 3_600_000,
    )
    return ""


async def retire_due(store: SqliteStore, now_ms: int) -> list[tuple[str, str]]:
    """Revoke rotated-out keys whose grace period is over; returns (gateway, key id)."""
    done = []
    for gateway_id, key_id, retire_ms, _new, retired in await store.commands.retirements():
        if retired or retire_ms > now_ms:
            continue
        await store.revoke_key(gateway_id, key_id, now_ms)
        await store.commands.mark_retired(gateway_id, key_id)
        log.info("gateway %s: key %s revoked (rotation grace period over)", gateway_id, key_id)
        done.append((gateway_id, key_id))
    return done
