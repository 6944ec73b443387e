"""Modbus TCP: one connection per host:port, transactions serialised, values via profiles.

Like a real Modbus TCP gateway in front of an RS-485 bus, one TCP connection carries the
requests of every unit behind it, one at a time (``asyncio.Lock``). The framing is our own
(``protocols/modbus/mbap.py``): every answer is checked against its request (transaction id,
unit id, function, byte count) before a value is taken from it, and the connection is dropped
after anything that leaves the byte stream in doubt. Retries with exponential backoff are
per block read, so that a failure is attributed to one meter and one request.

A meter that gives no usable answer to a block (after its retries) is not asked for its
other blocks in that cycle: a silent meter costs its bus at most ``timeout x (retries + 1)``
plus the backoff per cycle, whatever the size of its plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar

from protocols.modbus import (
    FUNCTION_INPUT,
    ModbusValueError,
    Profile,
    ReadRequest,
    mbap,
    split_response,
)
from protocols.obis import Obis
from protocols.record import Value

__all__ = ["MeterReadError", "ModbusTcpConnection", "ModbusTcpMeter", "ReadOutcome"]

log = logging.getLogger("agent.modbus")

BACKOFF_START = 0.05  # seconds before the first retry; doubles each time
BACKOFF_MAX = 2.0


class MeterReadError(Exception):
    """A poll that produced no value at all; the message names meter and request.

    ``answered``: the meter did answer (an exception response), so the connection is fine
    and its other blocks are still worth asking for."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


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
    """One TCP connection to host:port, shared by every meter (unit) behind it.

    Exactly one transaction is outstanding at a time. After anything that leaves the byte
    stream in doubt (a timeout, a half answer, a framing error, a reset) the connection is
    closed and the next request opens a new one: a late answer is never read as the answer
    to the following request, which may be for another meter.
    """

    def __init__(self, host: str, port: int, connect_timeout: float = 3.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tid = 0
        self.requests = 0
        self.failures = 0
        self.reconnects = 0

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def _ensure_connected(
        self, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None and self.connected:
            return self._reader, self._writer
        self._drop()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), min(timeout, self.connect_timeout)
            )
        except TimeoutError:
            raise ConnectionError(f"cannot connect to {self.name}: timed out") from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {self.name}: {exc.strerror or exc}") from None
        self._reader, self._writer = reader, writer
        self.reconnects += 1
        return reader, writer

    def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()

    def _next_tid(self) -> int:
        self._tid = self._tid % 0xFFFF + 1
        return self._tid

    async def read(self, request: ReadRequest, unit: int, timeout: float) -> list[int]:
        """One block read, serialised with the other units on this connection."""
        async with self.lock:
            self.requests += 1
            reader, writer = await self._ensure_connected(timeout)
            tid = self._next_tid()
            frame = mbap.read_request(tid, unit, request.function, request.address, request.count)
            received = bytearray()
            try:
                async with asyncio.timeout(timeout):
                    writer.write(frame)
                    await writer.drain()
                    await _read_into(reader, received, mbap.HEADER_SIZE)
                    header = mbap.parse_header(bytes(received))
                    await _read_into(reader, received, mbap.HEADER_SIZE + header.pdu_size)
                pdu = bytes(received[mbap.HEADER_SIZE :])
                return mbap.check_answer(header, pdu, tid, unit, request.function, request.count)
            except mbap.ExceptionAnswer as exc:
                raise ModbusExceptionResponse(exc.code) from None
            except TimeoutError:
                self._drop()
                if received:
                    raise TimeoutError(
                        f"answer stopped after {len(received)} bytes, none more within {timeout:g}s"
                    ) from None
                raise TimeoutError(f"no answer within {timeout:g}s") from None
            except asyncio.IncompleteReadError:
                self._drop()
                got = len(received)
                raise ConnectionError(
                    f"connection closed after {got} bytes of an answer"
                    if got
                    else "connection closed without an answer"
                ) from None
            except mbap.FrameError as exc:
                self._drop()
                raise mbap.FrameError(f"malformed answer: {exc}; reconnecting") from None
            except OSError as exc:
                self._drop()
                raise ConnectionError(f"connection error: {exc.strerror or exc}") from None

    async def close(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_into(reader: asyncio.StreamReader, into: bytearray, size: int) -> None:
    """Read until ``into`` holds ``size`` bytes (what arrived stays in ``into``, for messages)."""
    while len(into) < size:
        chunk = await reader.read(size - len(into))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(into), size)
        into += chunk


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
        reasons: list[str] = []  # distinct, in order: what each attempt got
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            try:
                return await self.connection.read(request, self.unit, self.timeout)
            except (ModbusExceptionResponse, TimeoutError, mbap.FrameError, OSError) as exc:
                last = exc  # OSError includes ConnectionError
                if str(exc) not in reasons:
                    reasons.append(str(exc))
                if isinstance(exc, ModbusExceptionResponse) and exc.code in (1, 2, 3):
                    break  # the request itself is wrong: retrying cannot help
        self.connection.failures += 1
        attempts = attempt + 1
        raise MeterReadError(
            f"meter {self.meter_id}: {describe(request, self.unit)} at {self.connection.name}: "
            f"{'; then '.join(reasons)} ({attempts} attempt{'s' if attempts > 1 else ''})",
            answered=isinstance(last, ModbusExceptionResponse),
        )

    async def read(self) -> ReadOutcome:
        """Every planned block; a failed block or value makes the capture partial."""
        values: list[Value] = []
        errors: list[str] = []
        for index, request in enumerate(self.plan):
            try:
                registers = await self._read_block(request)
                sliced = split_response(request, registers)
            except MeterReadError as exc:
                errors.append(str(exc))
                if not exc.answered and index + 1 < len(self.plan):
                    # No usable answer: asking for the other blocks would cost the bus
                    # another timeout x attempts each, for nothing.
                    skipped = len(self.plan) - index - 1
                    errors.append(
                        f"meter {self.meter_id}: {skipped} other block(s) not read this cycle"
                    )
                    break
                continue
            except ModbusValueError as exc:
                errors.append(f"meter {self.meter_id}: {describe(request, self.unit)}: {exc}")
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
