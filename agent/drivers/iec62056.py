"""IEC 62056-21 mode C readout on a serial line (optical probe or a shared RS-485/CL0 line).

Each read is one readout (``protocols.iec62056_21.ModeCReadout``): the sign-on
``/?[address]!`` at 300 baud 7E1, the meter's identification, the acknowledgement with the
option select (data readout at the meter's highest rate, at most ``max_baud``), which must
leave the port at 300 baud before it is switched (``drain``), then the data message at the
new rate with its BCC checked. The data sets become values with OBIS codes and units
(``iec62056_21.readings``); a data set that looks like a quantity but cannot be taken makes
the capture partial. The port is put back to 300 baud after each readout: the meter falls
back to 300 baud by itself at the end of the message.

Several meters on one line are told apart by their device address; their readouts are
serialised by the line's lock. The time-out is per message (identification, data message)
and per silence inside the data message. A meter that does not identify itself at all is
not asked again in the same cycle; a damaged message is retried (``retries``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from agent.config import SerialSettings
from agent.serial_port import SerialPort
from protocols import iec62056_21 as iec
from protocols.errors import DecodeError
from protocols.record import Value

from .modbus_tcp import MeterReadError

__all__ = ["Iec62056Meter", "IecLine", "IecOutcome", "IecReadError", "readout"]

log = logging.getLogger("agent.iec62056")

MAX_READOUT_S = 120.0  # a whole data message, whatever its size (300 baud: ~30 bytes/s)


class IecReadError(MeterReadError):
    """A readout that failed; ``kind``: ``silent`` (no identification), ``switch`` (no data
    after the baud switch), ``data`` (data message stopped), ``bad`` (a damaged message),
    ``port``."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class IecOutcome:
    values: tuple[Value, ...]
    errors: list[str] = field(default_factory=list)
    identification: iec.Identification | None = None
    datasets: tuple[iec.DataSet, ...] = ()
    baud: int = 300

    @property
    def partial(self) -> bool:
        return bool(self.errors)


class IecLine:
    """One serial port with one or more IEC 62056-21 meters."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.port = SerialPort(device, 300, 7, "E", 1)
        self.lock = asyncio.Lock()
        self.readouts = 0
        self.failures = 0
        self.busy_s = 0.0  # real time the line was held by readouts
        self.started = time.monotonic()

    @property
    def name(self) -> str:
        return self.device

    def utilisation(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.busy_s / elapsed if elapsed > 0 else 0.0

    async def close(self) -> None:
        await self.port.close()


async def readout(
    port: SerialPort, address: str, max_baud: int, timeout: float
) -> tuple[iec.Identification, iec.DataBlock, int]:
    """One mode C readout on an open port; raises IecReadError (kind) or DecodeError."""
    port.configure(baud=300, bytesize=7, parity="E", stopbits=1)
    port.discard_input()
    machine = iec.ModeCReadout(address, max_baud)
    await port.write(machine.start())
    loop = asyncio.get_running_loop()
    phase = "silent"
    baud = 300
    ident: iec.Identification | None = None
    deadline = loop.time() + MAX_READOUT_S
    try:
        while True:
            event = machine.next_event()
            if isinstance(event, iec.Identified):
                ident = event.identification
                if event.reply:
                    await port.write(event.reply)
                    await port.drain()  # the option select leaves at 300 baud, then switch
                port.configure(baud=event.baud)
                baud = event.baud
                phase = "switch"
                continue
            if isinstance(event, iec.DataReceived):
                assert ident is not None
                return ident, event.block, baud
            if loop.time() > deadline:
                raise IecReadError(f"data message longer than {MAX_READOUT_S:g}s", "data")
            try:
                chunk = await port.read(timeout)
            except TimeoutError:
                raise IecReadError(_TIMEOUT_TEXT[phase].format(t=timeout, b=baud), phase) from None
            if phase == "switch":
                phase = "data"
            machine.receive_data(chunk)
    finally:
        port.configure(baud=300)


_TIMEOUT_TEXT = {
    "silent": "no identification within {t:g}s of the sign-on (300 baud 7E1)",
    "switch": "identified, but no data message within {t:g}s after the switch to {b} baud",
    "data": "data message stopped: nothing for {t:g}s at {b} baud",
}


class Iec62056Meter:
    """One meter on an IEC 62056-21 line, read by a mode C readout each cycle."""

    def __init__(
        self,
        meter_id: str,
        settings: SerialSettings,
        line: IecLine,
        timeout: float,
        retries: int,
    ) -> None:
        self.meter_id = meter_id
        self.settings = settings
        self.line = line
        self.timeout = timeout
        self.retries = retries
        self.identification: iec.Identification | None = None

    def describe(self) -> str:
        address = f"address {self.settings.address!r}" if self.settings.address else "no address"
        limit = self.settings.max_baud
        return f"iec62056 mode C on {self.line.device}, {address}, max {limit} baud"

    async def read(self) -> IecOutcome:
        reasons: list[str] = []
        kind = "bad"
        for _attempt in range(self.retries + 1):
            started = time.monotonic()
            async with self.line.lock:
                try:
                    if not self.line.port.is_open:
                        await self.line.port.open()
                    ident, block, baud = await readout(
                        self.line.port, self.settings.address, self.settings.max_baud, self.timeout
                    )
                except IecReadError as exc:
                    kind, text = exc.kind, str(exc)
                except DecodeError as exc:
                    kind, text = "bad", str(exc)
                except ConnectionError as exc:
                    kind, text = "port", str(exc)
                    await self.line.port.close()
                else:
                    self.line.readouts += 1
                    self.identification = ident
                    return self._outcome(ident, block, baud)
                finally:
                    self.line.busy_s += time.monotonic() - started
            if text not in reasons:
                reasons.append(text)
            if kind in ("silent", "port"):
                break
        self.line.failures += 1
        attempts = len(reasons) if kind in ("silent", "port") else self.retries + 1
        raise IecReadError(
            f"meter {self.meter_id}: {self.describe()}: {'; then '.join(reasons)} "
            f"({attempts} attempt{'s' if attempts > 1 else ''})",
            kind,
        )

    def _outcome(self, ident: iec.Identification, block: iec.DataBlock, baud: int) -> IecOutcome:
        taken = iec.readings(block.datasets)
        values = tuple(Value(r.obis, r.value, r.unit) for r in taken.values)
        errors = [f"meter {self.meter_id}: {p}" for p in taken.problems]
        if not values:
            raise IecReadError(
                f"meter {self.meter_id}: {self.describe()}: the data message "
                f"({len(block.datasets)} data sets) has no quantity with a unit"
                + (f" ({'; '.join(taken.problems)})" if taken.problems else ""),
                "bad",
            )
        return IecOutcome(values, errors, ident, tuple(block.datasets), baud)
