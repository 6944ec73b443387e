"""The DLMS/COSEM codecs of ``protocols/dlms`` as fuzz targets (registered in ``targets.py``).

Every decoder there documents one error, :class:`~protocols.dlms.DlmsDecodeError` (with its
subclasses ``HdlcLinkError`` and ``DlmsAuthenticationError``); anything else escaping is a
defect. Where a decoder accepts, the promises checked are: re-encoding gives the same bytes
(or, where the wire allows several spellings, the same value back), buffers stay bounded,
a frame the link sends always decodes, a tampered ciphertext never deciphers, an LLS
password never shows in a repr.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal

from protocols.dlms import DlmsDecodeError, DlmsEncodeError
from protocols.dlms import apdu as A
from protocols.dlms.axdr import (
    _FIXED_BYTES,
    _INTEGERS,
    Data,
    Tag,
    decode_data,
    decode_length,
    encode_data,
    encode_length,
)
from protocols.dlms.cosem import CosemDateTime, ScalerUnit, exact_value
from protocols.dlms.hdlc import (
    LLC_REQUEST,
    LLC_RESPONSE,
    MAX_FRAME_LENGTH,
    ClientLink,
    FrameKind,
    FrameReader,
    HdlcAddress,
    HdlcFrame,
    HdlcParameters,
    LinkState,
    ServerLink,
    decode_frame,
    decode_parameters,
    encode_frame,
    encode_parameters,
)
from protocols.dlms.profile import (
    EntryDescriptor,
    RangeDescriptor,
    decode_buffer,
    encode_capture_objects,
    parse_access,
    parse_capture_objects,
)
from protocols.dlms.security import (
    DlmsAuthenticationError,
    decrypt,
    encrypt,
    hls_gmac_response,
    verify_hls_gmac_response,
)
from protocols.dlms.wrapper import HEADER_SIZE, WrapperReader
from protocols.dlms.wrapper import encode_frame as wrapper_frame
from protocols.obis import Obis
from protocols.record import Quality

from . import dlms_seeds as S
from .base import PromiseBroken, Target

__all__ = ["DLMS_TARGETS"]

DOCUMENTED = (DlmsDecodeError,)


# -- wrapper ------------------------------------------------------------------------------
def run_wrapper(data: bytes) -> object:
    """First byte: the reader's max_apdu (x 16, 0: 65535) and the chunk size; the rest is the
    stream. Frames re-encode to exactly the bytes consumed; the buffer never holds more than
    one frame's header and body."""
    if not data:
        return None
    max_apdu = data[0] * 16 or 0xFFFF
    chunk = data[0] % 13 + 1
    reader = WrapperReader(max_apdu)
    stream = data[1:]
    frames = []
    consumed = 0
    for i in range(0, len(stream), chunk):
        try:
            got = reader.feed(stream[i : i + chunk])
        except DlmsDecodeError:
            # broken for good: any further input is refused the same way
            with contextlib.suppress(DlmsDecodeError):
                reader.feed(b"\x00\x01")
                raise PromiseBroken("a broken wrapper stream accepted more input") from None
            if reader.pending:
                raise PromiseBroken("a broken wrapper stream still holds bytes") from None
            raise
        for frame in got:
            raw = wrapper_frame(frame.source, frame.destination, frame.apdu)
            if stream[consumed : consumed + len(raw)] != raw or len(frame.apdu) > max_apdu:
                raise PromiseBroken(f"wrapper frame does not re-encode: {frame!r}")
            consumed += len(raw)
            frames.append(frame)
        if reader.pending > HEADER_SIZE + max_apdu:
            raise PromiseBroken(f"wrapper reader holds {reader.pending} bytes")
    if consumed + reader.pending != len(stream):
        raise PromiseBroken("wrapper reader lost or made up bytes")
    return frames


