"""Sending one command: sign, store, publish, wait for the reply (CLI and HTTP API).

Each call opens its own short MQTT connection (clean session, a unique client id under the
collector's), subscribes to the command's reply topic *before* publishing the command (so a
fast reply cannot be missed), publishes at QoS 1 and waits up to ``wait_s`` for the reply.
A reply that arrives is checked and stored here; the running collector stores it too when
this process is gone (its shared subscription on every reply topic), so an answer that comes
after the timeout is still recorded (``collector commands`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt

from protocols.commands import ACTIONS, Command, command_topic, reply_topic

from ..config import Config, MqttConfig
from ..errors import CollectorError, ConfigError
from .keys import CommandKey
from .replies import ReplyOutcome, retire_due, take_reply
from .store import CommandRow

__all__ = ["CommandError", "make_mqtt_client", "new_command_id", "send_command", "set_tls"]


class CommandError(CollectorError):
    """The command could not be sent (broker unreachable, refused); says which."""


def new_command_id(now_ms: int) -> str:
    """Sortable by time, unguessable: ``<ms in hex>-<8 hex digits>``."""
    return f"{now_ms:x}-{secrets.token_hex(4)}"


def make_mqtt_client(mqtt_cfg: MqttConfig, client_id: str) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    set_tls(client, mqtt_cfg)
    return client


def set_tls(client: mqtt.Client, mqtt_cfg: MqttConfig) -> None:
    """``[mqtt]`` cafile / certfile / keyfile: TLS with a client certificate (none: plain)."""
    if mqtt_cfg.cafile is None:
        if mqtt_cfg.certfile is not None or mqtt_cfg.keyfile is not None:
            raise ConfigError("[mqtt]: certfile and keyfile need cafile (TLS)")
        return
    if (mqtt_cfg.certfile is None) != (mqtt_cfg.keyfile is None):
        raise ConfigError("[mqtt]: certfile and keyfile go together")
    try:
        client.tls_set(
            ca_certs=str(mqtt_cfg.cafile),
            certfile=str(mqtt_cfg.certfile) if mqtt_cfg.certfile else None,
            keyfile=str(mqtt_cfg.keyfile) if mqtt_cfg.keyfile else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[mqtt] TLS files (cafile {mqtt_cfg.cafile}, certfile {mqtt_cfg.certfile}, "
            f"keyfile {mqtt_cfg.keyfile}): {exc}"
        ) from None


async def send_command(
    config: Config,
    store: Any,
    key: CommandKey,
    gateway_id: str,
    action: str,
    args: dict[str, Any],
    *,
    issued_by: str = "cli",
    wait_s: float | None = None,
    expiry_ms: int | None = None,
) -> tuple[CommandRow, ReplyOutcome | None]:
    """Send and (for ``wait_s``) wait; returns the stored command and the reply outcome
    (None when no reply came in time)."""
    if action not in ACTIONS:
        raise CommandError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    settings = config.commands
    now_ms = time.time_ns() // 1_000_000
    await retire_due(store, now_ms)
    known = {k.gateway_id for k in await store.gateway_keys()}
    if gateway_id not in known:
        raise CommandError(f"gateway {gateway_id!r} is not enrolled (collector gateways)")
    command = Command(
        gateway_id,
        new_command_id(now_ms),
        action,
        now_ms,
        now_ms + (expiry_ms or settings.expiry_ms),
        args,
    )
    payload = command.sign(key.private)
    row = CommandRow(
        command.command_id, gateway_id, action, args, command.issued_ms, command.expires_ms,
        issued_by, key.key_id, None, None, None, None, None,
    )  # fmt: skip
    await store.commands.add(row)
    wait = settings.reply_timeout_ms / 1000 if wait_s is None else wait_s
    loop = asyncio.get_running_loop()
    connected: asyncio.Future[int] = loop.create_future()
    subscribed: asyncio.Future[None] = loop.create_future()
    published: asyncio.Future[int] = loop.create_future()
    replies: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def settle(future: asyncio.Future[Any], value: Any) -> None:
        if not future.done():
            future.set_result(value)

    def on_connect(client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        loop.call_soon_threadsafe(settle, connected, int(reason_code.value))

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        loop.call_soon_threadsafe(settle, subscribed, None)

    def on_publish(client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        loop.call_soon_threadsafe(settle, published, int(reason_code.value))

    def on_message(client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        loop.call_soon_threadsafe(replies.put_nowait, (message.topic, bytes(message.payload)))

    client = make_mqtt_client(config.mqtt, f"{config.collector.id}-cmd-{secrets.token_hex(4)}")
    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_publish, client.on_message = on_publish, on_message
    where = f"broker {config.mqtt.host}:{config.mqtt.port}"
    try:
        try:
            await asyncio.to_thread(
                client.connect, config.mqtt.host, config.mqtt.port, config.mqtt.keepalive
            )
        except (OSError, ValueError) as exc:
            raise CommandError(f"{where}: cannot connect: {exc}") from None
        client.loop_start()
        try:
            code = await asyncio.wait_for(connected, 15)
            if code >= 0x80:
                raise CommandError(f"{where} refused the connection (reason 0x{code:02X})")
            client.subscribe(reply_topic(gateway_id, command.command_id), qos=1)
            await asyncio.wait_for(subscribed, 15)
            client.publish(command_topic(gateway_id, command.command_id), payload, qos=1)
            code = await asyncio.wait_for(published, 15)
            if code >= 0x80:
                raise CommandError(f"{where} refused the command (reason 0x{code:02X})")
        except TimeoutError:
            raise CommandError(f"{where}: no answer from the broker within 15s") from None
        outcome: ReplyOutcome | None = None
        deadline = loop.time() + wait
        while outcome is None or outcome.stored == "rejected":
            remaining = deadline - loop.time()
            if remaining <= 0:
                outcome = None
                break
            try:
                topic, data = await asyncio.wait_for(replies.get(), remaining)
            except TimeoutError:
                outcome = None
                break
            outcome = await take_reply(
                store, topic, data, time.time_ns() // 1_000_000, settings.key_grace_ms
            )
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        await asyncio.to_thread(client.loop_stop)
    stored = await store.commands.get(command.command_id)
    return stored or row, outcome
