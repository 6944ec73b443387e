"""The server side of a logical-name association: the APDUs a meter receives and sends
(Green Book 9.4 / 9.5, IEC 62056-5-3).

Received (parsed here, every failure a :class:`~protocols.dlms.DlmsDecodeError`):
AARQ (ACSE, BER; mechanisms none, LLS (1), HLS-GMAC (5), calling-AP-title, calling
authentication value, plain or glo-ciphered InitiateRequest), GET-request-normal and
GET-request-next, SET-request-normal, ACTION-request-normal, RLRQ, and the ciphered
envelopes (glo-initiate, glo-get/set/action, general-glo-ciphering). Sent (encoded here):
AARE (accepted, pending "authentication required", or rejected with a diagnostic; with the
responding AP title and authentication value when a mechanism is in use),
GET-response-normal and GET-response-with-datablock, SET-response-normal,
ACTION-response-normal (with optional data), RLRE, exception-response, and the same
ciphered envelopes. The AES-GCM itself is in :mod:`.security`.

``GetResponseNormal.to_bytes`` of later dlms-cosem releases is reported broken, and 21.3.2
has no server: the bytes are built here, as the Green Book's examples show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ..obis import Obis
from . import DlmsDecodeError, DlmsEncodeError
from .axdr import decode_data, decode_length, encode_length

__all__ = [
    "CONFORMANCE_ACTION",
    "CONFORMANCE_BLOCK_TRANSFER_WITH_GET",
    "CONFORMANCE_GET",
    "CONFORMANCE_SELECTIVE_ACCESS",
    "CONFORMANCE_SET",
    "Aarq",
    "AccessResult",
    "AcseDiagnostic",
    "ActionRequest",
    "CipheredApdu",
    "GetRequest",
    "GetRequestNext",
    "InitiateRequest",
    "Rlrq",
    "SetRequest",
    "block_payload_size",
    "encode_aare",
    "encode_action_response",
    "encode_ciphered",
    "encode_exception",
    "encode_get_response",
    "encode_get_response_block",
    "encode_initiate_response",
    "encode_rlre",
    "encode_set_response",
    "parse_aarq",
    "parse_action_request",
    "parse_ciphered",
    "parse_get_request",
    "parse_get_request_next",
    "parse_rlrq",
    "parse_set_request",
]

TAG_AARQ = 0x60
TAG_AARE = 0x61
TAG_RLRQ = 0x62
TAG_RLRE = 0x63
TAG_GET_REQUEST = 0xC0
TAG_SET_REQUEST = 0xC1
TAG_ACTION_REQUEST = 0xC3
TAG_GET_RESPONSE = 0xC4
TAG_SET_RESPONSE = 0xC5
TAG_ACTION_RESPONSE = 0xC7
TAG_EXCEPTION = 0xD8
TAG_INITIATE_REQUEST = 0x01
TAG_INITIATE_RESPONSE = 0x08
TAG_CONFIRMED_SERVICE_ERROR = 0x0E
#: glo-ciphered forms (Green Book 9.5, table "ciphered xDLMS APDUs"): service tag -> glo tag
TAG_GLO_INITIATE_REQUEST = 0x21
TAG_GLO_INITIATE_RESPONSE = 0x28
TAG_GLO_GET_REQUEST = 0xC8
TAG_GLO_SET_REQUEST = 0xC9
TAG_GLO_ACTION_REQUEST = 0xCB
TAG_GLO_GET_RESPONSE = 0xCC
TAG_GLO_SET_RESPONSE = 0xCD
TAG_GLO_ACTION_RESPONSE = 0xCF
TAG_GENERAL_GLO_CIPHERING = 0xDB
GLO_TAGS: dict[int, int] = {
    TAG_INITIATE_REQUEST: TAG_GLO_INITIATE_REQUEST,
    TAG_INITIATE_RESPONSE: TAG_GLO_INITIATE_RESPONSE,
    TAG_GET_REQUEST: TAG_GLO_GET_REQUEST,
    TAG_SET_REQUEST: TAG_GLO_SET_REQUEST,
    TAG_ACTION_REQUEST: TAG_GLO_ACTION_REQUEST,
    TAG_GET_RESPONSE: TAG_GLO_GET_RESPONSE,
    TAG_SET_RESPONSE: TAG_GLO_SET_RESPONSE,
    TAG_ACTION_RESPONSE: TAG_GLO_ACTION_RESPONSE,
}

#: application-context-name prefix (joint-iso-ctt 2 16 756 5 8 1 x)
CONTEXT_PREFIX = bytes.fromhex("608574050801")
CONTEXT_LN_NO_CIPHERING = 1
CONTEXT_LN_CIPHERING = 3
#: mechanism-name prefix (2 16 756 5 8 2 x)
MECHANISM_PREFIX = bytes.fromhex("608574050802")
MECHANISM_NONE = 0
MECHANISM_LLS = 1
MECHANISM_HLS_GMAC = 5
DLMS_VERSION = 6
VAA_NAME_LN = 0x0007
#: sender/responder-acse-requirements: BIT STRING, 7 unused bits, authentication (bit 0)
ACSE_REQUIREMENTS_AUTHENTICATION = b"\x07\x80"


def _conformance_bit(bit: int) -> int:
    """A conformance bit (Green Book numbering, bit 0 = MSB) as its 24-bit value."""
    return 1 << (23 - bit)


CONFORMANCE_BLOCK_TRANSFER_WITH_GET = _conformance_bit(11)
CONFORMANCE_GET = _conformance_bit(19)
CONFORMANCE_SET = _conformance_bit(20)
CONFORMANCE_SELECTIVE_ACCESS = _conformance_bit(21)
CONFORMANCE_ACTION = _conformance_bit(23)


class AcseDiagnostic(IntEnum):
    """acse-service-user diagnostics of an AARE."""

    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNISED = 3
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class AccessResult(IntEnum):
    """data-access-result of a GET response."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


