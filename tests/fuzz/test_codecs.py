"""Property tests of every codec in ``protocols/`` (fast: part of the suite).

For each target of ``targets.TARGETS``: random bytes and mutated valid inputs raise nothing
but the codec's documented errors; valid inputs round-trip; sizes are bounded. The long
run (>= 1M cases per codec) is ``python -m tests.fuzz.run`` (docs/reliability.md).
Each regression found by fuzzing has its own test at the end.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.batch import MAX_BATCH_BYTES, Ack, decode_batch, encode_batch
from protocols.clock import ClockSetting, ClockSettingError
from protocols.errors import DecodeError
from protocols.modbus import (
    DataType,
    ModbusError,
    ModbusValueError,
    Order,
    decode,
    encode,
    parse_profile,
)
from protocols.obis import Obis
from protocols.record import (
    ClockSource,
    Quality,
    Record,
    Value,
    decode_record,
    sign_record,
)
from protocols.status import GatewayStatus
from protocols.topics import parse_topic, readings_topic, status_topic
from protocols.varint import Reader, put_svarint, put_uvarint

from .targets import KEY, TARGETS, PromiseBroken

FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mutated(seed_list: list[bytes]) -> st.SearchStrategy[bytes]:
    """A valid input with a few bytes flipped, cut, inserted or spliced in."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seed_list)))
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.integers(0, 3))
            pos = draw(st.integers(0, len(data)))
            if op == 0 and pos < len(data):
                data[pos] = draw(st.integers(0, 255))
            elif op == 1:
                del data[pos : pos + draw(st.integers(1, 16))]
            elif op == 2:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            else:
                data[pos:pos] = draw(
                    st.sampled_from([b"1e999999", b"[", b"{", b'"', b"-1", b"\xff" * 10, b"\x00"])
                )
        return bytes(data)

    return build()


def _check(name: str, data: bytes) -> None:
    target = TARGETS[name]
    with contextlib.suppress(target.allowed):
        target.run(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_are_accepted(name: str) -> None:
    """The seed corpus holds at least one valid input (the others may be edge cases)."""
    target = TARGETS[name]
    accepted = 0
    for seed in target.seeds():
        with contextlib.suppress(target.allowed):
            target.run(seed)
            accepted += 1
    assert accepted


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_random_bytes_raise_only_documented_errors(name: str) -> None:
    @FAST
    @given(st.binary(max_size=300))
    def check(data: bytes) -> None:
        _check(name, data)

    check()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_inputs_raise_only_documented_errors(name: str) -> None:
    @FAST
    @given(mutated(TARGETS[name].seeds()))
    def check(data: bytes) -> None:
        _check(name, data)

    check()


# -- round trips ----------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
obis = st.builds(Obis, *[st.integers(0, 255)] * 6)
units = st.sampled_from(["Wh", "kWh", "W", "V", "A", "Hz", "m3", "varh", "kvarh", ""])
values = st.builds(
    Value,
    obis,
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: len(d.as_tuple().digits) <= 18 and -100 < d.as_tuple().exponent < 100  # type: ignore[operator]
    ),
    units,
    st.builds(Quality, st.integers(0, 0xFF)),
)


