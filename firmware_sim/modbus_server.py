"""A Modbus TCP server that serves simulated meters from a device profile (pymodbus 3.16).

One server listens on one port and answers several unit ids (Modbus "device ids"), each its
own meter with its own :class:`~firmware_sim.model.MeterModel`. Register values are computed
when a request arrives: the virtual time is the clock setting applied to the system clock,
the model is asked once per request (so a block read spanning several values is consistent),
and every value is encoded with ``protocols.modbus`` exactly as the profile says.

It uses pymodbus' ``SimDevice``/``SimData`` datastore (the one 3.16 points to; the
``ModbusDeviceContext``/``ModbusServerContext`` classes are deprecated there) with an
``action`` coroutine that fills the requested registers in before pymodbus answers.

Behaviour a client can see:

* function codes: the profile's read function (FC04 input or FC03 holding); both when the
  profile says ``both_functions = true`` (as the EM24 does); the other one answers exception
  01 (illegal function). Writes answer exception 02 (the registers are read-only).
* unmapped addresses: with ``unmapped = "zero"`` every address from 0 to the end of the last
  mapped register reads 0 when not mapped; with ``"illegal"`` they answer exception 02.
  Addresses past the last mapped register always answer exception 02.
* an unknown unit id answers exception 0B (gateway target device failed to respond), as a
  Modbus TCP gateway does.

With ``faults`` (unit -> :class:`~firmware_sim.faults.Fault`), pymodbus listens on a private
port and a :class:`~firmware_sim.faults.FaultFront` on the public one corrupts the answers of
those units (pymodbus cannot be made to send a malformed frame).

A port that cannot be bound raises :class:`ListenError` naming the address.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Mapping
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimDataType
from pymodbus.simulator import SimData, SimDevice

from protocols.clock import ClockSetting
from protocols.modbus import ModbusValueError, Profile, RegisterSpec
from protocols.obis import quantity_for
from protocols.units import convert

from .faults import Fault, FaultFront
from .model import MeterModel

__all__ = ["ListenError", "ModbusSimServer", "registers_for"]

log = logging.getLogger(__name__)


def _value_for(spec: RegisterSpec, values: Mapping, *, meter_id: str) -> list[int]:
    quantity = quantity_for(spec.obis)
    value = values.get(spec.obis, Decimal(0))
    if quantity is not None and quantity.unit != spec.unit:
        value = convert(value, quantity.unit, spec.unit)
    # A meter truncates its energy counters (they must never run ahead) and rounds the rest.
    rounding = ROUND_FLOOR if quantity is not None and quantity.cumulative else ROUND_HALF_EVEN
    return spec.encode(value, rounding=rounding)


def registers_for(
    profile: Profile, model: MeterModel, address: int, count: int, virtual_ns: int
) -> list[int]:
    """The ``count`` registers from ``address`` the meter shows at ``virtual_ns`` (unmapped
    addresses as 0). Pure: the server and the tests both use it."""
    values = model.values_at(virtual_ns)
    out = [0] * count
    stop = address + count
    for spec in profile.registers:
        if spec.address + spec.count <= address or spec.address >= stop:
            continue
        regs = _value_for(spec, values, meter_id=model.meter_id)
        for k, reg in enumerate(regs):
            position = spec.address + k - address
            if 0 <= position < count:
                out[position] = reg
    return out


class ListenError(OSError):
    """The server's address cannot be bound (in use, not ours, ...)."""


