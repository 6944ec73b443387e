"""One client connection's association with the simulated logical device: APDU in,
APDU out, whatever carries them (``server`` for the TCP wrapper, ``hdlc`` for HDLC).

Association: AARQ from the public client (16) with the logical-name context and no
security (no mechanism or mechanism 0, "lowest level"); anything else gets an AARE
rejected with a diagnostic (context not supported, mechanism not recognised,
authentication required for another client address, or a ConfirmedServiceError for an
unusable xDLMS InitiateRequest). GET-request-normal for the meter's objects;
GET-request-next and -with-list, SET and ACTION answer an exception-response. RLRQ ->
RLRE (the connection stays open; the client closes it).
"""

from __future__ import annotations

import logging

from protocols.dlms import DlmsDecodeError
from protocols.dlms.apdu import (
    CONFORMANCE_GET,
    CONTEXT_LN_NO_CIPHERING,
    DLMS_VERSION,
    MECHANISM_NONE,
    AccessResult,
    AcseDiagnostic,
    encode_aare,
    encode_exception,
    encode_get_response,
    encode_rlre,
    parse_aarq,
    parse_get_request,
)
from protocols.dlms.axdr import Data, Tag, decode_data, encode_data

from .objects import DlmsMeterState
from .options import DlmsSimOptions

__all__ = ["PUBLIC_CLIENT", "SERVER_MAX_RECEIVE_PDU", "ServerSession"]

log = logging.getLogger(__name__)

PUBLIC_CLIENT = 16
SERVER_MAX_RECEIVE_PDU = 1024


class ServerSession:
    """The association state of one client connection and the APDUs it answers."""

    def __init__(self, meter: DlmsMeterState, options: DlmsSimOptions) -> None:
        self.meter = meter
        self.options = options
        self.associated_client: int | None = None

    def answer(self, client: int, apdu: bytes) -> bytes | None:
        """The APDU answering ``apdu`` from client address ``client``; None: no answer."""
        if not apdu:
            return None
        tag = apdu[0]
        try:
            if tag == 0x60:
                return self._associate(client, apdu)
            if tag == 0x62:
                self.associated_client = None
                return encode_rlre(0)
            if tag == 0xC0:
                if self.associated_client != client:
                    self.meter.errors += 1
                    return encode_exception(1, 1)  # service-not-allowed, not possible
                return self._get(apdu)
        except DlmsDecodeError as exc:
            self.meter.errors += 1
            log.info("dlms %s: bad APDU from client %d: %s", self.meter.model.meter_id, client, exc)
            return encode_exception(1 if tag in (0x60, 0xC0) else 2, 2)
        self.meter.errors += 1
        return encode_exception(2, 2)  # service-unknown, service-not-supported

    def _associate(self, client: int, apdu: bytes) -> bytes:
        aarq = parse_aarq(apdu)
        diagnostic = AcseDiagnostic.NULL
        initiate_error = False
        if aarq.context != CONTEXT_LN_NO_CIPHERING:
            diagnostic = AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED
        elif aarq.mechanism not in (None, MECHANISM_NONE):
            diagnostic = AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED
        elif client != PUBLIC_CLIENT:
            diagnostic = AcseDiagnostic.AUTHENTICATION_REQUIRED
        elif aarq.initiate is None or aarq.initiate.dlms_version < DLMS_VERSION:
            diagnostic, initiate_error = AcseDiagnostic.NO_REASON_GIVEN, True
        elif not aarq.initiate.conformance & CONFORMANCE_GET:
            diagnostic = AcseDiagnostic.NO_REASON_GIVEN
        if diagnostic is not AcseDiagnostic.NULL:
            self.meter.rejected += 1
            self.associated_client = None
            return encode_aare(
                accepted=False,
                diagnostic=diagnostic,
                context=aarq.context or CONTEXT_LN_NO_CIPHERING,
                initiate_error=initiate_error,
            )
        assert aarq.initiate is not None
        self.meter.associations += 1
        self.associated_client = client
        return encode_aare(
            accepted=True,
            conformance=aarq.initiate.conformance & CONFORMANCE_GET,
            max_receive_pdu=SERVER_MAX_RECEIVE_PDU,
        )

    def _get(self, apdu: bytes) -> bytes:
        if len(apdu) > 1 and apdu[1] != 1:
            self.meter.errors += 1
            return encode_exception(2, 2)  # GET next / with-list: not supported
        request = parse_get_request(apdu)
        self.meter.gets += 1
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
        return encode_get_response(request.invoke, data=encode_data(result))


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
