"""DLMS security suite 0 and the xDLMS services of the server (sans-IO): AES-GCM and
HLS-GMAC against the Green Book's worked examples (Table 40: a glo-get-request; Table 43:
HLS mechanism 5) and against dlms-cosem 21.3.2 (an independent client); ciphered APDU,
block transfer, SET and ACTION encodings read by dlms-cosem; every parser fed arbitrary
bytes raises only DlmsDecodeError."""

from __future__ import annotations

import contextlib

import pytest
from dlms_cosem import cosem as dc_cosem
from dlms_cosem import dlms_data as dc_data
from dlms_cosem import enumerations as dc_enums
from dlms_cosem import security as dc_security
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.protocol import acse as dc_acse
from dlms_cosem.protocol import xdlms as dc_xdlms
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dlms import DlmsDecodeError, DlmsEncodeError
from protocols.dlms.apdu import (
    CONFORMANCE_BLOCK_TRANSFER_WITH_GET,
    CONFORMANCE_GET,
    CONTEXT_LN_CIPHERING,
    MECHANISM_HLS_GMAC,
    MECHANISM_LLS,
    TAG_GENERAL_GLO_CIPHERING,
    TAG_GLO_GET_REQUEST,
    TAG_GLO_INITIATE_RESPONSE,
    AccessResult,
    AcseDiagnostic,
    InitiateRequest,
    block_payload_size,
    encode_aare,
    encode_action_response,
    encode_ciphered,
    encode_get_response_block,
    encode_initiate_response,
    encode_set_response,
    parse_aarq,
    parse_action_request,
    parse_ciphered,
    parse_get_request_next,
    parse_set_request,
)
from protocols.dlms.axdr import Data, Tag, decode_data, encode_data
from protocols.dlms.security import (
    DlmsAuthenticationError,
    SecurityContext,
    decrypt,
    encrypt,
    gmac,
    hls_gmac_response,
    verify_hls_gmac_response,
)
from protocols.errors import DecodeError
from protocols.obis import Obis

# Green Book (DLMS UA 1000-2 Ed. 8.3), Table 40 and Table 43
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = bytes.fromhex("4D4D4D0000BC614E")
IC = 0x01234567
GET_CLOCK = bytes.fromhex("C0010000080000010000FF0200")
CIPHERTEXT = bytes.fromhex("411312FF935A47566827C467BC")
TAG_30 = bytes.fromhex("7D825C3BE4A77C3FCC056B6B")
TAG_10 = bytes.fromhex("06725D910F9221D263877516")
CLIENT_TITLE_43 = bytes.fromhex("4D4D4D0000000001")
CTOS = b"K56iVagY"
STOC = b"P6wRJ21F"

keys = st.binary(min_size=16, max_size=16)
titles = st.binary(min_size=8, max_size=8)
counters = st.integers(0, 0xFFFFFFFF)


# -- AES-GCM, GMAC -------------------------------------------------------------------------
def test_green_book_table_40_glo_get_request() -> None:
    payload = encrypt(0x30, TITLE, IC, EK, AK, GET_CLOCK)
    assert payload == CIPHERTEXT + TAG_30
    apdu = encode_ciphered(TAG_GLO_GET_REQUEST, 0x30, IC, payload)
    assert apdu == bytes.fromhex("C81E3001234567") + CIPHERTEXT + TAG_30
    parsed = parse_ciphered(apdu)
    assert (parsed.tag, parsed.security_control, parsed.invocation_counter) == (0xC8, 0x30, IC)
    assert decrypt(0x30, TITLE, IC, EK, AK, parsed.payload) == GET_CLOCK
    # authenticated only: the plaintext travels, with its tag
    assert encrypt(0x10, TITLE, IC, EK, AK, GET_CLOCK) == GET_CLOCK + TAG_10
    assert decrypt(0x10, TITLE, IC, EK, AK, GET_CLOCK + TAG_10) == GET_CLOCK


def test_green_book_table_43_hls_gmac() -> None:
    """Pass 3: the client's f(StoC); pass 4: the server's f(CtoS)."""
    f_stoc = hls_gmac_response(CLIENT_TITLE_43, 1, EK, AK, STOC)
    assert f_stoc == bytes.fromhex("1000000001") + bytes.fromhex("1A52FE7DD3E72748973C1E28")
    assert verify_hls_gmac_response(f_stoc, CLIENT_TITLE_43, EK, AK, STOC) == 1
    f_ctos = hls_gmac_response(TITLE, IC, EK, AK, CTOS)
    assert f_ctos[5:] == bytes.fromhex("FE1466AFB3DBCD4F9389E2B7")
    with pytest.raises(DlmsAuthenticationError, match="wrong key"):
        verify_hls_gmac_response(f_ctos, TITLE, EK, bytes(16), CTOS)
    with pytest.raises(DlmsDecodeError, match="17 expected"):
        verify_hls_gmac_response(f_ctos[:-1], TITLE, EK, AK, CTOS)


