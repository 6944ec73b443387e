"""The DLMS simulator's security and xDLMS services, read by a third-party client
(dlms-cosem 21.3.2's DlmsClient over its own blocking TCP transport) and, for the steps a
client library does not let one get wrong on purpose, by dlms-cosem's sans-IO
DlmsConnection paired in memory with the simulator's ServerSession: LLS, HLS-GMAC (a
wrong password or key refused, a replayed invocation counter refused, nothing served
before the HLS reply checks out), SET dispatched to the object, large answers in blocks."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dlms_cosem import cosem, enumerations
from dlms_cosem import dlms_data as dc_data
from dlms_cosem.clients.dlms_client import DlmsClient, HLSError
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.exceptions import DlmsClientException
from dlms_cosem.protocol import xdlms

from firmware_sim.dlms import DlmsMeterState, DlmsSimOptions, DlmsSimServer
from firmware_sim.dlms.objects import DataObject
from firmware_sim.dlms.security import (
    OBIS_INVOCATION_COUNTER,
    InvocationCounterObject,
    KeyFileError,
    load_keys,
)
from firmware_sim.dlms.session import ServerSession
from firmware_sim.model import MeterModel
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.dlms.apdu import AccessResult, parse_ciphered
from protocols.dlms.axdr import Data, Tag, decode_data, encode_data
from protocols.dlms.security import decrypt
from protocols.obis import Obis

REPO = Path(__file__).resolve().parents[2]
EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
METER_TITLE = bytes.fromhex("4d4c4b0000000007")
CLIENT_TITLE = b"MLKtest1"
PASSWORD = b"lls-secret-42"
BIG = Obis(0, 0, 96, 99, 0, 255)
BIG_VALUE = bytes(range(256)) * 12  # 3 KiB: many blocks of a 128-byte PDU
RECORDER = Obis(0, 0, 96, 98, 0, 255)
HLS = enumerations.AuthenticationMechanism.HLS_GMAC
LLS = enumerations.AuthenticationMechanism.LLS


@dataclass
class Recorder:
    """A Data object whose SETs are kept (to see what the session dispatched)."""

    obis: Obis = RECORDER
    class_id: int = 1
    version: int = 0
    values: list[Data] = field(default_factory=list)

    def get(self, meter: DlmsMeterState, attribute: int, selector: Data | None) -> Data:
        return self.values[-1] if self.values else Data(Tag.NULL)

    def set(self, meter: DlmsMeterState, attribute: int, value: Data) -> AccessResult:
        self.values.append(value)
        return AccessResult.SUCCESS


def _keys(tmp_path: Path, ek: bytes = EK, ak: bytes = AK, mode: int = 0o600) -> Path:
    path = tmp_path / f"keys-{ek.hex()[:4]}-{mode:o}.toml"
    path.write_text(
        f'authentication_key = "{ak.hex()}"\nencryption_key = "{ek.hex()}"\n'
        f'system_title = "{METER_TITLE.hex()}"\n'
    )
    os.chmod(path, mode)
    return path


def _meter() -> DlmsMeterState:
    model = MeterModel("sec-1", 3, origin_ns=time.time_ns() - 3600 * 10**9)
    state = DlmsMeterState(model, ClockSetting.system())
    state.objects[BIG] = DataObject(BIG, Data.octet_string(BIG_VALUE))
    state.objects[RECORDER] = Recorder()
    return state


def _options(tmp_path: Path) -> DlmsSimOptions:
    return DlmsSimOptions(auth="hls", password=PASSWORD, keys=_keys(tmp_path))


def _attr(interface: enumerations.CosemInterface, obis: Obis, attribute: int) -> Any:
    return cosem.CosemAttribute(interface, cosem.Obis(*obis.to_bytes()), attribute)


SERIAL = _attr(enumerations.CosemInterface.DATA, Obis(0, 0, 96, 1, 0, 255), 2)
CLOCK = _attr(enumerations.CosemInterface.CLOCK, Obis(0, 0, 1, 0, 0, 255), 2)
IC_ATTR = _attr(enumerations.CosemInterface.DATA, OBIS_INVOCATION_COUNTER, 2)


def _client(port: int, client_address: int = 16, **kw: Any) -> DlmsClient:
    return DlmsClient.with_tcp_transport("127.0.0.1", port, client_address, 1, timeout=5, **kw)


def _hls(port: int, ic: int, ek: bytes = EK, ak: bytes = AK, **kw: Any) -> DlmsClient:
    return _client(
        port,
        1,
        authentication_method=HLS,
        encryption_key=ek,
        authentication_key=ak,
        client_system_title=CLIENT_TITLE,
        client_initial_invocation_counter=ic,
        **kw,
    )


def _serve(state: DlmsMeterState, options: DlmsSimOptions, work: Callable[[int], Any]) -> Any:
    """Run ``work(port)`` (blocking client code, in a thread) against a simulator."""

    async def main() -> Any:
        async with DlmsSimServer(state, options=options) as server:
            return await asyncio.wait_for(asyncio.to_thread(work, server.port), 60)

    return asyncio.run(main())


def _session(client: DlmsClient, work: Callable[[DlmsClient], Any]) -> Any:
    client.connect()
    try:
        return work(client)
    finally:
        client.disconnect()


def _counter(client: DlmsClient) -> int:
    """The meter's invocation counter object, read by the public client."""

    def read(c: DlmsClient) -> int:
        c.associate()
        value = decode_data(c.get(IC_ATTR))[0].integer
        c.release_association()
        return value

    return _session(client, read)


