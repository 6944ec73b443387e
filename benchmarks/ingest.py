"""Head-end ingest on one core, through mosquitto: signed batches in, acks out.

    .venv/bin/python -m benchmarks.ingest [--records 20000] [--values 10] [--batch 200]

A private mosquitto and the real collector process (``meterlink collector run``) with one
gateway enrolled through the CLI. The collector is pinned to one core, the broker and this
publisher to the other. N pre-built signed batches are published QoS 1 as fast as the
broker takes them; the clock runs from the first publish to the last ``Ack`` on the
gateway's ack topic (the collector sends it only after its COMMIT). Then the same batches
through ``collector.ingest.Ingestor`` in-process (no MQTT) on the same core, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.keys import load_key
from collector.ingest import Incoming, Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from protocols.batch import Ack, encode_batch
from protocols.topics import ack_topic, readings_topic

from .headend import HeadEnd
from .machine import cpu_seconds, pin_self, print_header, print_summary, split_cores
from .records import add_record_arguments, meter_ids, signed_records

GATEWAY = "gw-bench-01"
TARGET = 50_000  # readings/s, from the issue


def build_batches(raws: list[bytes], per_batch: int) -> list[tuple[int, bytes]]:
    """(batch id, payload); batch ids from 1, like the agent's durable counter."""
    return [
        (n + 1, encode_batch(GATEWAY, n + 1, raws[i : i + per_batch]))
        for n, i in enumerate(range(0, len(raws), per_batch))
    ]