# -- A-XDR --------------------------------------------------------------------------------
def run_axdr(data: bytes) -> object:
    """Every value in ``data`` one after another; each re-encodes (canonically: minimal
    lengths, 0xFF for true, whole bytes of bits) to at most the bytes it came from and
    decodes back to the same value."""
    offset = 0
    values = []
    while offset < len(data):
        value, end = decode_data(data, offset)
        if end <= offset or end > len(data):
            raise PromiseBroken(f"A-XDR offset went from {offset} to {end}")
        raw = encode_data(value)
        # a bit-string keeps whole bytes: 123 bits come back as 128, whose length may take
        # one byte more (the value is the same bytes; meterlink reads status bits only)
        if len(raw) > end - offset and not _has_bits(value):
            raise PromiseBroken(f"A-XDR re-encodes longer: {data[offset:end].hex()}")
        again, stop = decode_data(raw)
        if again != value or stop != len(raw):
            raise PromiseBroken(f"A-XDR does not round-trip: {data[offset:end].hex()}")
        if raw != data[offset:end] and _canonical(data[offset:end]):
            raise PromiseBroken(f"A-XDR canonical bytes re-encode differently: {raw.hex()}")
        values.append(value)
        offset = end
    return values


def _has_bits(value: Data) -> bool:
    if value.tag in (Tag.ARRAY, Tag.STRUCTURE):
        return any(_has_bits(v) for v in value.items)
    return value.tag is Tag.BIT_STRING


def _canonical(raw: bytes) -> bool:
    """Bytes without any of the wire's alternative spellings (long-form lengths where one
    byte would do, booleans other than 00/FF, bit-strings): those must re-encode
    identically."""
    try:
        return _walk(raw, 0) == len(raw)
    except _Alternative:
        return False


class _Alternative(Exception):
    pass


def _length(raw: bytes, offset: int) -> tuple[int, int]:
    length, end = decode_length(raw, offset)
    if end - offset != len(encode_length(length)):
        raise _Alternative
    return length, end


def _walk(raw: bytes, offset: int) -> int:
    tag = Tag(raw[offset])
    offset += 1
    if tag is Tag.NULL:
        return offset
    if tag in (Tag.BOOLEAN, Tag.BIT_STRING):
        raise _Alternative
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        count, offset = _length(raw, offset)
        for _ in range(count):
            offset = _walk(raw, offset)
        return offset
    if tag in _INTEGERS:
        return offset + _INTEGERS[tag][0]
    if tag in _FIXED_BYTES:
        return offset + _FIXED_BYTES[tag]
    length, offset = _length(raw, offset)
    return offset + length


# -- COSEM date-time, scaler_unit -----------------------------------------------------------
_OBIS = (Obis.parse("1-0:1.8.0"), Obis.parse("1-0:32.7.0"), Obis(0, 0, 96, 1, 0, 255))


def run_cosem(data: bytes) -> object:
    """12 bytes of date-time, then a scaler_unit and a register value (A-XDR)."""
    stamp = CosemDateTime.from_bytes(data[:12])
    in_range = stamp.deviation is None or -720 <= stamp.deviation <= 720
    if in_range and stamp.to_bytes() != data[:12]:
        raise PromiseBroken(f"date-time does not round-trip: {data[:12].hex()}")
    if stamp.quality not in (Quality.NONE, Quality.CLOCK_SUSPECT):
        raise PromiseBroken(f"date-time quality {stamp.quality!r}")
    with contextlib.suppress(DlmsDecodeError):
        ms = stamp.to_unix_ms(assume_deviation=data[0] % 3 * 60 - 60)
        if type(ms) is not int:
            raise PromiseBroken(f"date-time to_unix_ms gave {ms!r}")
        deviation = stamp.deviation if stamp.deviation is not None else data[0] % 3 * 60 - 60
        back = CosemDateTime.from_unix_ms(ms, deviation).to_unix_ms()
        if back != ms:
            raise PromiseBroken(f"date-time instant {ms} comes back as {back}")
    scaler_unit, offset = decode_data(data, 12)
    value, _ = decode_data(data, offset)
    su = ScalerUnit.from_data(scaler_unit)
    if ScalerUnit.from_data(su.to_data()) != su:
        raise PromiseBroken(f"scaler_unit does not round-trip: {su!r}")
    out = []
    for obis in _OBIS:
        amount, unit = exact_value(obis, value, su)
        if type(amount) is not Decimal or type(unit) is not str:
            raise PromiseBroken(f"exact_value gave {amount!r} {unit!r}")
        out.append(amount)
    return out


