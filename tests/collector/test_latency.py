"""Capture-to-commit delay (issue 10): the commit time in the store, the exact figures of the
API computed from it, and the in-memory tracker behind /metrics.

Store level on both backends (SQLite file, PostgreSQL): the ``Ingestor`` on a controlled
clock. End to end: a real collector process with ``[http]`` and a real mosquitto, records
published by two gateways (one with a backlog of old captures), the API compared with
percentiles computed here from the store's own rows, and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.cli import main as collector_main
from collector.ingest import Ingestor
from collector.latency import BOUNDS_MS, LatencyHistogram, LatencyTracker, bucket_of
from collector.registry import enrol_gateway
from collector.store.latency_sqlite import latency_of
from collector.web.auth import new_token
from protocols.batch import Ack, encode_batch
from protocols.topics import ack_topic, readings_topic
from tests.support.procs import Mosquitto, Proc

from ._fixtures import T0, message, record, write_public_key
from ._stores import BACKENDS, Backend, make_backend, pg_rows

LIVE, BACKLOG = "gw-live", "gw-backlog"
METERS = {LIVE: ["em-l-1", "em-l-2"], BACKLOG: ["em-b-1", "em-b-2"]}
TOKEN, TOKEN_SHA = new_token()

#: one row per stored record with its commit time: (gateway, seq, captured, received, committed)
ROWS_SQL = (
    "SELECT r.gateway_id, r.seq, r.captured_ms, r.received_ms, c.committed_ms, r.commit_id"
    " FROM records r JOIN ingest_commits c ON c.id = r.commit_id ORDER BY r.gateway_id, r.seq"
)


def nearest_rank(values: list[int], p: int) -> int:
    """The textbook nearest-rank percentile: the ceil(p/100 * n)-th smallest value."""
    ordered = sorted(values)
    k = -(-p * len(ordered) // 100)  # ceil without floats
    return ordered[max(k, 1) - 1]


def expected(delays: list[int]) -> dict:
    return {
        "records": len(delays),
        "p50_ms": nearest_rank(delays, 50),
        "p95_ms": nearest_rank(delays, 95),
        "p99_ms": nearest_rank(delays, 99),
        "max_ms": max(delays),
    }


def delays_by_gateway(rows: list[tuple]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for gateway, _seq, captured, _received, committed, _commit in rows:
        out.setdefault(gateway, []).append(committed - captured)
    return out


# -- store level, both backends ---------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request, tmp_path)


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_every_record_of_a_transaction_gets_its_commit_time_and_the_figures_match_the_rows(
    backend: Backend, tmp_path: Path
) -> None:
    keys = {gw: Ed25519PrivateKey.generate() for gw in METERS}
    clock = Clock(T0 + 3_600_000)

    async def go() -> dict:
        store = await backend.open()
        try:
            for gw, key in keys.items():
                await enrol_gateway(store, gw, write_public_key(key, tmp_path / f"{gw}.pem"),
                                    METERS[gw], T0)  # fmt: skip
            ingestor = Ingestor(store, clock_ms=clock)
            ingestor.latency = tracker = LatencyTracker()
            seq = {LIVE: 0, BACKLOG: 0}
            for tx in range(3):  # three transactions, a batch of each gateway in each
                batch = []
                for gw in METERS:
                    raws = []
                    for i in range(7):
                        seq[gw] += 1
                        age = 1_000 + 137 * i + 50 * tx if gw == LIVE else 7_200_000 - 60_000 * i
                        meter = METERS[gw][i % 2]
                        raws.append(record(keys[gw], gw, meter, seq[gw], clock.ms - age).raw)
                    batch.append(message(gw, tx + 1, raws, received_ms=clock.ms - 500))
                clock.ms += 100  # checks take time: the stamp is the clock at the end
                await ingestor.ingest(batch)
                clock.ms += 60_000
            reads = latency_of(store)
            window = (T0, clock.ms + 1)
            fleet = await reads.fleet(*window)
            per = {r.gateway_id: r for r in await reads.gateways(*window)}
            one = await reads.gateways(*window, gateway_id=BACKLOG)
            page = await reads.gateways(*window, limit=1)
            last = (page[0].p99_ms, page[0].gateway_id)
            rest = await reads.gateways(*window, limit=1, after=last)
            empty = await reads.fleet(clock.ms + 10, clock.ms + 20)
            return {"fleet": fleet, "per": per, "one": one, "page": page, "rest": rest,
                    "empty": empty, "tracker": tracker}  # fmt: skip
        finally:
            await store.close()

    got = asyncio.run(go())
    rows = backend.rows(ROWS_SQL)
    assert len(rows) == 42
    commits = backend.rows("SELECT id, committed_ms FROM ingest_commits ORDER BY id")
    assert len(commits) == 3  # one row per transaction
    by_commit: dict[int, set[int]] = {}
    for _gw, _seq, _cap, _recv, committed, commit_id in rows:
        by_commit.setdefault(commit_id, set()).add(committed)
    assert all(len(times) == 1 for times in by_commit.values())  # one time per transaction
    assert sorted(committed for (committed,) in by_commit.values()) == [
        T0 + 3_600_000 + 100,
        T0 + 3_600_000 + 60_200,
        T0 + 3_600_000 + 120_300,
    ]  # fmt: skip  (the clock at each transaction's end)
    assert sorted(committed for _id, committed in commits) == sorted(
        committed for (committed,) in by_commit.values()
    )
    for _gw, _seq, captured, received, committed, _commit in rows:
        assert captured < received < committed

    delays = delays_by_gateway(rows)
    everything = [d for ds in delays.values() for d in ds]
    fleet = got["fleet"]
    assert fleet.gateway_id is None
    assert (fleet.count, fleet.p50_ms, fleet.p95_ms, fleet.p99_ms, fleet.max_ms) == tuple(
        expected(everything).values()
    )
    for gw, ds in delays.items():
        row = got["per"][gw]
        assert (row.count, row.p50_ms, row.p95_ms, row.p99_ms, row.max_ms) == tuple(
            expected(ds).values()
        ), gw
    assert got["per"][BACKLOG].p50_ms > 7_000_000 > 10_000 > got["per"][LIVE].p99_ms
    assert [r.gateway_id for r in got["one"]] == [BACKLOG]
    # worst p99 first, and the cursor gives the next one
    assert [r.gateway_id for r in got["page"] + got["rest"]] == [BACKLOG, LIVE]
    assert got["empty"].count == 0

    # the tracker saw the same delays, bucketed
    tracker: LatencyTracker = got["tracker"]
    assert tracker.total.count == 42 and tracker.total.max_ms == max(everything)
    assert tracker.total.sum_ms == sum(everything)
    counts = [0] * (len(BOUNDS_MS) + 1)
    for d in everything:
        counts[bucket_of(d)] += 1
    assert list(tracker.total.counts) == counts
    assert [g for g, _h in tracker.worst(2)] == [BACKLOG, LIVE]


def test_records_stored_before_the_latency_step_have_no_commit_time(
    backend: Backend, tmp_path: Path
) -> None:
    """Rows written without the ingest stamp (old rows, tools) are left out of the figures."""
    key = Ed25519PrivateKey.generate()

    async def go() -> tuple:
        from collector.store.base import IngestWrite, RecordRow

        store = await backend.open()
        try:
            raw = record(key, LIVE, "em-l-1", 1, T0).raw
            async with store.ingest_transaction() as tx:
                await tx.write(IngestWrite(records=[RecordRow(LIVE, 1, "em-l-1", T0, raw, T0)]))
            return await latency_of(store).fleet(0, 2**62)
        finally:
            await store.close()

    assert asyncio.run(go()).count == 0
    assert backend.rows("SELECT committed_ms FROM ingest_commits") == [(None,)]


# -- the tracker ---------------------------------------------------------------------------


def test_tracker_forgets_after_two_generations_and_histograms_merge() -> None:
    now = [0.0]
    tracker = LatencyTracker(generation_s=10, max_gateways=2, monotonic=lambda: now[0])
    tracker.observe([(LIVE, 1, "m", 1_000)], 1_500)  # 500 ms
    tracker.observe([(BACKLOG, 1, "m", 0)], 3_000_000)
    tracker.observe([("gw-third", 1, "m", 0)], 10)  # beyond max_gateways: fleet only
    assert tracker.recent_gateway(LIVE).quantile(99) == 500
    assert tracker.recent_gateway("gw-third").count == 0
    assert tracker.recent_fleet().count == 3
    now[0] = 11.0  # one generation on: still in the window
    # (the bucket's bound, 3,600 s, but never above the largest delay seen)
    assert tracker.recent_gateway(BACKLOG).quantile(50) == 3_000_000
    now[0] = 25.0  # two on: gone, rows reusable
    assert tracker.recent_fleet().count == 0 and tracker.worst() == []
    tracker.observe([("gw-third", 2, "m", 0)], 20)
    assert tracker.recent_gateway("gw-third").quantile(50) == 20
    assert tracker.total.count == 4
    a, b = LatencyHistogram(), LatencyHistogram()
    for d in (10, 20, 30):
        a.add(d)
    b.add(5_000)
    a.merge(b)
    assert (a.count, a.max_ms, a.quantile(50), a.quantile(99)) == (4, 5_000, 50, 5_000)


# -- end to end: collector process, mosquitto, HTTP ------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    """A collector process with [http] (metrics behind the login) on ``database``."""

    def __init__(self, root: Path, broker: Mosquitto, database: str) -> None:
        self.root = root
        self.database = database
        self.http_port = _free_port()
        users = root / "users.toml"
        users.write_text(f'[[token]]\nname = "t"\nrole = "read-only"\nsha256 = "{TOKEN_SHA}"\n')
        os.chmod(users, 0o600)
        self.config = root / "collector.toml"
        self.config.write_text(
            f'[collector]\ndatabase = "{database}"\nid = "collector-latency"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nkeepalive = 10\n'
            f'[http]\nport = {self.http_port}\nusers = "users.toml"\nmetrics_auth = true\n'
        )
        self.keys = {gw: Ed25519PrivateKey.generate() for gw in METERS}
        for gw, key in self.keys.items():
            pem = write_public_key(key, root / f"{gw}.pem")
            args = ["enrol", gw, "--public-key", str(pem), "--meters", ",".join(METERS[gw])]
            assert collector_main([*args, "--config", str(self.config)]) == 0
        self.proc = Proc(
            [sys.executable, "-m", "collector", "run", str(self.config)], "collector", cwd=root
        )

    def wait_ready(self) -> None:
        self.proc.wait_line(lambda line: "ready: subscribed" in line, timeout=60)
        self.proc.wait_line(lambda line: "http: listening" in line, timeout=30)

    def get(self, path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, path: str) -> dict:
        status, body = self.get(path)
        assert status == 200, f"{path}: {status} {body[:300]!r}"
        return json.loads(body)

    def rows(self, sql: str) -> list[tuple]:
        if self.database.startswith("postgresql://"):
            return pg_rows(self.database, sql)
        with sqlite3.connect(self.root / self.database) as conn:
            return conn.execute(sql).fetchall()


def publish_fleet(head: Head, broker: Mosquitto) -> int:
    """Each gateway publishes 3 batches of 10 records (live: captured a second or so ago;
    backlog: 2 hours ago), waiting for each ack; returns the records sent."""
    acks: list[Ack] = []
    got = threading.Condition()
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-sim", protocol=mqtt.MQTTv5)

    def on_message(_c, _u, msg) -> None:  # type: ignore[no-untyped-def]
        with got:
            acks.append(Ack.from_bytes(msg.payload))
            got.notify_all()

    def acked(n: int) -> Callable[[], bool]:
        return lambda: len(acks) >= n

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    sent = 0
    try:
        for gw in METERS:
            client.subscribe(ack_topic(gw), qos=1)
            assert subscribed.wait(10)
            subscribed.clear()
        seq = {gw: 0 for gw in METERS}
        for batch_id in (1, 2, 3):
            for gw, key in head.keys.items():
                now = time.time_ns() // 1_000_000
                raws = []
                for i in range(10):
                    seq[gw] += 1
                    age = 800 + 40 * i if gw == LIVE else 7_200_000 - 900_000 * (i % 8)
                    raws.append(record(key, gw, METERS[gw][i % 2], seq[gw], now - age).raw)
                client.publish(readings_topic(gw), encode_batch(gw, batch_id, raws), qos=1)
                sent += len(raws)
                with got:
                    assert got.wait_for(acked(sent // 10), 30), head.proc.output
    finally:
        client.loop_stop()
        client.disconnect()
    assert sum(a.stored for a in acks) == sent
    return sent


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return "collector.sqlite"


@pytest.fixture
def head(tmp_path: Path, mosquitto: Mosquitto, database: str) -> Iterator[Head]:
    head = Head(tmp_path, mosquitto, database)
    try:
        head.wait_ready()
        yield head
    finally:
        head.proc.stop()


@pytest.mark.integration
def test_api_cli_and_metrics_show_the_delays_the_store_holds(
    head: Head, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = publish_fleet(head, mosquitto)
    rows = head.rows(ROWS_SQL)
    assert len(rows) == sent
    for _gw, _seq, captured, received, committed, _commit in rows:
        # captured by the gateway, received by the collector, then committed (system clock)
        assert captured <= received <= committed
    delays = delays_by_gateway(rows)
    everything = [d for ds in delays.values() for d in ds]
    first = min(r[4] for r in rows)
    window = f"from={first}&to={max(r[4] for r in rows) + 1}"

    doc = head.json(f"/api/latency?{window}")
    assert doc["fleet"] == expected(everything)
    assert doc["target_p99_ms"] == 2_000
    assert {i["gateway_id"]: {k: v for k, v in i.items() if k != "gateway_id"}
            for i in doc["items"]} == {gw: expected(ds) for gw, ds in delays.items()}  # fmt: skip
    assert [i["gateway_id"] for i in doc["items"]] == [BACKLOG, LIVE]  # worst first
    for gw in METERS:
        one = head.json(f"/api/v1/gateways/{gw}/latency?{window}")
        assert one == {"gateway_id": gw, "from_ms": first, "to_ms": doc["to_ms"],
                       "target_p99_ms": 2_000, **expected(delays[gw])}  # fmt: skip
    # the backlog shows: hours, against well under the 2 s target for the live gateway
    assert doc["items"][0]["p50_ms"] >= 3_600_000 > 2_000 > doc["items"][1]["p99_ms"]
    # the default window (last 15 minutes of commits) holds them all too
    assert head.json("/api/latency")["fleet"]["records"] == sent
    # a window without commits, a bad parameter, an unknown gateway
    assert head.json(f"/api/latency?from={first - 10}&to={first}")["fleet"]["records"] == 0
    status, body = head.get("/api/latency?from=yesterday")
    assert status == 400 and b"from='yesterday'" in body
    assert head.get("/api/gateways/no-such-gw/latency")[0] == 404

    # the command prints the same figures (meterlink collector latency)
    last = max(r[4] for r in rows) + 1
    cli = ["latency", "--config", str(head.config), "--from", str(first), "--to", str(last)]
    capsys.readouterr()
    assert collector_main([*cli, "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["fleet"] == expected(everything)
    assert {g.pop("gateway_id"): g for g in printed["gateways"]} == {
        gw: expected(ds) for gw, ds in delays.items()
    }
    assert collector_main(cli) == 0
    table = capsys.readouterr().out
    assert "target p99 under 2 s (real time): NOT met" in table  # the backlog's hours
    assert collector_main([*cli[:3], "--from", "yesterday"]) == 2
    assert "--from 'yesterday'" in capsys.readouterr().err

    status, text = head.get("/metrics")
    assert status == 200
    metrics = text.decode()
    count = re.search(r"^meterlink_capture_to_commit_seconds_count (\S+)$", metrics, re.M)
    assert count is not None and float(count.group(1)) == sent
    inf = re.search(r'^meterlink_capture_to_commit_seconds_bucket\{le="\+Inf"\} (\S+)$',
                    metrics, re.M)  # fmt: skip
    assert inf is not None and float(inf.group(1)) == sent
    two_s = re.search(r'^meterlink_capture_to_commit_seconds_bucket\{le="2.0"\} (\S+)$',
                      metrics, re.M)  # fmt: skip
    assert two_s is not None and float(two_s.group(1)) == len(delays[LIVE])
    for q in ("0.5", "0.95", "0.99"):
        assert f'meterlink_capture_to_commit_recent_seconds{{quantile="{q}"}}' in metrics
    worst = dict(re.findall(r'^meterlink_capture_to_commit_worst_seconds\{gateway="([^"]+)",'
                            r'quantile="0.99"\} (\S+)$', metrics, re.M))  # fmt: skip
    assert set(worst) == {LIVE, BACKLOG}
    assert float(worst[BACKLOG]) >= 3_600 > 2 >= float(worst[LIVE])


def test_the_benchmark_captures_each_slot_at_the_instant_the_generator_releases_it() -> None:
    """benchmarks.latency signs gateway g's slot with capture time start + its release
    offset: the offsets must be the generator's own schedule, or the delays are off."""
    from benchmarks.latency import _placeholder, _release_offsets
    from benchmarks.loadgen import FleetPlan, LoadGenerator

    plan = FleetPlan(meters=50, gateways=7, seed=3, prefix="t", end_ms=T0)
    generator = LoadGenerator("127.0.0.1", 1, _placeholder(plan), connections=1)
    schedule = generator._schedule(250.0)
    assert sorted(g for _t, g, _n in schedule) == list(range(7))
    offsets = _release_offsets(plan, 250.0)
    assert {g: t for t, g, _n in schedule} == dict(enumerate(offsets))
    assert _release_offsets(plan, 0.0) == [0.0] * 7
