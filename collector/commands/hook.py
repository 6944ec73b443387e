"""The running collector's part in commands: replies stored, rotated keys retired, and TLS.

``attach(service, store)`` is called once by ``run_service`` before the service connects. It
wraps the service's paho callbacks instead of editing the ingest path: the connect callback
also subscribes to every gateway's replies (shared, like readings: one collector of a group
stores each), and the message callback hands reply topics to ``take_reply`` on the event
loop and PUBACKs them once stored (the service uses manual acks). It also sets the
connection's TLS options from ``[mqtt]`` (cafile, certfile, keyfile) and starts a task that
revokes rotated-out gateway keys when their grace period ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols.commands import REPLY_SUBSCRIPTION

from .client import set_tls
from .replies import retire_due, take_reply

__all__ = ["RETIRE_EVERY_S", "attach", "reply_subscription"]

log = logging.getLogger("collector.commands")

RETIRE_EVERY_S = 60.0


def reply_subscription(group: str) -> str:
    return f"$share/{group}/{REPLY_SUBSCRIPTION}"


def attach(service: Any, store: Any) -> None:
    config = service.config
    client = service.client
    mqtt_cfg = config.mqtt
    set_tls(client, mqtt_cfg)  # ConfigError naming the files when they are not usable
    on_connect, on_message = client.on_connect, client.on_message
    grace_ms = config.commands.key_grace_ms
    tasks: set[asyncio.Task[None]] = set()

    def connected(client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        on_connect(client, userdata, flags, reason_code, properties)
        if not reason_code.is_failure:
            client.subscribe(reply_subscription(mqtt_cfg.group), options=SubscribeOptions(qos=1))

    async def store_reply(topic: str, payload: bytes, token: tuple[int, int, int]) -> None:
        try:
            outcome = await take_reply(store, topic, payload, time.time_ns() // 10**6, grace_ms)
            if outcome.stored == "stored":
                reply = outcome.reply
                assert reply is not None
                log.info(
                    "reply of gateway %s to command %s: %s %s",
                    reply.gateway_id,
                    reply.command_id,
                    reply.status,
                    reply.message,
                )
        except Exception:
            log.exception("reply on %s not stored (the broker sends it again)", topic)
            return
        mid, qos, connection = token
        if connection == service._connection:
            client.ack(mid, qos)

    def message(client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        if "/cmd/" not in msg.topic:
            on_message(client, userdata, msg)
            return
        loop = service.loop
        if service.stopping or loop is None:
            return
        token = (msg.mid, msg.qos, service._connection)

        def start(topic: str = msg.topic, payload: bytes = bytes(msg.payload)) -> None:
            task = asyncio.ensure_future(store_reply(topic, payload, token))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.call_soon_threadsafe(start)

    async def retirer() -> None:
        while True:
            with contextlib.suppress(Exception):
                await retire_due(store, time.time_ns() // 1_000_000)
            await asyncio.sleep(RETIRE_EVERY_S)

    def start_retirer() -> None:
        task = asyncio.ensure_future(retirer())
        tasks.add(task)

    client.on_connect, client.on_message = connected, message
    original_run = service.run

    async def run() -> int:
        start_retirer()
        try:
            return await original_run()
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    service.run = run