@FAST
@given(
    ids,
    ids,
    st.integers(1, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.sampled_from(list(ClockSource)),
    st.integers(0, 2**64 - 1),
    st.lists(values, max_size=8),
)
def test_record_round_trip(gw, meter, seq, ms, source, flags, vals) -> None:
    record = Record(gw, meter, seq, ms, source, Quality(flags), tuple(vals))
    signed = sign_record(record, KEY)
    back = decode_record(signed.raw).record
    assert back.key_id == signed.record.key_id
    assert (back.gateway_id, back.meter_id, back.seq, back.captured_ms) == (gw, meter, seq, ms)
    assert back.clock_source == source and int(back.flags) == flags
    assert len(back.values) == len(vals)
    for got, sent in zip(back.values, vals, strict=True):
        assert got.obis == sent.obis and got.flags == sent.flags
        # exact: same number (a unit of a known quantity may come back canonical, e.g. kWh)
        assert got.value.scaleb(_power(got.unit)) == sent.value.scaleb(_power(sent.unit))
    assert back.body() == signed.body


def _power(symbol: str) -> int:
    from protocols.units import unit_by_symbol

    return unit_by_symbol(symbol).power


@FAST
@given(ids, st.integers(0, 2**64 - 1), st.lists(st.binary(max_size=300), max_size=20))
def test_batch_round_trip(gw, batch_id, raws) -> None:
    batch = decode_batch(encode_batch(gw, batch_id, raws))
    assert (batch.gateway_id, batch.batch_id) == (gw, batch_id)
    got = [r.raw for r in batch.records] + [b.raw for b in batch.bad]
    assert sorted(got) == sorted(raws)


def test_batch_size_is_bounded() -> None:
    payload = encode_batch("gw-1", 1, [b"x" * 1000]) + b"\x00" * MAX_BATCH_BYTES
    with pytest.raises(DecodeError, match="exceeds"):
        decode_batch(payload)


def test_batch_record_count_that_lies_is_refused() -> None:
    head = bytearray(encode_batch("gw-1", 1, []))
    head[-1:] = b"\xff\xff\xff\xff\x0f"  # count 2**32-1 in a 15-byte message
    with pytest.raises(DecodeError, match="record count"):
        decode_batch(bytes(head))


counts = st.integers(0, 2**64 - 1)


@FAST
@given(
    ids,
    counts,
    st.lists(st.tuples(st.integers(1, 2**40), st.integers(0, 100))),
    counts,
    counts,
    st.lists(counts, max_size=5),
)
def test_ack_round_trip(gw, batch, ranges, stored, rejected, unparsed) -> None:
    handled = tuple((lo, lo + span) for lo, span in ranges)
    ack = Ack(gw, batch, handled, stored, 0, rejected, 0, tuple(unparsed))
    assert Ack.from_bytes(ack.to_bytes()) == ack


@FAST
@given(
    ids,
    st.sampled_from(["online", "offline"]),
    st.text(max_size=30),
    st.none() | st.integers(0, 2**62),
    st.integers(0, 2**62),
    st.integers(0, 2**62),
)
def test_status_round_trip(gw, state, reason, at_ms, backlog, last_seq) -> None:
    status = GatewayStatus(gw, state, reason, at_ms, backlog, 0, last_seq, "0.1.0")
    assert GatewayStatus.from_bytes(status.to_bytes()) == status


@FAST
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1))))
def test_varint_round_trip(pairs) -> None:
    out = bytearray()
    for u, s in pairs:
        put_uvarint(out, u)
        put_svarint(out, s)
    reader = Reader(bytes(out))
    assert [(reader.uvarint("u"), reader.svarint("s")) for _ in pairs] == pairs
    assert reader.at_end()


@FAST
@given(obis)
def test_obis_round_trip(code) -> None:
    assert Obis.parse(str(code)) == code == Obis.from_bytes(code.to_bytes())


@FAST
@given(ids, st.sampled_from(["readings", "status", "ack", "cmd/7/reply"]))
def test_topic_round_trip(gw, kind) -> None:
    assert parse_topic(f"meterlink/v1/{gw}/{kind}") == (gw, kind)
    assert parse_topic(readings_topic(gw))[0] == parse_topic(status_topic(gw))[0] == gw


@FAST
@given(
    st.integers(0, 4_000_000_000),
    st.integers(0, 2_000_000_000),
    st.integers(1, 100_000),
)
def test_clock_setting_round_trip(start_s, anchor_s, speed) -> None:
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(start_s, UTC)
    setting = ClockSetting.accelerated(start, anchor_s * 10**9, Decimal(speed))
    assert ClockSetting.parse(str(setting)) == setting


