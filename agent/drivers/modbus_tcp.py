"""Modbus TCP: one connection per host:port, transactions serialised, values via profiles.

Like a real Modbus TCP gateway in front of an RS-485 bus, one TCP connection carries the
requests of every unit behind it, one at a time (``asyncio.Lock``). pymodbus's own retries
and reconnect loop are switched off: this driver retries with exponential backoff and
reconnects itself, so that a timeout is attributed to one meter and one request.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from protocols.modbus import (
    FUNCTION_INPUT,
    ModbusValueError,
    Profile,
    ReadRequest,
    split_response,
)
from protocols.obis import Obis
from protocols.record import Value

__all__ = ["MeterReadError", "ModbusTcpConnection", "ModbusTcpMeter", "ReadOutcome"]

log = logging.getLogger("agent.modbus")

BACKOFF_START = 0.05  # seconds before the first retry; doubles each time
BACKOFF_MAX = 2.0


class MeterReadError(Exception):
    """A poll that produced no value at all; the message names meter and request."""


@dataclass(slots=True)
class ReadOutcome:
    values: tuple[Value, ...]
    errors: list[str] = field(default_factory=list)  # partial failures (request or value)

    @property
    def partial(self) -> bool:
        return bool(self.errors)


def describe(request: ReadRequest, unit: int) -> str:
    kind = "input" if request.function == FUNCTION_INPUT else "holding"
    return f"read {kind} 0x{request.address:04X}+{request.count} unit {unit}"


class ModbusTcpConnection:
    """One TCP connection to host:port, shared by every meter (unit) behind it."""

    def __init__(self, host: str, port: int, connect_timeout: float = 3.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None  # made in the running loop
        self.requests = 0
        self.failures = 0

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client(self) -> AsyncModbusTcpClient:
        if self._client is None:
            self._client = AsyncModbusTcpClient(
                self.host,
                port=self.port,
                timeout=self.connect_timeout,
                retries=0,
                reconnect_delay=0,
            )
        return self._client

    async def _ensure_connected(self, timeout: float) -> None:
        if self.client.connected:
            return
        try:
            ok = await asyncio.wait_for(self.client.connect(), timeout)
        except TimeoutError:
            ok = False
        if not ok:
            self.client.close()
            raise ConnectionError(f"cannot connect to {self.name}")

    async def read(self, request: ReadRequest, unit: int, timeout: float) -> list[int]:
        """One block read, serialised with the other units on this connection."""
        async with self.lock:
            self.requests += 1
            await self._ensure_connected(timeout)
            if request.function == FUNCTION_INPUT:
                call = self.client.read_input_registers
            else:
                call = self.client.read_holding_registers
            try:
                response = await asyncio.wait_for(
                    call(request.address, count=request.count, device_id=unit), timeout
                )
            except TimeoutError:
                # A late answer would be taken for the next request's: start afresh.
                self.client.close()
                raise
            except (ModbusException, OSError):
                self.client.close()
                raise
            if response.isError():
                code = getattr(response, "exception_code", 0)
                raise ModbusExceptionResponse(code)
            return list(response.registers)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()


class ModbusExceptionResponse(Exception):
    NAMES: ClassVar[dict[int, str]] = {
        1: "illegal function",
        2: "illegal data address",
        3: "illegal data value",
        4: "server device failure",
        6: "server device busy",
        10: "gateway path unavailable",
        11: "gateway target device failed to respond",
    }

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exception response {code} ({self.NAMES.get(code, 'unknown')})")


class ModbusTcpMeter:
    """One meter (unit) on a connection, read by the block plan of its profile."""

    def __init__(
        self,
        meter_id: str,
        unit: int,
        profile: Profile,
        connection: ModbusTcpConnection,
        timeout: float,
        retries: int,
    ) -> None:
        self.meter_id = meter_id
        self.unit = unit
        self.profile = profile
        self.connection = connection
        self.timeout = timeout
        self.retries = retries
        self.plan = profile.plan()
        self._specs = {spec.obis: spec for spec in profile.registers}

    def describe_plan(self) -> str:
        return ", ".join(describe(r, self.unit) for r in self.plan)

    async def _read_block(self, request: ReadRequest) -> list[int]:
        delay = BACKOFF_START
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            try:
                return await self.connection.read(request, self.unit, self.timeout)
            except ModbusExceptionResponse as exc:
                last = exc
                if exc.code in (1, 2, 3):  # the request itself is wrong: retrying cannot help
                    break
            except TimeoutError:
                last = TimeoutError(f"no answer within {self.timeout:g}s")
            except (ModbusException, OSError) as exc:
                last = exc
        self.connection.failures += 1
        attempts = attempt + 1
        raise MeterReadError(
            f"meter {self.meter_id}: {describe(request, self.unit)} at {self.connection.name}: "
            f"{last} ({attempts} attempt{'s' if attempts > 1 else ''})"
        )

    async def read(self) -> ReadOutcome:
        """Every planned block; a failed block or value makes the capture partial."""
        values: list[Value] = []
        errors: list[str] = []
        for request in self.plan:
            try:
                registers = await self._read_block(request)
                sliced = split_response(request, registers)
            except (MeterReadError, ModbusValueError) as exc:
                text = str(exc)
                if not text.startswith("meter "):
                    text = f"meter {self.meter_id}: {describe(request, self.unit)}: {text}"
                errors.append(text)
                continue
            for obis, regs in sliced.items():
                spec = self._specs[obis]  # type: ignore[index]
                try:
                    value: Decimal = spec.decode(regs)
                except ModbusValueError as exc:
                    errors.append(f"meter {self.meter_id}: {exc}")
                    continue
                values.append(Value(_obis(obis), value, spec.unit))
        if not values:
            raise MeterReadError("; ".join(errors) or f"meter {self.meter_id}: nothing to read")
        return ReadOutcome(tuple(values), errors)


def _obis(key: object) -> Obis:
    assert isinstance(key, Obis)
    return key
