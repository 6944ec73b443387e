"""The server side of a no-security, logical-name association: the APDUs a meter receives
and sends in the first slice of issue 4 (Green Book 9.4 / 9.5, IEC 62056-5-3).

Received (parsed here, every failure a :class:`~protocols.dlms.DlmsDecodeError`):
AARQ (ACSE, BER), GET-request (normal only), RLRQ. Sent (encoded here): AARE (accepted, or
rejected with a diagnostic), GET-response-normal (data, or a data-access-result),
RLRE, exception-response.

``GetResponseNormal.to_bytes`` of later dlms-cosem releases is reported broken, and 21.3.2
has no server: the bytes are built here, as the Green Book's examples show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from ..obis import Obis
from . import DlmsDecodeError, DlmsEncodeError
from .axdr import decode_length, encode_length

__all__ = [
    "CONFORMANCE_GET",
    "Aarq",
    "AccessResult",
    "AcseDiagnostic",
    "GetRequest",
    "InitiateRequest",
    "Rlrq",
    "encode_aare",
    "encode_exception",
    "encode_get_response",
    "encode_rlre",
    "parse_aarq",
    "parse_get_request",
    "parse_rlrq",
]

TAG_AARQ = 0x60
TAG_AARE = 0x61
TAG_RLRQ = 0x62
TAG_RLRE = 0x63
TAG_GET_REQUEST = 0xC0
TAG_GET_RESPONSE = 0xC4
TAG_EXCEPTION = 0xD8
TAG_INITIATE_REQUEST = 0x01
TAG_INITIATE_RESPONSE = 0x08
TAG_CONFIRMED_SERVICE_ERROR = 0x0E

#: application-context-name prefix (joint-iso-ctt 2 16 756 5 8 1 x)
CONTEXT_PREFIX = bytes.fromhex("608574050801")
CONTEXT_LN_NO_CIPHERING = 1
#: mechanism-name prefix (2 16 756 5 8 2 x)
MECHANISM_PREFIX = bytes.fromhex("608574050802")
MECHANISM_NONE = 0
DLMS_VERSION = 6
VAA_NAME_LN = 0x0007
#: conformance bit 19 (get), as the 24-bit value of the bit string (bit 0 = MSB)
CONFORMANCE_GET = 1 << (23 - 19)


class AcseDiagnostic(IntEnum):
    """acse-service-user diagnostics of an AARE."""

    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
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


def parse_aarq(apdu: bytes) -> Aarq:
    body = _outer(apdu, TAG_AARQ, "AARQ")
    context = mechanism = None
    auth = title = None
    initiate: InitiateRequest | None = None
    initiate_error: str | None = None
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
            try:
                initiate = InitiateRequest.from_bytes(inner[0][1])
            except DlmsDecodeError as exc:
                initiate_error = str(exc)
        # protocol-version (0x80), sender-acse-requirements (0x8A), called/calling
        # AE qualifiers and invocation ids carry nothing this server acts on
    if context is None:
        raise DlmsDecodeError("AARQ: no application-context-name")
    return Aarq(context, mechanism, auth, title, initiate, initiate_error)


def encode_aare(
    *,
    accepted: bool,
    diagnostic: AcseDiagnostic = AcseDiagnostic.NULL,
    conformance: int = 0,
    max_receive_pdu: int = 0x400,
    context: int = CONTEXT_LN_NO_CIPHERING,
    initiate_error: bool = False,
) -> bytes:
    """An AARE. Accepted: with an InitiateResponse (negotiated conformance, the server's
    max receive PDU size, VAA name 0x0007). ``initiate_error``: the user-information is a
    ConfirmedServiceError (initiate, dlms-version-too-low), as for a bad xDLMS request."""
    if not 0 <= conformance < 1 << 24:
        raise DlmsEncodeError(f"conformance must be 24 bits, got {conformance}")
    if not 0 <= max_receive_pdu <= 0xFFFF:
        raise DlmsEncodeError(f"max receive PDU size must be 0..65535, got {max_receive_pdu}")
    parts = [
        _ber(0xA1, _ber(0x06, CONTEXT_PREFIX + bytes((context,)))),
        _ber(0xA2, _ber(0x02, bytes((0 if accepted else 1,)))),
        _ber(0xA3, _ber(0xA1, _ber(0x02, bytes((int(diagnostic),))))),
    ]
    if accepted:
        initiate = (
            bytes((TAG_INITIATE_RESPONSE, 0x00, DLMS_VERSION))
            + b"\x5f\x1f\x04\x00"
            + conformance.to_bytes(3, "big")
            + max_receive_pdu.to_bytes(2, "big")
            + VAA_NAME_LN.to_bytes(2, "big")
        )
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


def parse_rlrq(apdu: bytes) -> Rlrq:
    body = _outer(apdu, TAG_RLRQ, "RLRQ")
    reason = None
    for tag, content in _ber_elements(body, "RLRQ"):
        if tag == 0x80:
            if len(content) != 1:
                raise DlmsDecodeError("RLRQ reason: one byte expected")
            reason = content[0]
    return Rlrq(reason)


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
