"""Ingest on a real SQLite file with records signed by a test key (no MQTT)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.ingest import Incoming, Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from protocols.batch import Ack, encode_batch
from protocols.record import key_id_of, sign_record
from protocols.status import GatewayStatus
from protocols.topics import readings_topic, status_topic

from ._fixtures import IMPORT, POWER, T0, message, record, write_public_key

GW = "gw-1"
METERS = ["em-sdm-01", "em-sdm-02"]


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def ingest(db: Path, key: Ed25519PrivateKey, *messages: Incoming, enrol=True) -> list:
    async def go():
        store = await open_store(db)
        try:
            if enrol:
                pem = write_public_key(key, db.parent / "gw.pem")
                await enrol_gateway(store, GW, pem, METERS, T0)
            return await Ingestor(store).ingest(list(messages))
        finally:
            await store.close()

    return asyncio.run(go())


def counters(db: Path, meter: str) -> tuple:
    return rows(
        db,
        "SELECT records_stored, readings_stored, duplicate_records, duplicate_readings,"
        f" rejected, conflicts FROM counters WHERE meter_id = '{meter}'",
    )[0]


def test_a_valid_batch_is_stored_and_acked_with_every_seq(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    recs = [record(key, GW, "em-sdm-01", seq, T0 + seq * 60_000) for seq in (1, 2, 3)]
    [outcome] = ingest(db, key, message(GW, 7, [r.raw for r in recs]))
    assert outcome.ack == Ack(GW, 7, ((1, 3),), stored=3)
    assert rows(db, "SELECT COUNT(*) FROM records") == [(3,)]
    stored = rows(db, "SELECT obis, value, unit FROM readings WHERE seq = 2 ORDER BY obis")
    assert stored == [("1-0:1.7.0", "1234", "W"), ("1-0:1.8.0", "1002.5", "kWh")]
    raw = rows(db, "SELECT raw FROM records WHERE seq = 1")[0][0]
    assert raw == recs[0].raw  # kept byte for byte, re-verifiable
    assert counters(db, "em-sdm-01") == (3, 6, 0, 0, 0, 0)


def test_tampered_byte_is_rejected_as_bad_signature_and_counted(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    good = record(key, GW, "em-sdm-01", 1, T0)
    raw = bytearray(good.raw)
    raw[-70] ^= 0x01  # a byte of the last value, inside the signed body
    [outcome] = ingest(db, key, message(GW, 1, [bytes(raw)]))
    assert rows(db, "SELECT reason, seq, meter_id FROM quarantine") == [
        ("bad signature", 1, "em-sdm-01")
    ]
    assert rows(db, "SELECT COUNT(*) FROM readings") == [(0,)]
    assert counters(db, "em-sdm-01")[4] == 1
    # not acked: a forger must not make the gateway delete its genuine record 1
    assert outcome.ack.rejected == 1 and outcome.ack.handled == ()


def test_record_signed_by_an_unenrolled_key_is_rejected(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    other = Ed25519PrivateKey.generate()
    ingest(db, key, message(GW, 1, [record(other, GW, "em-sdm-01", 1, T0).raw]))
    unknown = key_id_of(other.public_key()).hex()
    assert rows(db, "SELECT reason FROM quarantine") == [(f"unknown key {unknown} for gateway",)]
    assert rows(db, "SELECT COUNT(*) FROM records") == [(0,)]


def test_record_claiming_the_enrolled_key_but_signed_by_another_is_bad(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    forger = Ed25519PrivateKey.generate()
    rec = record(forger, GW, "em-sdm-01", 1, T0).record
    forged = sign_record(rec, forger, key_id_of(key.public_key()))  # names the real key
    ingest(db, key, message(GW, 1, [forged.raw]))
    assert rows(db, "SELECT reason FROM quarantine") == [("bad signature",)]
    assert rows(db, "SELECT COUNT(*) FROM records") == [(0,)]


def test_gateway_never_enrolled_is_rejected(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    ingest(db, key, message("gw-9", 1, [record(key, "gw-9", "em-sdm-01", 1, T0).raw]))
    assert rows(db, "SELECT reason, gateway_id FROM quarantine") == [
        ("gateway not enrolled", "gw-9")
    ]


def test_meter_not_bound_to_the_gateway_is_rejected(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    ingest(db, key, message(GW, 1, [record(key, GW, "em-iem-03", 1, T0).raw]))
    assert rows(db, "SELECT reason, meter_id FROM quarantine") == [
        ("meter not bound to gateway", "em-iem-03")
    ]
    assert rows(db, "SELECT COUNT(*) FROM readings") == [(0,)]


def test_topic_naming_another_gateway_is_rejected(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    msg = message(GW, 1, [record(key, GW, "em-sdm-01", 1, T0).raw], topic_gateway="gw-2")
    [outcome] = ingest(db, key, msg)
    assert rows(db, "SELECT reason, gateway_id, topic FROM quarantine") == [
        (
            "topic gateway mismatch (batch header names 'gw-1')",
            "gw-2",
            "meterlink/v1/gw-2/readings",
        )
    ]
    assert outcome.gateway_id == "gw-2"
    assert outcome.ack is None  # a batch that lies about its gateway is not acked to anyone
    assert rows(db, "SELECT COUNT(*) FROM records") == [(0,)]


def test_record_of_another_gateway_inside_a_batch_is_rejected(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    # batch header and topic agree on gw-2, but the record inside is signed as gw-1
    payload = encode_batch("gw-2", 1, [record(key, GW, "em-sdm-01", 1, T0).raw])
    [outcome] = ingest(db, key, Incoming(readings_topic("gw-2"), payload, T0))
    assert rows(db, "SELECT reason, gateway_id, seq FROM quarantine") == [
        ("topic gateway mismatch", "gw-2", 1)
    ]
    assert outcome.ack is not None and outcome.ack.rejected == 1
    assert rows(db, "SELECT COUNT(*) FROM records") == [(0,)]


def test_replayed_batch_counts_duplicates_and_stores_nothing_twice(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    recs = [record(key, GW, "em-sdm-01", seq, T0 + seq * 60_000) for seq in (1, 2)]
    msg = message(GW, 1, [r.raw for r in recs])
    ingest(db, key, msg)
    # a restart in between: a new store, a new ingestor
    [outcome] = ingest(db, key, message(GW, 2, [r.raw for r in recs]))
    assert outcome.ack == Ack(GW, 2, ((1, 2),), stored=0, duplicates=2)
    assert rows(db, "SELECT COUNT(*) FROM records") == [(2,)]
    assert rows(db, "SELECT COUNT(*) FROM readings") == [(4,)]
    assert counters(db, "em-sdm-01") == (2, 4, 2, 0, 0, 0)


def test_the_same_batch_twice_in_one_transaction_stores_once(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    msg = message(GW, 1, [record(key, GW, "em-sdm-01", 1, T0).raw])
    first, second = ingest(db, key, msg, msg)
    assert first.ack.stored == 1 and second.ack.duplicates == 1
    assert rows(db, "SELECT COUNT(*) FROM readings") == [(2,)]


def test_sequence_reused_with_other_bytes_is_quarantined(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    ingest(db, key, message(GW, 1, [record(key, GW, "em-sdm-01", 5, T0).raw]))
    other = record(key, GW, "em-sdm-01", 5, T0 + 60_000)
    [outcome] = ingest(db, key, message(GW, 2, [other.raw]))
    assert rows(db, "SELECT reason, seq FROM quarantine") == [
        ("sequence reused with different content", 5)
    ]
    assert rows(db, "SELECT captured_ms FROM records") == [(T0,)]
    assert outcome.ack.handled == ((5, 5),) and outcome.ack.rejected == 1


def test_same_identity_same_value_from_two_gateways_is_a_duplicate(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    values = [(IMPORT, "1500.25", "kWh")]
    a = record(key, GW, "em-sdm-01", 1, T0, values)
    b = record(key, GW, "em-sdm-01", 2, T0, values)  # same capture, other seq (a resend path)
    ingest(db, key, message(GW, 1, [a.raw, b.raw]))
    assert rows(db, "SELECT COUNT(*) FROM readings") == [(1,)]
    assert rows(db, "SELECT COUNT(*) FROM conflicts") == [(0,)]
    assert counters(db, "em-sdm-01") == (2, 1, 0, 1, 0, 0)


def test_same_identity_different_value_is_kept_as_a_conflict(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    a = record(key, GW, "em-sdm-01", 1, T0, [(IMPORT, "1500.25", "kWh"), (POWER, "10", "W")])
    ingest(db, key, message(GW, 1, [a.raw]))
    b = record(key, GW, "em-sdm-01", 2, T0, [(IMPORT, "1500.26", "kWh"), (POWER, "10", "W")])
    [outcome] = ingest(db, key, message(GW, 2, [b.raw]))
    assert rows(
        db,
        "SELECT obis, stored_value, stored_seq, new_value, new_seq, new_gateway_id FROM conflicts",
    ) == [("1-0:1.8.0", "1500.25", 1, "1500.26", 2, GW)]
    assert rows(db, "SELECT value FROM readings WHERE obis = '1-0:1.8.0'") == [("1500.25",)]
    assert outcome.ack.conflicts == 1 and outcome.ack.stored == 1
    assert counters(db, "em-sdm-01") == (2, 2, 0, 1, 0, 1)


def test_unparseable_record_and_batch_go_to_quarantine(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    good = record(key, GW, "em-sdm-01", 1, T0)
    junk = b"\x09" + b"x" * 80  # unknown record version
    broken = Incoming("meterlink/v1/gw-1/readings", b"\x01\x04gw-1\x01\x05\xff", T0)
    first, second = ingest(db, key, message(GW, 3, [good.raw, junk]), broken)
    assert first.ack.unparsed == (1,) and first.ack.handled == ((1, 1),)
    assert second.ack is None  # no batch id to ack; the broker still gets its PUBACK
    reasons = [r for (r,) in rows(db, "SELECT reason FROM quarantine ORDER BY id")]
    assert reasons[0].startswith("unparseable record:") and "version" in reasons[0]
    assert reasons[1].startswith("unparseable batch:")
    assert rows(db, "SELECT COUNT(*) FROM records") == [(1,)]


def test_gateway_status_is_stored_with_the_batch(tmp_path: Path, key) -> None:
    db = tmp_path / "c.sqlite"
    status = GatewayStatus(GW, "offline", "connection lost")
    ingest(db, key, Incoming(status_topic(GW), status.to_bytes(), T0))
    assert rows(db, "SELECT gateway_id, state, reason FROM gateway_status") == [
        (GW, "offline", "connection lost")
    ]
