"""A simulated DLMS/COSEM meter over the TCP wrapper (IEC 62056-47): the first slice of
issue 4.

One server listens on one port and is one physical meter with one logical device (the
management logical device, server wPort 1 by default). It speaks:

* association: AARQ from the public client (wPort 16) with the logical-name context and no
  security (no mechanism or mechanism 0, "lowest level"); anything else gets an AARE
  rejected with a diagnostic (context not supported, mechanism not recognised,
  authentication required for another client address, or a ConfirmedServiceError for an
  unusable xDLMS InitiateRequest); the negotiated conformance is ``get`` only;
* GET-request-normal for the objects below (attribute 1, the logical name, for all);
  GET-request-next and -with-list, SET and ACTION answer an exception-response;
* RLRQ -> RLRE (the TCP connection stays open; the client closes it).

Objects, all from the same :class:`~firmware_sim.model.MeterModel` as the Modbus simulator:

========================  =====  ============================  ===========================
OBIS                      class  attribute 2                   attribute 3 (scaler_unit)
========================  =====  ============================  ===========================
0.0.1.0.0.255 Clock       8      date-time (octet-string 12)   time_zone (attr 3), status 4
1.0.1.8.0.255 / 2.8.0     3      double-long-unsigned          0, Wh
1.0.3.8.0.255 / 4.8.0     3      double-long-unsigned          0, varh
1.0.16.7.0.255 (+21/41/61) 3     double-long                   -1, W
1.0.32.7.0.255 (+52/72)   3      long-unsigned                 -1, V
1.0.31.7.0.255 (+51/71)   3      long-unsigned                 -2, A
1.0.14.7.0.255            3      long-unsigned                 -2, Hz
0.0.96.1.0.255 Data       1      octet-string (serial number)
========================  =====  ============================  ===========================

Energy registers are truncated (a meter's counters never run ahead of the energy), the
rest rounded half-even. The Clock shows the model's virtual time plus ``clock_offset_ms``
(a meter whose clock is off), as local time at ``deviation`` minutes (UTC = local +
deviation). Unknown objects answer data-access-result object-undefined (4), a known
logical name under another class object-class-inconsistent (9), a missing attribute
object-unavailable (11), a GET with selective access other-reason (250).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from protocols.clock import ClockSetting
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
from protocols.dlms.axdr import Data, Tag, encode_data
from protocols.dlms.cosem import CosemDateTime, ScalerUnit
from protocols.dlms.wrapper import WrapperReader, encode_frame
from protocols.obis import Obis, quantity_for
from protocols.units import convert, unit_by_code

from .modbus_server import ListenError, check_bindable
from .model import MeterModel

__all__ = ["DLMS_OBJECTS", "DlmsMeterState", "DlmsSimServer", "RegisterObject"]

log = logging.getLogger(__name__)

PUBLIC_CLIENT = 16
MANAGEMENT_LOGICAL_DEVICE = 1
SERVER_MAX_RECEIVE_PDU = 1024
CLASS_DATA = 1
CLASS_REGISTER = 3
CLASS_CLOCK = 8
OBIS_CLOCK = Obis(0, 0, 1, 0, 0, 255)
OBIS_SERIAL = Obis(0, 0, 96, 1, 0, 255)
IDLE_TIMEOUT_S = 120.0  # inactivity time-out of the TCP-UDP setup object


@dataclass(frozen=True, slots=True)
class RegisterObject:
    obis: Obis
    tag: Tag  # A-XDR type of the value
    scaler: int
    unit_code: int  # DLMS unit enumeration


def _reg(code: str, tag: Tag, scaler: int, unit_code: int) -> RegisterObject:
    return RegisterObject(Obis.parse(code), tag, scaler, unit_code)


#: The registers the simulated meter has, by OBIS code.
DLMS_OBJECTS: dict[Obis, RegisterObject] = {
    r.obis: r
    for r in (
        _reg("1-0:1.8.0", Tag.DOUBLE_LONG_UNSIGNED, 0, 30),
        _reg("1-0:2.8.0", Tag.DOUBLE_LONG_UNSIGNED, 0, 30),
        _reg("1-0:3.8.0", Tag.DOUBLE_LONG_UNSIGNED, 0, 32),
        _reg("1-0:4.8.0", Tag.DOUBLE_LONG_UNSIGNED, 0, 32),
        _reg("1-0:16.7.0", Tag.DOUBLE_LONG, -1, 27),
        _reg("1-0:21.7.0", Tag.DOUBLE_LONG, -1, 27),
        _reg("1-0:41.7.0", Tag.DOUBLE_LONG, -1, 27),
        _reg("1-0:61.7.0", Tag.DOUBLE_LONG, -1, 27),
        _reg("1-0:32.7.0", Tag.LONG_UNSIGNED, -1, 35),
        _reg("1-0:52.7.0", Tag.LONG_UNSIGNED, -1, 35),
        _reg("1-0:72.7.0", Tag.LONG_UNSIGNED, -1, 35),
        _reg("1-0:31.7.0", Tag.LONG_UNSIGNED, -2, 33),
        _reg("1-0:51.7.0", Tag.LONG_UNSIGNED, -2, 33),
        _reg("1-0:71.7.0", Tag.LONG_UNSIGNED, -2, 33),
        _reg("1-0:14.7.0", Tag.LONG_UNSIGNED, -2, 44),
    )
}


def register_integer(spec: RegisterObject, value: Decimal) -> int:
    """The integer a register shows for ``value`` (in its quantity's canonical unit)."""
    quantity = quantity_for(spec.obis)
    base = unit_by_code(spec.unit_code).symbol
    if quantity is not None and quantity.unit != base:
        value = convert(value, quantity.unit, base)
    cumulative = quantity is not None and quantity.cumulative
    rounding = ROUND_FLOOR if cumulative else ROUND_HALF_EVEN
    return int(value.scaleb(-spec.scaler).to_integral_value(rounding=rounding))


@dataclass(slots=True)
class DlmsMeterState:
    """One simulated DLMS meter: its model, clock and counters."""

    model: MeterModel
    clock: ClockSetting
    clock_offset_ms: int = 0  # the meter's clock minus the true (virtual) time
    deviation: int = 0  # minutes, UTC = local + deviation
    clock_status: int = 0
    wall_ns: Callable[[], int] = time.time_ns
    associations: int = 0
    rejected: int = 0
    gets: int = 0
    errors: int = 0

    def virtual_ns(self) -> int:
        return self.clock.virtual_ns(self.wall_ns())

    def meter_clock_ms(self, virtual_ns: int) -> int:
        return virtual_ns // 1_000_000 + self.clock_offset_ms

    def get(self, class_id: int, obis: Obis, attribute: int) -> Data | AccessResult:
        """The value of one attribute, or why there is none."""
        if attribute == 1 and (obis in DLMS_OBJECTS or obis in (OBIS_CLOCK, OBIS_SERIAL)):
            expected = (
                CLASS_CLOCK if obis == OBIS_CLOCK else CLASS_DATA if obis == OBIS_SERIAL else 3
            )
            if class_id != expected:
                return AccessResult.OBJECT_CLASS_INCONSISTENT
            return Data.octet_string(obis.to_bytes())
        now = self.virtual_ns()
        if obis == OBIS_CLOCK:
            if class_id != CLASS_CLOCK:
                return AccessResult.OBJECT_CLASS_INCONSISTENT
            if attribute == 2:
                stamp = CosemDateTime.from_unix_ms(
                    self.meter_clock_ms(now), self.deviation, self.clock_status
                )
                return Data.octet_string(stamp.to_bytes())
            if attribute == 3:
                return Data(Tag.LONG, self.deviation)
            if attribute == 4:
                return Data(Tag.UNSIGNED, self.clock_status)
            return AccessResult.OBJECT_UNAVAILABLE
        if obis == OBIS_SERIAL:
            if class_id != CLASS_DATA:
                return AccessResult.OBJECT_CLASS_INCONSISTENT
            if attribute == 2:
                return Data.octet_string(self.model.meter_id.encode("ascii"))
            return AccessResult.OBJECT_UNAVAILABLE
        spec = DLMS_OBJECTS.get(obis)
        if spec is None:
            return AccessResult.OBJECT_UNDEFINED
        if class_id != CLASS_REGISTER:
            return AccessResult.OBJECT_CLASS_INCONSISTENT
        if attribute == 2:
            value = self.model.values_at(now).get(obis, Decimal(0))
            return Data(spec.tag, register_integer(spec, value))
        if attribute == 3:
            return ScalerUnit(spec.scaler, spec.unit_code).to_data()
        return AccessResult.OBJECT_UNAVAILABLE


class _Session:
    """One TCP connection: its association state and the frames it answers."""

    def __init__(self, meter: DlmsMeterState, server_address: int) -> None:
        self.meter = meter
        self.server_address = server_address
        self.associated_client: int | None = None

    def answer(self, source: int, destination: int, apdu: bytes) -> bytes | None:
        """The APDU answering ``apdu`` from client wPort ``source``; None: no answer (a frame
        for another logical device is discarded, as IEC 62056-47 says)."""
        if destination != self.server_address:
            return None
        tag = apdu[0]
        try:
            if tag == 0x60:
                return self._associate(source, apdu)
            if tag == 0x62:
                self.associated_client = None
                return encode_rlre(0)
            if tag == 0xC0:
                if self.associated_client != source:
                    self.meter.errors += 1
                    return encode_exception(1, 1)  # service-not-allowed, not possible
                return self._get(apdu)
        except DlmsDecodeError as exc:
            self.meter.errors += 1
            log.info("dlms %s: bad APDU from client %d: %s", self.meter.model.meter_id, source, exc)
            return encode_exception(1 if tag in (0x60, 0xC0) else 2, 2)
        self.meter.errors += 1
        return encode_exception(2, 2)  # service-unknown, service-not-supported

    def _associate(self, source: int, apdu: bytes) -> bytes:
        aarq = parse_aarq(apdu)
        diagnostic = AcseDiagnostic.NULL
        initiate_error = False
        if aarq.context != CONTEXT_LN_NO_CIPHERING:
            diagnostic = AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED
        elif aarq.mechanism not in (None, MECHANISM_NONE):
            diagnostic = AcseDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED
        elif source != PUBLIC_CLIENT:
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
        self.associated_client = source
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
        if request.access_selection is not None:
            result: Data | AccessResult = AccessResult.OTHER_REASON
        else:
            result = self.meter.get(request.class_id, request.obis, request.attribute)
        if isinstance(result, AccessResult):
            self.meter.errors += 1
            return encode_get_response(request.invoke, error=result)
        return encode_get_response(request.invoke, data=encode_data(result))


class DlmsSimServer:
    """An asyncio TCP server: one simulated DLMS meter behind the wrapper."""

    def __init__(
        self,
        meter: DlmsMeterState,
        host: str = "127.0.0.1",
        port: int = 0,
        server_address: int = MANAGEMENT_LOGICAL_DEVICE,
    ) -> None:
        self.meter = meter
        self.host = host
        self._port = port
        self.server_address = server_address
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        check_bindable(self.host, self._port)
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self._port)
        except OSError as exc:
            raise ListenError(
                exc.errno, f"cannot listen on {self.host}:{self._port}: {exc.strerror}"
            ) from None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()  # the session's read ends (EOF), its task returns
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> DlmsSimServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def ready_line(self) -> str:
        return (
            f"READY dlms {self.host}:{self.port} transport=wrapper auth=none "
            f"meters={self.meter.model.meter_id}"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        session = _Session(self.meter, self.server_address)
        frames = WrapperReader(max_apdu=SERVER_MAX_RECEIVE_PDU)
        try:
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT_S):
                    chunk = await reader.read(4096)
                if not chunk:
                    return
                try:
                    received = frames.feed(chunk)
                except DlmsDecodeError as exc:
                    self.meter.errors += 1
                    log.info("dlms %s: closing: %s", self.meter.model.meter_id, exc)
                    return
                for frame in received:
                    reply = session.answer(frame.source, frame.destination, frame.apdu)
                    if reply is not None:
                        writer.write(encode_frame(frame.destination, frame.source, reply))
                await writer.drain()
        except (TimeoutError, OSError):
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