# -- BER walking ---------------------------------------------------------------------------
def _ber_elements(data: bytes, what: str) -> list[tuple[int, bytes]]:
    """The (tag, content) elements of a BER sequence; single-byte tags only (ACSE uses no
    others)."""
    out = []
    offset = 0
    while offset < len(data):
        tag = data[offset]
        if tag & 0x1F == 0x1F:
            raise DlmsDecodeError(f"{what}: multi-byte BER tag 0x{tag:02X} at offset {offset}")
        length, start = decode_length(data, offset + 1)
        end = start + length
        if end > len(data):
            raise DlmsDecodeError(
                f"{what}: element 0x{tag:02X} at offset {offset} runs past the end "
                f"({length} bytes announced, {len(data) - start} left)"
            )
        out.append((tag, data[start:end]))
        offset = end
    return out


def _outer(apdu: bytes, tag: int, what: str) -> bytes:
    if not apdu or apdu[0] != tag:
        got = f"0x{apdu[0]:02X}" if apdu else "nothing"
        raise DlmsDecodeError(f"{what}: expected tag 0x{tag:02X}, got {got}")
    length, start = decode_length(apdu, 1)
    if start + length != len(apdu):
        raise DlmsDecodeError(
            f"{what}: length {length} does not match the {len(apdu) - start} bytes present"
        )
    return apdu[start:]


def _ber(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(content)) + content


