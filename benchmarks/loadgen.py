"""Load generator: a large simulated fleet's signed batches, published straight to the broker.

    .venv/bin/python -m benchmarks.loadgen --broker 127.0.0.1:1883 --config collector.toml \\
        [--meters 100000] [--gateways 1000] [--values 10] [--interval 15m] [--slots 1] \\
        [--rate 0] [--outage-fraction 0.2 --outage-slots 16] [--batch-max 500] [--window 8] \\
        [--connections 8] [--procs 2] [--timeout 600]
    .venv/bin/python -m benchmarks.loadgen --sign-only [--meters 100000] [--procs 2]

No simulator process per meter: ``--gateways`` Ed25519 keys (derived from ``--seed``, so every
worker and the enrolment make the same ones) each sign the records of their share of
``--meters`` meters, ``--values`` values per record, one record per meter per slot
(``--interval``), seqs gap-free per gateway from 1, with the agent's encoder
(``protocols.record``); the signing runs before the clock starts, in ``--procs`` processes.
The gateways are enrolled (keys and meter bindings) in the collector's store named by
``--config`` (its ``[collector] database``) or ``--database``, through the registry's
``Store.enrol``, before anything is published.

Then each gateway behaves like ``agent.uplink``: it publishes what it has captured and not
yet sent in batches of at most ``--batch-max`` records (``protocols.batch``), QoS 1, on its
own readings topic, with at most ``--window`` batches in flight, and sends the next one when
the collector's ``Ack`` (published after its COMMIT on ``meterlink/v1/{gw}/ack``) comes
back. What a gateway "has captured" follows the scenario:

* ``--rate 0`` (saturate): everything at once; readings/s is what the collectors commit.
* ``--rate R``: a 15-minute wave at R records/s: slot by slot, the gateways (in a shuffled
  order) get their meters' records of the slot at the rate R (compressed time: the next slot
  follows at once, not 15 minutes later).
* ``--outage-fraction F --outage-slots B``: the first F of the gateways (a region) come
  back from an outage holding B slots of backlog, all of it available at the start, while
  every gateway sends its live slots as above.

It reports records and batches acked, outstanding, stored/duplicate/rejected counts from the
acks, end-to-end latency per batch (publish to ack) p50/p95/p99, its own CPU, and the
signing rate, so that it is visible that the generator is not the bottleneck. The gateways
share ``--connections`` MQTT connections (a real fleet has one per gateway: the broker's
work per message is the same, its per-connection overhead is not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols.batch import Ack, encode_batch
from protocols.errors import DecodeError
from protocols.topics import PREFIX, readings_topic

from .machine import cpu_seconds, print_header, print_summary
from .records import SLOT_MS, gateway_records

__all__ = [
    "FleetPlan",
    "LoadGenerator",
    "LoadResult",
    "SignedFleet",
    "add_fleet_arguments",
    "enrol_fleet",
    "plan_from_args",
    "sign_fleet",
]


@dataclass(frozen=True)
class FleetPlan:
    """Who the simulated fleet is and what each gateway sends (no bytes: ``sign_fleet``)."""

    meters: int = 100_000
    gateways: int = 1_000
    values: int = 10
    slots: int = 1  # live slots every gateway sends
    outage_fraction: float = 0.0  # share of the gateways that come back from an outage
    outage_slots: int = 0  # slots of backlog each of them holds
    interval_ms: int = SLOT_MS
    end_ms: int = 0  # capture time of the last live slot (0: the current quarter hour)
    seed: int = 1
    prefix: str = "lg"

    def __post_init__(self) -> None:
        if not 1 <= self.gateways <= self.meters:
            raise ValueError("need 1 <= gateways <= meters")
        if self.end_ms == 0:
            now = time.time_ns() // 1_000_000
            object.__setattr__(self, "end_ms", now - now % self.interval_ms)

    def gateway_id(self, g: int) -> str:
        return f"{self.prefix}-gw-{g:05d}"

    def meters_of(self, g: int) -> list[str]:
        """Gateway ``g``'s meters: an even split of ``meters`` (the first ones get one more)."""
        base, extra = divmod(self.meters, self.gateways)
        first = g * base + min(g, extra)
        count = base + (1 if g < extra else 0)
        return [f"{self.prefix}-m-{i:07d}" for i in range(first, first + count)]

    @property
    def outage_gateways(self) -> int:
        return round(self.outage_fraction * self.gateways) if self.outage_slots else 0

    def backlog_slots(self, g: int) -> int:
        return self.outage_slots if g < self.outage_gateways else 0

    def slot_times(self, g: int) -> list[int]:
        """Capture times of what gateway ``g`` sends, oldest first: its backlog, then live."""
        n = self.backlog_slots(g) + self.slots
        return [self.end_ms - (n - 1 - k) * self.interval_ms for k in range(n)]

    def key(self, g: int) -> Ed25519PrivateKey:
        """Gateway ``g``'s key, the same in every process: derived from the seed."""
        digest = hashlib.sha256(f"meterlink-loadgen/{self.seed}/{g}".encode()).digest()
        return Ed25519PrivateKey.from_private_bytes(digest)

    @property
    def total_records(self) -> int:
        return sum(len(self.meters_of(g)) * len(self.slot_times(g)) for g in range(self.gateways))


