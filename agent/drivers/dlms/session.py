"""One association with one logical device, on an open APDU transport.

dlms-cosem 21.3.2 provides the association state machine and the APDUs a client sends
(``DlmsConnection``: AARQ, GET/SET/ACTION requests, RLRQ), the security of LLS and
HLS-GMAC (ciphering with general-glo-ciphering, f(StoC), the check of f(CtoS)) and parses
the answers; its blocking transports are not used (they spin when the peer closes
mid-answer and cannot be cancelled): the I/O is asyncio, in ``transport``.

Security levels (``auth`` in the meter's ``[meters.dlms]``):

* ``none``: the public client, no authentication;
* ``lls``: the password of the meter (secrets file) in the AARQ;
* ``hls-gmac``: first a public association reads the meter's invocation counter object
  (0.0.43.1.0.255) on a connection of its own (the transport is closed meanwhile and
  opened again); the client counter starts at max(persisted, read) and is persisted
  (``secrets.CounterStore``) before any value is used; then the ciphered association:
  AARQ with the client system title and challenge, AARE with the meter's challenge,
  ACTION ``reply_to_HLS_authentication`` with f(StoC), the meter's f(CtoS) checked. A
  refusal (wrong password or key) is an :class:`AssociationRefused` (not retried) whose
  text says which step failed, never the secret.

GET answers in blocks (GET-response-with-datablock) are reassembled here: ``get`` loops
GET-request-next until the last block, so callers never see blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import replace
from pathlib import Path

from dlms_cosem import cosem as dc_cosem
from dlms_cosem import dlms_data as dc_data
from dlms_cosem import enumerations as dc_enums
from dlms_cosem import state as dc_state
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.protocol import acse as dc_acse
from dlms_cosem.protocol import xdlms as dc_xdlms

from agent.config import DlmsSettings
from protocols.dlms import DlmsDecodeError
from protocols.dlms.axdr import Data, decode_data
from protocols.obis import Obis

from .hdlc import HdlcTransport
from .secrets import CounterStore, SecretsError, default_system_title, load_meter_secrets
from .transport import ApduTransport, WrapperTransport

__all__ = [
    "MAX_BLOCK_DATA",
    "OBIS_INVOCATION_COUNTER",
    "AssociationRefused",
    "DlmsSession",
    "ObjectError",
]

log = logging.getLogger("agent.dlms")

# dlms-cosem logs every APDU it sends at INFO/DEBUG with its attrs repr, which shows the
# LLS password of an AARQ, and the deciphered plaintext at WARNING: kept out of the
# agent's log whatever its level.
logging.getLogger("dlms_cosem").setLevel(logging.ERROR)

PUBLIC_CLIENT = 16
CLASS_DATA = 1
OBIS_INVOCATION_COUNTER = Obis(0, 0, 43, 1, 0, 255)
OBIS_ASSOCIATION_LN = dc_cosem.Obis(0, 0, 40, 0, 0, 255)
METHOD_REPLY_TO_HLS = 1
MAX_BLOCK_DATA = 16 * 1024 * 1024  # a GET answer in blocks larger than this is refused

_STATE_ERRORS = {1: "service-not-allowed", 2: "service-unknown"}
_SERVICE_ERRORS = {
    1: "operation-not-possible",
    2: "service-not-supported",
    3: "other-reason",
    4: "pdu-too-long",
    5: "deciphering-error",
    6: "invocation-counter-error",
}


class ObjectError(Exception):
    """The meter answered, but not with the attribute (a data-access-result, in ``result``
    when the meter gave one)."""

    def __init__(self, text: str, result: int | None = None) -> None:
        super().__init__(text)
        self.result = result


class AssociationRefused(ConnectionError):
    """The meter refused the association (AARE rejected, wrong password or key), or the
    secrets are unusable: retrying will not help."""


class DlmsSession:
    """An association over ``transport``; ``open`` associates, ``close`` releases.

    ``state_dir``: the agent's state directory, where an HLS meter's invocation counter
    is kept (``dlms/METER.ic``); HLS needs it."""

    def __init__(
        self,
        transport: ApduTransport,
        settings: DlmsSettings,
        meter_id: str,
        *,
        state_dir: Path | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.meter_id = meter_id
        self.state_dir = state_dir
        self.conn = DlmsConnection(
            client_system_title=self.system_title, max_pdu_size=self._max_pdu
        )
        self.counters: CounterStore | None = None  # hls-gmac: the persisted counter
        self.meter_counter: int | None = None  # hls-gmac: what the meter said it expects
        self.broken = False  # an exchange failed: the stream is out of step
        self.associated = False

    @property
    def _max_pdu(self) -> int:
        """The client max receive PDU size proposed in the AARQ: what the transport takes."""
        return min(int(getattr(self.transport, "max_apdu", 0xFFFF)), 0xFFFF)

    @property
    def system_title(self) -> bytes:
        return self.settings.system_title or default_system_title(self.meter_id)

    # -- association -------------------------------------------------------------------
    async def open(self) -> None:
        """Associate (AARQ/AARE, and the HLS step); ``AssociationRefused`` when the meter
        says no or the secrets cannot be used."""
        auth = self.settings.auth
        try:
            if auth == "lls":
                secrets = load_meter_secrets(self.settings.secrets, self.meter_id, auth)
                self.conn = DlmsConnection(
                    client_system_title=self.system_title,
                    authentication_method=dc_enums.AuthenticationMechanism.LLS,
                    password=secrets.password,
                    max_pdu_size=self._max_pdu,
                )
            elif auth == "hls-gmac":
                await self._prepare_hls()
        except SecretsError as exc:
            raise AssociationRefused(str(exc)) from None
        answer = await self.exchange(self.conn.get_aarq(), "AARQ")
        if not isinstance(answer, dc_acse.ApplicationAssociationResponse):
            raise ConnectionError(f"association: answer to AARQ is {type(answer).__name__}")
        if answer.result is not dc_enums.AssociationResult.ACCEPTED:
            raise AssociationRefused(self._refusal(answer))
        if self.conn.state.current_state is dc_state.SHOULD_SEND_HLS_SEVER_CHALLENGE_RESULT:
            await self._hls_reply()
        self.associated = True

    def _refusal(self, answer: dc_acse.ApplicationAssociationResponse) -> str:
        diagnostic = answer.result_source_diagnostics
        name = str(getattr(diagnostic, "name", diagnostic)).replace("_", " ").lower()
        text = f"association refused by the meter: {answer.result.name.lower()}, {name}"
        text = text.replace("_", " ")
        failure = getattr(diagnostic, "value", None) == 13  # authentication-failure
        if self.settings.auth == "lls" and failure:
            return f"LLS password refused ({text})"
        if self.settings.auth == "hls-gmac" and failure:
            return (
                "HLS authentication failed: the meter refused the ciphered AARQ "
                "(authentication failure) — wrong encryption or authentication key?"
            )
        if self.settings.auth == "hls-gmac":
            used = self.conn.client_invocation_counter - 1
            expected = (
                "" if self.meter_counter is None else f", meter expected {self.meter_counter}"
            )
            return f"{text} (HLS client invocation counter {used}{expected})"
        return text

    async def _prepare_hls(self) -> None:
        if self.state_dir is None:
            raise SecretsError(
                f"meter {self.meter_id}: hls-gmac needs the agent's state directory "
                "(for the invocation counter)"
            )
        secrets = load_meter_secrets(self.settings.secrets, self.meter_id, "hls-gmac")
        store = CounterStore(self.state_dir / "dlms" / f"{_file_name(self.meter_id)}.ic")
        # one connection at a time (a serial line, an HDLC physical device, a meter that
        # takes one TCP connection): ours is closed for the public association, then a
        # fresh one is opened
        await self.transport.close()
        self.meter_counter = await self._read_meter_counter()
        fresh = _sibling(self.transport, self.settings.client_address)
        self.transport = fresh
        await fresh.open()
        start = max(store.limit, self.meter_counter or 0)
        self.counters = store
        self.conn = DlmsConnection(
            client_system_title=self.system_title,
            authentication_method=dc_enums.AuthenticationMechanism.HLS_GMAC,
            global_encryption_key=secrets.encryption_key,
            global_authentication_key=secrets.authentication_key,
            client_invocation_counter=start,
            security_suite=0,
            max_pdu_size=self._max_pdu,
        )
        log.debug(
            "meter %s: HLS client invocation counter from %d (persisted %d, meter %s)",
            self.meter_id,
            start,
            store.limit,
            self.meter_counter,
        )

    async def _read_meter_counter(self) -> int | None:
        """The meter's invocation counter object, read by the public client; None when
        the meter has no such object (the persisted value is used alone then)."""
        transport = _sibling(self.transport, PUBLIC_CLIENT)
        settings = replace(self.settings, auth="none", client_address=PUBLIC_CLIENT)
        public = DlmsSession(transport, settings, self.meter_id)
        try:
            await transport.open()
            await public.open()
            value = await public.get(CLASS_DATA, OBIS_INVOCATION_COUNTER, 2)
            return value.integer
        except (ObjectError, DlmsDecodeError) as exc:
            log.warning(
                "meter %s: invocation counter %s not readable (%s); the persisted one is used",
                self.meter_id,
                OBIS_INVOCATION_COUNTER,
                exc,
            )
            return None
        except AssociationRefused as exc:
            raise ConnectionError(
                f"public association to read the invocation counter: {exc}"
            ) from None
        finally:
            await public.close()

    async def _hls_reply(self) -> None:
        """ACTION reply_to_HLS_authentication(f(StoC)); the meter answers f(CtoS)."""
        what = "HLS reply_to_HLS_authentication"
        request = dc_xdlms.ActionRequestNormal(
            cosem_method=dc_cosem.CosemMethod(
                dc_enums.CosemInterface.ASSOCIATION_LN, OBIS_ASSOCIATION_LN, METHOD_REPLY_TO_HLS
            ),
            data=dc_data.OctetStringData(self.conn.get_hls_reply()).to_bytes(),
        )
        answer = await self.exchange(request, what)
        if self.conn.state.current_state is dc_state.READY:
            return
        if (
            isinstance(answer, dc_xdlms.ActionResponseNormalWithData)
            and answer.status is dc_enums.ActionResultStatus.SUCCESS
        ):
            raise AssociationRefused(
                "HLS authentication failed: the meter's f(CtoS) does not check out — the "
                "meter does not hold this meter's keys (wrong keys, or another meter?)"
            )
        raise AssociationRefused(
            "HLS authentication failed: the meter did not accept f(StoC) — wrong "
            "authentication key?"
        )

    # -- exchanges ---------------------------------------------------------------------
    async def exchange(self, event: object, what: str) -> object:
        """Send one APDU, return the parsed answer (dlms-cosem's event)."""
        self.broken = True  # until a whole answer is in
        if self.counters is not None and self.conn.use_protection:
            needed = self.conn.client_invocation_counter + 1
            if needed > self.counters.limit:  # persisted before the counter is used
                try:
                    await asyncio.to_thread(self.counters.reserve, needed)
                except SecretsError as exc:
                    raise AssociationRefused(str(exc)) from None
        try:
            apdu = self.conn.send(event)
        except Exception as exc:  # dlms-cosem's state machine refusing the event
            raise ConnectionError(f"{what}: client state: {exc}") from None
        answer = await self.transport.request(apdu, what)
        if answer[:1] == b"\xd8":
            raise ConnectionError(f"{what}: exception-response {_exception_text(answer)}")
        self.conn.receive_data(answer)
        try:
            parsed = self.conn.next_event()
        except Exception as exc:  # dlms-cosem parsers raise ValueError, IndexError, ...
            self.conn.clear_buffer()
            kind = type(exc).__name__
            if kind == "DecryptionError":
                raise ConnectionError(
                    f"{what}: the meter's answer does not decipher — wrong encryption key?"
                ) from None
            raise ConnectionError(f"{what}: malformed answer {answer.hex()}: {kind}") from None
        self.broken = False
        return parsed

    async def get(
        self, class_id: int, obis: Obis, attribute: int, access: object | None = None
    ) -> Data:
        """One attribute's value, reassembled when the meter sends it in blocks.
        ``access``: a dlms-cosem selective access descriptor (e.g. ``RangeDescriptor``)
        for Profile Generic buffers."""
        what = f"GET {obis} attribute {attribute}"
        request = dc_xdlms.GetRequestNormal(
            dc_cosem.CosemAttribute(
                dc_enums.CosemInterface(class_id), dc_cosem.Obis(*obis.to_bytes()), attribute
            ),
            access_selection=access,
        )
        answer = await self.exchange(request, what)
        if isinstance(answer, dc_xdlms.GetResponseNormalWithError):
            raise ObjectError(f"{what}: {_result_name(answer.error)}", int(answer.error))
        if isinstance(
            answer,
            (
                dc_xdlms.GetResponseWithBlock,
                dc_xdlms.GetResponseLastBlock,
                dc_xdlms.GetResponseLastBlockWithError,
            ),
        ):
            return _decode_whole(await self._blocks(answer, what), what)
        if not isinstance(answer, dc_xdlms.GetResponseNormal):
            raise ConnectionError(f"{what}: answer is {type(answer).__name__}")
        return _decode_whole(answer.data, what)

    async def _blocks(self, answer: object, what: str) -> bytes:
        """The raw data of a GET answered in blocks: GET-request-next until the last."""
        data = bytearray()
        expected = 1
        while True:
            if isinstance(answer, dc_xdlms.GetResponseLastBlockWithError):
                raise ObjectError(f"{what}: block {expected}: {_result_name(answer.error)}")
            if not isinstance(
                answer, (dc_xdlms.GetResponseWithBlock, dc_xdlms.GetResponseLastBlock)
            ):
                self.broken = True
                raise ConnectionError(
                    f"{what}: block {expected}: answer is {type(answer).__name__}"
                )
            if answer.block_number != expected:
                self.broken = True
                raise ConnectionError(
                    f"{what}: block number {answer.block_number}, expected {expected}"
                )
            data += answer.data
            if len(data) > MAX_BLOCK_DATA:
                self.broken = True
                raise ConnectionError(f"{what}: more than {MAX_BLOCK_DATA} bytes in blocks")
            if isinstance(answer, dc_xdlms.GetResponseLastBlock):
                return bytes(data)
            request = dc_xdlms.GetRequestNext(
                block_number=answer.block_number,
                invoke_id_and_priority=answer.invoke_id_and_priority,
            )
            expected += 1
            answer = await self.exchange(request, f"{what} (block {expected})")

    async def set(self, class_id: int, obis: Obis, attribute: int, raw_value: bytes) -> None:
        """SET one attribute to an A-XDR encoded value; ``ObjectError`` if refused."""
        what = f"SET {obis} attribute {attribute}"
        request = dc_xdlms.SetRequestNormal(
            dc_cosem.CosemAttribute(
                dc_enums.CosemInterface(class_id), dc_cosem.Obis(*obis.to_bytes()), attribute
            ),
            data=raw_value,
        )
        answer = await self.exchange(request, what)
        if not isinstance(answer, dc_xdlms.SetResponseNormal):
            raise ConnectionError(f"{what}: answer is {type(answer).__name__}")
        if answer.result is not dc_enums.DataAccessResult.SUCCESS:
            raise ObjectError(f"{what}: {_result_name(answer.result)}")

    async def action(
        self, class_id: int, obis: Obis, method: int, raw_parameters: bytes | None = None
    ) -> Data | None:
        """Invoke one method (A-XDR encoded parameters, or none); its return value, if
        any. ``ObjectError`` if the meter refuses it."""
        what = f"ACTION {obis} method {method}"
        request = dc_xdlms.ActionRequestNormal(
            cosem_method=dc_cosem.CosemMethod(
                dc_enums.CosemInterface(class_id), dc_cosem.Obis(*obis.to_bytes()), method
            ),
            data=raw_parameters,
        )
        answer = await self.exchange(request, what)
        if isinstance(answer, dc_xdlms.ActionResponseNormalWithError):
            raise ObjectError(f"{what}: {_result_name(answer.error)}")
        if not isinstance(
            answer, (dc_xdlms.ActionResponseNormal, dc_xdlms.ActionResponseNormalWithData)
        ):
            raise ConnectionError(f"{what}: answer is {type(answer).__name__}")
        if answer.status is not dc_enums.ActionResultStatus.SUCCESS:
            raise ObjectError(f"{what}: {_result_name(answer.status)}")
        if isinstance(answer, dc_xdlms.ActionResponseNormalWithData):
            return _decode_whole(bytes(answer.data), what)
        return None

    async def close(self) -> None:
        """Release the association (best effort) and close the transport."""
        if self.associated and not self.broken:
            with contextlib.suppress(Exception):  # the meter may be gone
                await self.exchange(self.conn.get_rlrq(), "RLRQ")
        self.associated = False
        await self.transport.close()


def _sibling(transport: ApduTransport, client: int) -> ApduTransport:
    """A transport like ``transport`` to the same logical device, for client address
    ``client`` (the public client reads the invocation counter): the wrapper's and HDLC's
    own, or the transport's ``for_client(address)`` when it has one."""
    if isinstance(transport, WrapperTransport):
        return WrapperTransport(
            transport.host,
            transport.port,
            client,
            transport.server,
            transport.timeout,
            transport.max_apdu,
        )
    if isinstance(transport, HdlcTransport):
        settings = replace(transport.settings, client_address=client)
        return HdlcTransport(settings, transport.host, transport.port, transport.timeout)
    for_client = getattr(transport, "for_client", None)
    if for_client is None:
        raise AssociationRefused(
            f"hls-gmac over {transport.description}: this transport cannot open the public "
            "association that reads the invocation counter"
        )
    sibling: ApduTransport = for_client(client)
    return sibling


def _file_name(meter_id: str) -> str:
    """A file name for ``meter_id`` (ids are checked by the config; this is a guard)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", meter_id).lstrip(".") or "_"


def _exception_text(answer: bytes) -> str:
    state = answer[1] if len(answer) > 1 else None
    service = answer[2] if len(answer) > 2 else None
    return (
        f"{_STATE_ERRORS.get(state, state)!s}, {_SERVICE_ERRORS.get(service, service)!s} "
        f"({answer[1:].hex()})"
    )


def _result_name(result: object) -> str:
    name = str(getattr(result, "name", result)).replace("_", "-").lower()
    return f"{name} ({int(result)})"  # type: ignore[call-overload]


def _decode_whole(raw: bytes, what: str) -> Data:
    try:
        item, end = decode_data(raw)
    except DlmsDecodeError as exc:
        raise ObjectError(f"{what}: {exc}") from None
    if end != len(raw):
        raise ObjectError(f"{what}: {len(raw) - end} bytes after the value")
    return item