# -- AARQ ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InitiateRequest:
    dlms_version: int
    conformance: int  # 24-bit proposed conformance
    max_receive_pdu: int
    dedicated_key: bytes | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> InitiateRequest:
        what = "xDLMS InitiateRequest"
        if not raw:
            raise DlmsDecodeError(f"{what}: empty")
        if raw[0] != TAG_INITIATE_REQUEST:
            raise DlmsDecodeError(
                f"{what}: tag 0x{raw[0]:02X} (a ciphered initiate needs security, not offered)"
            )
        offset = 1
        key = None
        if _byte(raw, offset, what):  # dedicated-key present
            size = _byte(raw, offset + 1, what)
            key = raw[offset + 2 : offset + 2 + size]
            if len(key) != size:
                raise DlmsDecodeError(f"{what}: dedicated key runs past the end")
            offset += 2 + size
        else:
            offset += 1
        offset += 2 if _byte(raw, offset, what) else 1  # response-allowed
        offset += 2 if _byte(raw, offset, what) else 1  # proposed-quality-of-service
        version = _byte(raw, offset, what)
        offset += 1
        if raw[offset : offset + 4] != b"\x5f\x1f\x04\x00":
            raise DlmsDecodeError(f"{what}: conformance block (5F 1F 04 00) expected at {offset}")
        tail = raw[offset + 4 : offset + 9]
        if len(tail) != 5:
            raise DlmsDecodeError(f"{what}: truncated conformance / max PDU size")
        if offset + 9 != len(raw):
            raise DlmsDecodeError(f"{what}: {len(raw) - offset - 9} trailing bytes")
        return cls(version, int.from_bytes(tail[0:3], "big"), int.from_bytes(tail[3:5], "big"), key)


def _byte(raw: bytes, offset: int, what: str) -> int:
    if offset >= len(raw):
        raise DlmsDecodeError(f"{what}: truncated at offset {offset}")
    return raw[offset]


@dataclass(frozen=True, slots=True)
class Aarq:
    context: int | None  # last arc of the application-context-name (1: LN, no ciphering)
    mechanism: int | None  # last arc of the mechanism-name; None: not given
    authentication_value: bytes | None
    calling_title: bytes | None
    initiate: InitiateRequest | None
    initiate_error: str | None = None  # why the user-information did not parse
    #: the glo-initiate request (context 3): decrypted by the server, then
    #: ``InitiateRequest.from_bytes``
    ciphered_initiate: CipheredApdu | None = None
    #: sender-acse-requirements with the authentication functional unit
    authentication_requested: bool = False

    def __repr__(self) -> str:  # the calling authentication value is an LLS password
        shown = "<hidden>" if self.authentication_value is not None else None
        return (
            f"Aarq(context={self.context}, mechanism={self.mechanism}, "
            f"authentication_value={shown}, calling_title={self.calling_title!r}, "
            f"initiate={self.initiate!r}, ciphered_initiate={self.ciphered_initiate!r})"
        )


def parse_aarq(apdu: bytes) -> Aarq:
    body = _outer(apdu, TAG_AARQ, "AARQ")
    context = mechanism = None
    auth = title = None
    initiate: InitiateRequest | None = None
    initiate_error: str | None = None
    ciphered: CipheredApdu | None = None
    requested = False
    for tag, content in _ber_elements(body, "AARQ"):
        if tag == 0xA1:  # application-context-name: 06 07 <oid>
            inner = _ber_elements(content, "AARQ application-context-name")
            if len(inner) != 1 or inner[0][0] != 0x06:
                raise DlmsDecodeError("AARQ application-context-name: expected one OID")
            oid = inner[0][1]
            if len(oid) != 7 or oid[:6] != CONTEXT_PREFIX:
                raise DlmsDecodeError(f"AARQ: unknown application context {oid.hex()}")
            context = oid[6]
        elif tag == 0x8B:  # mechanism-name (implicit OID)
            if len(content) != 7 or content[:6] != MECHANISM_PREFIX:
                raise DlmsDecodeError(f"AARQ: unknown mechanism name {content.hex()}")
            mechanism = content[6]
        elif tag == 0x8A:  # sender-acse-requirements: BIT STRING, bit 0 authentication
            requested = len(content) == 2 and bool(content[1] & 0x80)
        elif tag == 0xAC:  # calling-authentication-value: choice, [0] charstring
            inner = _ber_elements(content, "AARQ calling-authentication-value")
            auth = inner[0][1] if inner else b""
        elif tag == 0xA6:  # calling-AP-title: 04 <len> <system title>
            inner = _ber_elements(content, "AARQ calling-AP-title")
            title = inner[0][1] if inner else b""
        elif tag == 0xBE:  # user-information: 04 <len> <xDLMS APDU>
            inner = _ber_elements(content, "AARQ user-information")
            if len(inner) != 1 or inner[0][0] != 0x04:
                raise DlmsDecodeError("AARQ user-information: expected one OCTET STRING")
            xdlms = inner[0][1]
            try:
                if xdlms[:1] == bytes((TAG_GLO_INITIATE_REQUEST,)):
                    ciphered = parse_ciphered(xdlms)
                else:
                    initiate = InitiateRequest.from_bytes(xdlms)
            except DlmsDecodeError as exc:
                initiate_error = str(exc)
        # protocol-version (0x80), sender-acse-requirements (0x8A), called/calling
        # AE qualifiers and invocation ids carry nothing this server acts on
    if context is None:
        raise DlmsDecodeError("AARQ: no application-context-name")
    return Aarq(context, mechanism, auth, title, initiate, initiate_error, ciphered, requested)