# -- APDUs ----------------------------------------------------------------------------------
_PARSERS = (
    A.parse_aarq,
    A.parse_rlrq,
    A.parse_get_request,
    A.parse_get_request_next,
    A.parse_set_request,
    A.parse_action_request,
    A.parse_ciphered,
    A.InitiateRequest.from_bytes,
)


def run_apdu(data: bytes) -> object:
    """Every server-side parser on the same bytes; round trips where the bytes are fixed by
    the value (GET/SET/ACTION/GET-next, ciphered envelopes); an AARQ's repr never shows its
    authentication value (an LLS password)."""
    accepted = []
    for parse in _PARSERS:
        with contextlib.suppress(DlmsDecodeError):
            accepted.append(parse(data))
    for item in accepted:
        _check_apdu(data, item)
    # the server hands the inner parts on: they must parse or fail the documented way
    for item in accepted:
        if isinstance(item, A.GetRequest) and item.access_selection:
            with contextlib.suppress(DlmsDecodeError):
                params, _ = decode_data(item.access_selection, 1)
                parse_access(item.access_selection[0], params)
        if isinstance(item, A.Aarq) and item.ciphered_initiate is not None:
            with contextlib.suppress(DlmsDecodeError):
                c = item.ciphered_initiate
                plain = decrypt(c.security_control, S.CLIENT_TITLE, c.invocation_counter,
                                S.EK, S.AK, c.payload)  # fmt: skip
                A.InitiateRequest.from_bytes(plain)
    return accepted


def _descriptor(tag: int, invoke: int, class_id: int, obis: Obis, ident: int) -> bytes:
    return (
        bytes((tag, 1, invoke))
        + class_id.to_bytes(2, "big")
        + obis.to_bytes()
        + ident.to_bytes(1, "big", signed=True)
    )


def _check_apdu(data: bytes, item: object) -> None:
    if isinstance(item, A.GetRequest):
        raw = _descriptor(0xC0, item.invoke, item.class_id, item.obis, item.attribute)
        raw += b"\x01" + item.access_selection if item.access_selection else b"\x00"
        if raw != data:
            raise PromiseBroken(f"GET-request does not round-trip: {item!r}")
    elif isinstance(item, A.GetRequestNext):
        if bytes((0xC0, 2, item.invoke)) + item.block_number.to_bytes(4, "big") != data:
            raise PromiseBroken(f"GET-request-next does not round-trip: {item!r}")
    elif isinstance(item, A.SetRequest):
        raw = _descriptor(0xC1, item.invoke, item.class_id, item.obis, item.attribute)
        raw += b"\x01" + item.access_selection if item.access_selection else b"\x00"
        if raw + item.value != data:
            raise PromiseBroken(f"SET-request does not round-trip: {item!r}")
        _, end = decode_data(item.value)
        if end != len(item.value):
            raise PromiseBroken("SET-request value is not one A-XDR value")
    elif isinstance(item, A.ActionRequest):
        raw = _descriptor(0xC3, item.invoke, item.class_id, item.obis, item.method)
        raw += b"\x00" if item.parameters is None else b"\x01" + item.parameters
        if raw != data:
            raise PromiseBroken(f"ACTION-request does not round-trip: {item!r}")
    elif isinstance(item, A.CipheredApdu):
        again = A.parse_ciphered(
            A.encode_ciphered(
                item.tag,
                item.security_control,
                item.invocation_counter,
                item.payload,
                item.system_title,
            )
        )
        if again != item:
            raise PromiseBroken(f"ciphered APDU does not round-trip: {item!r}")
    elif isinstance(item, A.Aarq):
        secret = item.authentication_value
        shown = repr(item)
        if secret and len(secret) >= 4:
            others = b"".join(
                x or b""
                for x in (
                    item.calling_title,
                    item.ciphered_initiate and item.ciphered_initiate.payload,
                    item.ciphered_initiate and item.ciphered_initiate.system_title,
                    item.initiate and item.initiate.dedicated_key,
                )
            )
            if secret not in others and repr(secret)[2:-1] in shown:
                raise PromiseBroken(f"AARQ repr shows the authentication value: {shown}")


