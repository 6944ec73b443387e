"""One association with one logical device, on an open APDU transport.

dlms-cosem 21.3.2 provides the association state machine and the APDUs a client sends
(``DlmsConnection``: AARQ, GET/SET/ACTION requests, RLRQ) and parses the answers; its
blocking transports are not used (they spin when the peer closes mid-answer and cannot be
cancelled): the I/O is asyncio, in ``transport``.
"""

from __future__ import annotations

import contextlib
import logging

from dlms_cosem import cosem as dc_cosem
from dlms_cosem import enumerations as dc_enums
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.protocol import acse as dc_acse
from dlms_cosem.protocol import xdlms as dc_xdlms

from agent.config import DlmsSettings
from protocols.dlms import DlmsDecodeError
from protocols.dlms.axdr import Data, decode_data
from protocols.obis import Obis

from .transport import ApduTransport

__all__ = ["AssociationRefused", "DlmsSession", "ObjectError"]

log = logging.getLogger("agent.dlms")


class ObjectError(Exception):
    """The meter answered, but not with the attribute (a data-access-result)."""


class AssociationRefused(ConnectionError):
    """The meter refused the association (AARE rejected, wrong password or key): retrying
    will not help."""


class DlmsSession:
    """An association over ``transport``; ``open`` associates, ``close`` releases."""

    def __init__(self, transport: ApduTransport, settings: DlmsSettings, meter_id: str) -> None:
        self.transport = transport
        self.settings = settings
        self.meter_id = meter_id
        self.conn = DlmsConnection(client_system_title=None)
        self.broken = False  # an exchange failed: the stream is out of step
        self.associated = False

    async def open(self) -> None:
        """Associate (AARQ/AARE); ``AssociationRefused`` when the meter says no."""
        answer = await self.exchange(self.conn.get_aarq(), "AARQ")
        if not isinstance(answer, dc_acse.ApplicationAssociationResponse):
            raise ConnectionError(f"association: answer to AARQ is {type(answer).__name__}")
        if answer.result is not dc_enums.AssociationResult.ACCEPTED:
            diagnostic = answer.result_source_diagnostics
            raise AssociationRefused(
                f"association refused by the meter: {answer.result.name.lower()}, "
                f"{getattr(diagnostic, 'name', diagnostic)!s}".replace("_", " ").lower()
            )
        self.associated = True

    async def exchange(self, event: object, what: str) -> object:
        """Send one APDU, return the parsed answer (dlms-cosem's event)."""
        self.broken = True  # until a whole answer is in
        try:
            apdu = self.conn.send(event)
        except Exception as exc:  # dlms-cosem's state machine refusing the event
            raise ConnectionError(f"{what}: client state: {exc}") from None
        answer = await self.transport.request(apdu, what)
        if answer[:1] == b"\xd8":
            raise ConnectionError(f"{what}: exception-response {answer[1:].hex()}")
        self.conn.receive_data(answer)
        try:
            parsed = self.conn.next_event()
        except Exception as exc:  # dlms-cosem parsers raise ValueError, IndexError, ...
            self.conn.clear_buffer()
            raise ConnectionError(f"{what}: malformed answer {answer.hex()}: {exc!r}") from None
        self.broken = False
        return parsed

    async def get(
        self, class_id: int, obis: Obis, attribute: int, access: object | None = None
    ) -> Data:
        """One attribute's value. ``access``: a dlms-cosem selective access descriptor
        (e.g. ``RangeDescriptor``) for Profile Generic buffers."""
        what = f"GET {obis} attribute {attribute}"
        request = dc_xdlms.GetRequestNormal(
            dc_cosem.CosemAttribute(
                dc_enums.CosemInterface(class_id), dc_cosem.Obis(*obis.to_bytes()), attribute
            ),
            access_selection=access,
        )
        answer = await self.exchange(request, what)
        if isinstance(answer, dc_xdlms.GetResponseNormalWithError):
            raise ObjectError(f"{what}: {_result_name(answer.error)}")
        if not isinstance(answer, dc_xdlms.GetResponseNormal):
            raise ConnectionError(f"{what}: answer is {type(answer).__name__}")
        return _decode_whole(answer.data, what)

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

    async def close(self) -> None:
        """Release the association (best effort) and close the transport."""
        if self.associated and not self.broken:
            with contextlib.suppress(Exception):  # the meter may be gone
                await self.exchange(self.conn.get_rlrq(), "RLRQ")
        self.associated = False
        await self.transport.close()


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
