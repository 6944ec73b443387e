"""The MQTT uplink: batches of buffered records out, head-end acks in.

paho-mqtt runs its network loop in its own thread (``loop_start``); every callback only hands
its arguments to the asyncio loop (``call_soon_threadsafe``), so all state lives on one
thread. That also settles the "on_publish before publish() returns" race: the mid is
registered right after ``publish()`` returns, before the loop can run the queued callback.

A record leaves the buffer only when the head-end's Ack names its seq. PUBACK only says the
broker took the message (and a reason code >= 0x80 says it refused it). A batch without an
Ack after ``ack_timeout``, or in flight when the connection drops, goes back to the pool and
its records are sent again (same bytes; the head-end deduplicates).

Loss is reported upstream: records dropped by the drop-oldest policy (the ``losses`` table) and
captures refused (stop-capture, full disk) are published as ``LossEvent`` messages on the
gateway's events topic (QoS 1) once connected; what the broker took is remembered in the buffer's
meta, so an event is sent again after a restart only if its PUBACK never came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocols.batch import Ack, encode_batch
from protocols.clock import ClockSetting
from protocols.commands import command_subscription
from protocols.errors import DecodeError
from protocols.status import GatewayStatus, LossEvent, MeterClockStatus
from protocols.topics import ack_topic, events_topic, readings_topic, status_topic

from .buffer import Buffer, DiskFullError
from .config import MqttConfig

__all__ = ["Uplink"]

log = logging.getLogger("agent.uplink")

REFUSED_BACKOFF = 5.0  # seconds before retrying after the broker refused a batch
#: seconds before records the head-end did not accept (it acked their batch without them:
#: e.g. this gateway is not enrolled yet, or they did not verify) are offered again
UNACCEPTED_BACKOFF = 60.0
EVENT_MAX_RANGES = 1000  # seq ranges per loss event


@dataclass(slots=True)
class InFlight:
    batch_id: int
    seqs: set[int]
    sent_at: float  # monotonic
    mid: int
    pubacked: bool = False
    size: int = 0


@dataclass(slots=True)
class UplinkCounters:
    batches_published: int = 0
    records_published: int = 0
    batches_resent: int = 0
    batches_refused: int = 0
    acks: int = 0
    records_acked: int = 0
    bad_acks: int = 0
    connects: int = 0
    loss_events: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Uplink:
    def __init__(
        self,
        gateway_id: str,
        config: MqttConfig,
        buffer: Buffer,
        clock: ClockSetting | None = None,
        version: str = "",
    ) -> None:
        self.gateway_id = gateway_id
        self.config = config
        self.buffer = buffer
        self.clock = clock or ClockSetting.system()
        self.version = version
        self.counters = UplinkCounters()
        self.inflight: dict[int, InFlight] = {}
        self._mids: dict[int, int] = {}  # mid -> batch id (this connection only)
        self._deleting: set[int] = set()  # acked seqs whose delete is not committed yet
        self._held_back: dict[int, float] = {}  # seq -> monotonic time to offer it again
        self.unaccepted_backoff = UNACCEPTED_BACKOFF
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._newest_turn = False
        self._loss_check = True  # look for unreported losses (at start, connect, new drops)
        self._loss_seen = -1  # buffer.dropped_total at the last look
        self._refused_until = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()
        self._status_mids: dict[int, asyncio.Future[int]] = {}
        # per-meter figures for the status message (the service sets it: DLMS clocks)
        self.meter_status: Callable[[], tuple[MeterClockStatus, ...]] = tuple
        # (kind, seconds): "publish" = to the broker's PUBACK, "ack" = to the head-end's ack
        self.observe_latency: Callable[[str, float], None] = lambda kind, seconds: None
        # remote commands (agent/commands.py): called on the event loop with topic, payload
        self.on_command: Callable[[str, bytes], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=gateway_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.will_set(
            status_topic(gateway_id),
            GatewayStatus(gateway_id, "offline", "connection lost").to_bytes(),
            qos=1,
            retain=True,
        )
        if config.cafile is not None:  # TLS with a client certificate (config/mosquitto/)
            self.client.tls_set(
                ca_certs=str(config.cafile),
                certfile=str(config.certfile) if config.certfile else None,
                keyfile=str(config.keyfile) if config.keyfile else None,
            )
        self.client.reconnect_delay_set(min_delay=1, max_delay=15)
        self.client.on_connect = self._cb_connect
        self.client.on_disconnect = self._cb_disconnect
        self.client.on_publish = self._cb_publish
        self.client.on_message = self._cb_message

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        self.client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        self._tasks = [
            asyncio.create_task(self._publisher(), name="uplink-publisher"),
            asyncio.create_task(self._status_refresher(), name="uplink-status"),
            asyncio.create_task(self._loss_reporter(), name="uplink-losses"),
        ]

    async def stop(self, reason: str = "shutdown", timeout: float = 5.0) -> None:
        """Stop publishing, publish the offline status, disconnect cleanly (no last will)."""
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.connected:
            try:  # losses not yet reported go out before we leave (else: at the next start)
                await asyncio.wait_for(self._report_losses(), timeout)
            except (TimeoutError, OSError, sqlite3.Error) as exc:
                log.warning("loss events not published before stopping: %s", exc)
            try:
                await asyncio.wait_for(self._publish_status("offline", reason), timeout)
            except (TimeoutError, OSError) as exc:
                log.warning("offline status not confirmed by the broker: %s", exc)
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        for task in list(self._background):
            task.cancel()

    def wake(self) -> None:
        """New records were committed: the publisher may have work."""
        self._wake.set()

    # -- paho callbacks (network thread): hand over to the event loop ---------------------

    def _post(self, func, *args) -> None:  # type: ignore[no-untyped-def]
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(func, *args)

    def _cb_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            self._post(log.warning, "broker refused the connection: %s", reason_code)
            return
        client.subscribe(ack_topic(self.gateway_id), qos=1)
        client.subscribe(command_subscription(self.gateway_id), qos=1)
        self._post(self._on_connected, bool(flags.session_present))

    def _cb_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._post(self._on_disconnected, str(reason_code))

    def _cb_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._post(self._on_publish, mid, int(reason_code.value), str(reason_code))

    def _cb_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        if "/cmd/" in message.topic:
            if self.on_command is not None:
                self._post(self.on_command, message.topic, bytes(message.payload))
            return
        self._post(self._on_ack_payload, message.topic, bytes(message.payload))

    # -- event-loop side ----------------------------------------------------------------

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_connected(self, session_present: bool) -> None:
        self.counters.connects += 1
        log.info(
            "connected to %s:%d (session %s)",
            self.config.host,
            self.config.port,
            "resumed" if session_present else "new",
        )
        self._mids.clear()
        self._loss_check = True
        self._connected.set()
        self._wake.set()
        if not self._stopping:
            self._spawn(self._publish_status_logged("online", ""))

    def _on_disconnected(self, reason: str) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self.inflight and not self._stopping:
            log.warning(
                "connection lost (%s): %d batches in flight will be resent",
                reason,
                len(self.inflight),
            )
            self.counters.batches_resent += len(self.inflight)
            self.inflight.clear()
        elif was and not self._stopping:
            log.warning("connection lost (%s)", reason)
        self._mids.clear()
        for future in self._status_mids.values():
            if not future.done():
                future.set_exception(OSError(f"connection lost ({reason})"))
        self._status_mids.clear()

    def _on_publish(self, mid: int, code: int, text: str) -> None:
        status = self._status_mids.pop(mid, None)
        if status is not None:
            if not status.done():
                status.set_result(code)
            return
        batch_id = self._mids.pop(mid, None)
        if batch_id is None:
            return  # a message of an earlier connection, retransmitted by paho
        batch = self.inflight.get(batch_id)
        if batch is None:
            return
        if code >= 0x80:
            self.counters.batches_refused += 1
            log.warning(
                "broker refused batch %d (%d records): reason %s (0x%02X); retrying in %.0fs",
                batch_id,
                len(batch.seqs),
                text,
                code,
                REFUSED_BACKOFF,
            )
            del self.inflight[batch_id]
            self._refused_until = time.monotonic() + REFUSED_BACKOFF
            self._wake.set()
            return
        batch.pubacked = True
        self.observe_latency("publish", time.monotonic() - batch.sent_at)

    def _on_ack_payload(self, topic: str, payload: bytes) -> None:
        try:
            ack = Ack.from_bytes(payload)
        except DecodeError as exc:
            self.counters.bad_acks += 1
            log.warning("ignoring an ack on %s that does not parse: %s", topic, exc)
            return
        if ack.gateway_id != self.gateway_id:
            self.counters.bad_acks += 1
            log.warning("ignoring an ack for gateway %r on %s", ack.gateway_id, topic)
            return
        self.counters.acks += 1
        handled: set[int] = set(ack.seqs())
        for seq in handled:
            self._held_back.pop(seq, None)
        batch = self.inflight.pop(ack.batch_id, None)
        if batch is not None:
            self.observe_latency("ack", time.monotonic() - batch.sent_at)
        if batch is not None:
            rest = batch.seqs - handled
            if rest:
                log.warning(
                    "head-end acked batch %d without %d of its records (rejected %d, unparsed "
                    "%s): they stay in the buffer and are offered again in %.0fs",
                    ack.batch_id,
                    len(rest),
                    ack.rejected,
                    list(ack.unparsed),
                    self.unaccepted_backoff,
                )
                retry_at = time.monotonic() + self.unaccepted_backoff
                for seq in rest:
                    self._held_back[seq] = retry_at
        for other_id, other in list(self.inflight.items()):
            other.seqs -= handled
            if not other.seqs:
                del self.inflight[other_id]
        self._deleting |= handled
        self._spawn(self._delete(ack, handled))

    async def _delete(self, ack: Ack, handled: set[int]) -> None:
        try:
            deleted = await self.buffer.delete_acked(ack.handled)
            self.counters.records_acked += deleted
        except Exception:
            log.exception("could not delete acked records of batch %d", ack.batch_id)
        finally:
            self._deleting -= handled
            self._wake.set()

    # -- publishing ---------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        limit = self.config.ack_timeout
        for batch_id, batch in list(self.inflight.items()):
            if now - batch.sent_at >= limit:
                log.info(
                    "batch %d (%d records) not acked within %.1fs (%s): resending",
                    batch_id,
                    len(batch.seqs),
                    limit,
                    "broker took it" if batch.pubacked else "no PUBACK",
                )
                self.counters.batches_resent += 1
                del self.inflight[batch_id]

    async def _wait(self, timeout: float) -> None:
        """Until something happened since the loop's last ``_wake.clear()``, or timeout."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(timeout, 0.001))

    async def _publisher(self) -> None:
        cfg = self.config
        while not self._stopping:
            await self._connected.wait()
            self._wake.clear()
            now = time.monotonic()
            self._expire(now)
            next_expiry = min(
                (b.sent_at + cfg.ack_timeout for b in self.inflight.values()), default=now + 1.0
            )
            if now < self._refused_until:
                await self._wait(self._refused_until - now)
                continue
            if len(self.inflight) >= cfg.max_inflight:
                await self._wait(min(next_expiry - now, 1.0))
                continue
            exclude: set[int] = set(self._deleting)
            for batch in self.inflight.values():
                exclude |= batch.seqs
            if self._held_back:
                for seq, retry_at in list(self._held_back.items()):
                    if retry_at <= now:
                        del self._held_back[seq]
                exclude |= self._held_back.keys()
            n = cfg.batch_max_records
            backlog = self.buffer.count - len(exclude)
            newest = False
            if backlog > n:  # an outage left a backlog: alternate old and live data
                newest = self._newest_turn
                self._newest_turn = not self._newest_turn
            if newest:
                rows = await self.buffer.newest_unsent(n, exclude)
            else:
                rows = await self.buffer.oldest(n, exclude)
            if not rows:
                await self._wait(min(next_expiry - now, 1.0))
                continue
            seqs = [seq for seq, _ in rows]
            try:
                batch_id = await self.buffer.start_batch(seqs)
            except DiskFullError as exc:
                # The batch counter cannot be written: under drop-oldest, the oldest records
                # make room (losses recorded, counted); otherwise wait for space.
                log.warning("cannot start a batch (%s)", exc)
                if self.buffer.when_full == "drop-oldest":
                    with contextlib.suppress(DiskFullError):
                        await self.buffer.drop_oldest(
                            n, "disk full: drop-oldest", time.time_ns() // 10**6
                        )
                await self._wait(1.0)
                continue
            except Exception as exc:  # the publisher must not die
                log.warning("cannot start a batch (%s): retrying in 1s", exc)
                await self._wait(1.0)
                continue
            payload = encode_batch(self.gateway_id, batch_id, [raw for _, raw in rows])
            if not self.connected or self._stopping:
                continue
            info = self.client.publish(readings_topic(self.gateway_id), payload, qos=1)
            # Registered before yielding to the loop: the PUBACK callback cannot run earlier.
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.info("batch %d not sent (%s): will retry", batch_id, mqtt.error_string(info.rc))
                continue
            self._mids[info.mid] = batch_id
            self.inflight[batch_id] = InFlight(
                batch_id, set(seqs), time.monotonic(), info.mid, size=len(payload)
            )
            self.counters.batches_published += 1
            self.counters.records_published += len(seqs)

    # -- status -------------------------------------------------------------------------

    async def _publish_confirmed(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Publish at QoS 1 and wait for the PUBACK; OSError if not sent or refused."""
        assert self._loop is not None
        future: asyncio.Future[int] = self._loop.create_future()
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"not published: {mqtt.error_string(info.rc)}")
        self._status_mids[info.mid] = future
        code = await future
        if code >= 0x80:
            raise OSError(f"broker refused the message (reason 0x{code:02X})")
        return code

    # -- loss events --------------------------------------------------------------------

    def _now_ms(self) -> int:
        return self.clock.virtual_ns(time.time_ns()) // 10**6

    async def _loss_reporter(self) -> None:
        while not self._stopping:
            await self._connected.wait()
            buffer = self.buffer
            pending = (
                self._loss_check
                or buffer.dropped_total != self._loss_seen
                or buffer.refused_total > buffer.refused_reported
            )
            if pending:
                try:
                    await self._report_losses()
                except (OSError, sqlite3.Error) as exc:
                    log.warning("loss events not published: %s (will retry)", exc)
            await asyncio.sleep(0.5)

    async def _report_losses(self) -> None:
        buffer = self.buffer
        seen = buffer.dropped_total
        rows = await buffer.unreported_losses()
        while rows:
            reason = rows[0][4]
            group = []
            while rows and rows[0][4] == reason and len(group) < EVENT_MAX_RANGES:
                group.append(rows.pop(0))
            event = LossEvent(
                self.gateway_id,
                "dropped",
                reason,
                count=sum(r[3] for r in group),
                total=buffer.dropped_total,
                at_ms=self._now_ms(),
                ranges=tuple((r[1], r[2]) for r in group),
                loss_ids=(group[0][0], group[-1][0]),
            )
            await self._publish_confirmed(events_topic(self.gateway_id), event.to_bytes())
            self.counters.loss_events += 1
            await buffer.mark_reported(group[-1][0], buffer.refused_reported)
            log.info(
                "loss event published: %d records dropped (%s), seqs %s",
                event.count,
                reason,
                ", ".join(f"{lo}-{hi}" for lo, hi in event.ranges[:10]),
            )
        refused = buffer.refused_total
        if refused > buffer.refused_reported:
            event = LossEvent(
                self.gateway_id,
                "refused",
                f"buffer full ({buffer.when_full}): captures refused",
                count=refused - buffer.refused_reported,
                total=refused,
                at_ms=self._now_ms(),
            )
            await self._publish_confirmed(events_topic(self.gateway_id), event.to_bytes())
            self.counters.loss_events += 1
            await buffer.mark_reported(buffer.losses_reported, refused)
            log.info("loss event published: %d captures refused", event.count)
        self._loss_seen = seen
        self._loss_check = False

    # -- status -------------------------------------------------------------------------

    async def _publish_status(self, state: str, reason: str) -> int:
        assert self._loop is not None
        summary_backlog = self.buffer.count
        status = GatewayStatus(
            self.gateway_id,
            state,
            reason,
            at_ms=self.clock.virtual_ns(time.time_ns()) // 10**6,
            backlog=summary_backlog,
            dropped=self.buffer.dropped_total,
            last_seq=self.buffer.next_seq - 1,
            version=self.version,
            meters=self.meter_status(),
        )
        return await self._publish_confirmed(
            status_topic(self.gateway_id), status.to_bytes(), retain=True
        )

    async def _publish_status_logged(self, state: str, reason: str) -> None:
        try:
            await self._publish_status(state, reason)
        except OSError as exc:
            log.warning("status %s not published: %s", state, exc)

    async def _status_refresher(self) -> None:
        interval = self.config.status_interval_ns / 1e9
        while not self._stopping:
            await asyncio.sleep(interval)
            if self.connected:
                await self._publish_status_logged("online", "")