@settings(max_examples=50, deadline=None)
@given(keys, keys, titles, counters, st.binary(max_size=300))
def test_gcm_agrees_with_dlms_cosem(
    ek: bytes, ak: bytes, title: bytes, ic: int, plain: bytes
) -> None:
    sc = dc_security.SecurityControlField(0, authenticated=True, encrypted=True)
    theirs = dc_security.encrypt(sc, title, ic, ek, plain, ak)
    assert encrypt(0x30, title, ic, ek, ak, plain) == theirs
    assert decrypt(0x30, title, ic, ek, ak, theirs) == plain
    auth_only = dc_security.SecurityControlField(0, authenticated=True)
    assert gmac(title, ic, ek, ak, plain) == dc_security.gmac(auth_only, title, ic, ek, ak, plain)


def test_wrong_key_counter_title_or_a_flipped_bit_is_refused() -> None:
    payload = encrypt(0x30, TITLE, IC, EK, AK, GET_CLOCK)
    flipped = bytes((payload[0] ^ 1,)) + payload[1:]
    for args in (
        (TITLE, IC, EK, bytes(16), payload),
        (TITLE, IC, bytes(16), AK, payload),
        (TITLE, IC + 1, EK, AK, payload),
        (CLIENT_TITLE_43, IC, EK, AK, payload),
        (TITLE, IC, EK, AK, flipped),
    ):
        with pytest.raises(DlmsAuthenticationError):
            decrypt(0x30, *args)
    with pytest.raises(DlmsDecodeError, match="only suite 0"):
        decrypt(0x31, TITLE, IC, EK, AK, payload)
    with pytest.raises(DlmsDecodeError, match="not authenticated"):
        decrypt(0x20, TITLE, IC, EK, AK, payload)
    with pytest.raises(DlmsDecodeError, match="shorter than"):
        decrypt(0x30, TITLE, IC, EK, AK, b"short")


def test_keys_stay_out_of_reprs_and_messages() -> None:
    context = SecurityContext(TITLE, EK, AK)
    assert EK.hex() not in repr(context) and AK.hex() not in repr(context)
    with pytest.raises(DlmsEncodeError) as exc:
        SecurityContext(TITLE, EK, AK[:15])
    assert AK[:15].hex() not in str(exc.value)
    lls = DlmsConnection(
        client_system_title=TITLE,
        authentication_method=dc_enums.AuthenticationMechanism.LLS,
        password=b"hunter22",
    )
    aarq = parse_aarq(lls.get_aarq().to_bytes())
    assert aarq.mechanism == MECHANISM_LLS and aarq.authentication_value == b"hunter22"
    assert "hunter22" not in repr(aarq)


# -- ciphered APDUs ------------------------------------------------------------------------
def _hls_client(ic: int = 5) -> DlmsConnection:
    return DlmsConnection(
        client_system_title=CLIENT_TITLE_43,
        authentication_method=dc_enums.AuthenticationMechanism.HLS_GMAC,
        global_encryption_key=EK,
        global_authentication_key=AK,
        client_invocation_counter=ic,
    )


def test_hls_aarq_of_dlms_cosem_parses_and_deciphers() -> None:
    client = _hls_client()
    aarq = parse_aarq(client.send(client.get_aarq()))
    assert (aarq.context, aarq.mechanism) == (CONTEXT_LN_CIPHERING, MECHANISM_HLS_GMAC)
    assert aarq.authentication_requested and aarq.calling_title == CLIENT_TITLE_43
    assert aarq.authentication_value == client.client_to_meter_challenge
    assert aarq.initiate is None and aarq.ciphered_initiate is not None
    ciphered = aarq.ciphered_initiate
    assert (ciphered.tag, ciphered.security_control, ciphered.invocation_counter) == (0x21, 0x30, 5)
    plain = decrypt(0x30, CLIENT_TITLE_43, 5, EK, AK, ciphered.payload)
    initiate = InitiateRequest.from_bytes(plain)
    assert initiate.conformance & CONFORMANCE_GET
    assert initiate.conformance & CONFORMANCE_BLOCK_TRANSFER_WITH_GET


