"""Batches frame records; one broken record never spoils the others."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocols.batch import Ack, decode_batch, encode_batch, seq_ranges
from protocols.errors import DecodeError
from protocols.obis import Obis
from protocols.record import ClockSource, Quality, Record, Value, sign_record

KEY = Ed25519PrivateKey.generate()


def raw_record(seq: int) -> bytes:
    record = Record(
        "gw-01",
        f"m-{seq}",
        seq,
        1_700_000_000_000 + seq,
        ClockSource.GATEWAY,
        Quality.NONE,
        (Value(Obis.parse("1-0:1.8.0"), Decimal(seq), "kWh"),),
    )
    return sign_record(record, KEY).raw


def test_batch_round_trip_keeps_record_bytes() -> None:
    raws = [raw_record(seq) for seq in range(1, 6)]
    batch = decode_batch(encode_batch("gw-01", 9, raws))
    assert (batch.gateway_id, batch.batch_id) == ("gw-01", 9)
    assert [r.raw for r in batch.records] == raws
    assert batch.bad == ()


def test_a_broken_record_is_reported_and_the_others_kept() -> None:
    raws = [raw_record(seq) for seq in range(1, 4)]
    raws[1] = b"\x07" + raws[1][1:]  # unknown record version
    batch = decode_batch(encode_batch("gw-01", 1, raws))
    assert [r.record.seq for r in batch.records] == [1, 3]
    assert len(batch.bad) == 1
    assert batch.bad[0].index == 1
    assert "unknown record version 7" in batch.bad[0].error


def test_truncated_batch_fails_whole_with_place() -> None:
    payload = encode_batch("gw-01", 3, [raw_record(1)])
    with pytest.raises(DecodeError, match="batch 3 from gw-01"):
        decode_batch(payload[:-5])


@given(st.binary(max_size=300))
def test_garbage_batch_parses_or_raises_decode_error(data: bytes) -> None:
    # any other exception type (IndexError, ValueError, ...) fails the test
    try:
        decode_batch(data)
    except DecodeError as exc:
        assert "byte" in str(exc) or ":" in str(exc)  # the error says where


def test_seq_ranges_collapse() -> None:
    assert seq_ranges([5, 1, 2, 3, 7, 6, 10]) == [(1, 3), (5, 7), (10, 10)]
    assert seq_ranges([]) == []


def test_ack_round_trip_and_seqs() -> None:
    ack = Ack("gw-01", 4, ((1, 3), (7, 7)), stored=3, duplicates=1)
    back = Ack.from_bytes(ack.to_bytes())
    assert back == ack
    assert list(back.seqs()) == [1, 2, 3, 7]


@pytest.mark.parametrize(
    "payload",
    [b"not json", b'{"v":2}', b'{"v":1,"gateway":"g","batch":1,"handled":[[3,1]]}', b"[]"],
)
def test_bad_acks_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        Ack.from_bytes(payload)
