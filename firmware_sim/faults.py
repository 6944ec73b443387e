"""Misbehaving meters: a raw Modbus TCP front that corrupts the answers of chosen units.

pymodbus' server only sends well-formed frames, so faulty units are served through a small
asyncio TCP server of our own that listens on the public port and sits in front of the
pymodbus server (which then listens on a private port). For each request it reads the MBAP
frame, looks at the unit id, and either forwards the frame to pymodbus and the answer back
unchanged (a good unit) or misbehaves as the unit's fault says:

=================  ==========================================================================
``garbage``        cycles through: random bytes; a header with protocol id 0x4D42; the right
                   header with a byte count that does not match; a well-formed answer with a
                   stale transaction id (the previous one)
``slow:S[,S...]``  answers correctly after S seconds (the delays are used in turn, so
                   ``slow:0.8,0.2`` is late, then in time, then late ...)
``wrong-unit[:U]`` answers with unit U's registers and unit id U in the header (default: the
                   next unit of the server, in id order)
``silent``         never answers (the connection stays open)
``mid-frame``      sends the first half of the answer, then alternately closes the
                   connection or stops answering on it
``exception:C``    answers with Modbus exception code C (1..255)
=================  ==========================================================================

Faults are fixed per unit for the life of the server. The sequence of faulty answers is
reproducible: the random bytes come from ``random.Random(seed, unit)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = ["KINDS", "Fault", "FaultFront", "FaultSpecError", "parse_fault", "parse_unit_fault"]

log = logging.getLogger(__name__)

KINDS = ("garbage", "slow", "wrong-unit", "silent", "mid-frame", "exception")
_ARG_REQUIRED = {"slow", "exception"}
_NO_ARG = {"garbage", "silent", "mid-frame"}


class FaultSpecError(ValueError):
    """A fault setting that cannot be understood."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    delays: tuple[Decimal, ...] = ()  # slow
    other_unit: int | None = None  # wrong-unit
    code: int = 0  # exception

    def __str__(self) -> str:
        if self.kind == "slow":
            return "slow:" + ",".join(str(d) for d in self.delays)
        if self.kind == "wrong-unit" and self.other_unit is not None:
            return f"wrong-unit:{self.other_unit}"
        if self.kind == "exception":
            return f"exception:{self.code}"
        return self.kind


def parse_fault(text: str) -> Fault:
    """``KIND[:ARG]``: ``garbage``, ``slow:0.8,0.2``, ``wrong-unit[:2]``, ``silent``,
    ``mid-frame``, ``exception:4``."""
    kind, _, arg = text.strip().partition(":")
    if kind not in KINDS:
        raise FaultSpecError(f"unknown fault {kind!r} (known: {', '.join(KINDS)})")
    if kind in _ARG_REQUIRED and not arg:
        raise FaultSpecError(f"fault {kind!r} needs an argument ({kind}:...)")
    if kind in _NO_ARG and arg:
        raise FaultSpecError(f"fault {kind!r} takes no argument, got {arg!r}")
    if kind == "slow":
        try:
            delays = tuple(Decimal(part) for part in arg.split(","))
        except InvalidOperation:
            raise FaultSpecError(f"slow:{arg}: expected seconds, e.g. slow:0.8,0.2") from None
        if any(not d.is_finite() or d < 0 or d > 3600 for d in delays):
            raise FaultSpecError(f"slow:{arg}: delays must be 0..3600 seconds")
        return Fault(kind, delays=delays)
    if kind == "wrong-unit":
        other = _int(arg, f"wrong-unit:{arg}", 1, 255) if arg else None
        return Fault(kind, other_unit=other)
    if kind == "exception":
        return Fault(kind, code=_int(arg, f"exception:{arg}", 1, 255))
    return Fault(kind)


def parse_unit_fault(text: str) -> tuple[int, Fault]:
    """``UNIT:KIND[:ARG]`` as given to ``sim modbus --fault``."""
    unit_text, _, rest = text.partition(":")
    if not rest:
        raise FaultSpecError(f"--fault {text!r}: expected UNIT:KIND[:ARG], e.g. 3:garbage")
    unit = _int(unit_text, f"--fault {text!r}: unit", 1, 247)
    try:
        return unit, parse_fault(rest)
    except FaultSpecError as exc:
        raise FaultSpecError(f"--fault {text!r}: {exc}") from None


