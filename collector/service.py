"""The collector as a service: MQTT in, one ingest task, acks out, systemd notifications.

Threads: paho-mqtt runs its network loop in its own thread (``loop_start``); ``on_message``
only hands each message to the asyncio loop (``call_soon_threadsafe``). One ingest task
takes what is waiting (up to ``batch_coalesce`` messages), runs ``Ingestor.ingest`` (one
transaction), and only after its COMMIT sends the broker's PUBACKs (``manual_ack``) and the
gateways' acks. A message that was never committed is never acked, so the broker keeps it
in our session (``clean_start=False`` with a session expiry) and delivers it again.

PUBACKs carry the packet id of one connection: after a reconnect an old message's id may
belong to a new message, so messages are tagged with the connection they arrived on and a
stale one is not acked (the broker redelivers it; it is then a counted duplicate).

Several collectors (PostgreSQL): processes with their own ``[collector] id`` (the MQTT
client id: a second process with the same id takes the first one's session, and they throw
each other off by turns, which is logged as an error) and one ``[mqtt] group`` split the
batches and the command replies between them (shared subscriptions); each one receives
every status (``STATUS_SUBSCRIPTION``). The database deduplicates across them (the store),
and ``FleetKeeper`` merges their fleet states, so each one's API, dashboard and /metrics
show the whole fleet (config/collector-postgres.example.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import sdnotify
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols.topics import PREFIX, ack_topic, shared_subscription

from .commands.hook import attach as attach_commands
from .config import Config
from .errors import ConfigError
from .fleet.metrics import FleetMetrics
from .fleet.state import Fleet
from .fleet.tracking import FleetKeeper, TrackedIngestor
from .ingest import Incoming, Ingestor, IngestTotals, Outcome
from .insight.hook import attach as attach_usage_alerts
from .latency import attach as attach_latency
from .sla.events import attach as attach_sla
from .store import open_store
from .vee import VeeEngine

__all__ = ["CollectorService", "run_service"]

log = logging.getLogger("collector")

#: Statuses are not shared: a shared subscription gets no retained messages (MQTT 5,
#: 4.8.2), and a starting collector needs each gateway's retained status. So every collector
#: of a group stores every status; that is idempotent (one row per gateway, an older copy
#: never replaces a newer one: the store's upsert and ``collector.fleet.state``).
STATUS_SUBSCRIPTION = f"{PREFIX}/+/status"
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: a client connected with our client id
QUICK_DROP_S = 5.0
QUICK_DROPS = 3
_LOCK_COLLECTOR_ID = 0x6D6C0010  # advisory lock space of the collector ids (PostgreSQL)
_STOP = object()  # sentinel in the message queue


class CollectorService:
    def __init__(self, config: Config, ingestor: Ingestor) -> None:
        self.config = config
        self.ingestor = ingestor
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.subscribed = asyncio.Event()
        self.stopping = False
        self.notifier = sdnotify.SystemdNotifier()
        self._connection = 0  # bumped on every CONNACK (paho thread); tags messages
        self._connected_at = 0.0  # time.monotonic() of the last CONNACK
        self._quick_drops = 0  # connections lost within QUICK_DROP_S of being made, in a row
        self._sub_mid: int | None = None
        self._pub_lock = threading.Lock()
        self._pub_pending: set[int] = set()
        self._pub_early: set[int] = set()
        self._pub_drained = asyncio.Event()
        self.client = self._make_client()

    # paho side (network thread) ------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.config.collector.id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT connect refused: %s", reason_code)
            return
        self._connection += 1
        self._connected_at = time.monotonic()
        log.info(
            "MQTT connected to %s:%s (session present: %s)",
            self.config.mqtt.host,
            self.config.mqtt.port,
            flags.session_present,
        )
        options = SubscribeOptions(qos=1)
        _result, mid = client.subscribe(
            [
                (shared_subscription(self.config.mqtt.group), options),
                (STATUS_SUBSCRIPTION, options),
            ]
        )
        self._sub_mid = mid

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.stopping:
            return
        # Two processes with one client id throw each other off the broker by turns, each
        # taking the other's session (and its queued batches) at every reconnect. An MQTT 5
        # broker may say so (reason 0x8E); mosquitto 2.0 just closes the old connection, so
        # a connection that keeps dropping right after it was made is taken as the sign.
        quick = time.monotonic() - self._connected_at < QUICK_DROP_S
        self._quick_drops = self._quick_drops + 1 if quick else 0
        taken = getattr(reason_code, "value", None) == SESSION_TAKEN_OVER
        if taken or self._quick_drops == QUICK_DROPS:
            log.error(
                "MQTT: %s. Is another process connected with this collector's client id %r? "
                "Every collector process needs its own [collector] id in %s (the same [mqtt] "
                "group shares the batches); reconnecting",
                "the broker closed our session: session taken over by another client"
                if taken
                else f"the connection dropped {QUICK_DROPS} times in a row right after it was made",
                self.config.collector.id,
                self.config.path,
            )
            return
        log.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("MQTT subscription refused: %s", ", ".join(failed))
            return
        if mid == self._sub_mid and self.loop is not None:
            # every connection subscribes again, whatever the broker restored of the session;
            # a batch published before this may find no collector (the agent resends it)
            log.info("MQTT subscribed (connection %d)", self._connection)
            self.loop.call_soon_threadsafe(self.subscribed.set)

    def _on_message(self, client, userdata, msg) -> None:
        if self.stopping or self.loop is None:
            return  # not acked: the broker keeps it for our next session
        incoming = Incoming(
            msg.topic,
            bytes(msg.payload),
            time.time_ns() // 1_000_000,
            (msg.mid, msg.qos, self._connection),
        )
        self.loop.call_soon_threadsafe(self.queue.put_nowait, incoming)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("ack publish refused by the broker: %s", reason_code)
        with self._pub_lock:
            if mid in self._pub_pending:
                self._pub_pending.discard(mid)
            else:
                self._pub_early.add(mid)  # on_publish ran before publish() returned
            drained = not self._pub_pending
        if drained and self.loop is not None:
            self.loop.call_soon_threadsafe(self._set_drained)

    def _set_drained(self) -> None:
        # on the loop: a publish may have become pending since the callback looked
        with self._pub_lock:
            if not self._pub_pending:
                self._pub_drained.set()

    def _publish(self, topic: str, payload: bytes) -> None:
        # publish() takes paho's _out_message_mutex, which paho's network thread holds while
        # it calls _on_publish (which takes _pub_lock): never hold _pub_lock across publish(),
        # or both threads wait for each other forever (seen in the fault matrix: no more acks).
        # An on_publish that runs before the mid is noted here lands in _pub_early instead.
        info = self.client.publish(topic, payload, qos=1)
        with self._pub_lock:
            if info.mid in self._pub_early:
                self._pub_early.discard(info.mid)
            else:
                self._pub_pending.add(info.mid)
                self._pub_drained.clear()

    # asyncio side --------------------------------------------------------------------

    def _ack(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            mid, qos, connection = outcome.incoming.token  # type: ignore[misc]
            if connection == self._connection:
                self.client.ack(mid, qos)
            if outcome.ack is not None and outcome.gateway_id is not None:
                self._publish(ack_topic(outcome.gateway_id), outcome.ack.to_bytes())

    async def _ingest_loop(self) -> None:
        limit = self.config.collector.batch_coalesce
        while True:
            first = await self.queue.get()
            if first is _STOP:
                return
            messages = [first]
            stop_after = False
            while len(messages) < limit and not self.queue.empty():
                item = self.queue.get_nowait()
                if item is _STOP:
                    stop_after = True
                    break
                messages.append(item)
            delay = 0.5
            while True:
                try:
                    outcomes = await self.ingestor.ingest(messages)  # type: ignore[arg-type]
                    break
                except Exception:
                    # Nothing was committed and nothing is acked; try the same messages
                    # again (a locked or full disk may clear) rather than drop them.
                    log.exception("ingest transaction failed; retrying in %.1fs", delay)
                    if self.stopping:
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
            self._ack(outcomes)
            if stop_after:
                return

    async def _stats_loop(self) -> None:
        interval = self.config.collector.stats_interval
        last = self.ingestor.totals.snapshot()
        while True:
            await asyncio.sleep(interval)
            now = self.ingestor.totals.snapshot()
            log.info("rates per s: %s", _rates(last, now, interval))
            last = now

    async def _watchdog_loop(self, period: float) -> None:
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(period)

    def request_stop(self) -> None:
        if not self.stopping:
            log.info("stopping: finishing the transaction in progress")
            self.stopping = True
            self.notifier.notify("STOPPING=1")
            self.queue.put_nowait(_STOP)

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop)
        helpers: list[asyncio.Task] = [asyncio.create_task(self._stats_loop())]
        watchdog_usec = os.environ.get("WATCHDOG_USEC")
        if watchdog_usec and watchdog_usec.isdigit() and int(watchdog_usec) > 0:
            period = int(watchdog_usec) / 2 / 1_000_000
            helpers.append(asyncio.create_task(self._watchdog_loop(period)))
        mqtt_cfg = self.config.mqtt
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = mqtt_cfg.session_expiry
        # PUBACKs are held until the commit, so the broker may have at most this many batches
        # outstanding with us: let it send as many as one transaction takes.
        props.ReceiveMaximum = max(self.config.collector.batch_coalesce, 1)
        self.client.connect_async(
            mqtt_cfg.host,
            mqtt_cfg.port,
            mqtt_cfg.keepalive,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        try:
            ingest_task = asyncio.create_task(self._ingest_loop())
            subscribed = asyncio.create_task(self.subscribed.wait())
            done, _ = await asyncio.wait(
                {ingest_task, subscribed}, return_when=asyncio.FIRST_COMPLETED
            )
            if subscribed in done:
                log.info(
                    "ready: subscribed to %s and %s",
                    shared_subscription(mqtt_cfg.group),
                    STATUS_SUBSCRIPTION,
                )
                self.notifier.notify("READY=1")
            else:
                subscribed.cancel()
            await ingest_task
            await self._flush_acks(5.0)
        finally:
            self.stopping = True
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.client.disconnect()
            self.client.loop_stop()
        t = self.ingestor.totals
        log.info(
            "stopped after %d transactions: %d records stored, %d rejected",
            t.transactions,
            t.records_stored,
            t.rejected,
        )
        return 0

    async def _flush_acks(self, timeout: float) -> None:
        """Give the last acks to the gateways a chance to reach the broker before we leave."""
        with self._pub_lock:
            if not self._pub_pending:
                return
        try:
            await asyncio.wait_for(self._pub_drained.wait(), timeout)
        except TimeoutError:
            log.warning("%d gateway acks not confirmed by the broker", len(self._pub_pending))


def _rates(a: IngestTotals, b: IngestTotals, seconds: float) -> str:
    def r(name: str) -> str:
        return f"{(getattr(b, name) - getattr(a, name)) / seconds:.1f}"

    return (
        f"batches={r('batches')} records={r('records')} readings_stored={r('readings_stored')}"
        f" duplicate_records={r('duplicate_records')}"
        f" duplicate_readings={r('duplicate_readings')} rejected={r('rejected')}"
        f" conflicts={r('conflicts')}"
    )


def clock_ms_of(config: Config) -> Callable[[], int]:
    """The collector's clock in Unix ms: the system clock, or the fleet's virtual clock."""
    clock = config.collector.clock

    def now_ms() -> int:
        return clock.virtual_ns(time.time_ns()) // 1_000_000

    return now_ms


async def _claim_collector_id(config: Config) -> Any:
    """PostgreSQL: hold a session advisory lock named by ``[collector] id`` while the
    process runs (its own connection; the server drops the lock when the process dies), so
    a second collector with the same id on this database stops at once, saying why, instead
    of taking the first one's MQTT session by turns. None for SQLite."""
    if not _shared_database(config):
        return None
    import psycopg  # loaded only where PostgreSQL is used

    collector_id = config.collector.id
    try:
        conn = await psycopg.AsyncConnection.connect(
            str(config.collector.database), autocommit=True, connect_timeout=10
        )
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)",
            (_LOCK_COLLECTOR_ID, zlib.crc32(collector_id.encode()) - 2**31),
        )
        row = await cur.fetchone()
    except psycopg.Error as exc:
        raise RuntimeError(f"collector id lock: {str(exc).strip()}") from None
    if row is None or not row[0]:
        await conn.close()
        raise ConfigError(
            f"{config.path}: [collector] id {collector_id!r} is in use by another collector "
            "running on this database; every collector process needs its own id (its MQTT "
            "client id: the broker would throw one of them off at every reconnect)"
        )
    return conn