# -- security -------------------------------------------------------------------------------
def run_security(data: bytes) -> object:
    """``SC IC(4) plaintext``: ciphered with the test keys, deciphers to the plaintext;
    the same payload with one bit flipped (position from the data), or under another
    invocation counter or system title, raises DlmsAuthenticationError and nothing else.
    Arbitrary bytes as a payload or an HLS response: DlmsDecodeError only."""
    if len(data) < 5:
        return decrypt(data[0] if data else 0, S.CLIENT_TITLE, 0, S.EK, S.AK, data)
    sc = 0x30 if data[0] & 0x20 else 0x10
    counter = int.from_bytes(data[1:5], "big")
    plain = data[5:]
    payload = encrypt(sc, S.CLIENT_TITLE, counter, S.EK, S.AK, plain)
    if decrypt(sc, S.CLIENT_TITLE, counter, S.EK, S.AK, payload) != plain:
        raise PromiseBroken("ciphered payload does not decipher to its plaintext")
    bit = int.from_bytes(data[-2:], "big") % (len(payload) * 8)
    tampered = bytearray(payload)
    tampered[bit // 8] ^= 1 << (bit % 8)
    title = bytearray(S.CLIENT_TITLE)
    title[data[0] % 8] ^= 1 << (data[-1] % 8)
    for what, args in (
        ("a flipped bit", (sc, S.CLIENT_TITLE, counter, bytes(tampered))),
        ("another invocation counter", (sc, S.CLIENT_TITLE, counter ^ 1, payload)),
        ("another system title", (sc, bytes(title), counter, payload)),
        ("the other security control", (sc ^ 0x20, S.CLIENT_TITLE, counter, payload)),
    ):
        try:
            decrypt(args[0], args[1], args[2], S.EK, S.AK, args[3])
        except DlmsAuthenticationError:
            pass
        else:
            raise PromiseBroken(f"a payload with {what} deciphered: {data.hex()}")
    # hostile bytes as they arrive: any SC, payload, HLS response
    with contextlib.suppress(DlmsDecodeError):
        decrypt(data[0], S.CLIENT_TITLE, counter, S.EK, S.AK, plain)
    challenge = plain[:64]
    response = hls_gmac_response(S.CLIENT_TITLE, counter, S.EK, S.AK, challenge)
    if verify_hls_gmac_response(response, S.CLIENT_TITLE, S.EK, S.AK, challenge) != counter:
        raise PromiseBroken("HLS-GMAC response does not verify")
    forged = bytearray(response)
    forged[bit // 8 % len(forged)] ^= 1 << (bit % 8)
    with contextlib.suppress(DlmsDecodeError):  # a bad SC byte: DlmsDecodeError; else the tag
        verify_hls_gmac_response(bytes(forged), S.CLIENT_TITLE, S.EK, S.AK, challenge)
        raise PromiseBroken(f"a forged HLS-GMAC response verified: {data.hex()}")
    with contextlib.suppress(DlmsDecodeError):
        verify_hls_gmac_response(data[:17], S.CLIENT_TITLE, S.EK, S.AK, challenge)
    return payload


# -- HDLC frames and stream -------------------------------------------------------------
def run_hdlc(data: bytes) -> object:
    """``decode_frame`` on the bytes; ``decode_parameters`` on them; the stream reader fed
    in chunks. An accepted frame re-encodes to the same value (and to the same bytes unless
    it is an I/UI frame without information field or has an empty one); the reader's buffer
    stays under one maximal frame plus a chunk, every frame it yields is in the input."""
    with contextlib.suppress(DlmsDecodeError):
        frame = decode_frame(data)
        raw = encode_frame(frame)
        if decode_frame(raw) != frame:
            raise PromiseBroken(f"hdlc frame does not round-trip: {frame!r}")
        if frame.info and raw != data:
            raise PromiseBroken(f"hdlc frame re-encodes differently: {data.hex()}")
    with contextlib.suppress(DlmsDecodeError):
        params = decode_parameters(data)
        if decode_parameters(encode_parameters(params)) != params:
            raise PromiseBroken(f"hdlc parameters do not round-trip: {params!r}")
    reader = FrameReader()
    chunk = (data[0] % 40 + 1) if data else 1
    frames = []
    for i in range(0, len(data), chunk):
        for frame in reader.feed(data[i : i + chunk]):
            if frame.info and encode_frame(frame) not in data:
                raise PromiseBroken(f"hdlc reader made up a frame: {frame!r}")
            frames.append(frame)
        if reader.pending > MAX_FRAME_LENGTH + 2 + chunk:
            raise PromiseBroken(f"hdlc reader holds {reader.pending} bytes")
    if len(frames) * 9 > len(data) + len(frames):  # frames share flags at most
        raise PromiseBroken("hdlc reader yields more frames than fit")
    return frames


# -- HDLC link state machines ----------------------------------------------------------------
_KINDS = list(FrameKind)
_MAX_APDU = 300


def _frames_from(data: bytes, start: int):  # type: ignore[no-untyped-def]
    """Decode the fuzz bytes as a script: per step 4 bytes (op, flags, address choice,
    info length) and the information. ``op`` >= 0xE0 is a local action instead of a frame."""
    at = start
    while at + 4 <= len(data):
        op, flags, address, size = data[at : at + 4]
        info = data[at + 4 : at + 4 + size % 48]
        at += 4 + len(info)
        if op & 0x40 and op & 0x20:  # prefix the LLC header
            info = (LLC_REQUEST if op & 0x80 else LLC_RESPONSE) + info
        yield op, flags, address, info


def _frame(op: int, flags: int, info: bytes, dest: HdlcAddress, src: HdlcAddress) -> HdlcFrame:
    kind = _KINDS[op % len(_KINDS)]
    if kind in (FrameKind.SNRM, FrameKind.UA) and op & 0x10:
        info = encode_parameters(HdlcParameters(1 + flags % 40, 1 + flags % 32, 1, 1 + flags % 7))
    elif kind not in (FrameKind.I, FrameKind.UI, FrameKind.FRMR, FrameKind.DM):
        info = b""
    ns = flags & 7 if kind is FrameKind.I else 0
    nr = flags >> 3 & 7 if kind in (FrameKind.I, FrameKind.RR, FrameKind.RNR) else 0
    return HdlcFrame(kind, dest, src, info, bool(flags & 0x40), ns, nr, bool(flags & 0x80))


def _check_sent(step_send: tuple[bytes, ...], to: HdlcAddress) -> None:
    for raw in step_send:
        frame = decode_frame(raw)  # a frame the link sends always decodes
        if frame.destination.upper != to.upper:
            raise PromiseBroken(f"hdlc link answered {frame!r}, not to {to}")


def _deliver(frame: HdlcFrame) -> HdlcFrame:
    """Through the codec, as on the wire."""
    again = decode_frame(encode_frame(frame))
    if again != frame:
        raise PromiseBroken(f"hdlc frame changed on the wire: {frame!r} -> {again!r}")
    return again


def run_hdlc_link(data: bytes) -> object:
    """Byte 0 picks the station. The server (ServerLink, upper 1, lower 17) or the client
    (ClientLink 16 -> 1/17) is fed frames built from the script in the rest of the bytes
    (any kind, N(S)/N(R), P/F, segmentation bit, addresses, information), with local
    actions in between (client: connect, request, disconnect; server: reply, acknowledge,
    reset). Only DlmsDecodeError (HdlcLinkError) may escape the client, nothing the server
    (it answers every frame: DM, FRMR, RR); every frame a station sends
    decodes and goes to the peer; an APDU handed up is at most max_apdu bytes. Then, with
    the parameters from byte 1, a clean client/server exchange of an APDU each way must
    deliver both exactly."""
    if len(data) < 2:
        return None
    out: list[object] = []
    out.append(_loopback(data))
    client_addr, server_addr = HdlcAddress(16), HdlcAddress(1, 17)
    others = (HdlcAddress(1, 17, 4), HdlcAddress(2, 17), HdlcAddress(1, 18), HdlcAddress(1))
    if data[0] & 1:
        server = ServerLink(1, 17, HdlcParameters(16 + data[1] % 100, 16 + data[1] % 60),
                            max_apdu=_MAX_APDU)  # fmt: skip
        for op, flags, address, info in _frames_from(data, 2):
            if op >= 0xF0:
                to = server.client
                steps = (server.reply(info * (1 + flags % 8)), server.acknowledge())
                for send in steps:
                    if send and to is None:
                        raise PromiseBroken("hdlc server sent with no client")
                    if to is not None:
                        _check_sent(send, to)
                if op == 0xFF:
                    server.reset()
                continue
            dest = server_addr if address % 4 else others[address // 4 % len(others)]
            src = client_addr if address % 8 else HdlcAddress(address // 8 % 128)
            try:
                frame = _deliver(_frame(op, flags, info, dest, src))
            except DlmsEncodeError:
                continue
            try:
                step = server.receive(frame)
            except DlmsDecodeError as exc:  # the simulator's link loop does not catch
                raise PromiseBroken(f"hdlc server raised on {frame!r}: {exc}") from None
            _check_sent(step.send, src)
            if step.apdu is not None and len(step.apdu) > _MAX_APDU:
                raise PromiseBroken(f"hdlc server handed up {len(step.apdu)} bytes")
            out.append(step)
        return out
    client = ClientLink(16, server_addr, HdlcParameters(8 + data[1] % 64, 8 + data[1] % 50),
                        max_apdu=_MAX_APDU)  # fmt: skip
    for op, flags, address, info in _frames_from(data, 2):
        if op >= 0xF0:
            try:
                if op % 3 == 0:
                    sent: tuple[bytes, ...] = (client.connect(),)
                elif op % 3 == 1:
                    sent = client.request(info * (1 + flags % 8))
                else:
                    sent = (client.disconnect(),)
            except DlmsDecodeError:
                continue  # not possible in this state: the documented refusal
            _check_sent(sent, server_addr)
            continue
        src = server_addr if address % 4 else others[address // 4 % len(others)]
        dest = client_addr if address % 8 else HdlcAddress(address // 8 % 128)
        try:
            frame = _deliver(_frame(op, flags, info, dest, src))
        except DlmsEncodeError:
            continue
        step = client.receive(frame)
        _check_sent(step.send, server_addr)
        if step.apdu is not None and len(step.apdu) > _MAX_APDU:
            raise PromiseBroken(f"hdlc client handed up {len(step.apdu)} bytes")
        out.append(step)
    return out


def _loopback(data: bytes) -> object:
    try:
        return _exchange(data)
    except DlmsDecodeError as exc:  # a clean exchange must not fail at all
        raise PromiseBroken(f"hdlc loopback failed: {exc}") from None


def _exchange(data: bytes) -> object:
    """A clean exchange: SNRM/UA with the parameters from ``data[1]``, one request and one
    answer of lengths from the data, each segmented as negotiated; both arrive intact."""
    b = data[1]
    proposal = HdlcParameters(1 + b % 37, 1 + (b >> 2) % 29, 1 + b % 7, 1 + (b >> 3) % 7)
    capabilities = HdlcParameters(1 + (b >> 1) % 31, 1 + b % 23, 1 + (b >> 4) % 7, 1 + b % 5)
    client = ClientLink(16, HdlcAddress(1, 17), proposal, max_apdu=_MAX_APDU)
    server = ServerLink(1, 17, capabilities, max_apdu=_MAX_APDU)
    request = data[: 1 + b % 90]
    answer = data[::-1][: 1 + len(data) % 120]

    def to_server(raw: bytes) -> tuple[bytes, ...]:
        step = server.receive(decode_frame(raw))
        if step.apdu is not None:
            if step.apdu != request:
                raise PromiseBroken(f"hdlc loopback: server got {step.apdu.hex()}")
            return server.reply(answer)
        return step.send

    pending = [client.connect()]
    got: bytes | None = None
    for _ in range(10_000):
        if not pending:
            break
        back = []
        for raw in pending:
            back += to_server(raw)
        pending = []
        for raw in back:
            step = client.receive(decode_frame(raw))
            if step.event == "connected":
                pending += client.request(request)
            if step.apdu is not None:
                got = step.apdu
            pending += step.send
    if got != answer or client.state is not LinkState.IDLE:
        raise PromiseBroken(
            f"hdlc loopback with {proposal} / {capabilities}: answer {got!r}, "
            f"client {client.state.value}"
        )
    return got


# -- Profile Generic ----------------------------------------------------------------------
def run_profile(data: bytes) -> object:
    """Byte 0: 0 capture objects, 1/2 selective access (range/entry), else a buffer with the
    simulator's six columns; then an A-XDR value. Capture objects and descriptors round-trip;
    a buffer decodes into one entry per row, exact Decimals, int timestamps."""
    if not data:
        return None
    kind = data[0]
    item, _ = decode_data(data, 1)
    if kind == 0:
        columns = parse_capture_objects(item)
        if parse_capture_objects(encode_capture_objects(columns)) != columns:
            raise PromiseBroken(f"capture objects do not round-trip: {columns!r}")
        return columns
    if kind in (1, 2):
        access = parse_access(kind, item)
        try:
            raw = access.to_bytes()
        except DlmsEncodeError:
            # a range whose date-time has a deviation beyond +-720: parsed as sent, refused
            # when used (to_unix_ms); not re-encodable by design
            if not isinstance(access, RangeDescriptor):
                raise PromiseBroken(f"entry descriptor not re-encodable: {access!r}") from None
            return access
        if parse_access(raw[0], decode_data(raw, 1)[0]) != access:
            raise PromiseBroken(f"selective access does not round-trip: {access!r}")
        if isinstance(access, EntryDescriptor):
            selected = access.selects(kind * 50)
            if selected.start < 0 or selected.stop > kind * 50:
                raise PromiseBroken(f"entry descriptor selects {selected}")
        return access
    entries = decode_buffer(
        item,
        S.PROFILE_COLUMNS,
        S.PROFILE_SCALERS,
        capture_period_s=kind % 4 * 450,
        assume_deviation=-60,
    )
    if len(entries) != len(item.items):
        raise PromiseBroken("buffer: entries and rows differ in number")
    for entry in entries:
        if type(entry.captured_ms) is not int:
            raise PromiseBroken(f"buffer entry time {entry.captured_ms!r}")
        for value in entry.values:
            if type(value.value) is not Decimal:
                raise PromiseBroken(f"buffer value not a Decimal: {value!r}")
    return entries


DLMS_TARGETS = (
    Target("dlms_wrapper", run_wrapper, DOCUMENTED, S.wrapper_seeds),
    Target("dlms_axdr", run_axdr, DOCUMENTED, S.data_values),
    Target("dlms_cosem", run_cosem, DOCUMENTED, S.date_time_seeds),
    Target("dlms_apdu", run_apdu, DOCUMENTED, S.apdu_seeds),
    Target("dlms_security", run_security, DOCUMENTED, S.security_seeds),
    Target("dlms_hdlc", run_hdlc, DOCUMENTED, S.hdlc_seeds),
    Target("dlms_hdlc_link", run_hdlc_link, DOCUMENTED, S.link_seeds),
    Target("dlms_profile", run_profile, DOCUMENTED, S.profile_seeds),
)