def check_bindable(host: str, port: int) -> None:
    """Raise :class:`ListenError` naming ``host:port`` if it cannot be bound right now (the
    same SO_REUSEADDR asyncio uses, so a port in TIME_WAIT is not reported as in use)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None


class ModbusSimServer:
    """Serve ``meters`` (unit id -> model) with ``profile`` on ``host:port`` (0: any free)."""

    def __init__(
        self,
        profile: Profile,
        meters: Mapping[int, MeterModel],
        clock: ClockSetting,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        now_ns: Callable[[], int] = time.time_ns,
        faults: Mapping[int, Fault] | None = None,
        seed: int = 0,
    ) -> None:
        if not meters:
            raise ValueError("a server needs at least one unit")
        for unit in meters:
            if not 1 <= unit <= 247:
                raise ValueError(f"unit id {unit} not in 1..247")
        self.profile = profile
        self.meters = dict(meters)
        self.clock = clock
        self.host = host
        self._port = port
        self._now_ns = now_ns
        self._server: ModbusTcpServer | None = None
        self.faults = dict(faults or {})
        for unit in self.faults:
            if unit not in self.meters:
                raise ValueError(f"fault for unit {unit}, which this server does not serve")
        self._seed = seed
        self._front: FaultFront | None = None
        functions = {spec.function for spec in profile.registers}
        self._functions = {3, 4} if profile.both_functions else functions
        self._end = max(spec.address + spec.count for spec in profile.registers)

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    def _simdata(self) -> list[SimData]:
        if self.profile.unmapped == "zero":
            return [
                SimData(0, count=self._end, values=0, datatype=SimDataType.REGISTERS, readonly=True)
            ]
        return [
            SimData(
                spec.address,
                count=spec.count,
                values=0,
                datatype=SimDataType.REGISTERS,
                readonly=True,
            )
            for spec in sorted(self.profile.registers, key=lambda s: s.address)
        ]

    def _device(self, unit: int, model: MeterModel) -> SimDevice:
        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if set_values is not None:
                return ExcCodes.ILLEGAL_ADDRESS
            if function_code not in self._functions:
                return ExcCodes.ILLEGAL_FUNCTION
            virtual_ns = self.clock.virtual_ns(self._now_ns())
            try:
                block = registers_for(self.profile, model, address, count, virtual_ns)
            except ModbusValueError as exc:
                log.error("unit %d (%s): %s", unit, model.meter_id, exc)
                return ExcCodes.DEVICE_FAILURE
            offset = address - start_address
            registers[offset : offset + count] = block
            return None

        return SimDevice(unit, simdata=self._simdata(), action=action)

    def _unknown_device(self) -> SimDevice:
        async def action(*_args: object) -> ExcCodes | None:
            return ExcCodes.GATEWAY_NO_RESPONSE

        # Covers the whole address space so that every read reaches the action.
        everything = SimData(0, count=0x10000, values=0, datatype=SimDataType.REGISTERS)
        return SimDevice(0, simdata=[everything], action=action)

    async def start(self) -> None:
        """Listen; returns once the port accepts connections."""
        if self._server is not None:
            raise RuntimeError("server already started")
        check_bindable(self.host, self._port)
        devices = [self._device(unit, model) for unit, model in sorted(self.meters.items())]
        devices.append(self._unknown_device())
        # With faults, pymodbus serves a private port behind the fault front.
        address = ("127.0.0.1", 0) if self.faults else (self.host, self._port)
        server = ModbusTcpServer(devices, address=address)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus: "Could not start listen"
            raise ListenError(
                errno.EADDRINUSE, f"cannot listen on {address[0]}:{address[1]}: {exc}"
            ) from None
        self._server = server
        sockets = getattr(server.transport, "sockets", None)
        bound = sockets[0].getsockname()[1] if sockets else self._port
        if not self.faults:
            self._port = bound
            return
        front = FaultFront(self.host, self._port, bound, self.faults, list(self.meters), self._seed)
        try:
            await front.start()
        except OSError as exc:
            await self.stop()
            raise ListenError(
                exc.errno, f"cannot listen on {self.host}:{self._port}: {exc.strerror}"
            ) from None
        self._front = front
        self._port = front.port

    async def stop(self) -> None:
        """Stop listening and close connections; safe to call twice."""
        front, self._front = self._front, None
        if front is not None:
            await front.stop()
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def __aenter__(self) -> ModbusSimServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def ready_line(self) -> str:
        units = ",".join(str(u) for u in sorted(self.meters))
        meters = ",".join(self.meters[u].meter_id for u in sorted(self.meters))
        line = (
            f"READY modbus {self.host}:{self.port} profile={self.profile.name} "
            f"units={units} meters={meters}"
        )
        if self.faults:
            line += " faults=" + ",".join(f"{u}:{f}" for u, f in sorted(self.faults.items()))
        return line
