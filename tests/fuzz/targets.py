"""Every codec of ``protocols/`` as a fuzz target: bytes in, only the documented errors out.

One table serves the hypothesis tests (``test_codecs.py``) and the long run (``run.py``).
A target takes arbitrary bytes, turns them into the codec's input (text codecs decode the
bytes as UTF-8 with replacement), calls the decoder and, where the decoder accepted the
input, checks the codec's own promises (re-encoding gives the same bytes, sizes bounded).
Any exception that is not in ``allowed`` is a defect of the codec.
"""

from __future__ import annotations

import contextlib
import struct
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols import dsmr, iec62056_21
from protocols.batch import MAX_BATCH_BYTES, Ack, decode_batch, encode_batch
from protocols.clock import ClockSetting, ClockSettingError, parse_utc
from protocols.errors import DecodeError
from protocols.modbus import (
    DataType,
    ModbusError,
    Order,
    decode,
    parse_profile,
    register_count,
    rtu,
)
from protocols.obis import Obis, ObisError
from protocols.record import ClockSource, Quality, Record, Value, decode_record, sign_record
from protocols.status import GatewayStatus, LossEvent, MeterClockStatus
from protocols.topics import parse_topic, readings_topic
from protocols.units import UnitError, unit_by_code, unit_by_symbol
from protocols.varint import Reader

from .base import PromiseBroken, Target
from .dlms_targets import DLMS_TARGETS

__all__ = ["TARGETS", "PromiseBroken", "Target", "seed_record", "seeds"]

REPO = Path(__file__).resolve().parents[2]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


# -- seeds -------------------------------------------------------------------------------


def seed_record(seq: int = 1, meter: str = "em-1") -> bytes:
    values = (
        Value(Obis.parse("1-0:1.8.0"), Decimal("12345.678"), "kWh"),
        Value(Obis.parse("1-0:1.7.0"), Decimal("-1234"), "W", Quality.ESTIMATED),
        Value(Obis.parse("1-0:32.7.0"), Decimal("230.1"), "V"),
        Value(Obis.parse("7-0:3.0.0"), Decimal("0.001"), "m3"),
    )
    rec = Record(
        "gw-1", meter, seq, 1_793_487_600_000, ClockSource.METER, Quality.RESTARTED, values
    )
    return sign_record(rec, KEY).raw


def _record_seeds() -> list[bytes]:
    return [seed_record(), seed_record(2**40, "m")]


def _batch_seeds() -> list[bytes]:
    return [
        encode_batch("gw-1", 7, [seed_record(1), seed_record(2)]),
        encode_batch("gw-1", 0, []),
    ]


def _ack_seeds() -> list[bytes]:
    return [
        Ack("gw-1", 3, ((1, 5), (7, 7)), 5, 1, 1, 0, (2,)).to_bytes(),
        b'{"v":1,"gateway":"g","batch":1,"handled":[]}',
    ]


def _status_seeds() -> list[bytes]:
    return [
        GatewayStatus("gw-1", "online", "", 1_793_487_600_000, 12, 0, 4711, "0.1.0").to_bytes(),
        GatewayStatus("gw-1", "offline", "connection lost").to_bytes(),
        GatewayStatus(
            "gw-1",
            "online",
            "",
            1_793_487_600_000,
            meters=(
                MeterClockStatus("dlms-1", -1500, 1_793_487_600_000, True, 2, ""),
                MeterClockStatus("dlms-2", None, None, False, 0, "SET refused: read-write-denied"),
                MeterClockStatus("dlms-3", 2**62, 0, False, 1),
            ),
        ).to_bytes(),
        b'{"v":1,"gateway_id":"g","state":"online","meters":[{"meter_id":"m","drift_ms":null}]}',
    ]


def _varint_seeds() -> list[bytes]:
    return [b"\x00", b"\x7f\x80\x01", b"\xff" * 9 + b"\x01", b"\xac\x02\x96\x01"]


def _obis_seeds() -> list[bytes]:
    return [b"1-0:1.8.0", b"0-0:96.1.0*255", b"1.8.0", b"\x01\x00\x01\x08\x00\xff"]


def _clock_seeds() -> list[bytes]:
    return [b"system", b"2026-10-31T22:00:00Z@1764190000.5x43200", b"2026-11-01T00:00:00+01:00"]


def _modbus_seeds() -> list[bytes]:
    body = b"\x44\x9a\x52\x2b\x00\x00\x00\x01"
    out = []
    for i, dtype in enumerate(_DTYPES):
        size = 2 * register_count(dtype)
        out += [bytes((i, j, 0x10)) + body[:size] for j in range(len(_ORDERS))]
    return out