def encode_initiate_response(conformance: int, max_receive_pdu: int) -> bytes:
    """xDLMS InitiateResponse: no quality of service, DLMS version 6, the negotiated
    conformance, the server's max receive PDU size, VAA name 0x0007 (LN)."""
    if not 0 <= conformance < 1 << 24:
        raise DlmsEncodeError(f"conformance must be 24 bits, got {conformance}")
    if not 0 <= max_receive_pdu <= 0xFFFF:
        raise DlmsEncodeError(f"max receive PDU size must be 0..65535, got {max_receive_pdu}")
    return (
        bytes((TAG_INITIATE_RESPONSE, 0x00, DLMS_VERSION))
        + b"\x5f\x1f\x04\x00"
        + conformance.to_bytes(3, "big")
        + max_receive_pdu.to_bytes(2, "big")
        + VAA_NAME_LN.to_bytes(2, "big")
    )


def encode_aare(
    *,
    accepted: bool,
    diagnostic: AcseDiagnostic = AcseDiagnostic.NULL,
    conformance: int = 0,
    max_receive_pdu: int = 0x400,
    context: int = CONTEXT_LN_NO_CIPHERING,
    initiate_error: bool = False,
    responding_title: bytes | None = None,
    mechanism: int | None = None,
    authentication_value: bytes | None = None,
    user_information: bytes | None = None,
) -> bytes:
    """An AARE. Accepted: with an InitiateResponse (negotiated conformance, the server's
    max receive PDU size, VAA name 0x0007), or ``user_information`` when given (the
    glo-ciphered InitiateResponse of a ciphered context). ``initiate_error``: the
    user-information is a ConfirmedServiceError (initiate, dlms-version-too-low), as for a
    bad xDLMS request. ``responding_title`` (the server system title), ``mechanism``
    (with the responder-acse-requirements authentication bit) and
    ``authentication_value`` (the HLS StoC challenge) when a mechanism is in use."""
    parts = [
        _ber(0xA1, _ber(0x06, CONTEXT_PREFIX + bytes((context,)))),
        _ber(0xA2, _ber(0x02, bytes((0 if accepted else 1,)))),
        _ber(0xA3, _ber(0xA1, _ber(0x02, bytes((int(diagnostic),))))),
    ]
    if responding_title is not None:
        parts.append(_ber(0xA4, _ber(0x04, responding_title)))
    if mechanism is not None and mechanism != MECHANISM_NONE:
        if not 0 <= mechanism <= 0x7F:
            raise DlmsEncodeError(f"mechanism id must be 0..127, got {mechanism}")
        parts.append(_ber(0x88, ACSE_REQUIREMENTS_AUTHENTICATION))
        parts.append(_ber(0x89, MECHANISM_PREFIX + bytes((mechanism,))))
    if authentication_value is not None:
        parts.append(_ber(0xAA, _ber(0x80, authentication_value)))
    if accepted:
        initiate = user_information or encode_initiate_response(conformance, max_receive_pdu)
        parts.append(_ber(0xBE, _ber(0x04, initiate)))
    elif initiate_error:
        # ConfirmedServiceError: initiateError [1], ServiceError initiate [6],
        # dlms-version-too-low (1)
        parts.append(_ber(0xBE, _ber(0x04, bytes((TAG_CONFIRMED_SERVICE_ERROR, 1, 6, 1)))))
    return _ber(TAG_AARE, b"".join(parts))