def test_hls_aare_is_read_by_dlms_cosem() -> None:
    """The pending AARE: meter title, StoC, glo-initiate response, "authentication
    required"; dlms-cosem deciphers it and moves on to the HLS reply."""
    client = _hls_client()
    client.send(client.get_aarq())
    response = encode_initiate_response(CONFORMANCE_GET, 1024)
    aare = encode_aare(
        accepted=True,
        diagnostic=AcseDiagnostic.AUTHENTICATION_REQUIRED,
        context=CONTEXT_LN_CIPHERING,
        responding_title=TITLE,
        mechanism=MECHANISM_HLS_GMAC,
        authentication_value=STOC,
        user_information=encode_ciphered(
            TAG_GLO_INITIATE_RESPONSE, 0x30, 7, encrypt(0x30, TITLE, 7, EK, AK, response)
        ),
    )
    client.receive_data(aare)
    answer = client.next_event()
    assert isinstance(answer, dc_acse.ApplicationAssociationResponse)
    assert answer.result is dc_enums.AssociationResult.ACCEPTED
    assert answer.result_source_diagnostics.value == 14  # authentication-required
    assert answer.system_title == TITLE and answer.authentication_value == STOC
    assert client.meter_invocation_counter == 7
    assert answer.user_information.content.negotiated_conformance.get
    f_stoc = client.get_hls_reply()
    assert verify_hls_gmac_response(f_stoc, CLIENT_TITLE_43, EK, AK, STOC) == 5 + 1


def test_general_glo_ciphering_both_ways() -> None:
    client = _hls_client()
    client.meter_system_title = TITLE
    request = client.protect(
        dc_xdlms.GetRequestNormal(
            dc_cosem.CosemAttribute(dc_enums.CosemInterface.CLOCK, dc_cosem.Obis(0, 0, 1, 0, 0), 2)
        )
    ).to_bytes()
    parsed = parse_ciphered(request)
    assert parsed.tag == TAG_GENERAL_GLO_CIPHERING and parsed.system_title == CLIENT_TITLE_43
    plain = decrypt(0x30, CLIENT_TITLE_43, parsed.invocation_counter, EK, AK, parsed.payload)
    assert plain[:2] == b"\xc0\x01"
    big = b"\xc4\x01\xc1\x00\x09\x82\x01\x2c" + bytes(300)  # a length above 255
    answer = encode_ciphered(
        TAG_GENERAL_GLO_CIPHERING, 0x30, 9, encrypt(0x30, TITLE, 9, EK, AK, big), TITLE
    )
    theirs = dc_xdlms.GeneralGlobalCipher.from_bytes(answer)
    assert theirs.system_title == TITLE and theirs.invocation_counter == 9
    assert theirs.to_plain_apdu(EK, AK) == big
    with pytest.raises(DlmsEncodeError):
        encode_ciphered(TAG_GENERAL_GLO_CIPHERING, 0x30, 9, b"x")  # no title
    with pytest.raises(DlmsEncodeError):
        encode_ciphered(0xC0, 0x30, 9, b"x")  # not a glo tag


# -- block transfer, SET, ACTION -----------------------------------------------------------
def test_get_response_with_datablock_read_by_dlms_cosem() -> None:
    middle = dc_xdlms.GetResponseFactory.from_bytes(
        encode_get_response_block(0xC1, 1, last=False, raw=b"abc")
    )
    assert isinstance(middle, dc_xdlms.GetResponseWithBlock)
    assert (middle.block_number, middle.data) == (1, b"abc")
    last = dc_xdlms.GetResponseFactory.from_bytes(
        encode_get_response_block(0xC1, 2, last=True, raw=bytes(200))
    )
    assert isinstance(last, dc_xdlms.GetResponseLastBlock)
    assert (last.block_number, last.data) == (2, bytes(200))
    error = dc_xdlms.GetResponseFactory.from_bytes(
        encode_get_response_block(0xC1, 3, last=True, error=AccessResult.DATA_BLOCK_NUMBER_INVALID)
    )
    assert isinstance(error, dc_xdlms.GetResponseLastBlockWithError)
    assert error.error.value == 19
    assert encode_get_response_block(0xC1, 1, last=False, raw=b"\x01") == bytes.fromhex(
        "c402c100000000010001" + "01"
    )
    with pytest.raises(DlmsEncodeError, match="last block"):
        encode_get_response_block(0xC1, 1, last=False, error=AccessResult.OTHER_REASON)


@pytest.mark.parametrize("limit", [12, 20, 127, 128, 129, 137, 138, 139, 300, 1024, 65535])
def test_block_payload_fills_but_never_exceeds_the_limit(limit: int) -> None:
    size = block_payload_size(limit)
    assert len(encode_get_response_block(1, 1, last=False, raw=bytes(size))) <= limit
    assert len(encode_get_response_block(1, 1, last=False, raw=bytes(size + 1))) > limit
    with pytest.raises(DlmsEncodeError):
        block_payload_size(10)


