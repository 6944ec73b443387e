"""DLMS/COSEM over the TCP wrapper (IEC 62056-47): public client, no security, LN, GET.

One read cycle is one association: connect, AARQ/AARE, read the Clock (0.0.1.0.0.255,
attribute 2), then for each configured Register its scaler_unit (attribute 3, cached for
the association) and value (attribute 2), RLRQ/RLRE, close. The capture's timestamp is the
meter's clock (``ClockSource.METER``); the clock's status bits or an unspecified
deviation flag it ``CLOCK_SUSPECT``. Values are exact (``protocols.dlms.cosem``).

dlms-cosem 21.3.2 provides the association state machine and the APDUs a client sends
(``DlmsConnection``: AARQ, GET-request-normal, RLRQ) and parses the answers; its blocking
TCP transport is not used (it spins when the peer closes mid-answer, and cannot be
cancelled): the I/O is asyncio here, framed by ``protocols.dlms.wrapper``.

Errors are per meter: a refused connection, a timeout, a refused association are a
``MeterReadError`` (the scheduler counts it and goes on with the next meter); an object
the meter does not have makes the capture partial. A connection is never reused after an
error: the next cycle starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from dlms_cosem import cosem as dc_cosem
from dlms_cosem import enumerations as dc_enums
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.protocol import acse as dc_acse
from dlms_cosem.protocol import xdlms as dc_xdlms

from protocols.dlms import DlmsDecodeError
from protocols.dlms.axdr import Data, decode_data
from protocols.dlms.cosem import CosemDateTime, ScalerUnit, exact_value
from protocols.dlms.wrapper import WrapperReader, encode_frame
from protocols.obis import Obis
from protocols.record import Quality, Value

from .modbus_tcp import BACKOFF_MAX, BACKOFF_START, MeterReadError

__all__ = ["DlmsOutcome", "DlmsTcpMeter"]

log = logging.getLogger("agent.dlms")

CLOCK = dc_cosem.Obis(0, 0, 1, 0, 0, 255)
CLASS_REGISTER = dc_enums.CosemInterface.REGISTER
CLASS_CLOCK = dc_enums.CosemInterface.CLOCK


class _ObjectError(Exception):
    """The meter answered, but not with the attribute (a data-access-result)."""


@dataclass(slots=True)
class DlmsOutcome:
    values: tuple[Value, ...]
    errors: list[str] = field(default_factory=list)
    meter_ms: int | None = None  # the meter's clock at the start of the read (Unix ms)
    clock_flags: Quality = Quality.NONE

    @property
    def partial(self) -> bool:
        return bool(self.errors)


class _Association:
    """One TCP connection and one association on it."""

    def __init__(self, meter: DlmsTcpMeter) -> None:
        self.meter = meter
        self.conn = DlmsConnection(client_system_title=None)
        self.frames = WrapperReader()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.broken = False  # an exchange failed: the stream is out of step

    async def open(self) -> None:
        m = self.meter
        try:
            async with asyncio.timeout(m.timeout):
                self.reader, self.writer = await asyncio.open_connection(m.host, m.port)
        except TimeoutError:
            raise ConnectionError(f"cannot connect to {m.address}: timed out") from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {m.address}: {exc.strerror or exc}") from None
        answer = await self.exchange(self.conn.get_aarq(), "AARQ")
        if not isinstance(answer, dc_acse.ApplicationAssociationResponse):
            raise ConnectionError(f"association: answer to AARQ is {type(answer).__name__}")
        if answer.result is not dc_enums.AssociationResult.ACCEPTED:
            diagnostic = answer.result_source_diagnostics
            raise AssociationRefused(
                f"association refused by the meter: {answer.result.name.lower()}, "
                f"{getattr(diagnostic, 'name', diagnostic)!s}".replace("_", " ").lower()
            )

    async def exchange(self, event: object, what: str) -> object:
        """Send one APDU, return the parsed answer (dlms-cosem's event)."""
        assert self.reader is not None and self.writer is not None
        m = self.meter
        self.broken = True  # until a whole answer is in
        try:
            apdu = self.conn.send(event)
        except Exception as exc:  # dlms-cosem's state machine refusing the event
            raise ConnectionError(f"{what}: client state: {exc}") from None
        self.writer.write(encode_frame(m.client_address, m.server_address, apdu))
        try:
            async with asyncio.timeout(m.timeout):
                await self.writer.drain()
                while True:
                    chunk = await self.reader.read(4096)
                    if not chunk:
                        raise ConnectionError(f"{what}: connection closed without an answer")
                    frames = self.frames.feed(chunk)
                    if frames:
                        break
        except TimeoutError:
            raise TimeoutError(f"{what}: no answer within {m.timeout:g}s") from None
        except DlmsDecodeError as exc:
            raise ConnectionError(f"{what}: malformed wrapper frame: {exc}") from None
        except OSError as exc:
            raise ConnectionError(f"{what}: connection error: {exc.strerror or exc}") from None
        frame = frames[0]
        if len(frames) > 1 or (frame.source, frame.destination) != (
            m.server_address,
            m.client_address,
        ):
            raise ConnectionError(
                f"{what}: unexpected frame {frame.source}->{frame.destination} "
                f"({len(frames)} frame(s))"
            )
        if frame.apdu[:1] == b"\xd8":
            raise ConnectionError(f"{what}: exception-response {frame.apdu[1:].hex()}")
        self.conn.receive_data(frame.apdu)
        try:
            event = self.conn.next_event()
            self.broken = False
            return event
        except Exception as exc:  # dlms-cosem parsers raise ValueError, IndexError, ...
            self.conn.clear_buffer()
            raise ConnectionError(f"{what}: malformed answer {frame.apdu.hex()}: {exc!r}") from None

    async def get(self, class_id: dc_enums.CosemInterface, obis: Obis, attribute: int) -> Data:
        what = f"GET {obis} attribute {attribute}"
        request = dc_xdlms.GetRequestNormal(
            dc_cosem.CosemAttribute(class_id, dc_cosem.Obis(*obis.to_bytes()), attribute)
        )
        answer = await self.exchange(request, what)
        if isinstance(answer, dc_xdlms.GetResponseNormalWithError):
            error = answer.error
            name = str(getattr(error, "name", error)).replace("_", "-").lower()
            raise _ObjectError(f"{what}: {name} ({int(error)})")
        if not isinstance(answer, dc_xdlms.GetResponseNormal):
            raise ConnectionError(f"{what}: answer is {type(answer).__name__}")
        try:
            item, end = decode_data(answer.data)
        except DlmsDecodeError as exc:
            raise _ObjectError(f"{what}: {exc}") from None
        if end != len(answer.data):
            raise _ObjectError(f"{what}: {len(answer.data) - end} bytes after the value")
        return item

    async def close(self) -> None:
        if self.writer is None:
            return
        if not self.broken:
            with contextlib.suppress(Exception):  # best effort: the meter may be gone
                await self.exchange(self.conn.get_rlrq(), "RLRQ")
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        self.writer = None


class AssociationRefused(ConnectionError):
    """The meter answered the AARQ with a rejection: retrying will not help."""


class DlmsTcpMeter:
    """One DLMS meter (one logical device) behind host:port."""

    def __init__(
        self,
        meter_id: str,
        host: str,
        port: int,
        objects: tuple[Obis, ...],
        *,
        client_address: int = 16,
        server_address: int = 1,
        timeout: float = 3.0,
        retries: int = 2,
        assume_deviation: int = 0,
    ) -> None:
        self.meter_id = meter_id
        self.host = host
        self.port = port
        self.objects = objects
        self.client_address = client_address
        self.server_address = server_address
        self.timeout = timeout
        self.retries = retries
        self.assume_deviation = assume_deviation  # for a clock without a deviation
        self.associations = 0
        self.failures = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port} (wPort {self.client_address}->{self.server_address})"

    async def read(self) -> DlmsOutcome:
        reasons: list[str] = []
        delay = BACKOFF_START
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            session = _Association(self)
            try:
                await session.open()
                self.associations += 1
                outcome = await self._read_objects(session)
            except MeterReadError:
                await session.close()
                self.failures += 1
                raise
            except AssociationRefused as exc:
                reasons.append(str(exc))
                await session.close()
                break
            except (TimeoutError, OSError) as exc:
                if str(exc) not in reasons:
                    reasons.append(str(exc))
                await session.close()
                continue
            await session.close()
            return outcome
        self.failures += 1
        attempts = attempt + 1
        raise MeterReadError(
            f"meter {self.meter_id}: dlms at {self.address}: {'; then '.join(reasons)} "
            f"({attempts} attempt{'s' if attempts > 1 else ''})"
        )

    async def _read_objects(self, session: _Association) -> DlmsOutcome:
        errors: list[str] = []
        meter_ms: int | None = None
        flags = Quality.NONE
        try:
            stamp = CosemDateTime.from_data(await session.get(CLASS_CLOCK, _CLOCK_OBIS, 2))
            meter_ms = stamp.to_unix_ms(self.assume_deviation)
            flags = stamp.quality
        except (_ObjectError, DlmsDecodeError) as exc:
            errors.append(f"meter {self.meter_id}: clock unreadable, gateway time used: {exc}")
        values: list[Value] = []
        scalers: dict[Obis, ScalerUnit] = {}  # cached for this association
        for obis in self.objects:
            try:
                if obis not in scalers:
                    raw = await session.get(CLASS_REGISTER, obis, 3)
                    scalers[obis] = ScalerUnit.from_data(raw)
                value = await session.get(CLASS_REGISTER, obis, 2)
                amount, unit = exact_value(obis, value, scalers[obis])
            except (_ObjectError, DlmsDecodeError) as exc:
                errors.append(f"meter {self.meter_id}: {obis}: {exc}")
                continue
            values.append(Value(obis, amount, unit))
        if not values:
            raise _NoValues("; ".join(errors) or f"meter {self.meter_id}: nothing to read")
        return DlmsOutcome(tuple(values), errors, meter_ms, flags)


class _NoValues(MeterReadError):
    """The meter answered, but with none of the configured objects."""


_CLOCK_OBIS = Obis(0, 0, 1, 0, 0, 255)