# -- RLRQ / RLRE ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rlrq:
    reason: int | None
    #: the xDLMS APDU of the user-information (an InitiateRequest, glo-ciphered in a
    #: ciphered context), when present
    user_information: bytes | None = None


def parse_rlrq(apdu: bytes) -> Rlrq:
    body = _outer(apdu, TAG_RLRQ, "RLRQ")
    reason = None
    user_information = None
    for tag, content in _ber_elements(body, "RLRQ"):
        if tag == 0x80:
            if len(content) != 1:
                raise DlmsDecodeError("RLRQ reason: one byte expected")
            reason = content[0]
        elif tag == 0xBE:
            inner = _ber_elements(content, "RLRQ user-information")
            if len(inner) != 1 or inner[0][0] != 0x04:
                raise DlmsDecodeError("RLRQ user-information: expected one OCTET STRING")
            user_information = inner[0][1]
    return Rlrq(reason, user_information)


def encode_rlre(reason: int = 0) -> bytes:
    """RLRE with release-response-reason ``reason`` (0: normal)."""
    return _ber(TAG_RLRE, _ber(0x80, bytes((reason,))))


# -- GET -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GetRequest:
    """A GET-request-normal: one attribute of one object."""

    invoke: int  # invoke-id-and-priority byte, echoed in the response
    class_id: int
    obis: Obis
    attribute: int
    access_selection: bytes | None  # raw selector + parameters, when present


GET_NORMAL = 1


def parse_get_request(apdu: bytes) -> GetRequest:
    """GET-request-normal; GET-request-next and -with-list raise DlmsDecodeError with
    ``unsupported`` in the message (the server answers them with an exception-response)."""
    if len(apdu) < 2 or apdu[0] != TAG_GET_REQUEST:
        raise DlmsDecodeError("GET-request: expected tag 0xC0")
    if apdu[1] != GET_NORMAL:
        raise DlmsDecodeError(f"GET-request choice {apdu[1]} unsupported (only normal)")
    if len(apdu) < 13:
        raise DlmsDecodeError(f"GET-request-normal: {len(apdu)} bytes, at least 13 expected")
    invoke = apdu[2]
    class_id = int.from_bytes(apdu[3:5], "big")
    obis = Obis.from_bytes(apdu[5:11])
    attribute = int.from_bytes(apdu[11:12], "big", signed=True)
    flag = apdu[12]
    rest = apdu[13:]
    if flag == 0:
        if rest:
            raise DlmsDecodeError(f"GET-request-normal: {len(rest)} trailing bytes")
        return GetRequest(invoke, class_id, obis, attribute, None)
    if flag != 1 or not rest:
        raise DlmsDecodeError("GET-request-normal: bad access-selection")
    return GetRequest(invoke, class_id, obis, attribute, rest)


def encode_get_response(
    invoke: int, *, data: bytes | None = None, error: AccessResult | None = None
) -> bytes:
    """GET-response-normal: ``C4 01 <invoke> 00 <data>`` or ``C4 01 <invoke> 01 <result>``."""
    if (data is None) == (error is None):
        raise DlmsEncodeError("GET-response: give exactly one of data and error")
    if not 0 <= invoke <= 0xFF:
        raise DlmsEncodeError(f"invoke-id-and-priority must be a byte, got {invoke}")
    head = bytes((TAG_GET_RESPONSE, GET_NORMAL, invoke))
    if data is not None:
        return head + b"\x00" + data
    assert error is not None
    return head + bytes((1, int(error)))