def test_get_request_next_of_dlms_cosem() -> None:
    raw = dc_xdlms.GetRequestNext(block_number=7).to_bytes()
    request = parse_get_request_next(raw)
    assert request.block_number == 7 and request.invoke == raw[2]
    with pytest.raises(DlmsDecodeError, match="7 expected"):
        parse_get_request_next(raw + b"\x00")


def test_set_request_of_dlms_cosem_and_set_response() -> None:
    value = encode_data(Data.octet_string(bytes(12)))
    raw = dc_xdlms.SetRequestNormal(
        dc_cosem.CosemAttribute(dc_enums.CosemInterface.CLOCK, dc_cosem.Obis(0, 0, 1, 0, 0), 2),
        data=value,
    ).to_bytes()
    request = parse_set_request(raw)
    assert (request.class_id, request.obis, request.attribute) == (8, Obis(0, 0, 1, 0, 0), 2)
    assert request.value == value and request.access_selection is None
    for result in (AccessResult.SUCCESS, AccessResult.READ_WRITE_DENIED):
        theirs = dc_xdlms.SetResponseFactory.from_bytes(encode_set_response(request.invoke, result))
        assert theirs.result.value == result
    with pytest.raises(DlmsDecodeError, match="trailing"):
        parse_set_request(raw + b"\x00")
    with pytest.raises(DlmsDecodeError, match="unsupported"):
        parse_set_request(b"\xc1\x02" + raw[2:])


def test_action_request_of_dlms_cosem_and_action_responses() -> None:
    f_stoc = hls_gmac_response(CLIENT_TITLE_43, 1, EK, AK, STOC)
    raw = dc_xdlms.ActionRequestNormal(
        cosem_method=dc_cosem.CosemMethod(
            dc_enums.CosemInterface.ASSOCIATION_LN, dc_cosem.Obis(0, 0, 40, 0, 0), 1
        ),
        data=dc_data.OctetStringData(f_stoc).to_bytes(),
    ).to_bytes()
    request = parse_action_request(raw)
    assert (request.class_id, request.obis, request.method) == (15, Obis(0, 0, 40, 0, 0), 1)
    assert request.parameters is not None
    assert decode_data(request.parameters)[0] == Data.octet_string(f_stoc)
    with_data = dc_xdlms.ActionResponseFactory.from_bytes(
        encode_action_response(
            request.invoke, AccessResult.SUCCESS, data=encode_data(Data.octet_string(b"x"))
        )
    )
    assert isinstance(with_data, dc_xdlms.ActionResponseNormalWithData)
    assert with_data.status is dc_enums.ActionResultStatus.SUCCESS
    plain = dc_xdlms.ActionResponseFactory.from_bytes(
        encode_action_response(request.invoke, AccessResult.OBJECT_UNAVAILABLE)
    )
    assert isinstance(plain, dc_xdlms.ActionResponseNormal)
    assert plain.status is dc_enums.ActionResultStatus.OBJECT_UNAVAILABLE
    error = dc_xdlms.ActionResponseFactory.from_bytes(
        encode_action_response(
            request.invoke, AccessResult.OTHER_REASON, data_error=AccessResult.TYPE_UNMATCHED
        )
    )
    assert isinstance(error, dc_xdlms.ActionResponseNormalWithError)
    no_parameters = parse_action_request(raw[:12] + b"\x00")
    assert no_parameters.parameters is None


# -- fuzz ----------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=160))
def test_security_parsers_fuzz(raw: bytes) -> None:
    for parse in (parse_ciphered, parse_set_request, parse_action_request, parse_get_request_next):
        with contextlib.suppress(DecodeError):
            parse(raw)
        for tag in (0xC1, 0xC3, 0xC0, 0xC8, 0xDB, 0x21):
            with contextlib.suppress(DecodeError):
                parse(bytes((tag, 1)) + raw)
    with contextlib.suppress(DecodeError):
        decrypt(0x30, TITLE, IC, EK, AK, raw)
    with contextlib.suppress(DecodeError):
        verify_hls_gmac_response(raw, TITLE, EK, AK, STOC)
    with contextlib.suppress(DecodeError):
        aarq = b"\x60" + bytes((len(raw) + 2,)) + b"\xa1\x00" + raw if len(raw) < 120 else raw
        parse_aarq(aarq)


def test_data_tag_of_a_ciphered_answer() -> None:
    """The invocation counter object's value type: double-long-unsigned."""
    assert encode_data(Data(Tag.DOUBLE_LONG_UNSIGNED, 5)) == bytes.fromhex("0600000005")