def _profile_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted((REPO / "config" / "profiles").glob("*.toml"))]


def _topic_seeds() -> list[bytes]:
    return [b"meterlink/v1/gw-1/readings", b"meterlink/v1/gw-1/cmd/7/reply", b"a/b"]


def _unit_seeds() -> list[bytes]:
    return [b"\x1ekWh", b"\xffm3"]


def _iec62056_21_seeds() -> list[bytes]:
    block = iec62056_21.data_message(
        ["0.0.0(12345678)", "1.8.0(001234.567*kWh)(2301011200)", "32.7.0(230.1*V)31.7.0(1.2*A)"]
    )
    return [
        b"/LGZ5ZMD3104407.B32\r\n" + block,
        b"/?!\r\n/ISk5\\2MT382\r\n\x06050\r\n" + block,
        b"/ABCEx\r\n" + iec62056_21.data_message(["F.F(00)", "C.1.0(1)"]),
    ]


DSMR_FIXTURES = REPO / "tests" / "fixtures" / "dsmr"
_DSMR_SEED = (
    b"/ISk5\\2MT382-1000\r\n\r\n1-0:1.8.1(000004.426*kWh)\r\n0-0:96.14.0(0002)\r\n"
    b"0-1:24.1.0(003)\r\n0-1:24.3.0(090212160000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n"
    b"(00001.001)\r\n!\r\n"
)


def _dsmr_seeds() -> list[bytes]:
    out = [_DSMR_SEED]
    if DSMR_FIXTURES.is_dir():
        out += [p.read_bytes() for p in sorted(DSMR_FIXTURES.glob("*.txt"))]
    return out


def _dsmr_stream_seeds() -> list[bytes]:
    telegrams = _dsmr_seeds()
    return [
        b"x)\r\n".join(telegrams[:3]),
        b"".join(telegrams[-2:]),
        telegrams[0][40:] + telegrams[0],
    ]


def _modbus_rtu_seeds() -> list[bytes]:
    answer = rtu.with_crc(bytes.fromhex("01 03 04 00 0A 01 02"))
    return [
        b"\x00" + answer,
        b"\x00" + rtu.with_crc(bytes((1, 0x83, 2))) + answer,
        b"\x01"
        + rtu.read_request(1, 3, 0, 10)
        + rtu.with_crc(bytes.fromhex("01 10 00 01 00 01 02 00 0A")),
    ]


# -- runners -----------------------------------------------------------------------------


def run_record(data: bytes) -> object:
    signed = decode_record(data)
    # a decoded record re-encodes to exactly the bytes that were signed (nothing is lost or
    # normalised away between the wire and the model)
    if signed.record.body() != signed.body:
        raise PromiseBroken(f"record re-encodes differently: {data.hex()}")
    list(signed.readings())
    return signed


def run_batch(data: bytes) -> object:
    batch = decode_batch(data)
    if len(data) > MAX_BATCH_BYTES:
        raise PromiseBroken("a batch above MAX_BATCH_BYTES was accepted")
    if len(batch.records) + len(batch.bad) > len(data):
        raise PromiseBroken("more records than bytes")
    return batch


def run_ack(data: bytes) -> object:
    ack = Ack.from_bytes(data)
    again = Ack.from_bytes(ack.to_bytes())
    if again != ack:
        raise PromiseBroken(f"ack does not round-trip: {ack!r}")
    return ack


def _loss_event_seeds() -> list[bytes]:
    return [
        LossEvent(
            "gw-1", "dropped", "buffer full", 3, 7, 1_800_000_000_000, ((4, 6),), (1, 2)
        ).to_bytes(),
        LossEvent("gw-1", "refused", "disk full", 2, 2, 1_800_000_000_000).to_bytes(),
    ]


def run_loss_event(data: bytes) -> object:
    event = LossEvent.from_bytes(data)
    if LossEvent.from_bytes(event.to_bytes()) != event:
        raise PromiseBroken(f"loss event does not round-trip: {event!r}")
    return event