def encode_exception(state_error: int, service_error: int) -> bytes:
    """exception-response: state-error (1 service-not-allowed, 2 service-unknown),
    service-error (1 operation-not-possible, 2 service-not-supported, 3 other-reason)."""
    return bytes((TAG_EXCEPTION, state_error, service_error))


# -- GET with block transfer ---------------------------------------------------------------
GET_NEXT = 2
GET_WITH_DATABLOCK = 2


@dataclass(frozen=True, slots=True)
class GetRequestNext:
    """GET-request-next: the client acknowledges block ``block_number`` and asks for the
    next one."""

    invoke: int
    block_number: int


def parse_get_request_next(apdu: bytes) -> GetRequestNext:
    """``C0 02 <invoke> <block-number: 4 bytes>``."""
    if len(apdu) < 2 or apdu[0] != TAG_GET_REQUEST or apdu[1] != GET_NEXT:
        raise DlmsDecodeError("GET-request-next: expected C0 02")
    if len(apdu) != 7:
        raise DlmsDecodeError(f"GET-request-next: {len(apdu)} bytes, 7 expected")
    return GetRequestNext(apdu[2], int.from_bytes(apdu[3:7], "big"))


def encode_get_response_block(
    invoke: int,
    block_number: int,
    *,
    last: bool,
    raw: bytes | None = None,
    error: AccessResult | None = None,
) -> bytes:
    """GET-response-with-datablock: ``C4 02 <invoke> <last-block> <block-number: 4>``
    then ``00 <octet-string raw-data>`` or ``01 <data-access-result>`` (an error ends the
    transfer: ``last`` must be set)."""
    if (raw is None) == (error is None):
        raise DlmsEncodeError("GET-response-with-datablock: give exactly one of raw and error")
    if not 0 <= invoke <= 0xFF:
        raise DlmsEncodeError(f"invoke-id-and-priority must be a byte, got {invoke}")
    if not 0 <= block_number <= 0xFFFFFFFF:
        raise DlmsEncodeError(f"block number must be 32 bits, got {block_number}")
    head = bytes((TAG_GET_RESPONSE, GET_WITH_DATABLOCK, invoke, 1 if last else 0))
    head += block_number.to_bytes(4, "big")
    if raw is not None:
        return head + b"\x00" + encode_length(len(raw)) + raw
    if not last:
        raise DlmsEncodeError("GET-response-with-datablock: an error must be the last block")
    assert error is not None
    return head + bytes((1, int(error)))


def block_payload_size(max_apdu: int) -> int:
    """The most raw-data bytes one GET-response-with-datablock can carry in an APDU of at
    most ``max_apdu`` bytes (tag, choice, invoke, last-block, block number (4) and the
    raw-data choice: 9 bytes; then the octet-string length and the data)."""
    size = max_apdu - 9 - 1
    while size > 0 and 9 + len(encode_length(size)) + size > max_apdu:
        size -= 1
    if size <= 0:
        raise DlmsEncodeError(f"an APDU of {max_apdu} bytes cannot carry a data block")
    return size


# -- SET -----------------------------------------------------------------------------------
SET_NORMAL = 1


@dataclass(frozen=True, slots=True)
class SetRequest:
    """A SET-request-normal: one attribute of one object and its new value."""

    invoke: int
    class_id: int
    obis: Obis
    attribute: int
    access_selection: bytes | None  # raw selector + parameters, when present
    value: bytes  # the A-XDR encoded value (one whole Data)


def _descriptor(apdu: bytes, what: str) -> tuple[int, int, Obis, int]:
    """(invoke, class id, logical name, attribute/method) of ``<tag> <choice> <invoke>
    <class: 2> <obis: 6> <id: 1>``, the common start of GET/SET/ACTION normal."""
    if len(apdu) < 13:
        raise DlmsDecodeError(f"{what}: {len(apdu)} bytes, at least 13 expected")
    return (
        apdu[2],
        int.from_bytes(apdu[3:5], "big"),
        Obis.from_bytes(apdu[5:11]),
        int.from_bytes(apdu[11:12], "big", signed=True),
    )