# -- LLS -----------------------------------------------------------------------------------
def test_lls_with_the_password_reads_and_sets_wrong_password_refused(tmp_path: Path) -> None:
    state = _meter()
    new = encode_data(Data.octet_string(b"set by lls"))

    def work(port: int) -> dict[str, Any]:
        def lls(c: DlmsClient) -> dict[str, Any]:
            c.associate()
            got = {"serial": c.get(SERIAL), "set": c.set(_attr(1, RECORDER, 2), new).result}
            c.release_association()
            return got

        def public_set(c: DlmsClient) -> Any:
            c.associate()
            return c.set(_attr(1, RECORDER, 2), new).result

        def wrong(c: DlmsClient) -> None:
            with pytest.raises(DlmsClientException, match="AUTHENTICATION_FAILED"):
                c.associate()

        got = _session(_client(port, 17, authentication_method=LLS, password=PASSWORD), lls)
        got["public"] = _session(_client(port), public_set)
        _session(_client(port, 17, authentication_method=LLS, password=b"guess"), wrong)
        return got

    got = _serve(state, _options(tmp_path), work)
    assert decode_data(got["serial"])[0] == Data.octet_string(b"sec-1")
    assert got["set"] is enumerations.DataAccessResult.SUCCESS
    assert got["public"] is enumerations.DataAccessResult.READ_WRITE_DENIED
    recorder = state.objects[RECORDER]
    assert isinstance(recorder, Recorder)
    assert recorder.values == [Data.octet_string(b"set by lls")]  # the public SET did nothing
    assert state.rejected == 1 and state.associations == 2


# -- HLS-GMAC ------------------------------------------------------------------------------
def test_hls_gmac_client_reads_ciphered_and_the_counter_object_follows(tmp_path: Path) -> None:
    state = _meter()

    def work(port: int) -> dict[str, Any]:
        before = _counter(_client(port))

        def hls(c: DlmsClient) -> dict[str, Any]:
            c.associate()
            got = {"clock": c.get(CLOCK), "serial": c.get(SERIAL)}
            c.release_association()
            return got

        got = _session(_hls(port, before), hls)
        got["before"], got["after"] = before, _counter(_client(port))
        return got

    got = _serve(state, _options(tmp_path), work)
    assert decode_data(got["serial"])[0] == Data.octet_string(b"sec-1")
    assert decode_data(got["clock"])[0].tag is Tag.OCTET_STRING
    # AARQ, ACTION, 2 GETs, RLRQ: five counters used, the object shows the next one
    assert got["before"] == 0 and got["after"] == 5
    ic_object = state.objects[OBIS_INVOCATION_COUNTER]
    assert isinstance(ic_object, InvocationCounterObject)
    assert ic_object.security.refused_replays == ic_object.security.refused_deciphering == 0
    assert state.associations == 3  # public, HLS, public