@FAST
@given(
    st.sampled_from([t for t in DataType if not t.value.startswith("float")]),
    st.sampled_from(list(Order)),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([Decimal(1), Decimal("0.1"), Decimal("2.5")]),
    st.integers(-20, 20),
)
def test_modbus_integer_round_trip(dtype, order, raw, multiplier, exponent) -> None:
    value = Decimal(raw) * multiplier.scaleb(exponent)
    try:
        registers = encode(value, dtype, order, multiplier=multiplier, exponent=exponent)
    except ModbusValueError:
        return  # does not fit the type: refused, documented
    assert decode(registers, dtype, order, multiplier=multiplier, exponent=exponent) == value


# -- regressions found by fuzzing -----------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"1",  # JSON but not an object: was AttributeError
        b"[" * 100_000,  # deep nesting: was RecursionError
        b'{"v":1,"gateway_id":"g","state":"online","backlog":"x"}',  # wrong type: accepted,
        # then int("x") in the collector's ingest failed the whole transaction
        b'{"v":1,"gateway_id":"g","state":"online","dropped":true}',
        b'{"v":1,"gateway_id":"g","state":5}',
    ],
)
def test_status_refuses_hostile_json_with_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        GatewayStatus.from_bytes(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,  # was RecursionError
        b'{"v":1,"gateway":"g","batch":1,"handled":[[1,1e400]]}',  # was OverflowError
        b'{"v":1,"gateway":"g","batch":1.5,"handled":[]}',  # a float silently truncated
    ],
)
def test_ack_refuses_hostile_json_with_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        Ack.from_bytes(payload)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T00:00:00Z@1e999999999x1",  # was decimal.Overflow
        "2026-01-01T00:00:00Z@1e900000x1",  # took 20 s (a million-digit integer)
        "2026-01-01T00:00:00Z@1x1e-999999",
        "0001-01-01T00:00:00+05:00@1x1",  # was OverflowError
    ],
)
def test_clock_setting_refuses_absurd_numbers_quickly(text: str) -> None:
    with pytest.raises(ClockSettingError):
        ClockSetting.parse(text)


PROFILE = """\
[profile]
name = "n"
manufacturer = "A"
model = "M"
{head}
[profile.document]
title = "t"
version = "1"
url = "u"

[[registers]]
obis = "1-0:1.8.0"
address = 0
type = "uint32"
unit = "kWh"
{reg}
"""


@pytest.mark.parametrize(
    ("head", "reg"),
    [
        ("function = [1]", ""),  # was TypeError: unhashable
        ("", "function = {a = 1}"),  # was TypeError: unhashable
        ("", 'scale = "1.' + "0" * 120 + '1"'),  # loaded, then every decode: decimal.Inexact
        ("", 'scale = "1e999999"'),
    ],
)
def test_profile_refuses_what_it_cannot_decode(head: str, reg: str) -> None:
    with pytest.raises(ModbusError):
        parse_profile(PROFILE.format(head=head, reg=reg))


def test_profile_with_a_float_beyond_decimal_range_is_a_profile_error() -> None:
    # found by atheris: tomllib hands "0E0488888888888888888888" to Decimal, which raised
    # decimal.InvalidOperation through parse_profile
    with pytest.raises(ModbusError, match="out of range"):
        parse_profile("x = 0E0488888888888888888888\n" + PROFILE.format(head="", reg=""))


def test_profile_entries_must_be_tables() -> None:
    text = "unreadable = [1]\n" + PROFILE.format(head="", reg="")
    with pytest.raises(ModbusError, match="unreadable"):
        parse_profile(text)


def test_modbus_decode_with_a_scale_beyond_exact_precision_is_a_value_error() -> None:
    with pytest.raises(ModbusValueError):
        decode([1, 2], "uint32", multiplier=Decimal("1." + "0" * 120 + "1"))


def test_promise_broken_is_not_a_documented_error() -> None:
    assert all(not issubclass(PromiseBroken, t.allowed) for t in TARGETS.values())