def _one_data(raw: bytes, offset: int, what: str) -> int:
    """The end offset of the one A-XDR Data at ``offset``."""
    try:
        _, end = decode_data(raw, offset)
    except DlmsDecodeError as exc:
        raise DlmsDecodeError(f"{what}: value at offset {offset}: {exc}") from None
    return end


def parse_set_request(apdu: bytes) -> SetRequest:
    """SET-request-normal; the block and with-list forms raise DlmsDecodeError with
    ``unsupported`` in the message."""
    what = "SET-request-normal"
    if len(apdu) < 2 or apdu[0] != TAG_SET_REQUEST:
        raise DlmsDecodeError("SET-request: expected tag 0xC1")
    if apdu[1] != SET_NORMAL:
        raise DlmsDecodeError(f"SET-request choice {apdu[1]} unsupported (only normal)")
    invoke, class_id, obis, attribute = _descriptor(apdu, what)
    flag = _byte(apdu, 12, what)
    offset = 13
    selection = None
    if flag == 1:
        end = _one_data(apdu, offset + 1, f"{what} access-parameters")
        _byte(apdu, offset, what)
        selection = apdu[offset:end]
        offset = end
    elif flag != 0:
        raise DlmsDecodeError(f"{what}: access-selection flag {flag} at offset 12")
    end = _one_data(apdu, offset, what)
    if end != len(apdu):
        raise DlmsDecodeError(f"{what}: {len(apdu) - end} trailing bytes at offset {end}")
    return SetRequest(invoke, class_id, obis, attribute, selection, apdu[offset:end])


def encode_set_response(invoke: int, result: AccessResult) -> bytes:
    """SET-response-normal: ``C5 01 <invoke> <data-access-result>``."""
    if not 0 <= invoke <= 0xFF:
        raise DlmsEncodeError(f"invoke-id-and-priority must be a byte, got {invoke}")
    return bytes((TAG_SET_RESPONSE, SET_NORMAL, invoke, int(result)))


# -- ACTION --------------------------------------------------------------------------------
ACTION_NORMAL = 1


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """An ACTION-request-normal: one method of one object, with optional parameters."""

    invoke: int
    class_id: int
    obis: Obis
    method: int
    parameters: bytes | None  # the A-XDR encoded method-invocation-parameters


def parse_action_request(apdu: bytes) -> ActionRequest:
    """ACTION-request-normal; the other forms raise DlmsDecodeError with ``unsupported``."""
    what = "ACTION-request-normal"
    if len(apdu) < 2 or apdu[0] != TAG_ACTION_REQUEST:
        raise DlmsDecodeError("ACTION-request: expected tag 0xC3")
    if apdu[1] != ACTION_NORMAL:
        raise DlmsDecodeError(f"ACTION-request choice {apdu[1]} unsupported (only normal)")
    invoke, class_id, obis, method = _descriptor(apdu, what)
    flag = _byte(apdu, 12, what)
    if flag == 0:
        if len(apdu) != 13:
            raise DlmsDecodeError(f"{what}: {len(apdu) - 13} trailing bytes at offset 13")
        return ActionRequest(invoke, class_id, obis, method, None)
    if flag != 1:
        raise DlmsDecodeError(f"{what}: parameters flag {flag} at offset 12")
    end = _one_data(apdu, 13, what)
    if end != len(apdu):
        raise DlmsDecodeError(f"{what}: {len(apdu) - end} trailing bytes at offset {end}")
    return ActionRequest(invoke, class_id, obis, method, apdu[13:end])


