"""Hostile and broken messages at the collector: each refused with its own reason kind,
counted, kept in quarantine, and never in the way of the good messages around it.

Every case goes through ``collector.ingest.Ingestor`` on a real SQLite file, in ONE
transaction with a good batch before and after it; the last test does the same through a
real collector process and mosquitto.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector import reasons
from collector.cli import main as collector_main
from collector.ingest import EARLIEST_MS, Incoming, Ingestor
from collector.registry import enrol_gateway, revoke_key
from collector.store import open_store
from protocols.batch import MAX_BATCH_BYTES, Ack, encode_batch
from protocols.clock import ClockSetting
from protocols.record import SIGNATURE_SIZE, Value, key_id_of
from protocols.topics import ack_topic, readings_topic, status_topic
from tests.support.procs import Mosquitto, Proc, wait_for

from ._fixtures import IMPORT, T0, message, record, write_public_key

GW, GW2 = "gw-1", "gw-2"
NOW = T0 + 30 * 86_400_000  # the collector's clock in these tests
MINUTE = 60_000


@dataclass
class World:
    key: Ed25519PrivateKey  # gw-1's active key
    old: Ed25519PrivateKey  # gw-1's revoked key
    key2: Ed25519PrivateKey  # gw-2's key
    stranger: Ed25519PrivateKey  # enrolled nowhere


@pytest.fixture
def world() -> World:
    return World(*(Ed25519PrivateKey.generate() for _ in range(4)))


async def _setup(db: Path, w: World) -> None:
    store = await open_store(db)
    try:
        for name, key, gateway, meters in (
            ("old", w.old, GW, ["em-1", "em-2"]),
            ("gw1", w.key, GW, ["em-1", "em-2"]),
            ("gw2", w.key2, GW2, ["em-3"]),
        ):
            pem = write_public_key(key, db.parent / f"{name}.pem")
            await enrol_gateway(store, gateway, pem, meters, T0)
        await revoke_key(store, GW, key_id_of(w.old.public_key()).hex(), T0)
    finally:
        await store.close()


def ingest(db: Path, *transactions: list[Incoming]) -> list[list]:
    async def go() -> list[list]:
        store = await open_store(db)
        try:
            ingestor = Ingestor(store, clock_ms=lambda: NOW, max_future_ms=86_400_000)
            return [await ingestor.ingest(tx) for tx in transactions]
        finally:
            await store.close()

    return asyncio.run(go())


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def good(w: World) -> tuple[Incoming, Incoming]:
    before = [record(w.key, GW, "em-1", s, T0 + s * 15 * MINUTE).raw for s in (1, 2, 3)]
    after = [record(w.key, GW, "em-2", s, T0 + s * 15 * MINUTE).raw for s in (4, 5, 6)]
    return message(GW, 1, before), message(GW, 2, after)


def tampered(w: World, seq: int, **changes: object) -> bytes:
    """The genuine record ``seq`` of the good batch, altered, with its old signature."""
    genuine = record(w.key, GW, "em-1", seq, T0 + seq * 15 * MINUTE)
    altered = replace(genuine.record, **changes)  # type: ignore[arg-type]
    return altered.body() + genuine.raw[-SIGNATURE_SIZE:]


def incoming(topic: str, payload: bytes) -> Incoming:
    return Incoming(topic, payload, T0)


def batch_of(w: World, *raws: bytes, gateway: str = GW, batch_id: int = 9) -> Incoming:
    return message(gateway, batch_id, list(raws))


def lying_length(w: World) -> list[Incoming]:
    raw = record(w.key, GW, "em-1", 100, T0).raw
    payload = bytearray(encode_batch(GW, 9, [raw]))
    at = payload.index(raw)
    assert payload[at - 1] == len(raw) < 128  # the record's 1-byte length field
    payload[at - 1 : at] = b"\xff\x7f"  # now says 16383 bytes follow
    return [incoming(readings_topic(GW), bytes(payload))]


# (id, the hostile messages, the reason kind, a text the reason holds)
CASES: list[tuple[str, Callable[[World], list[Incoming]], str, str]] = [
    (
        "tampered value",
        lambda w: [batch_of(w, tampered(w, 2, values=(Value(IMPORT, Decimal("9999.5"), "kWh"),)))],
        reasons.TAMPERED_VALUE,
        "1-0:1.8.0 9999.5 kWh (stored genuine: 1002.5 kWh)",
    ),
    (
        "tampered timestamp",
        lambda w: [batch_of(w, tampered(w, 3, captured_ms=T0 + 5 * MINUTE))],
        reasons.TAMPERED_TIME,
        "captured 2026-10-31T23:05:00.000Z (stored genuine: 2026-10-31T23:45:00.000Z)",
    ),
    (
        "tampered, genuine never seen",
        lambda w: [batch_of(w, tampered(w, 50, captured_ms=T0))],
        reasons.BAD_SIGNATURE,
        "bad signature",
    ),
    (
        "unenrolled key",
        lambda w: [batch_of(w, record(w.stranger, GW, "em-1", 100, T0).raw)],
        reasons.UNKNOWN_KEY,
        "unknown key",
    ),
    (
        "revoked key",
        lambda w: [batch_of(w, record(w.old, GW, "em-1", 100, T0).raw)],
        reasons.REVOKED_KEY,
        "revoked key",
    ),
    (
        "valid key, another gateway's topic",
        lambda w: [message(GW2, 9, [record(w.key2, GW2, "em-3", 100, T0).raw], topic_gateway=GW)],
        reasons.TOPIC_MISMATCH,
        "batch header names 'gw-2'",
    ),
    (
        "valid key, another gateway's records in its batch",
        lambda w: [batch_of(w, record(w.key2, GW2, "em-3", 100, T0).raw)],
        reasons.TOPIC_MISMATCH,
        "topic gateway mismatch",
    ),
    (
        "gateway not enrolled",
        lambda w: [batch_of(w, record(w.key, "gw-9", "em-1", 1, T0).raw, gateway="gw-9")],
        reasons.NOT_ENROLLED,
        "gateway not enrolled",
    ),
    (
        "meter not bound",
        lambda w: [batch_of(w, record(w.key, GW, "em-3", 100, T0).raw)],
        reasons.NOT_BOUND,
        "meter not bound to gateway",
    ),
    (
        "JSON where a batch is expected",
        lambda w: [incoming(readings_topic(GW), b'{"v":1,"readings":[1,2,3]}')],
        reasons.UNPARSEABLE_BATCH,
        "unknown batch version 123",
    ),
    (
        "random bytes where a batch is expected",
        lambda w: [incoming(readings_topic(GW), bytes.fromhex("5f3a9c00e1ff02"))],
        reasons.UNPARSEABLE_BATCH,
        "unparseable batch",
    ),
    (
        "malformed status JSON",
        lambda w: [incoming(status_topic(GW), b'{"v":1,"gateway_id":"gw-1",')],
        reasons.UNPARSEABLE_STATUS,
        "not JSON",
    ),
    (
        "status with wrong field types",  # was accepted, then failed the whole transaction
        lambda w: [
            incoming(
                status_topic(GW), b'{"v":1,"gateway_id":"gw-1","state":"online","backlog":"x"}'
            )
        ],
        reasons.UNPARSEABLE_STATUS,
        "field 'backlog' must be int",
    ),
    (
        "oversized",
        lambda w: [incoming(readings_topic(GW), b"\x01\x04gw-1\x01\x01" + bytes(MAX_BATCH_BYTES))],
        reasons.OVERSIZED,
        f"more than {MAX_BATCH_BYTES}",
    ),
    (
        "record count that lies",
        lambda w: [incoming(readings_topic(GW), b"\x01\x04gw-1\x09\xff\xff\xff\xff\x0f\x00")],
        reasons.COUNT_LIES,
        "record count 4294967295 larger than the message",
    ),
    (
        "record length that lies",
        lying_length,
        reasons.TRUNCATED,
        "need 16383 bytes",
    ),
    (
        "truncated",
        lambda w: [
            incoming(
                readings_topic(GW),
                encode_batch(GW, 9, [record(w.key, GW, "em-1", 100, T0).raw])[:-30],
            )
        ],
        reasons.TRUNCATED,
        "truncated record 0",
    ),
    (
        "unparseable record in a good frame",
        lambda w: [batch_of(w, b"\x09" + b"x" * 80)],
        reasons.UNPARSEABLE_RECORD,
        "unknown record version 9",
    ),
    (
        "future-dated far ahead",
        lambda w: [batch_of(w, record(w.key, GW, "em-1", 100, NOW + 2 * 86_400_000).raw)],
        reasons.FUTURE,
        "the collector accepts up to 2026-12-01T23:00:00.000Z",
    ),
    (
        "before 2000",
        lambda w: [batch_of(w, record(w.key, GW, "em-1", 100, EARLIEST_MS - 1).raw)],
        reasons.TOO_OLD,
        "1999-12-31T23:59:59.999Z",
    ),
    (
        "bad topic",
        lambda w: [incoming("meterlink/v2/gw-1/readings", b"\x01")],
        reasons.BAD_TOPIC,
        "is not under meterlink/v1/",
    ),
]


@pytest.mark.parametrize(("name", "build", "kind", "text"), CASES, ids=[c[0] for c in CASES])
def test_hostile_message_is_refused_counted_kept_and_the_good_ones_stored(
    tmp_path: Path, world: World, name: str, build, kind: str, text: str
) -> None:
    db = tmp_path / "c.sqlite"
    asyncio.run(_setup(db, world))
    before, after = good(world)
    hostile = build(world)
    [outcomes] = ingest(db, [before, *hostile, after])
    # the good ones around it: all six stored
    assert rows(db, "SELECT seq FROM records ORDER BY seq") == [(s,) for s in range(1, 7)]
    assert outcomes[0].ack.stored == 3 and outcomes[-1].ack.stored == 3
    # the hostile one: in quarantine, under its own kind, with its detail, counted
    kept = rows(db, "SELECT kind, reason, length(raw) FROM quarantine")
    assert [k for k, _r, _n in kept] == [kind], kept
    assert text in kept[0][1], kept
    assert 0 < kept[0][2] <= MAX_BATCH_BYTES
    assert rows(db, "SELECT SUM(rejected) FROM counters") == [(1,)]
    stats = _stats_json(db)
    assert stats["quarantine"] == {kind: 1}


def _stats_json(db: Path) -> dict:
    config = db.parent / "collector.toml"
    config.write_text(f'[collector]\ndatabase = "{db.name}"\n')
    out = db.parent / "stats.json"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert collector_main(["stats", "--config", str(config), "--json"]) == 0
    out.write_text(buffer.getvalue())
    return json.loads(buffer.getvalue())


def test_every_kind_is_distinct_and_one_transaction_takes_them_all(
    tmp_path: Path, world: World
) -> None:
    db = tmp_path / "c.sqlite"
    asyncio.run(_setup(db, world))
    before, after = good(world)
    hostile = [m for _n, build, _k, _t in CASES for m in build(world)]
    ingest(db, [before, *hostile, after])
    assert rows(db, "SELECT seq FROM records ORDER BY seq") == [(s,) for s in range(1, 7)]
    expected: dict[str, int] = {}
    for _n, _b, kind, _t in CASES:
        expected[kind] = expected.get(kind, 0) + 1
    assert _stats_json(db)["quarantine"] == expected
    assert len({kind for _n, _b, kind, _t in CASES}) == 17  # distinct reasons, not one bucket
    assert set(expected) <= set(reasons.KINDS)


def test_replayed_batch_is_counted_as_duplicates_not_rejected(tmp_path: Path, world) -> None:
    db = tmp_path / "c.sqlite"
    asyncio.run(_setup(db, world))
    before, after = good(world)
    _first, again = ingest(db, [before, after], [before, after])
    assert [o.ack.duplicates for o in again] == [3, 3]
    assert [o.ack.handled for o in again] == [((1, 3),), ((4, 6),)]
    assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]
    assert rows(db, "SELECT SUM(duplicate_records), SUM(rejected) FROM counters") == [(6, 0)]
    assert rows(db, "SELECT COUNT(*) FROM readings") == [(12,)]


def test_future_tolerance_is_relative_to_the_collectors_clock(tmp_path: Path, world) -> None:
    db = tmp_path / "c.sqlite"
    asyncio.run(_setup(db, world))
    inside = record(world.key, GW, "em-1", 1, NOW + 86_400_000).raw  # exactly the tolerance
    beyond = record(world.key, GW, "em-1", 2, NOW + 86_400_000 + 1).raw
    ingest(db, [batch_of(world, inside, beyond)])
    assert rows(db, "SELECT seq FROM records") == [(1,)]
    assert rows(db, "SELECT kind, seq FROM quarantine") == [(reasons.FUTURE, 2)]


def test_a_message_that_trips_an_unforeseen_error_is_quarantined_alone(
    tmp_path: Path, world: World, monkeypatch
) -> None:
    db = tmp_path / "c.sqlite"
    asyncio.run(_setup(db, world))
    from collector.registry import Registry

    real = Registry.check

    def flaky(self, gateway_id, signed):
        if signed.record.seq == 100:
            raise RuntimeError("boom")
        return real(self, gateway_id, signed)

    monkeypatch.setattr(Registry, "check", flaky)
    before, after = good(world)
    poison = batch_of(world, record(world.key, GW, "em-1", 100, T0).raw)
    [outcomes] = ingest(db, [before, poison, after])
    assert rows(db, "SELECT seq FROM records ORDER BY seq") == [(s,) for s in range(1, 7)]
    assert rows(db, "SELECT kind, reason FROM quarantine") == [
        (reasons.INTERNAL, "internal error: RuntimeError: boom")
    ]
    assert outcomes[1].ack is None  # nothing of it is acked to the gateway by seq


def test_revoke_command_bumps_the_registry_and_refuses_later_records(
    tmp_path: Path, world: World, capsys
) -> None:
    db = tmp_path / "c.sqlite"
    asyncio.run(_setup(db, world))
    config = tmp_path / "collector.toml"
    config.write_text(f'[collector]\ndatabase = "{db.name}"\n')
    version = rows(db, "SELECT value FROM meta WHERE key = 'registry_version'")[0][0]
    key_id = key_id_of(world.key.public_key()).hex()
    [[ok]] = ingest(db, [batch_of(world, record(world.key, GW, "em-1", 1, T0).raw)])
    assert ok.ack.stored == 1
    assert collector_main(["revoke", GW, "--key-id", key_id.upper(), "--config", str(config)]) == 0
    assert "revoked" in capsys.readouterr().out
    after = rows(db, "SELECT value FROM meta WHERE key = 'registry_version'")[0][0]
    assert int(after) == int(version) + 1
    assert rows(db, f"SELECT status FROM gateway_keys WHERE key_id = '{key_id}'") == [("revoked",)]
    [[refused]] = ingest(db, [batch_of(world, record(world.key, GW, "em-1", 2, T0).raw)])
    assert refused.ack.rejected == 1
    assert rows(db, "SELECT reason FROM quarantine") == [(f"revoked key {key_id}",)]
    # again: says so, no second bump; an unknown key id names the gateway's keys
    assert collector_main(["revoke", GW, "--key-id", key_id, "--config", str(config)]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert collector_main(["revoke", GW, "--key-id", "00" * 8, "--config", str(config)]) == 2
    assert key_id in capsys.readouterr().err
    assert collector_main(["revoke", GW, "--key-id", "xyz", "--config", str(config)]) == 2


def test_clock_and_max_future_in_the_config(tmp_path: Path) -> None:
    from collector.config import load_config

    config = tmp_path / "collector.toml"
    config.write_text('[collector]\nclock = "2026-11-01T00:00:00Z@1000x3600"\nmax_future = "6h"\n')
    loaded = load_config(config).collector
    assert str(loaded.clock) == "2026-11-01T00:00:00Z@1000x3600"
    assert loaded.max_future_ms == 6 * 3_600_000
    assert load_config(tmp_path / "x.toml" if False else config).collector.clock.speed == 3600
    config.write_text('[collector]\nmax_future = "soon"\n')
    with pytest.raises(Exception, match=r"line 2.*max_future"):
        load_config(config)
    config.write_text("[collector]\n")
    default = load_config(config).collector
    assert default.clock.is_system and default.max_future_ms == 86_400_000


# -- through a real collector process and mosquitto -----------------------------------


@pytest.mark.integration
def test_real_collector_stores_the_good_and_quarantines_the_hostile(
    tmp_path: Path, mosquitto: Mosquitto, world: World
) -> None:
    db = tmp_path / "collector.sqlite"
    asyncio.run(_setup(db, world))
    config = tmp_path / "collector.toml"
    # the collector runs on a virtual clock (as the fleets do): NOW is its present
    config.write_text(
        f'[collector]\ndatabase = "collector.sqlite"\nid = "collector-hostile"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n'
    )
    # a virtual clock standing at NOW (days away from the wall clock, like a demo's)
    now = datetime.fromtimestamp(NOW / 1000, UTC)
    clock = str(ClockSetting.accelerated(now, time.time_ns(), Decimal(1)))
    collector = Proc(
        [sys.executable, "-m", "collector", "run", str(config), "--clock", clock], "collector"
    )
    acks: list[Ack] = []
    try:
        collector.wait_line(lambda line: "ready: subscribed" in line, timeout=30)
        gw = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="hostile", protocol=mqtt.MQTTv5
        )
        subscribed = threading.Event()
        gw.on_message = lambda c, u, msg: acks.append(Ack.from_bytes(msg.payload))
        gw.on_subscribe = lambda *a: subscribed.set()
        gw.connect("127.0.0.1", mosquitto.port)
        gw.loop_start()
        try:
            gw.subscribe(ack_topic(GW), qos=1)
            assert subscribed.wait(10)
            before, after = good(world)
            # captured an hour before the virtual now: stored only if the collector runs on
            # that clock (on the wall clock it would be days ahead, "future-dated")
            recent = message(GW, 3, [record(world.key, GW, "em-2", 7, NOW - 3_600_000).raw])
            mix = [
                recent,
                before,
                *CASES[0][1](world),  # tampered value
                *CASES[3][1](world),  # unenrolled key
                *CASES[4][1](world),  # revoked key
                *CASES[8][1](world),  # meter not bound
                *CASES[9][1](world),  # JSON instead of a batch
                *CASES[11][1](world),  # malformed status
                *CASES[14][1](world),  # record count that lies
                *CASES[18][1](world),  # future-dated (relative to the virtual clock)
                after,
            ]
            for m in mix:
                gw.publish(m.topic, m.payload, qos=1).wait_for_publish(10)

            def done() -> bool:
                return (
                    len(rows(db, "SELECT id FROM quarantine")) >= 8
                    and len(rows(db, "SELECT seq FROM records")) >= 7
                )

            wait_for(done, 30, "the mix to be ingested")
        finally:
            gw.loop_stop()
            gw.disconnect()
    finally:
        code = collector.stop()
    assert code == 0, collector.output[-3000:]
    assert rows(db, "SELECT seq FROM records ORDER BY seq") == [(s,) for s in range(1, 8)]
    assert f"clock: {clock}" in collector.output
    kinds = sorted(k for (k,) in rows(db, "SELECT kind FROM quarantine"))
    assert kinds == sorted(
        [
            reasons.TAMPERED_VALUE,
            reasons.UNKNOWN_KEY,
            reasons.REVOKED_KEY,
            reasons.NOT_BOUND,
            reasons.UNPARSEABLE_BATCH,
            reasons.UNPARSEABLE_STATUS,
            reasons.COUNT_LIES,
            reasons.FUTURE,
        ]
    )
