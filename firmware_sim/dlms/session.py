"""One client connection's association with the simulated logical device: APDU in,
APDU out, whatever carries them (``server`` for the TCP wrapper, ``hdlc`` for HDLC).

Associations (AARQ -> AARE), by mechanism:

* none: the public client (16), logical-name context without ciphering; another client
  address gets "authentication required";
* LLS (1): any client with the meter's password (``--password``) in the calling
  authentication value; a wrong one gets AARE rejected "authentication failure";
* HLS-GMAC (5, ``--auth hls --keys FILE``): ciphered LN context (3), the client's system
  title as calling-AP-title, its challenge CtoS as calling authentication value and a
  glo-ciphered InitiateRequest. The AARE is accepted with "authentication required": it
  carries the meter's system title, the challenge StoC and a glo-ciphered
  InitiateResponse. Until the client's ACTION on the Association LN object
  (0.0.40.0.0.255, class 15) method 1 ``reply_to_HLS_authentication`` with
  f(StoC) = SC || IC || GMAC(SC || AK || StoC) checks out (answered with f(CtoS)), every
  other APDU is refused. All xDLMS APDUs of the association are ciphered (glo-* or
  general-glo-ciphering, SC 0x30), answered in the same form, and a client invocation
  counter not above the last accepted one is refused (``security``).

Services: GET-request-normal, with block transfer (GET-response-with-datablock, then
GET-request-next) when the answer does not fit the client's max receive PDU;
GET-request-next with the block numbers checked; SET-request-normal to ``meter.set``
(the public client may only read: read-write-denied); ACTION-request-normal (HLS method 1,
or an object's own ``action(meter, method, parameters)`` when it has one; otherwise
object-unavailable). GET-with-list and the block forms of SET/ACTION answer an
exception-response. RLRQ -> RLRE (the connection stays open; the client closes it).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from protocols.dlms import DlmsDecodeError, DlmsEncodeError
from protocols.dlms.apdu import (
    CONFORMANCE_ACTION,
    CONFORMANCE_BLOCK_TRANSFER_WITH_GET,
    CONFORMANCE_GET,
    CONFORMANCE_SELECTIVE_ACCESS,
    CONFORMANCE_SET,
    CONTEXT_LN_CIPHERING,
    CONTEXT_LN_NO_CIPHERING,
    DLMS_VERSION,
    GLO_TAGS,
    MECHANISM_HLS_GMAC,
    MECHANISM_LLS,
    MECHANISM_NONE,
    TAG_ACTION_REQUEST,
    TAG_EXCEPTION,
    TAG_GENERAL_GLO_CIPHERING,
    TAG_GET_REQUEST,
    TAG_GLO_INITIATE_RESPONSE,
    TAG_SET_REQUEST,
    Aarq,
    AccessResult,
    AcseDiagnostic,
    ActionRequest,
    InitiateRequest,
    Rlrq,
    block_payload_size,
    encode_aare,
    encode_action_response,
    encode_ciphered,
    encode_exception,
    encode_get_response,
    encode_get_response_block,
    encode_initiate_response,
    encode_rlre,
    encode_set_response,
    parse_aarq,
    parse_action_request,
    parse_ciphered,
    parse_get_request,
    parse_get_request_next,
    parse_rlrq,
    parse_set_request,
)
from protocols.dlms.axdr import Data, Tag, decode_data, encode_data
from protocols.dlms.security import (
    SC_AUTHENTICATED_ENCRYPTED,
    DlmsAuthenticationError,
    hls_gmac_response,
    verify_hls_gmac_response,
)
from protocols.obis import Obis

from .objects import DlmsMeterState
from .options import DlmsSimOptions
from .security import KeyFileError, MeterSecurity, security_for

__all__ = [
    "OBIS_ASSOCIATION_LN",
    "PUBLIC_CLIENT",
    "SERVER_MAX_RECEIVE_PDU",
    "SUPPORTED_CONFORMANCE",
    "ServerSession",
]

log = logging.getLogger(__name__)

PUBLIC_CLIENT = 16
SERVER_MAX_RECEIVE_PDU = 1024
CLASS_ASSOCIATION_LN = 15
OBIS_ASSOCIATION_LN = Obis(0, 0, 40, 0, 0, 255)
METHOD_REPLY_TO_HLS = 1
CHALLENGE_SIZE = 16  # StoC; the Green Book allows 8..64 bytes
SUPPORTED_CONFORMANCE = (
    CONFORMANCE_GET
    | CONFORMANCE_SET
    | CONFORMANCE_ACTION
    | CONFORMANCE_SELECTIVE_ACCESS
    | CONFORMANCE_BLOCK_TRANSFER_WITH_GET
)
#: the most a ciphered envelope adds: general-glo-ciphering tag, title (1 + 8), length
#: (up to 3), SC and IC (5), the 12-byte tag
CIPHER_OVERHEAD = 1 + 9 + 3 + 5 + 12
#: the request tags a ciphered association accepts (and their glo forms)
_GLO_REQUESTS = {
    GLO_TAGS[TAG_GET_REQUEST]: TAG_GET_REQUEST,
    GLO_TAGS[TAG_SET_REQUEST]: TAG_SET_REQUEST,
    GLO_TAGS[TAG_ACTION_REQUEST]: TAG_ACTION_REQUEST,
}

# exception-response: state-error, service-error
_NOT_ALLOWED = (1, 1)  # service-not-allowed, operation-not-possible
_UNSUPPORTED = (2, 2)  # service-unknown, service-not-supported
_DECIPHERING = (1, 5)  # service-not-allowed, deciphering-error
_COUNTER = (1, 6)  # service-not-allowed, invocation-counter-error


class _Refused(Exception):
    """An AARQ refused with this diagnostic."""

    def __init__(self, diagnostic: AcseDiagnostic, why: str, initiate_error: bool = False):
        super().__init__(why)
        self.diagnostic = diagnostic
        self.initiate_error = initiate_error


@dataclass(slots=True)
class _LongGet:
    """A GET answer sent in blocks: what is left and the last block number sent."""

    data: bytes
    block_size: int
    sent: int = 0  # blocks sent so far (= the last block number)


class ServerSession:
    """The association state of one client connection and the APDUs it answers."""

    def __init__(
        self,
        meter: DlmsMeterState,
        options: DlmsSimOptions,
        *,
        challenge: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.meter = meter
        self.options = options
        self.challenge = challenge
        self.security_error: str | None = None
        self.security: MeterSecurity | None = None
        try:
            self.security = security_for(meter, options)
        except KeyFileError as exc:
            self.security_error = str(exc)
            log.error("dlms %s: HLS disabled: %s", meter.model.meter_id, exc)
        self.associated_client: int | None = None
        self.mechanism = MECHANISM_NONE
        self.conformance = 0
        self.client_max_pdu = SERVER_MAX_RECEIVE_PDU
        self.ciphered = False  # the association's xDLMS APDUs are glo-ciphered
        self.hls_pending = False  # AARE sent, f(StoC) not checked yet
        self.client_title: bytes | None = None
        self.client_challenge = b""  # CtoS
        self.server_challenge = b""  # StoC
        self.long_get: _LongGet | None = None

    # -- dispatch ----------------------------------------------------------------------
    def answer(self, client: int, apdu: bytes) -> bytes | None:
        """The APDU answering ``apdu`` from client address ``client``; None: no answer."""
        if not apdu:
            return None
        tag = apdu[0]
        try:
            if tag == 0x60:
                return self._associate(client, apdu)
            if tag == 0x62:
                self._release_request(parse_rlrq(apdu))
                return encode_rlre(0)
            if tag in (TAG_SET_REQUEST, TAG_ACTION_REQUEST) and not self.ciphered:
                # well-formed first (a malformed request is an unknown service)
                (parse_set_request if tag == TAG_SET_REQUEST else parse_action_request)(apdu)
            if self.associated_client != client:
                if tag in (TAG_GET_REQUEST, TAG_SET_REQUEST, TAG_ACTION_REQUEST) or (
                    tag in _GLO_REQUESTS or tag == TAG_GENERAL_GLO_CIPHERING
                ):
                    return self._refuse(_NOT_ALLOWED)
                return self._refuse(_UNSUPPORTED)
            if self.ciphered:
                return self._ciphered(apdu)
            if tag in _GLO_REQUESTS or tag == TAG_GENERAL_GLO_CIPHERING:
                return self._refuse(_NOT_ALLOWED)  # no ciphered context negotiated
            return self._service(apdu)
        except DlmsDecodeError as exc:
            self.meter.errors += 1
            log.info("dlms %s: bad APDU from client %d: %s", self.meter.model.meter_id, client, exc)
            return encode_exception(1 if tag in (0x60, 0xC0) else 2, 2)

    def _refuse(self, error: tuple[int, int]) -> bytes:
        self.meter.errors += 1
        return encode_exception(*error)

    def _release(self) -> None:
        self.associated_client = None
        self.mechanism = MECHANISM_NONE
        self.conformance = 0
        self.ciphered = self.hls_pending = False
        self.client_title = None
        self.client_challenge = self.server_challenge = b""
        self.long_get = None

    def _release_request(self, request: Rlrq) -> None:
        """RLRQ: the association ends. In a ciphered context its user-information is a
        glo-ciphered InitiateRequest: when it deciphers, its invocation counter counts as
        used (a client must not use it again)."""
        security, title = self.security, self.client_title
        raw = request.user_information
        if self.ciphered and security is not None and title is not None and raw:
            try:
                envelope = parse_ciphered(raw)
                security.context.decrypt(
                    title, envelope.invocation_counter, envelope.payload, envelope.security_control
                )
            except DlmsDecodeError:
                security.refused_deciphering += 1
            else:
                if security.fresh(envelope.invocation_counter):
                    security.accept(envelope.invocation_counter)
        self._release()

    def _service(self, apdu: bytes) -> bytes:
        """A plain (or deciphered) xDLMS request of the association."""
        tag = apdu[0]
        if self.hls_pending and tag != TAG_ACTION_REQUEST:
            return self._refuse(_NOT_ALLOWED)  # HLS not completed
        if tag == TAG_GET_REQUEST:
            choice = apdu[1] if len(apdu) > 1 else 0
            if choice == 1:
                return self._get(apdu)
            if choice == 2:
                return self._get_next(apdu)
            return self._refuse(_UNSUPPORTED)  # with-list
        if tag == TAG_SET_REQUEST:
            return self._set(apdu)
        if tag == TAG_ACTION_REQUEST:
            return self._action(apdu)
        return self._refuse(_UNSUPPORTED)

    # -- association -------------------------------------------------------------------
    def _associate(self, client: int, apdu: bytes) -> bytes:
        aarq = parse_aarq(apdu)
        self._release()  # a new AARQ ends what was there
        context = aarq.context or CONTEXT_LN_NO_CIPHERING
        mechanism = aarq.mechanism or MECHANISM_NONE
        try:
            if context not in (CONTEXT_LN_NO_CIPHERING, CONTEXT_LN_CIPHERING):
                raise _Refused(AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED, "context")
            if mechanism == MECHANISM_HLS_GMAC:
                return self._associate_hls(client, aarq)
            if context != CONTEXT_LN_NO_CIPHERING:
                raise _Refused(
                    AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
                    "ciphered context without HLS",
                )
            if mechanism == MECHANISM_NONE:
                if client != PUBLIC_CLIENT:
                    raise _Refused(AcseDiagnostic.AUTHENTICATION_REQUIRED, "not the public client")
            elif mechanism == MECHANISM_LLS:
                if not self.options.password:
                    raise _Refused(
                        AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED,
                        "LLS not set up",
                    )
                given = aarq.authentication_value or b""
                if not hmac.compare_digest(given, self.options.password):
                    raise _Refused(AcseDiagnostic.AUTHENTICATION_FAILURE, "LLS password refused")
            else:
                raise _Refused(
                    AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED,
                    f"mechanism {mechanism}",
                )
            self._negotiate(aarq.initiate)
        except _Refused as refused:
            return self._reject(client, context, refused)
        self.meter.associations += 1
        self.associated_client = client
        self.mechanism = mechanism
        return encode_aare(
            accepted=True,
            conformance=self.conformance,
            max_receive_pdu=SERVER_MAX_RECEIVE_PDU,
            mechanism=mechanism,
        )

    def _reject(self, client: int, context: int, refused: _Refused) -> bytes:
        self.meter.rejected += 1
        self._release()
        log.info(
            "dlms %s: association of client %d refused: %s",
            self.meter.model.meter_id,
            client,
            refused,
        )
        return encode_aare(
            accepted=False,
            diagnostic=refused.diagnostic,
            context=context,
            initiate_error=refused.initiate_error,
        )

    def _negotiate(self, initiate: InitiateRequest | None) -> None:
        if initiate is None or initiate.dlms_version < DLMS_VERSION:
            raise _Refused(AcseDiagnostic.NO_REASON_GIVEN, "xDLMS initiate", initiate_error=True)
        if not initiate.conformance & CONFORMANCE_GET:
            raise _Refused(AcseDiagnostic.NO_REASON_GIVEN, "no GET in the proposed conformance")
        self.conformance = initiate.conformance & SUPPORTED_CONFORMANCE
        # 0: the client sets no limit (the wrapper's 16-bit length is the limit then)
        self.client_max_pdu = initiate.max_receive_pdu or 0xFFFF

    def _associate_hls(self, client: int, aarq: Aarq) -> bytes:
        security = self.security
        if security is None:
            if self.security_error:
                log.error("dlms %s: %s", self.meter.model.meter_id, self.security_error)
            raise _Refused(
                AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED, "HLS not set up"
            )
        if aarq.context != CONTEXT_LN_CIPHERING:
            raise _Refused(
                AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
                "HLS-GMAC needs the ciphered context",
            )
        title = aarq.calling_title or b""
        if len(title) != 8:
            raise _Refused(
                AcseDiagnostic.CALLING_AP_TITLE_NOT_RECOGNISED,
                f"calling-AP-title of {len(title)} bytes, 8 expected",
            )
        challenge = aarq.authentication_value or b""
        if not 8 <= len(challenge) <= 64:
            raise _Refused(AcseDiagnostic.AUTHENTICATION_FAILURE, f"CtoS of {len(challenge)} bytes")
        ciphered = aarq.ciphered_initiate
        if ciphered is None:
            raise _Refused(
                AcseDiagnostic.NO_REASON_GIVEN,
                aarq.initiate_error or "no glo-initiate request",
                initiate_error=True,
            )
        try:
            if ciphered.security_control != SC_AUTHENTICATED_ENCRYPTED:
                raise DlmsAuthenticationError(
                    f"security control 0x{ciphered.security_control:02X}, 0x30 expected"
                )
            plain = security.context.decrypt(
                title, ciphered.invocation_counter, ciphered.payload, ciphered.security_control
            )
        except DlmsDecodeError as exc:
            security.refused_deciphering += 1
            raise _Refused(
                AcseDiagnostic.AUTHENTICATION_FAILURE, f"glo-initiate not deciphered: {exc}"
            ) from None
        if not security.fresh(ciphered.invocation_counter):
            security.refused_replays += 1
            raise _Refused(
                AcseDiagnostic.NO_REASON_GIVEN,
                f"invocation counter {ciphered.invocation_counter} not above "
                f"{security.client_counter} (replay)",
            )
        security.accept(ciphered.invocation_counter)
        try:
            initiate = InitiateRequest.from_bytes(plain)
        except DlmsDecodeError as exc:
            raise _Refused(AcseDiagnostic.NO_REASON_GIVEN, str(exc), initiate_error=True) from None
        self._negotiate(initiate)
        self.associated_client = client
        self.mechanism = MECHANISM_HLS_GMAC
        self.ciphered = self.hls_pending = True
        self.client_title = title
        self.client_challenge = challenge
        self.server_challenge = self.challenge(CHALLENGE_SIZE)
        counter = security.next_own_counter()
        response = encode_initiate_response(self.conformance, SERVER_MAX_RECEIVE_PDU)
        user_information = encode_ciphered(
            TAG_GLO_INITIATE_RESPONSE,
            SC_AUTHENTICATED_ENCRYPTED,
            counter,
            security.context.encrypt(counter, response),
        )
        return encode_aare(
            accepted=True,
            diagnostic=AcseDiagnostic.AUTHENTICATION_REQUIRED,
            context=CONTEXT_LN_CIPHERING,
            responding_title=security.system_title,
            mechanism=MECHANISM_HLS_GMAC,
            authentication_value=self.server_challenge,
            user_information=user_information,
        )

    # -- ciphering ---------------------------------------------------------------------
    def _ciphered(self, apdu: bytes) -> bytes:
        security = self.security
        assert security is not None and self.client_title is not None
        tag = apdu[0]
        if tag not in _GLO_REQUESTS and tag != TAG_GENERAL_GLO_CIPHERING:
            return self._refuse(_NOT_ALLOWED)  # plain APDUs are refused in this context
        envelope = parse_ciphered(apdu)
        if envelope.system_title is not None and envelope.system_title != self.client_title:
            security.refused_deciphering += 1
            return self._refuse(_DECIPHERING)
        try:
            if envelope.security_control != SC_AUTHENTICATED_ENCRYPTED:
                raise DlmsAuthenticationError("security control")
            plain = security.context.decrypt(
                self.client_title,
                envelope.invocation_counter,
                envelope.payload,
                envelope.security_control,
            )
        except DlmsDecodeError as exc:
            security.refused_deciphering += 1
            log.info("dlms %s: APDU not deciphered: %s", self.meter.model.meter_id, exc)
            return self._refuse(_DECIPHERING)
        if not security.fresh(envelope.invocation_counter):
            security.refused_replays += 1
            log.info(
                "dlms %s: invocation counter %d not above %s: refused (replay)",
                self.meter.model.meter_id,
                envelope.invocation_counter,
                security.client_counter,
            )
            return self._refuse(_COUNTER)
        security.accept(envelope.invocation_counter)
        if not plain or (tag != TAG_GENERAL_GLO_CIPHERING and _GLO_REQUESTS[tag] != plain[0]):
            return self._refuse(_UNSUPPORTED)
        if plain[0] not in (TAG_GET_REQUEST, TAG_SET_REQUEST, TAG_ACTION_REQUEST):
            return self._refuse(_UNSUPPORTED)
        try:
            answer = self._service(plain)
        except DlmsDecodeError as exc:
            self.meter.errors += 1
            log.info("dlms %s: bad ciphered APDU: %s", self.meter.model.meter_id, exc)
            return encode_exception(1, 2)
        if answer[0] == TAG_EXCEPTION:
            return answer  # it has no ciphered form
        counter = security.next_own_counter()
        payload = security.context.encrypt(counter, answer)
        if tag == TAG_GENERAL_GLO_CIPHERING:
            return encode_ciphered(
                TAG_GENERAL_GLO_CIPHERING,
                SC_AUTHENTICATED_ENCRYPTED,
                counter,
                payload,
                security.system_title,
            )
        return encode_ciphered(GLO_TAGS[answer[0]], SC_AUTHENTICATED_ENCRYPTED, counter, payload)

    # -- GET ---------------------------------------------------------------------------
    def _get(self, apdu: bytes) -> bytes:
        request = parse_get_request(apdu)
        self.meter.gets += 1
        self.long_get = None  # a new GET ends a block transfer in progress
        selector = None
        if request.access_selection is not None:
            selector = _selector(request.access_selection)
        if request.access_selection is not None and selector is None:
            result: Data | AccessResult = AccessResult.OTHER_REASON
        else:
            result = self.meter.get(request.class_id, request.obis, request.attribute, selector)
        if isinstance(result, AccessResult):
            self.meter.errors += 1
            return encode_get_response(request.invoke, error=result)
        raw = encode_data(result)
        whole = encode_get_response(request.invoke, data=raw)
        limit = self._answer_limit()
        if len(whole) <= limit:
            return whole
        if not self.conformance & CONFORMANCE_BLOCK_TRANSFER_WITH_GET:
            self.meter.errors += 1
            return encode_get_response(request.invoke, error=AccessResult.OTHER_REASON)
        try:
            size = block_payload_size(limit)
        except DlmsEncodeError:
            self.meter.errors += 1
            return encode_get_response(request.invoke, error=AccessResult.OTHER_REASON)
        self.long_get = _LongGet(raw, size)
        return self._next_block(request.invoke)

    def _answer_limit(self) -> int:
        """The largest plain answer APDU the client can take (room left for ciphering)."""
        limit = min(self.client_max_pdu, 0xFFFF)
        return limit - CIPHER_OVERHEAD if self.ciphered else limit

    def _next_block(self, invoke: int) -> bytes:
        long_get = self.long_get
        assert long_get is not None
        start = long_get.sent * long_get.block_size
        chunk = long_get.data[start : start + long_get.block_size]
        long_get.sent += 1
        last = start + long_get.block_size >= len(long_get.data)
        if last:
            self.long_get = None
        return encode_get_response_block(invoke, long_get.sent, last=last, raw=chunk)

    def _get_next(self, apdu: bytes) -> bytes:
        request = parse_get_request_next(apdu)
        long_get = self.long_get
        if long_get is None:
            self.meter.errors += 1
            return encode_get_response_block(
                request.invoke,
                request.block_number,
                last=True,
                error=AccessResult.NO_LONG_GET_IN_PROGRESS,
            )
        if request.block_number != long_get.sent:
            self.meter.errors += 1
            self.long_get = None
            return encode_get_response_block(
                request.invoke,
                request.block_number,
                last=True,
                error=AccessResult.DATA_BLOCK_NUMBER_INVALID,
            )
        return self._next_block(request.invoke)

    # -- SET ---------------------------------------------------------------------------
    def _set(self, apdu: bytes) -> bytes:
        request = parse_set_request(apdu)
        self.meter.sets += 1
        if self.mechanism == MECHANISM_NONE:
            result = AccessResult.READ_WRITE_DENIED  # the public client only reads
        elif request.access_selection is not None:
            result = AccessResult.OTHER_REASON
        else:
            value, _ = decode_data(request.value)
            result = self.meter.set(request.class_id, request.obis, request.attribute, value)
        if result is not AccessResult.SUCCESS:
            self.meter.errors += 1
        return encode_set_response(request.invoke, result)

    # -- ACTION ------------------------------------------------------------------------
    def _action(self, apdu: bytes) -> bytes:
        request = parse_action_request(apdu)
        if (request.class_id, request.obis) == (CLASS_ASSOCIATION_LN, OBIS_ASSOCIATION_LN):
            if request.method == METHOD_REPLY_TO_HLS:
                return self._reply_to_hls(request)
            return self._action_error(request, AccessResult.OBJECT_UNAVAILABLE)
        if self.hls_pending:
            return self._refuse(_NOT_ALLOWED)
        obj = self.meter.lookup(request.class_id, request.obis)
        if isinstance(obj, AccessResult):
            return self._action_error(request, obj)
        if self.mechanism == MECHANISM_NONE:
            return self._action_error(request, AccessResult.READ_WRITE_DENIED)
        method = getattr(obj, "action", None)
        if method is None:
            return self._action_error(request, AccessResult.OBJECT_UNAVAILABLE)
        parameters = None
        if request.parameters is not None:
            parameters, _ = decode_data(request.parameters)
        result, data = method(self.meter, request.method, parameters)
        if result is not AccessResult.SUCCESS:
            self.meter.errors += 1
        return encode_action_response(
            request.invoke, result, data=None if data is None else encode_data(data)
        )

    def _action_error(self, request: ActionRequest, result: AccessResult) -> bytes:
        self.meter.errors += 1
        return encode_action_response(request.invoke, result)

    def _reply_to_hls(self, request: ActionRequest) -> bytes:
        security = self.security
        if not self.hls_pending or security is None or self.client_title is None:
            return self._action_error(request, AccessResult.OTHER_REASON)
        response = b""
        if request.parameters is not None:
            value, _ = decode_data(request.parameters)
            if value.tag is Tag.OCTET_STRING:
                response = value.octets
        try:
            verify_hls_gmac_response(
                response,
                self.client_title,
                security.context.encryption_key,
                security.context.authentication_key,
                self.server_challenge,
            )
        except DlmsDecodeError as exc:
            self.meter.rejected += 1
            log.info(
                "dlms %s: HLS f(StoC) from client %s refused: %s",
                self.meter.model.meter_id,
                self.associated_client,
                exc,
            )
            self.hls_pending = False
            self.associated_client = None  # the association is not established
            return self._action_error(request, AccessResult.READ_WRITE_DENIED)
        self.hls_pending = False
        self.meter.associations += 1
        counter = security.next_own_counter()
        f_ctos = hls_gmac_response(
            security.system_title,
            counter,
            security.context.encryption_key,
            security.context.authentication_key,
            self.client_challenge,
        )
        return encode_action_response(
            request.invoke, AccessResult.SUCCESS, data=encode_data(Data.octet_string(f_ctos))
        )


def _selector(raw: bytes) -> Data | None:
    """access-selector (unsigned) + access-parameters (Data) as ``structure {selector,
    parameters}``; None when the parameters do not decode."""
    try:
        parameters, end = decode_data(raw, 1)
    except DlmsDecodeError:
        return None
    if end != len(raw):
        return None
    return Data.structure(Data(Tag.UNSIGNED, raw[0]), parameters)