def encode_action_response(
    invoke: int,
    result: AccessResult,
    *,
    data: bytes | None = None,
    data_error: AccessResult | None = None,
) -> bytes:
    """ACTION-response-normal: ``C7 01 <invoke> <action-result>`` then ``00`` (no
    return parameters), ``01 00 <Data>`` or ``01 01 <data-access-result>``. Action-result
    shares the data-access-result numbering (success 0 ... other-reason 250)."""
    if not 0 <= invoke <= 0xFF:
        raise DlmsEncodeError(f"invoke-id-and-priority must be a byte, got {invoke}")
    if data is not None and data_error is not None:
        raise DlmsEncodeError("ACTION-response: give at most one of data and data_error")
    head = bytes((TAG_ACTION_RESPONSE, ACTION_NORMAL, invoke, int(result)))
    if data is not None:
        return head + b"\x01\x00" + data
    if data_error is not None:
        return head + bytes((1, 1, int(data_error)))
    return head + b"\x00"


# -- ciphered APDUs ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CipheredApdu:
    """A glo-ciphered APDU (``tag`` one of the glo tags: the security header and the
    ciphered text in one octet string) or a general-glo-ciphering APDU (0xDB, which also
    carries the sender's ``system_title``). ``payload`` is the ciphertext with its
    authentication tag (Green Book 9.2.7.2.4)."""

    tag: int
    security_control: int
    invocation_counter: int
    payload: bytes
    system_title: bytes | None = None

    @property
    def header(self) -> bytes:
        """The security header: SC || IC."""
        return bytes((self.security_control,)) + self.invocation_counter.to_bytes(4, "big")


_GLO_TAGS = frozenset(GLO_TAGS.values())


def parse_ciphered(apdu: bytes) -> CipheredApdu:
    """A glo-ciphered or general-glo-ciphering APDU (not decrypted)."""
    what = "ciphered APDU"
    if not apdu:
        raise DlmsDecodeError(f"{what}: empty")
    tag = apdu[0]
    offset = 1
    title = None
    if tag == TAG_GENERAL_GLO_CIPHERING:
        what = "general-glo-ciphering"
        size, offset = decode_length(apdu, offset)
        title = apdu[offset : offset + size]
        if len(title) != size:
            raise DlmsDecodeError(f"{what}: system title at offset {offset} runs past the end")
        offset += size
    elif tag not in _GLO_TAGS:
        raise DlmsDecodeError(f"{what}: tag 0x{tag:02X} is not a glo-ciphered APDU")
    else:
        what = f"glo-ciphered APDU 0x{tag:02X}"
    length, start = decode_length(apdu, offset)
    if start + length != len(apdu):
        raise DlmsDecodeError(
            f"{what}: length {length} at offset {offset} does not match the "
            f"{len(apdu) - start} bytes present"
        )
    if length < 5:
        raise DlmsDecodeError(f"{what}: {length} bytes, the security header alone is 5")
    return CipheredApdu(
        tag,
        apdu[start],
        int.from_bytes(apdu[start + 1 : start + 5], "big"),
        apdu[start + 5 :],
        title,
    )


def encode_ciphered(
    tag: int,
    security_control: int,
    invocation_counter: int,
    payload: bytes,
    system_title: bytes | None = None,
) -> bytes:
    """The bytes of a glo-ciphered APDU (``tag`` a glo tag) or, with ``system_title``, a
    general-glo-ciphering APDU (``tag`` 0xDB)."""
    if not 0 <= security_control <= 0xFF:
        raise DlmsEncodeError(f"security control must be a byte, got {security_control}")
    if not 0 <= invocation_counter <= 0xFFFFFFFF:
        raise DlmsEncodeError(f"invocation counter must be 32 bits, got {invocation_counter}")
    content = bytes((security_control,)) + invocation_counter.to_bytes(4, "big") + payload
    if tag == TAG_GENERAL_GLO_CIPHERING:
        if system_title is None:
            raise DlmsEncodeError("general-glo-ciphering needs the system title")
        return (
            bytes((tag,))
            + encode_length(len(system_title))
            + system_title
            + encode_length(len(content))
            + content
        )
    if tag not in _GLO_TAGS or system_title is not None:
        raise DlmsEncodeError(f"tag 0x{tag:02X} is not a glo-ciphered APDU tag")
    return bytes((tag,)) + encode_length(len(content)) + content