def run_status(data: bytes) -> object:
    status = GatewayStatus.from_bytes(data)
    for name in ("backlog", "dropped", "last_seq"):
        if type(getattr(status, name)) is not int:
            raise PromiseBroken(f"status {name} is not an int: {status!r}")
    for name in ("gateway_id", "state", "reason", "version"):
        if type(getattr(status, name)) is not str:
            raise PromiseBroken(f"status {name} is not a str: {status!r}")
    if status.at_ms is not None and type(status.at_ms) is not int:
        raise PromiseBroken(f"status at_ms is not an int: {status!r}")
    for meter in status.meters:
        if type(meter.meter_id) is not str or type(meter.suspect) is not bool:
            raise PromiseBroken(f"status meter of wrong types: {meter!r}")
        if type(meter.sets) is not int or type(meter.set_error) is not str:
            raise PromiseBroken(f"status meter of wrong types: {meter!r}")
        for value in (meter.drift_ms, meter.at_ms):
            if value is not None and type(value) is not int:
                raise PromiseBroken(f"status meter of wrong types: {meter!r}")
    if GatewayStatus.from_bytes(status.to_bytes()) != status:
        raise PromiseBroken(f"status does not round-trip: {status!r}")
    return status


def run_varint(data: bytes) -> object:
    reader = Reader(data, "fuzz")
    out = []
    while not reader.at_end():
        out.append(reader.uvarint("u") if len(out) % 2 == 0 else reader.svarint("s"))
    return out


def run_obis(data: bytes) -> object:
    if len(data) == 6:
        code = Obis.from_bytes(data)
        if Obis.from_bytes(code.to_bytes()) != code or Obis.parse(str(code)) != code:
            raise PromiseBroken(f"OBIS bytes do not round-trip: {data.hex()}")
    code = Obis.parse(_text(data))
    if Obis.parse(str(code)) != code:
        raise PromiseBroken(f"OBIS text does not round-trip: {code}")
    return code


def run_clock(data: bytes) -> object:
    text = _text(data)
    setting = ClockSetting.parse(text)
    setting.virtual_ns(1_800_000_000_000_000_000)
    setting.real_ns(1_800_000_000_000_000_000)
    if "@" not in text:
        parse_utc(text)
    return setting


_DTYPES = list(DataType)
_ORDERS = list(Order)
_MULTIPLIERS = [Decimal(1), Decimal("0.1"), Decimal("0.001"), Decimal("2.5"), Decimal(-1)]


def run_modbus_values(data: bytes) -> object:
    if len(data) < 3:
        return None
    dtype = _DTYPES[data[0] % len(_DTYPES)]
    order = _ORDERS[data[1] % len(_ORDERS)]
    multiplier = _MULTIPLIERS[(data[2] >> 5) % len(_MULTIPLIERS)]
    exponent = (data[2] & 0x1F) - 16
    body = data[3:]
    registers = [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body) - 1, 2)]
    value = decode(registers, dtype, order, multiplier=multiplier, exponent=exponent)
    if dtype not in (DataType.FLOAT32, DataType.FLOAT64):
        # integers: encode gives the registers back exactly
        again = decode(
            encode_registers(value, dtype, order, multiplier, exponent),
            dtype,
            order,
            multiplier=multiplier,
            exponent=exponent,
        )
        if again != value:
            raise PromiseBroken(f"{dtype} {order} {registers}: {value} -> {again}")
    return value


def encode_registers(
    value: Decimal, dtype: DataType, order: Order, multiplier: Decimal, exponent: int
) -> list[int]:
    from protocols.modbus import encode

    return encode(value, dtype, order, multiplier=multiplier, exponent=exponent)


def run_profile(data: bytes) -> object:
    profile = parse_profile(_text(data), source="<fuzz>")
    # a profile that loads can decode whatever its meter answers (only ModbusError)
    for spec in profile.registers:
        for fill in (0, 1, 0x7FFF, 0xFFFF):
            with contextlib.suppress(ModbusError):
                spec.decode([fill] * spec.count)
    profile.plan()
    return profile


def run_topic(data: bytes) -> object:
    gateway, kind = parse_topic(_text(data))
    return gateway, kind


def run_units(data: bytes) -> object:
    if not data:
        return None
    unit = unit_by_code(data[0])
    symbol = _text(data[1:])
    return unit, unit_by_symbol(symbol)


def run_iec62056_21(data: bytes) -> object:
    line_end = data.find(b"\n")
    if line_end >= 0:
        for parse in (
            iec62056_21.parse_identification,
            iec62056_21.parse_sign_on,
            iec62056_21.parse_ack_option,
        ):
            with contextlib.suppress(DecodeError):
                parse(data[: line_end + 1])
    readout = iec62056_21.ModeCReadout()
    readout.start()
    readout.receive_data(data)
    events = []
    while (event := readout.next_event()) is not iec62056_21.NEED_DATA:
        events.append(event)
        if isinstance(event, iec62056_21.DataReceived):
            block = event.block
            if iec62056_21.parse_data_block(event.raw) != block:
                raise PromiseBroken("a data block parses differently twice")
            for reading in iec62056_21.readings(block.datasets).values:
                if type(reading.value) is not Decimal:
                    raise PromiseBroken(f"not a Decimal: {reading!r}")
    return events