@dataclass
class SignedFleet:
    """The records of every gateway (``records[g]``: raw signed records, seq 1 first)."""

    plan: FleetPlan
    records: list[list[bytes]]
    seconds: float  # wall clock of the signing
    cpu_s: float  # CPU of the signing processes together
    procs: int

    @property
    def count(self) -> int:
        return sum(len(r) for r in self.records)

    def describe(self) -> str:
        n = self.count
        size = sum(len(x) for r in self.records for x in r)
        return (
            f"signed {n:,} records ({n * self.plan.values:,} readings, {size / 1e6:.1f} MB) for "
            f"{self.plan.meters:,} meters on {self.plan.gateways:,} gateways in {self.seconds:.1f}"
            f" s with {self.procs} process(es): {n / self.seconds:,.0f} records/s "
            f"({n * self.plan.values / self.seconds:,.0f} readings/s); "
            f"{n / self.cpu_s if self.cpu_s else 0:,.0f} records per CPU-second "
            f"({self.cpu_s * 1e6 / n if n else 0:.0f} us/record: values, encoding, Ed25519)"
        )


def _sign_chunk(plan: FleetPlan, indices: list[int]) -> tuple[list[int], list[list[bytes]], float]:
    cpu0 = time.process_time()
    out = [
        gateway_records(
            plan.key(g),
            plan.gateway_id(g),
            plan.meters_of(g),
            plan.slot_times(g),
            plan.values,
            plan.seed * 1_000_003 + g,
        )
        for g in indices
    ]
    return indices, out, time.process_time() - cpu0


