"""Seed corpora of the DLMS/COSEM fuzz targets: published frames (the codecs' tests) and a
conversation recorded from the simulator (``firmware_sim.dlms.ServerSession``, in-process:
the APDUs a client sends and the meter's real answers, the load profile included).

Computed once per process (``functools.cache``); every seed is plain bytes.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal

from protocols.dlms import apdu as dlms_apdu
from protocols.dlms.axdr import Data, Tag, decode_data, encode_data
from protocols.dlms.cosem import CosemDateTime, ScalerUnit
from protocols.dlms.hdlc import (
    LLC_REQUEST,
    LLC_RESPONSE,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcParameters,
    encode_frame,
    encode_parameters,
)
from protocols.dlms.profile import CaptureObject, EntryDescriptor, RangeDescriptor
from protocols.dlms.security import SecurityContext
from protocols.dlms.wrapper import encode_frame as wrapper_frame
from protocols.obis import Obis

__all__ = [
    "AK",
    "CLIENT_TITLE",
    "EK",
    "PROFILE_COLUMNS",
    "PROFILE_SCALERS",
    "conversation",
]

# Green Book / Gurux published examples (also in tests/protocols/test_dlms_*.py)
GREEN_BOOK_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")
GET_CLOCK = bytes.fromhex("C0010000080000010000FF0200")
HDLC_SNRM = bytes.fromhex("7EA00A00020023219318717E")
HDLC_UA = bytes.fromhex(
    "7EA023210002002373F6C58180140502008006020080070400000001080400000001CE6A7E"
)
HDLC_AARQ = bytes.fromhex(
    "7EA02E0002002321107ECBE6E600601DA109060760857405080101BE10040E01000000"
    "065F1F040000301DFFFFD4C57E"
)
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000BC614E")
GLO_GET_CLOCK = bytes.fromhex("C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B")

CLOCK = CaptureObject(8, Obis(0, 0, 1, 0, 0, 255), 2)
STATUS = CaptureObject(1, Obis(0, 0, 96, 10, 1, 255), 2)
ENERGY = tuple(Obis.parse(c) for c in ("1.8.0", "2.8.0", "3.8.0", "4.8.0"))
PROFILE_COLUMNS = (CLOCK, STATUS, *(CaptureObject(3, o, 2) for o in ENERGY))
PROFILE_SCALERS = {o: ScalerUnit(0, 30) for o in ENERGY}
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
START_MS = int(START.timestamp()) * 1000


def _get(invoke: int, class_id: int, obis: Obis, attribute: int, access: bytes = b"") -> bytes:
    head = bytes((0xC0, 0x01, invoke)) + class_id.to_bytes(2, "big") + obis.to_bytes()
    head += bytes((attribute & 0xFF,))
    return head + (b"\x01" + access if access else b"\x00")


def _set(invoke: int, class_id: int, obis: Obis, attribute: int, value: Data) -> bytes:
    head = bytes((0xC1, 0x01, invoke)) + class_id.to_bytes(2, "big") + obis.to_bytes()
    return head + bytes((attribute, 0)) + encode_data(value)


def _action(invoke: int, class_id: int, obis: Obis, method: int, value: Data | None) -> bytes:
    head = bytes((0xC3, 0x01, invoke)) + class_id.to_bytes(2, "big") + obis.to_bytes()
    if value is None:
        return head + bytes((method, 0))
    return head + bytes((method, 1)) + encode_data(value)


@functools.cache
def conversation() -> tuple[tuple[bytes, bytes | None], ...]:
    """(request APDU, the simulated meter's answer) for an association, GETs of every
    standard object's attributes 2 and 3, the clock, the load profile by range and by
    entry, a block transfer, SET and ACTION requests, a release."""
    from firmware_sim.dlms import DlmsMeterState
    from firmware_sim.dlms.options import DlmsSimOptions
    from firmware_sim.dlms.session import ServerSession
    from firmware_sim.model import MeterModel
    from protocols.clock import ClockSetting

    clock = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))
    model = MeterModel("dlms-fuzz", 3, origin_ns=(START_MS - 3 * 86_400_000) * 10**6)
    meter = DlmsMeterState(model, clock, 120_000, deviation=-120)
    session = ServerSession(meter, DlmsSimOptions(), challenge=lambda n: b"\x11" * n)
    profile_obis = Obis(1, 0, 99, 1, 0, 255)
    by_range = RangeDescriptor.by_time(CLOCK, START_MS - 3_600_000, START_MS, -120)
    requests = [GREEN_BOOK_AARQ]
    invoke = 0xC1
    for obj in meter.objects.values():
        for attribute in (2, 3):
            requests.append(_get(invoke, obj.class_id, obj.obis, attribute))
    requests += [
        GET_CLOCK,
        _get(invoke, 7, profile_obis, 3),
        _get(invoke, 7, profile_obis, 2, by_range.to_bytes()),
        _get(invoke, 7, profile_obis, 2, EntryDescriptor(1, 3).to_bytes()),
        _get(invoke, 7, profile_obis, 2, EntryDescriptor(1, 0, 1, 2).to_bytes()),
        _set(
            invoke,
            8,
            CLOCK.obis,
            2,
            Data.octet_string(CosemDateTime.from_unix_ms(START_MS).to_bytes()),
        ),
        _set(invoke, 3, ENERGY[0], 2, Data(Tag.DOUBLE_LONG_UNSIGNED, 5)),
        _action(invoke, 8, CLOCK.obis, 1, Data(Tag.INTEGER, 0)),
        _action(invoke, 15, Obis(0, 0, 40, 0, 0, 255), 1, Data.octet_string(b"\x00" * 17)),
        _action(invoke, 8, CLOCK.obis, 3, None),
        bytes.fromhex("C002C100000001"),  # GET-request-next
        bytes.fromhex("6203800100"),  # RLRQ, reason normal
    ]
    out = []
    for request in requests:
        out.append((request, session.answer(16, request)))
    # the whole buffer: long, answered with block transfer when beyond the PDU size
    session.answer(16, GREEN_BOOK_AARQ)
    first = session.answer(16, _get(invoke, 7, profile_obis, 2))
    out.append((_get(invoke, 7, profile_obis, 2), first))
    return tuple(out)


def requests() -> list[bytes]:
    return [request for request, _ in conversation()]


def answers() -> list[bytes]:
    return [answer for _, answer in conversation() if answer]


def data_values() -> list[bytes]:
    """A-XDR values: what the meter sent in its GET responses (C4 01 invoke 00 <Data>)."""
    out = []
    for answer in answers():
        if answer[:2] == b"\xc4\x01" and len(answer) > 4 and answer[3] == 0:
            out.append(answer[4:])
    out += [
        encode_data(Data(Tag.BOOLEAN, True)),
        encode_data(Data(Tag.BIT_STRING, b"\x80")),
        encode_data(Data(Tag.UTF8_STRING, "Zähler")),
        encode_data(Data(Tag.VISIBLE_STRING, "LGZ")),
        encode_data(Data(Tag.FLOAT64, b"\x40\x09\x21\xfb\x54\x44\x2d\x18")),
        encode_data(Data(Tag.LONG64, -(2**63))),
        encode_data(Data.array(*(Data(Tag.NULL) for _ in range(3)))),
        bytes.fromhex("02020ffd161e"),  # scaler_unit -3, Wh
    ]
    return out


def wrapper_seeds() -> list[bytes]:
    frames = [wrapper_frame(16, 1, r) for r in requests()]
    frames += [wrapper_frame(1, 16, a) for a in answers()]
    return [
        b"\x00" + frames[0],
        b"\x10" + b"".join(frames[:4]),
        b"\x7f" + b"".join(frames[-3:]),
        b"\x00" + frames[1][:5],
    ]


def apdu_seeds() -> list[bytes]:
    return [
        *requests(),
        GLO_GET_CLOCK,
        dlms_apdu.encode_ciphered(0xDB, 0x30, 1, b"\x00" * 20, CLIENT_TITLE),
        bytes.fromhex("0100000006" + "5F1F0400007E1F04B0"),  # InitiateRequest alone
        # AARQ for HLS-GMAC: mechanism 5, calling AP title, CtoS, glo-initiate
        _aarq_hls(),
    ]


def _aarq_hls() -> bytes:
    ber = dlms_apdu._ber  # the same BER builder the AARE uses
    initiate = bytes.fromhex("01000000065F1F0400007E1F04B0")
    ciphered = SecurityContext(CLIENT_TITLE, EK, AK).encrypt(1, initiate)
    glo = dlms_apdu.encode_ciphered(0x21, 0x30, 1, ciphered)
    body = b"".join(
        (
            ber(0xA1, ber(0x06, dlms_apdu.CONTEXT_PREFIX + b"\x03")),
            ber(0xA6, ber(0x04, CLIENT_TITLE)),
            ber(0x8A, b"\x07\x80"),
            ber(0x8B, dlms_apdu.MECHANISM_PREFIX + b"\x05"),
            ber(0xAC, ber(0x80, b"K56iVagY")),
            ber(0xBE, ber(0x04, glo)),
        )
    )
    return ber(0x60, body)


def hdlc_seeds() -> list[bytes]:
    client, server = HdlcAddress(16), HdlcAddress(1, 17)
    frames = [HDLC_SNRM, HDLC_UA, HDLC_AARQ]
    params = encode_parameters(HdlcParameters(32, 32, 2, 2))
    frames.append(encode_frame(HdlcFrame(FrameKind.SNRM, server, client, params)))
    for i, (request, answer) in enumerate(conversation()[:8]):
        frames.append(
            encode_frame(HdlcFrame(FrameKind.I, server, client, LLC_REQUEST + request, ns=i % 8))
        )
        if answer:
            info = LLC_RESPONSE + answer
            frames.append(
                encode_frame(
                    HdlcFrame(FrameKind.I, client, server, info[:100], nr=1, segmented=True)
                )
            )
    frames.append(encode_frame(HdlcFrame(FrameKind.RR, server, client, nr=3)))
    frames.append(encode_frame(HdlcFrame(FrameKind.DISC, server, client)))
    frames.append(encode_frame(HdlcFrame(FrameKind.DM, client, HdlcAddress(1, 17, 4))))
    return [*frames, b"".join(frames[:5]), b"\x7e\x7e" + b"".join(frames[4:]), params]


def profile_seeds() -> list[bytes]:
    """Selector byte + A-XDR value: capture objects (0), range (1) and entry (2)
    descriptors, buffers (3)."""
    out = []
    for request, answer in conversation():
        if request[:2] == b"\xc0\x01" and len(request) > 13 and request[12] == 1:
            out.append(request[13:])  # selector + parameters as sent
        if answer and answer[:2] == b"\xc4\x01" and len(answer) > 4 and answer[3] == 0:
            value, _ = decode_data(answer, 4)
            if value.tag is Tag.ARRAY and value.value:
                first = value.items[0]
                kind = 0 if len(first.items) == 4 and first.items[0].tag is Tag.LONG_UNSIGNED else 3
                out.append(bytes((kind,)) + answer[4:])
    return out


def date_time_seeds() -> list[bytes]:
    stamps = [
        CosemDateTime.from_unix_ms(START_MS, -120, 0x80).to_bytes(),
        CosemDateTime.from_unix_ms(0).to_bytes(),
        bytes.fromhex("07ea0b1a040f000000ffc400"),
        bytes.fromhex("ffffffffffffffffff800000"),
    ]
    scaler_units = [bytes.fromhex("02020ffd161e"), bytes.fromhex("02020f00161b")]
    return [
        a + b + encode_data(Data(Tag.DOUBLE_LONG_UNSIGNED, 123456))
        for a in stamps
        for b in scaler_units
    ]


def security_seeds() -> list[bytes]:
    return [b"\x30\x01\x23\x45\x67" + GET_CLOCK, b"\x10\x00\x00\x00\x01" + b"\x00" * 16, b"\x30"]


def link_seeds() -> list[bytes]:
    """Scripts for ``run_hdlc_link`` (4 bytes a step: op, flags, address, info length)."""
    get = GET_CLOCK
    server = (
        b"\x01\x37"
        + b"\x15\x40\x01\x00"  # SNRM with parameters
        + b"\xe1\x40\x01"
        + bytes((len(get),))
        + get  # I-frame, LLC request
        + b"\xf0\x43\x01\x05hello"  # reply
        + b"\x01\x48\x01\x00"  # RR N(R)=1
        + b"\xe1\xc1\x01\x04abcd"  # segmented I-frame N(S)=1
        + b"\xe1\x42\x01\x00"  # last segment N(S)=2
        + b"\x04\x40\x01\x00"  # DISC
        + b"\x01\x40\x02\x00"  # to another logical device
    )
    client = (
        b"\x00\x21"
        + b"\xf0\x00\x00\x00"  # connect
        + b"\x05\x40\x01\x00"  # UA
        + b"\xf1\x00\x00"
        + bytes((len(get),))
        + get  # request
        + b"\x63\x48\x01\x06"
        + b"\xc4\x01\xc1\x00\x11\x05"  # I-frame answer N(R)=1
        + b"\xf1\x00\x00\x02\x01\x02"  # request
        + b"\x63\xd1\x01\x03abc"  # segmented answer N(S)=1 N(R)=2
        + b"\xf2\x00\x00\x00"  # disconnect
        + b"\x05\x40\x01\x00"  # UA
    )
    return [server, client, server[:40] + client[2:], bytes(range(256))]