class Publisher:
    """A paho client in the gateway's place: publishes batches, counts acked seqs."""

    def __init__(self, port: int, expected: int) -> None:
        self.expected = expected
        self.handled: set[int] = set()
        self.acks = 0
        self.pubacks = 0
        self.stored = self.duplicates = self.rejected = 0
        self.last_puback = 0.0
        self.last_ack = 0.0
        self.done = threading.Event()
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        client.subscribe(ack_topic(GATEWAY), qos=1)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.pubacks += 1
            self.last_puback = time.perf_counter()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        ack = Ack.from_bytes(message.payload)
        with self.lock:
            self.acks += 1
            self.stored += ack.stored
            self.duplicates += ack.duplicates
            self.rejected += ack.rejected
            self.handled.update(ack.seqs())
            if len(self.handled) >= self.expected:
                self.last_ack = time.perf_counter()
                self.done.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def in_process(
    workdir: Path, public_key: Path, meters: list[str], batches: list[tuple[int, bytes]],
    coalesce: int, profile: bool,
) -> dict[str, float]:  # fmt: skip
    """The same batches straight into ``Ingestor`` on a fresh SQLite store, then again
    (all duplicates: a full resend after lost acks)."""
    store = await open_store(workdir / "inprocess.sqlite")
    try:
        await enrol_gateway(store, GATEWAY, public_key, meters, time.time_ns() // 10**6)
        ingestor = Ingestor(store)
        topic = readings_topic(GATEWAY)
        now = time.time_ns() // 10**6
        messages = [Incoming(topic, payload, now, None) for _, payload in batches]
        out = {}
        for run in ("fresh", "replay"):
            profiler = cProfile.Profile() if profile and run == "fresh" else None
            t0 = time.perf_counter()
            cpu0 = cpu_seconds()
            if profiler:
                profiler.enable()
            for i in range(0, len(messages), coalesce):
                await ingestor.ingest(messages[i : i + coalesce])
            if profiler:
                profiler.disable()
            out[f"{run}_s"] = time.perf_counter() - t0
            out[f"{run}_cpu_s"] = cpu_seconds() - cpu0
            if profiler:
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
                print("in-process ingest profile (fresh run, by own time):")
                print("\n".join(text.getvalue().splitlines()[:45]))
        totals = ingestor.totals
        out["stored"] = totals.readings_stored
        out["duplicate_records"] = totals.duplicate_records
        return out
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_record_arguments(parser, "records per MQTT message")
    parser.add_argument("--coalesce", type=int, default=50, help="in-process: batches per tx")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process run")
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    cores = split_cores()
    print_header(
        "ingest: head-end on one core through mosquitto",
        {
            "records": args.records, "values_per_record": args.values,
            "readings": args.records * args.values, "records_per_batch": args.batch,
            "meters": args.meters, "qos": 1,
            "pinning": f"publisher+broker cpu {sorted(cores[0])}, collector cpu "
            f"{sorted(cores[1])}" if cores else "none (one core)",
        },
    )  # fmt: skip
    readings = args.records * args.values
    meters = meter_ids(args.meters)
    with tempfile.TemporaryDirectory(prefix="ml-bench-ingest-") as tmp:
        workdir = Path(tmp)
        pin_self(cores[0] if cores else None)  # the broker inherits this
        collector_core = min(cores[1]) if cores else None
        with HeadEnd(workdir, GATEWAY, meters, collector_core) as head:
            key = load_key(head.state_dir / "keys")
            t = time.perf_counter()
            raws = signed_records(key.private, GATEWAY, meters, args.records, args.values)
            batches = build_batches(raws, args.batch)
            size = sum(len(p) for _, p in batches)
            print(
                f"built {len(batches)} batches, {size / 1e6:.2f} MB, "
                f"{size / readings:.1f} bytes/reading in {time.perf_counter() - t:.1f}s"
            )
            publisher = Publisher(head.port, args.records)
            try:
                if not publisher.subscribed.wait(30):
                    raise TimeoutError("no SUBACK for the ack topic")
                topic = readings_topic(GATEWAY)
                cpu0 = {**head.cpu(), "publisher": cpu_seconds()}
                t0 = time.perf_counter()
                for _, payload in batches:
                    publisher.client.publish(topic, payload, qos=1)
                t_queued = time.perf_counter()
                finished = publisher.done.wait(args.timeout)
                t_end = publisher.last_ack if finished else time.perf_counter()
                cpu1 = {**head.cpu(), "publisher": cpu_seconds()}
                rss = head.collector_peak_rss_kb()
            finally:
                publisher.close()
            elapsed = t_end - t0
            acked = len(publisher.handled)
            db_records, db_readings = head.stored()
        tx = head.transactions()
        print(
            f"through mosquitto: {acked} of {args.records} records acked in {elapsed:.2f}s"
            + ("" if finished else f"  (TIMED OUT after {args.timeout:.0f}s)")
        )
        print(
            f"  {acked * args.values / elapsed:,.0f} readings/s  "
            f"{acked / elapsed:,.0f} records/s  (target >= {TARGET:,} readings/s)"
        )
        print(
            f"  publish calls returned after {t_queued - t0:.2f}s, last broker PUBACK after "
            f"{publisher.last_puback - t0:.2f}s; {publisher.acks} acks: stored "
            f"{publisher.stored} duplicates {publisher.duplicates} rejected {publisher.rejected}"
        )
        print(
            f"  collector database: {db_records} records, {db_readings} readings; "
            f"{tx} transactions (mean {len(batches) / tx if tx else 0:.1f} batches each)"
        )
        print(f"  collector peak RSS (VmHWM): {rss / 1024:.1f} MiB")
        busy = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
        print(
            "  CPU seconds in the window: "
            + ", ".join(f"{n} {v:.2f}s ({v / elapsed:.0%})" for n, v in busy.items())
        )
        pin_self(cores[1] if cores else None)
        result = asyncio.run(
            in_process(workdir, head.public_key, meters, batches, args.coalesce, args.profile)
        )
        fresh, replay = result["fresh_s"], result["replay_s"]
        print(
            f"in-process Ingestor -> SQLite (no MQTT, {args.coalesce} batches per transaction, "
            f"one core): {readings / fresh:,.0f} readings/s ({args.records / fresh:,.0f} "
            f"records/s, {fresh * 1e6 / args.records:.0f} us/record, "
            f"CPU {result['fresh_cpu_s']:.2f}s of {fresh:.2f}s)"
        )
        print(
            f"  replay of the same batches (all duplicates, still verified): "
            f"{readings / replay:,.0f} readings/s ({replay * 1e6 / args.records:.0f} us/record)"
        )
    print_summary(
        "ingest",
        {
            "readings_per_s": round(acked * args.values / elapsed),
            "records_per_s": round(acked / elapsed),
            "acked_records": acked,
            "complete": finished and acked == args.records,
            "collector_peak_rss_mib": round(rss / 1024, 1),
            "inprocess_readings_per_s": round(readings / fresh),
            "target_readings_per_s": TARGET,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