@pytest.mark.parametrize("wrong", ["encryption", "authentication"])
def test_hls_with_a_wrong_key_is_refused(tmp_path: Path, wrong: str) -> None:
    state = _meter()
    ek, ak = (bytes(16), AK) if wrong == "encryption" else (EK, bytes(16))

    def work(port: int) -> None:
        def refused(c: DlmsClient) -> None:
            with pytest.raises(DlmsClientException, match="AUTHENTICATION_FAILED"):
                c.associate()

        _session(_hls(port, 0, ek, ak), refused)

    _serve(state, _options(tmp_path), work)
    ic_object = state.objects[OBIS_INVOCATION_COUNTER]
    assert isinstance(ic_object, InvocationCounterObject)
    assert ic_object.security.refused_deciphering == 1 and state.rejected == 1
    assert state.associations == 0


def test_replayed_invocation_counter_is_refused(tmp_path: Path) -> None:
    state = _meter()

    def work(port: int) -> dict[str, Any]:
        def first(c: DlmsClient) -> int:
            c.associate()
            c.get(SERIAL)
            used = c.client_invocation_counter
            c.client_invocation_counter = used - 1  # the last one again
            with pytest.raises(Exception):  # noqa: B017 - dlms-cosem: an exception-response
                c.get(SERIAL)
            return used

        def stale(c: DlmsClient) -> None:
            with pytest.raises(DlmsClientException, match="NO_REASON_GIVEN"):
                c.associate()

        used = _session(_hls(port, 10), first)
        _session(_hls(port, 3), stale)  # a whole association from an old counter
        return {"used": used, "object": _counter(_client(port))}

    got = _serve(state, _options(tmp_path), work)
    ic_object = state.objects[OBIS_INVOCATION_COUNTER]
    assert isinstance(ic_object, InvocationCounterObject)
    assert ic_object.security.refused_replays == 2
    assert got["object"] == got["used"]  # the last accepted was used - 1


@pytest.mark.parametrize("auth", ["public", "hls"])
def test_a_large_answer_arrives_in_blocks(tmp_path: Path, auth: str) -> None:
    state = _meter()

    def work(port: int) -> bytes:
        client = (
            _hls(port, 0, max_pdu_size=128) if auth == "hls" else _client(port, max_pdu_size=128)
        )

        def read(c: DlmsClient) -> bytes:
            c.associate()
            data = c.get(_attr(1, BIG, 2))
            c.release_association()
            return data

        return _session(client, read)

    raw = _serve(state, _options(tmp_path), work)
    assert decode_data(raw)[0] == Data.octet_string(BIG_VALUE)


# -- in memory: what a client library will not do wrong on purpose --------------------------
class Pair:
    """dlms-cosem's sans-IO client connection and the simulator's session, in memory."""

    def __init__(self, tmp_path: Path, ic: int = 0, **client: Any) -> None:
        self.state = _meter()
        self.server = ServerSession(self.state, _options(tmp_path), challenge=lambda n: b"S" * n)
        self.client = DlmsConnection(
            client_system_title=CLIENT_TITLE,
            authentication_method=HLS,
            global_encryption_key=EK,
            global_authentication_key=AK,
            client_invocation_counter=ic,
            **client,
        )
        self.sent: list[bytes] = []

    def raw(self, apdu: bytes, client_address: int = 1) -> bytes:
        self.sent.append(apdu)
        answer = self.server.answer(client_address, apdu)
        assert answer is not None
        return answer

    def exchange(self, event: Any) -> Any:
        self.client.receive_data(self.raw(self.client.send(event)))
        return self.client.next_event()

    def associate(self) -> None:
        self.exchange(self.client.get_aarq())

    def hls_reply(self, reply: bytes | None = None) -> Any:
        return self.exchange(
            xdlms.ActionRequestNormal(
                cosem_method=cosem.CosemMethod(
                    enumerations.CosemInterface.ASSOCIATION_LN, cosem.Obis(0, 0, 40, 0, 0), 1
                ),
                data=dc_data.OctetStringData(reply or self.client.get_hls_reply()).to_bytes(),
            )
        )