async def run_service(config: Config) -> int:
    id_lock = await _claim_collector_id(config)
    try:
        return await _run_service(config)
    finally:
        if id_lock is not None:
            await id_lock.close()


async def _run_service(config: Config) -> int:
    store = await open_store(config.collector.database)
    try:
        clock = config.collector.clock

        def virtual_ms(wall_ms: int) -> int:
            return clock.virtual_ns(wall_ms * 1_000_000) // 1_000_000

        def real_ms(collector_ms: int) -> int:
            return clock.real_ns(collector_ms * 1_000_000) // 1_000_000

        # fleet state (collector/fleet): fed by each committed ingest transaction
        fleet = Fleet(config.fleet.offline_after_ms, config.fleet.stale_after_ms, real_ms)
        metrics = FleetMetrics(fleet)
        keeper = FleetKeeper(store, fleet, config.fleet.flush_interval_ms)
        await keeper.load()
        if _shared_database(config) and (
            config.fleet.offline_after_ms < 4 * config.fleet.flush_interval_ms
        ):
            # another collector's batches reach this one's view a flush interval or two late
            log.warning(
                "[fleet] offline_after (%d ms) is less than 4 x flush_interval (%d ms): with "
                "several collectors a gateway heard by another one may show offline here",
                config.fleet.offline_after_ms,
                config.fleet.flush_interval_ms,
            )

        def make_ingestor(tracked_store) -> Ingestor:
            return Ingestor(
                tracked_store,
                clock_ms=clock_ms_of(config),
                max_future_ms=config.collector.max_future_ms,
                vee=VeeEngine(config.vee, virtual_ms) if config.vee.enabled else None,
            )

        ingestor = TrackedIngestor(make_ingestor, store, fleet, virtual_ms, metrics)
        attach_sla(ingestor, store, virtual_ms)  # gateway connectivity history (collector/sla)
        attach_usage_alerts(ingestor.inner, config, store, clock_ms_of(config))  # insight
        attach_latency(ingestor.inner, metrics, config)  # capture-to-commit (collector/latency)
        if not config.collector.clock.is_system:
            log.info("clock: %s", config.collector.clock)
        service = CollectorService(config, ingestor)  # type: ignore[arg-type]
        attach_commands(service, store)  # command replies, key retirements, MQTT TLS
        web_runner = await _start_web(config, store, fleet, metrics, keeper)
        keeper.start()
        try:
            return await service.run()
        finally:
            if web_runner is not None:
                await web_runner.cleanup()
            await keeper.stop()
    finally:
        await store.close()


def _shared_database(config: Config) -> bool:
    """A PostgreSQL database: other collectors may write to it too."""
    target = config.collector.database
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


async def _start_web(config: Config, store, fleet, metrics, keeper):  # -> AppRunner | None
    """``[http]``: the API, dashboard and /metrics in this same loop (collector/web)."""
    if config.http is None:
        return None
    from .web.app import make_app, start_http
    from .web.auth import load_auth

    auth = load_auth(config.http.users, config.http.session_hours)
    app = make_app(store, config, fleet=fleet, auth=auth, metrics=metrics, keeper=keeper)
    try:
        return await start_http(app, config.http.host, config.http.port)
    except OSError as exc:
        where = f"{config.http.host}:{config.http.port}"
        raise ConfigError(f"{config.path}: [http] cannot listen on {where}: {exc}") from None