def _int(text: str, where: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FaultSpecError(f"{where}: expected an integer, got {text!r}") from None
    if not low <= value <= high:
        raise FaultSpecError(f"{where}: must be {low}..{high}, got {value}")
    return value


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set
class _Link:
    """One client connection and its private connection to the pymodbus server."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    stalled: bool = False  # mid-frame: stopped answering on this connection


class FaultFront:
    """Listens on ``host:port``; forwards good units to ``backend_port``, corrupts the rest."""

    def __init__(
        self,
        host: str,
        port: int,
        backend_port: int,
        faults: Mapping[int, Fault],
        units: Sequence[int],
        seed: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.backend_port = backend_port
        self.faults = dict(faults)
        self.units = sorted(units)
        self.requests: dict[int, int] = {}  # unit -> requests seen (drives the cycles)
        self._rng = {unit: random.Random(f"{seed}:{unit}") for unit in self.faults}
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            self._close(link)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    def _close(self, link: _Link) -> None:
        link.writer.close()
        if link.backend is not None:
            link.backend[1].close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(reader, writer)
        self._links.add(link)
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                if not 2 <= length <= 254:
                    return  # not Modbus: drop the client
                body = await reader.readexactly(length - 1)
                if link.stalled:
                    continue
                count = self.requests.get(unit, 0)
                self.requests[unit] = count + 1
                fault = self.faults.get(unit)
                if fault is None:
                    writer.write(await self._forward(link, head + body))
                elif not await self._misbehave(link, fault, count, tid, unit, head + body):
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._links.discard(link)
            self._close(link)

    async def _forward(self, link: _Link, frame: bytes) -> bytes:
        if link.backend is None:
            link.backend = await asyncio.open_connection("127.0.0.1", self.backend_port)
        reader, writer = link.backend
        writer.write(frame)
        await writer.drain()
        head = await reader.readexactly(7)
        length = struct.unpack(">H", head[4:6])[0]
        return head + await reader.readexactly(length - 1)

    async def _misbehave(
        self, link: _Link, fault: Fault, count: int, tid: int, unit: int, frame: bytes
    ) -> bool:
        """Answer (or not) as ``fault`` says; False closes the client's connection."""
        writer = link.writer
        if fault.kind == "silent":
            return True
        if fault.kind == "exception":
            writer.write(struct.pack(">HHHBBB", tid, 0, 3, unit, frame[7] | 0x80, fault.code))
            return True
        if fault.kind == "slow":
            await asyncio.sleep(float(fault.delays[count % len(fault.delays)]))
            writer.write(await self._forward(link, frame))
            return True
        if fault.kind == "wrong-unit":
            other = fault.other_unit or self._next_unit(unit)
            writer.write(await self._forward(link, frame[:6] + bytes([other]) + frame[7:]))
            return True
        answer = await self._forward(link, frame)
        if fault.kind == "mid-frame":
            writer.write(answer[: len(answer) // 2])
            if count % 2 == 0:
                await writer.drain()
                return False  # close the connection half-way through the answer
            link.stalled = True  # stop answering on this connection
            return True
        # garbage
        rng = self._rng[unit]
        variant = count % 4
        if variant == 0:
            writer.write(rng.randbytes(rng.randint(1, 40)))
        elif variant == 1:
            writer.write(answer[:2] + b"\x4d\x42" + answer[4:])
        elif variant == 2:
            body = answer[9:]
            short = body[: max(0, len(body) - 2)]
            writer.write(
                answer[:4] + struct.pack(">HBBB", 3 + len(short), unit, frame[7], len(body))
            )
            writer.write(short)
        else:
            writer.write(struct.pack(">H", (tid - 1) & 0xFFFF) + answer[2:])
        return True

    def _next_unit(self, unit: int) -> int:
        others = [u for u in self.units if u != unit]
        if not others:
            return unit % 247 + 1
        later = [u for u in others if u > unit]
        return later[0] if later else others[0]