def run_dsmr(data: bytes) -> object:
    telegram = dsmr.parse_telegram(data)
    if telegram.raw != data:
        raise PromiseBroken("telegram raw differs from its input")
    if telegram.crc is not None and dsmr.crc16(data[: data.index(b"!") + 1]) != telegram.crc:
        raise PromiseBroken("a telegram with a wrong CRC was accepted")
    meters = dsmr.meter_readings(telegram)
    for meter in meters:
        for reading in meter.values:
            if type(reading.value) is not Decimal:
                raise PromiseBroken(f"not a Decimal: {reading!r}")
    return meters


def run_dsmr_stream(data: bytes) -> object:
    reader = dsmr.TelegramReader(max_size=4096)
    out = []
    for i in range(0, len(data), 61):
        reader.receive_data(data[i : i + 61])
        while (event := reader.next_event()) is not dsmr.NEED_DATA:
            if isinstance(event, dsmr.TelegramReceived) and event.telegram.raw not in data:
                raise PromiseBroken("the reader made up a telegram")
            out.append(event)
        if len(reader._buffer) > 4096 + 61:
            raise PromiseBroken(f"buffer of {len(reader._buffer)} bytes")
    return out


def run_modbus_rtu(data: bytes) -> object:
    if not data:
        return None
    role = rtu.Role.RESPONSES if data[0] % 2 == 0 else rtu.Role.REQUESTS
    reader = rtu.FrameReader(role)
    frames = []
    for i in range(1, len(data), 5):
        reader.receive_data(data[i : i + 5])
        while (event := reader.next_event()) is not rtu.NEED_DATA:
            if isinstance(event, rtu.Frame):
                if rtu.crc16_modbus(event.raw[:-2]) != int.from_bytes(event.raw[-2:], "little"):
                    raise PromiseBroken("a frame with a wrong CRC was accepted")
                frames.append(event)
    reader.silence()
    with contextlib.suppress(DecodeError):
        request = rtu.parse_read_request(data[1:9])
        # a server takes any count/unit as sent (and answers "illegal data value" itself)
        again = struct.pack(">BBHH", request.unit, request.function, request.address, request.count)
        if rtu.with_crc(again) != data[1:9]:
            raise PromiseBroken(f"read request does not round-trip: {data[1:9].hex()}")
    for frame in frames:
        if role is rtu.Role.RESPONSES and frame.function in (3, 4) and len(frame.pdu) > 1:
            with contextlib.suppress(rtu.ExceptionAnswer):
                rtu.check_answer(frame.raw, frame.unit, frame.function, frame.pdu[1] // 2)
    return frames


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("record", run_record, (DecodeError,), _record_seeds),
        Target("batch", run_batch, (DecodeError,), _batch_seeds),
        Target("ack", run_ack, (DecodeError,), _ack_seeds),
        Target("status", run_status, (DecodeError,), _status_seeds),
        Target("loss_event", run_loss_event, (DecodeError,), _loss_event_seeds),
        Target("varint", run_varint, (DecodeError,), _varint_seeds),
        Target("obis", run_obis, (ObisError,), _obis_seeds),
        Target("clock", run_clock, (ClockSettingError,), _clock_seeds),
        Target("modbus_values", run_modbus_values, (ModbusError,), _modbus_seeds),
        Target("modbus_profile", run_profile, (ModbusError,), _profile_seeds),
        Target("topics", run_topic, (DecodeError,), _topic_seeds),
        Target("units", run_units, (UnitError,), _unit_seeds),
        Target("iec62056_21", run_iec62056_21, (DecodeError,), _iec62056_21_seeds),
        Target("dsmr", run_dsmr, (DecodeError,), _dsmr_seeds),
        Target("dsmr_stream", run_dsmr_stream, (DecodeError,), _dsmr_stream_seeds),
        Target("modbus_rtu", run_modbus_rtu, (DecodeError, rtu.ExceptionAnswer), _modbus_rtu_seeds),
        *DLMS_TARGETS,
    )
}


def seeds(name: str) -> list[bytes]:
    return TARGETS[name].seeds()


def _check_readings_topic() -> None:  # pragma: no cover - import-time sanity
    assert parse_topic(readings_topic("gw-1")) == ("gw-1", "readings")