def test_nothing_is_served_before_the_hls_reply_and_a_wrong_reply_ends_it(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path)
    pair.associate()
    assert pair.server.hls_pending
    early = pair.raw(pair.client.protect(xdlms.GetRequestNormal(SERIAL)).to_bytes())
    assert early == bytes.fromhex("d80101")  # service-not-allowed
    plain = pair.raw(xdlms.GetRequestNormal(SERIAL).to_bytes())
    assert plain == bytes.fromhex("d80101")  # plain APDUs: never in a ciphered context
    forged = bytes((0x10,)) + (99).to_bytes(4, "big") + bytes(12)
    answer = pair.raw(
        pair.client.protect(
            xdlms.ActionRequestNormal(
                cosem_method=cosem.CosemMethod(
                    enumerations.CosemInterface.ASSOCIATION_LN, cosem.Obis(0, 0, 40, 0, 0), 1
                ),
                data=dc_data.OctetStringData(forged).to_bytes(),
            )
        ).to_bytes()
    )
    envelope = parse_ciphered(answer)
    response = decrypt(0x30, METER_TITLE, envelope.invocation_counter, EK, AK, envelope.payload)
    assert response[:4] == bytes((0xC7, 1, response[2], int(AccessResult.READ_WRITE_DENIED)))
    assert pair.server.associated_client is None and pair.state.associations == 0


def test_hls_reply_checked_then_services_and_replay_of_a_captured_apdu(tmp_path: Path) -> None:
    pair = Pair(tmp_path, ic=40)
    pair.associate()
    pair.hls_reply()
    assert not pair.server.hls_pending and pair.state.associations == 1
    answer = pair.exchange(xdlms.GetRequestNormal(SERIAL))
    assert decode_data(answer.data)[0] == Data.octet_string(b"sec-1")
    captured = pair.sent[-1]
    assert pair.raw(captured) == bytes.fromhex("d80106")  # invocation-counter-error
    tampered = captured[:-1] + bytes((captured[-1] ^ 1,))
    pair.client.client_invocation_counter += 5
    assert pair.raw(tampered) == bytes.fromhex("d80105")  # deciphering-error


def test_block_numbers_are_checked(tmp_path: Path) -> None:
    pair = Pair(tmp_path, max_pdu_size=200)
    pair.associate()
    pair.hls_reply()
    first = pair.exchange(xdlms.GetRequestNormal(_attr(1, BIG, 2)))
    assert isinstance(first, xdlms.GetResponseWithBlock) and first.block_number == 1
    blocks = [first.data]
    wrong = pair.exchange(xdlms.GetRequestNext(block_number=5))
    assert isinstance(wrong, xdlms.GetResponseLastBlockWithError)
    assert wrong.error.value == int(AccessResult.DATA_BLOCK_NUMBER_INVALID)
    # the transfer is over: a new GET starts again from block 1, in order to the last
    answer = pair.exchange(xdlms.GetRequestNormal(_attr(1, BIG, 2)))
    blocks = []
    while isinstance(answer, xdlms.GetResponseWithBlock):
        assert answer.block_number == len(blocks) + 1
        blocks.append(answer.data)
        answer = pair.exchange(xdlms.GetRequestNext(block_number=answer.block_number))
    assert isinstance(answer, xdlms.GetResponseLastBlock)
    assert answer.block_number == len(blocks) + 1
    assert decode_data(b"".join(blocks) + answer.data)[0] == Data.octet_string(BIG_VALUE)
    assert len(blocks) >= 10
    for apdu in pair.sent:
        assert len(apdu) <= 200


