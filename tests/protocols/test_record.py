"""The signed record: exact round trips, tamper detection, errors that say where."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError, EncodeError
from protocols.obis import Obis
from protocols.record import (
    SIGNATURE_CONTEXT,
    ClockSource,
    Quality,
    Record,
    Value,
    decode_record,
    key_id_of,
    sign_record,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
E_IMPORT = Obis.parse("1-0:1.8.0")
POWER = Obis.parse("1-0:16.7.0")


def make_record(values: tuple[Value, ...] | None = None, **kw) -> Record:
    fields = dict(
        gateway_id="gw-01",
        meter_id="em-sdm-01",
        seq=42,
        captured_ms=1_793_527_200_123,
        clock_source=ClockSource.GATEWAY,
        flags=Quality.NONE,
        values=values
        or (
            Value(E_IMPORT, Decimal("12345.67"), "kWh"),
            Value(POWER, Decimal("-1234.5"), "W", Quality.ESTIMATED),
        ),
    )
    fields.update(kw)
    return Record(**fields)


def test_record_round_trips_exactly_and_verifies() -> None:
    signed = sign_record(make_record(), KEY)
    decoded = decode_record(signed.raw)
    assert decoded.record == make_record(key_id=key_id_of(KEY.public_key()))
    raw_public = KEY.public_key().public_bytes_raw()
    assert decoded.record.key_id == hashlib.sha256(raw_public).digest()[:8]
    assert decoded.raw == signed.raw
    assert decoded.verify(KEY.public_key())


def test_signature_is_over_context_and_exact_bytes() -> None:
    signed = sign_record(make_record(), KEY)
    # a third party needs only the public key, the context string and the bytes
    KEY.public_key().verify(signed.signature, SIGNATURE_CONTEXT + signed.body)


def test_every_single_byte_change_is_detected() -> None:
    signed = sign_record(make_record(), KEY)
    public = KEY.public_key()
    for index in range(len(signed.raw)):
        tampered = bytearray(signed.raw)
        tampered[index] ^= 0x01
        try:
            decoded = decode_record(bytes(tampered))
        except DecodeError:
            continue
        assert not decoded.verify(public), f"flip at byte {index} went unnoticed"


def test_record_names_the_key_that_signed_it() -> None:
    other = Ed25519PrivateKey.generate()
    decoded = decode_record(sign_record(make_record(), other).raw)
    assert decoded.record.key_id == key_id_of(other.public_key())
    assert decoded.record.key_id != key_id_of(KEY.public_key())


def test_unsigned_record_has_no_body() -> None:
    with pytest.raises(EncodeError, match="key id"):
        make_record().body()


def test_other_key_does_not_verify() -> None:
    signed = sign_record(make_record(), KEY)
    assert not decode_record(signed.raw).verify(Ed25519PrivateKey.generate().public_key())


def test_kwh_travels_as_wh_with_scaler_and_comes_back_as_kwh() -> None:
    signed = sign_record(make_record((Value(E_IMPORT, Decimal("1.5"), "Wh"),)), KEY)
    value = decode_record(signed.raw).record.values[0]
    assert (value.value, value.unit) == (Decimal("0.0015"), "kWh")


def test_bytes_per_reading_for_a_ten_value_record() -> None:
    values = tuple(Value(Obis(1, 0, c, 7, 0), Decimal("230.12"), "V") for c in range(32, 42))
    raw = sign_record(make_record(values), KEY).raw
    assert len(raw) / len(values) < 25


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(meter_id="bad/meter"), "meter id"),
        (dict(gateway_id=""), "gateway id"),
        (dict(seq=0), "sequence"),
        (dict(values=(Value(E_IMPORT, Decimal("NaN"), "kWh"),)), "finite Decimal"),
        (dict(values=(Value(E_IMPORT, Decimal("1"), "furlong"),)), "unknown unit"),
        (dict(values=(Value(E_IMPORT, Decimal("1E+200"), "kWh"),)), "exponent"),
    ],
)
def test_bad_records_are_refused_at_encoding(change: dict, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        make_record(key_id=bytes(8), **change).body()


def test_float_values_are_refused() -> None:
    with pytest.raises(EncodeError, match="Decimal"):
        sign_record(make_record((Value(E_IMPORT, 1.5, "kWh"),)), KEY)  # type: ignore[arg-type]


def test_truncated_record_names_meter_and_byte() -> None:
    raw = sign_record(make_record(), KEY).raw
    with pytest.raises(DecodeError, match=r"meter em-sdm-01.*at byte"):
        decode_record(raw[:40] + raw[-64:], "batch 7 record 3")


def test_trailing_junk_is_refused() -> None:
    signed = sign_record(make_record(), KEY)
    with pytest.raises(DecodeError, match="after the last value"):
        decode_record(signed.body + b"\x00" + signed.signature)


@given(st.binary(max_size=200))
def test_garbage_parses_or_raises_decode_error(data: bytes) -> None:
    # any other exception type (IndexError, ValueError, ...) fails the test
    try:
        decode_record(data)
    except DecodeError as exc:
        assert "byte" in str(exc) or ":" in str(exc)  # the error says where


decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: abs(d.as_tuple().exponent) < 100 and len(d.as_tuple().digits) <= 18
)


@given(decimals, st.sampled_from(["Wh", "V", "A", "Hz", "m3", "varh"]))
def test_any_exact_value_round_trips(value: Decimal, unit: str) -> None:
    obis = Obis(1, 0, 99, 99, 0)  # not a known quantity: comes back in its own unit
    record = make_record((Value(obis, value, unit),))
    decoded = decode_record(sign_record(record, KEY).raw).record.values[0]
    assert decoded.value == value
    assert decoded.value.as_tuple().exponent == value.as_tuple().exponent
    assert decoded.unit == unit