def sign_fleet(plan: FleetPlan, procs: int = 1) -> SignedFleet:
    """Sign everything the fleet will send, in ``procs`` processes (``spawn``: safe next to
    the threads of the broker and collector handles of the calling benchmark)."""
    t0 = time.perf_counter()
    records: list[list[bytes]] = [[] for _ in range(plan.gateways)]
    cpu = 0.0
    indices = list(range(plan.gateways))
    if procs <= 1:
        _, lists, cpu = _sign_chunk(plan, indices)
        records = lists
    else:
        chunk = max(1, plan.gateways // (procs * 8))
        chunks = [indices[i : i + chunk] for i in range(0, len(indices), chunk)]
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            for done, lists, used in pool.starmap(_sign_chunk, [(plan, c) for c in chunks]):
                cpu += used
                for g, raws in zip(done, lists, strict=True):
                    records[g] = raws
    return SignedFleet(plan, records, time.perf_counter() - t0, cpu, max(procs, 1))


async def enrol_fleet(plan: FleetPlan, target: str | Path) -> float:
    """Enrol every gateway's key and meters in the store at ``target`` (a SQLite path or a
    postgresql:// URL), as ``meterlink collector enrol`` does; returns the seconds taken."""
    from collector.registry import key_id_of
    from collector.store import open_store
    from collector.store.base import GatewayKey

    t0 = time.perf_counter()
    now_ms = time.time_ns() // 1_000_000
    store = await open_store(target)
    try:
        for g in range(plan.gateways):
            raw = plan.key(g).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            gateway_id = plan.gateway_id(g)
            key = GatewayKey(gateway_id, key_id_of(raw), raw, "active", now_ms)
            await store.enrol(gateway_id, key, plan.meters_of(g), now_ms)
    finally:
        await store.close()
    return time.perf_counter() - t0


# -- publishing ---------------------------------------------------------------------------------


@dataclass
class _InFlight:
    sent_at: float
    count: int
    backlog: bool  # starts with records of an outage backlog


@dataclass
class _GatewayState:
    index: int
    topic: str
    records: list[bytes]
    client: mqtt.Client
    backlog: int = 0  # of ``records``, the first this many are an outage backlog
    released: int = 0  # records "captured" so far (available to send)
    sent: int = 0  # records published so far (in order: seqs are gap-free)
    acked: int = 0
    next_batch: int = 1
    inflight: dict[int, _InFlight] = field(default_factory=dict)


@dataclass
class LoadResult:
    records: int
    values: int
    batches: int = 0
    acked_records: int = 0
    acked_batches: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    stray_acks: int = 0  # acks for no batch in flight (a duplicate ack)
    partial_acks: int = 0  # acks that did not cover their whole batch
    refused: int = 0  # publishes the broker refused (PUBACK reason >= 0x80)
    elapsed_s: float = 0.0  # first publish to the last ack (or to the timeout)
    publish_span_s: float = 0.0  # first publish to the last publish
    cpu_s: float = 0.0  # this process during the run (publishing, acks, paho threads)
    complete: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    #: per acked batch: (published at, s from the start; latency, ms; backlog batch?)
    samples: list[tuple[float, float, bool]] = field(default_factory=list)
    progress: list[tuple[float, int]] = field(default_factory=list)  # (t, acked records)

    @property
    def outstanding(self) -> int:
        return self.records - self.acked_records

    def percentile(self, p: float, backlog: bool | None = None) -> float:
        """Latency percentile of all batches, or of the live (``backlog=False``) or the
        backlog ones only."""
        values = (
            self.latencies_ms
            if backlog is None
            else [ms for _t, ms, b in self.samples if b == backlog]
        )
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def _split_line(self) -> list[str]:
        if not any(b for _t, _ms, b in self.samples):
            return []
        out = []
        for flag, name in ((False, "live batches"), (True, "backlog batches")):
            n = sum(1 for _t, _ms, b in self.samples if b == flag)
            out.append(
                f"{name} ({n:,}): p50 {self.percentile(50, flag):.0f} ms, p95 "
                f"{self.percentile(95, flag):.0f} ms, p99 {self.percentile(99, flag):.0f} ms"
            )
        return ["    " + "; ".join(out)]

    def readings_per_s(self) -> float:
        return self.acked_records * self.values / self.elapsed_s if self.elapsed_s else 0.0

    def steady_records_per_s(self, low: float = 0.1, high: float = 0.9) -> float:
        """Records/s between ``low`` and ``high`` of the acked records (no ramp-up, no tail)."""
        if not self.progress:
            return 0.0
        total = self.progress[-1][1]
        ia = next((i for i, p in enumerate(self.progress) if p[1] >= low * total), None)
        ib = next((i for i, p in enumerate(self.progress) if p[1] >= high * total), None)
        # too few acks in between (a few big transactions): no steady state to speak of
        if ia is None or ib is None or ib - ia < 10:
            return 0.0
        (ta, na), (tb, nb) = self.progress[ia], self.progress[ib]
        return (nb - na) / (tb - ta) if tb > ta else 0.0

    def lines(self) -> list[str]:
        acked = self.acked_records
        span = self.elapsed_s or 1.0
        steady = self.steady_records_per_s()
        return [
            f"{acked:,} of {self.records:,} records acked ({self.outstanding:,} outstanding) in "
            f"{self.elapsed_s:.2f} s" + ("" if self.complete else "  (INCOMPLETE: timed out)"),
            f"  {self.readings_per_s():,.0f} readings/s, {acked / span:,.0f} records/s (steady"
            " 10-90%: "
            + (f"{steady * self.values:,.0f} readings/s)" if steady else "n/a, too few acks)"),
            f"  {self.batches:,} batches published over {self.publish_span_s:.2f} s, "
            f"{self.acked_batches:,} acked; acks say stored {self.stored:,}, duplicates "
            f"{self.duplicates:,}, rejected {self.rejected:,}; stray acks {self.stray_acks}, "
            f"partial {self.partial_acks}, refused publishes {self.refused}",
            f"  latency publish->ack per batch: p50 {self.percentile(50):.0f} ms, p95 "
            f"{self.percentile(95):.0f} ms, p99 {self.percentile(99):.0f} ms, max "
            f"{max(self.latencies_ms, default=0):.0f} ms",
            *self._split_line(),
            f"  generator CPU {self.cpu_s:.2f} s ({self.cpu_s / span:.0%} of a core)",
        ]

    def summary(self) -> dict[str, object]:
        return {
            "records": self.records,
            "acked_records": self.acked_records,
            "outstanding": self.outstanding,
            "readings_per_s": round(self.readings_per_s()),
            "steady_readings_per_s": round(self.steady_records_per_s() * self.values),
            "latency_p50_ms": round(self.percentile(50), 1),
            "latency_p95_ms": round(self.percentile(95), 1),
            "latency_p99_ms": round(self.percentile(99), 1),
            **(
                {
                    "live_latency_p50_ms": round(self.percentile(50, False), 1),
                    "live_latency_p95_ms": round(self.percentile(95, False), 1),
                    "live_latency_p99_ms": round(self.percentile(99, False), 1),
                }
                if any(b for _t, _ms, b in self.samples)
                else {}
            ),
            "batches": self.batches,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "generator_cpu_s": round(self.cpu_s, 2),
            "complete": self.complete,
        }


class LoadGenerator:
    """The fleet's gateways on a few MQTT connections, plus one connection for the acks."""

    def __init__(
        self,
        host: str,
        port: int,
        fleet: SignedFleet,
        batch_max: int = 500,
        window: int = 8,
        connections: int = 8,
        client_prefix: str = "loadgen",
    ) -> None:
        self.host, self.port = host, port
        self.fleet = fleet
        self.batch_max = batch_max
        self.window = window
        self._acks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
        self._refused = 0
        self._t0 = 0.0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.clients = [
            self._client(f"{client_prefix}-pub-{i}") for i in range(max(1, connections))
        ]
        self.listener = self._client(f"{client_prefix}-acks")
        self.listener.on_message = self._on_ack
        self.listener.on_subscribe = lambda *a: self._subscribed.set()
        self.listener.on_connect = self._on_listener_connect

    def _client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.on_publish = self._on_publish
        return client

    def _on_listener_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        client.subscribe(f"{PREFIX}/+/ack", qos=1)

    def _on_ack(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        self._acks.put((time.perf_counter(), bytes(message.payload)))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            with self._lock:
                self._refused += 1

    def connect(self, timeout: float = 30.0) -> None:
        for client in [self.listener, *self.clients]:
            client.connect(self.host, self.port, keepalive=60)
            client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError("the ack listener got no SUBACK")

    def close(self) -> None:
        for client in [self.listener, *self.clients]:
            client.disconnect()
            client.loop_stop()

    def _schedule(self, rate: float) -> list[tuple[float, int, int]]:
        """(time offset, gateway, records available from then on), in time order."""
        plan = self.fleet.plan
        events: list[tuple[float, int, int]] = []
        per = [len(plan.meters_of(g)) for g in range(plan.gateways)]
        backlog = [plan.backlog_slots(g) * per[g] for g in range(plan.gateways)]
        for g in range(plan.gateways):
            if rate <= 0:
                events.append((0.0, g, len(self.fleet.records[g])))
            elif backlog[g]:
                events.append((0.0, g, backlog[g]))
        if rate > 0:
            order = list(range(plan.gateways))
            random.Random(plan.seed).shuffle(order)
            cumulative = 0
            for slot in range(plan.slots):
                for g in order:
                    events.append((cumulative / rate, g, backlog[g] + (slot + 1) * per[g]))
                    cumulative += per[g]
        events.sort(key=lambda e: e[0])
        return events

    def run(self, rate: float = 0.0, timeout: float = 600.0) -> LoadResult:
        """Publish the whole fleet's records as the scenario says; return when every record
        is acked or ``timeout`` s have passed."""
        plan = self.fleet.plan
        gateways = [
            _GatewayState(
                g,
                readings_topic(plan.gateway_id(g)),
                self.fleet.records[g],
                self.clients[g % len(self.clients)],
                plan.backlog_slots(g) * len(plan.meters_of(g)),
            )
            for g in range(plan.gateways)
        ]
        by_id = {plan.gateway_id(g): gateways[g] for g in range(plan.gateways)}
        result = LoadResult(self.fleet.count, plan.values)
        events = self._schedule(rate)
        ready: set[int] = set()
        next_event = 0
        cpu0 = cpu_seconds()
        t0 = self._t0 = time.perf_counter()
        deadline = t0 + timeout
        last_publish = last_ack = t0
        while result.acked_records < result.records:
            now = time.perf_counter()
            if now > deadline:
                break
            offset = now - t0
            while next_event < len(events) and events[next_event][0] <= offset:
                _, g, available = events[next_event]
                next_event += 1
                gateways[g].released = max(gateways[g].released, available)
                ready.add(g)
            for g in list(ready):
                st = gateways[g]
                while st.sent < st.released and len(st.inflight) < self.window:
                    n = min(self.batch_max, st.released - st.sent)
                    payload = encode_batch(
                        plan.gateway_id(g), st.next_batch, st.records[st.sent : st.sent + n]
                    )
                    st.inflight[st.next_batch] = _InFlight(
                        time.perf_counter(), n, st.sent < st.backlog
                    )
                    st.client.publish(st.topic, payload, qos=1)
                    st.next_batch += 1
                    st.sent += n
                    result.batches += 1
                    last_publish = time.perf_counter()
                if st.sent >= st.released or len(st.inflight) >= self.window:
                    ready.discard(g)
            wait = 0.5
            if next_event < len(events):
                wait = max(0.0, min(wait, events[next_event][0] - (time.perf_counter() - t0)))
            try:
                item = self._acks.get(timeout=wait) if wait > 0 else self._acks.get_nowait()
            except queue.Empty:
                continue
            while True:
                received, payload = item
                g_state = self._take_ack(payload, received, by_id, result)
                if g_state is not None:
                    last_ack = received
                    result.progress.append((received - t0, result.acked_records))
                    if g_state.sent < g_state.released:
                        ready.add(g_state.index)
                try:
                    item = self._acks.get_nowait()
                except queue.Empty:
                    break
        result.complete = result.acked_records >= result.records
        end = last_ack if result.complete else time.perf_counter()
        result.elapsed_s = end - t0
        result.publish_span_s = last_publish - t0
        result.cpu_s = cpu_seconds() - cpu0
        with self._lock:
            result.refused = self._refused
        return result

    def _take_ack(
        self,
        payload: bytes,
        received: float,
        by_id: dict[str, _GatewayState],
        result: LoadResult,
    ) -> _GatewayState | None:
        try:
            ack = Ack.from_bytes(payload)
        except DecodeError:
            result.stray_acks += 1
            return None
        st = by_id.get(ack.gateway_id)
        batch = st.inflight.pop(ack.batch_id, None) if st is not None else None
        if st is None or batch is None:
            result.stray_acks += 1
            return None
        handled = sum(high - low + 1 for low, high in ack.handled)
        if handled != batch.count:
            result.partial_acks += 1
        handled = min(handled, batch.count)
        st.acked += handled
        result.acked_records += handled
        result.acked_batches += 1
        result.stored += ack.stored
        result.duplicates += ack.duplicates
        result.rejected += ack.rejected
        latency = (received - batch.sent_at) * 1000
        result.latencies_ms.append(latency)
        result.samples.append((batch.sent_at - self._t0, latency, batch.backlog))
        return st


# -- command line -----------------------------------------------------------------------------


def add_fleet_arguments(parser: argparse.ArgumentParser, meters: int, gateways: int) -> None:
    parser.add_argument("--meters", type=int, default=meters)
    parser.add_argument("--gateways", type=int, default=gateways)
    parser.add_argument("--values", type=int, default=10, help="values per record (1-20)")
    parser.add_argument("--interval", default="15m", help="capture interval (15m)")
    parser.add_argument("--slots", type=int, default=1, help="live slots per meter")
    parser.add_argument("--outage-fraction", type=float, default=0.0,
                        help="share of gateways back from an outage with a backlog")  # fmt: skip
    parser.add_argument("--outage-slots", type=int, default=0, help="their backlog, in slots")
    parser.add_argument("--batch-max", type=int, default=500, help="records per batch at most")
    parser.add_argument("--window", type=int, default=8, help="batches in flight per gateway")
    parser.add_argument("--connections", type=int, default=8, help="MQTT connections")
    parser.add_argument("--procs", type=int, default=2, help="signing processes")
    parser.add_argument("--seed", type=int, default=1)


def plan_from_args(args: argparse.Namespace) -> FleetPlan:
    from collector.config import parse_duration_ms

    return FleetPlan(
        meters=args.meters, gateways=args.gateways, values=args.values, slots=args.slots,
        outage_fraction=args.outage_fraction, outage_slots=args.outage_slots,
        interval_ms=parse_duration_ms(args.interval), seed=args.seed,
    )  # fmt: skip


def _database_of(args: argparse.Namespace) -> str | Path | None:
    if args.database:
        return args.database
    if args.config:
        from collector.config import load_config

        return load_config(args.config).collector.database
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_fleet_arguments(parser, 100_000, 1_000)
    parser.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT")
    parser.add_argument("--config", type=Path, help="the collector's config (its database)")
    parser.add_argument("--database", help="or the store itself: SQLite path, postgresql:// URL")
    parser.add_argument("--no-enrol", action="store_true", help="gateways already enrolled")
    parser.add_argument("--rate", type=float, default=0.0, help="records/s (0: saturate)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--sign-only", action="store_true", help="measure the signing only")
    args = parser.parse_args(argv)
    plan = plan_from_args(args)
    print_header(
        "loadgen: a simulated fleet's signed batches straight to the broker",
        {"meters": plan.meters, "gateways": plan.gateways, "values": plan.values,
         "slots": plan.slots, "outage": f"{plan.outage_gateways} gw x {plan.outage_slots} slots",
         "records": plan.total_records, "rate": args.rate or "saturate",
         "batch_max": args.batch_max, "window": args.window, "connections": args.connections,
         "procs": args.procs},
    )  # fmt: skip
    fleet = sign_fleet(plan, args.procs)
    print(fleet.describe())
    figures: dict[str, object] = {
        "sign_records_per_s": round(fleet.count / fleet.seconds),
        "sign_records_per_cpu_s": round(fleet.count / fleet.cpu_s) if fleet.cpu_s else 0,
        "sign_procs": fleet.procs,
    }
    if args.sign_only:
        print_summary("loadgen", figures)
        return 0
    database = _database_of(args)
    if database is not None and not args.no_enrol:
        seconds = asyncio.run(enrol_fleet(plan, database))
        print(f"enrolled {plan.gateways:,} gateways and {plan.meters:,} meters in {seconds:.1f} s")
    host, _, port = args.broker.rpartition(":")
    generator = LoadGenerator(
        host or "127.0.0.1", int(port), fleet, args.batch_max, args.window, args.connections
    )
    try:
        generator.connect()
        result = generator.run(args.rate, args.timeout)
    finally:
        generator.close()
    print("\n".join(result.lines()))
    print_summary("loadgen", {**figures, **result.summary()})
    return 0 if result.complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