def test_action_on_other_objects(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.associate()
    pair.hls_reply()

    def action(obis: Obis, interface: int, method: int) -> Any:
        return pair.exchange(
            xdlms.ActionRequestNormal(
                cosem_method=cosem.CosemMethod(
                    enumerations.CosemInterface(interface), cosem.Obis(*obis.to_bytes()), method
                )
            )
        )

    assert action(Obis(0, 0, 96, 1, 0, 255), 1, 1).status.value == 11  # object-unavailable
    assert action(Obis(1, 0, 99, 9, 0, 255), 1, 1).status.value == 4  # object-undefined
    assert action(Obis(0, 0, 40, 0, 0, 255), 15, 2).status.value == 11
    assert action(Obis(0, 0, 40, 0, 0, 255), 15, 1).status.value == 250  # HLS already done


# -- keys file -----------------------------------------------------------------------------
def test_keys_file_is_checked_and_never_shown(tmp_path: Path) -> None:
    context = load_keys(_keys(tmp_path))
    assert context.system_title == METER_TITLE
    assert (context.encryption_key, context.authentication_key) == (EK, AK)
    with pytest.raises(KeyFileError, match=r"mode 0644.*chmod 600") as exc:
        load_keys(_keys(tmp_path, mode=0o644))
    assert EK.hex() not in str(exc.value)
    bad = tmp_path / "bad.toml"
    for text, message in (
        (f'authentication_key = "{AK.hex()}"\nsystem_title = "{METER_TITLE.hex()}"\n', "missing"),
        (
            f'authentication_key = "{AK.hex()[:-2]}"\nencryption_key = "{EK.hex()}"\n'
            f'system_title = "{METER_TITLE.hex()}"\n',
            "16 bytes",
        ),
        (f'authentication_key = "{AK.hex()} x"\n', "not hex"),
        (f"encryption_key = {EK.hex()}\n", "not a valid TOML"),
    ):
        bad.write_text(text)
        os.chmod(bad, 0o600)
        with pytest.raises(KeyFileError, match=message) as exc:
            load_keys(bad)
        assert str(bad) in str(exc.value)
        assert EK.hex() not in str(exc.value) and AK.hex()[:-2] not in str(exc.value)


@pytest.mark.integration
def test_sim_dlms_process_serves_hls_and_refuses_a_wrong_key(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    sim = Proc.python(
        "meterlink", "sim", "dlms", "--port", "0", "--meter-id", "sec-p", "--auth", "hls",
        "--keys", str(keys), "--password", PASSWORD.decode(), cwd=REPO, name="sim",
    )  # fmt: skip
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        assert "auth=hls" in line
        port = int(line.split()[2].rpartition(":")[2])

        def hls(c: DlmsClient) -> bytes:
            c.associate()
            serial = c.get(SERIAL)
            c.release_association()
            return serial

        def refused(c: DlmsClient) -> None:
            with pytest.raises((DlmsClientException, HLSError)):
                c.associate()

        serial = _session(_hls(port, _counter(_client(port))), hls)
        _session(_hls(port, 100, ek=bytes(16)), refused)
    finally:
        sim.stop()
    assert decode_data(serial)[0] == Data.octet_string(b"sec-p")
    assert EK.hex() not in sim.output and AK.hex() not in sim.output


@pytest.mark.integration
@pytest.mark.parametrize("auth", ["none", "lls", "hls"])
def test_gurux_client_reads_the_simulator(tmp_path: Path, auth: str) -> None:
    """A second independent client: Gurux DLMS for Python (the DLMS UA members' reference
    stack; GPLv2, so only in the test extras, never imported by the product). It uses the
    glo-* ciphered forms (not general-glo-ciphering) and reads the object list in blocks of
    a 128-byte PDU; with LLS and HLS it SETs the clock."""
    import gurux_dlms as gx
    from gurux_dlms.enums import Authentication, InterfaceType, Security
    from gurux_dlms.objects import GXDLMSClock, GXDLMSData
    from gurux_dlms.secure import GXDLMSSecureClient

    state = _meter()
    if auth == "hls":
        client = GXDLMSSecureClient(
            True, 1, 1, Authentication.HIGH_GMAC, None, InterfaceType.WRAPPER
        )
        client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        client.ciphering.systemTitle = CLIENT_TITLE
        client.ciphering.blockCipherKey = EK
        client.ciphering.authenticationKey = AK
    elif auth == "lls":
        client = GXDLMSSecureClient(
            True, 17, 1, Authentication.LOW, PASSWORD.decode(), InterfaceType.WRAPPER
        )
    else:
        client = GXDLMSSecureClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.maxReceivePDUSize = 128

    def work(port: int) -> dict[str, Any]:
        import socket

        sock = socket.create_connection(("127.0.0.1", port), timeout=5)

        def packet(data: Any, reply: Any) -> None:
            sock.sendall(bytes(data))
            received, notify = gx.GXByteBuffer(), gx.GXReplyData()
            while not client.getData(received, reply, notify):
                chunk = sock.recv(4096)
                assert chunk, "the simulator closed the connection"
                received.set(chunk)

        def exchange(data: Any) -> Any:
            reply = gx.GXReplyData()
            for frame in data if isinstance(data, list) else [data]:
                reply.clear()
                packet(frame, reply)
                while reply.isMoreData():
                    packet(client.receiverReady(reply), reply)
            return reply

        try:
            client.parseAareResponse(exchange(client.aarqRequest()).data)
            if int(client.authentication) > int(Authentication.LOW):
                reply = gx.GXReplyData()
                for frame in client.getApplicationAssociationRequest():
                    packet(frame, reply)
                client.parseApplicationAssociationResponse(reply.data)
            got: dict[str, Any] = {}
            got["objects"] = len(
                client.parseObjects(exchange(client.getObjectsRequest()).data, True)
            )
            serial = GXDLMSData("0.0.96.1.0.255")
            got["serial"] = client.updateValue(serial, 2, exchange(client.read(serial, 2)).value)
            if auth != "none":
                clock = GXDLMSClock("0.0.1.0.0.255")
                client.updateValue(clock, 2, exchange(client.read(clock, 2)).value)
                exchange(client.write(clock, 2))
                got["set"] = True
            exchange(client.releaseRequest())
            return got
        finally:
            sock.close()

    got = _serve(state, _options(tmp_path), work)
    assert got["objects"] >= 15 and bytes(got["serial"]) == b"sec-1"
    assert got.get("set", False) == (auth != "none") and state.sets == (auth != "none")
    if auth == "hls":
        ic_object = state.objects[OBIS_INVOCATION_COUNTER]
        assert isinstance(ic_object, InvocationCounterObject)
        assert ic_object.security.client_counter is not None
        assert ic_object.security.refused_replays == ic_object.security.refused_deciphering == 0


@pytest.mark.integration
def test_sim_refuses_to_start_with_a_keys_file_others_can_read(tmp_path: Path) -> None:
    """An HLS meter whose keys file is mode 0644 exits 2 before READY, naming the file and
    the fix, and never printing a key."""
    import subprocess
    import sys

    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'authentication_key = "{AK.hex()}"\nencryption_key = "{EK.hex()}"\n'
        'system_title = "4d4c4b0000000001"\n'
    )
    keys.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "meterlink", "sim", "dlms", "--port", "0", "--auth", "hls",
         "--keys", str(keys)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2
    assert "READY" not in result.stdout
    assert f"{keys}: keys file has mode 0644" in result.stderr
    assert f"chmod 600 {keys}" in result.stderr
    assert AK.hex() not in result.stderr + result.stdout
    assert EK.hex() not in result.stderr + result.stdout
