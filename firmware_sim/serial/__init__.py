"""Simulated meters on serial lines (pty pairs): a Modbus RTU bus (``rtu``), IEC 62056-21
mode C meters (``iec62056``) and a DSMR P1 port (``dsmr``); their line faults (``faults``)
and the tariff split shared by the last two (``tariffs``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..model import MeterModel
from .dsmr import VERSIONS, P1Port
from .faults import LineFault, LineFaultError, parse_line_fault
from .iec62056 import IecLine, IecMeter
from .rtu import RtuBus, RtuUnit

__all__ = [
    "VERSIONS",
    "IecLine",
    "IecMeter",
    "LineFault",
    "LineFaultError",
    "P1Port",
    "RtuBus",
    "RtuUnit",
    "SerialSim",
    "parse_line_fault",
]


class SerialSim(Protocol):
    """What ``sim`` needs of a serial simulator."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def ready_line(self) -> str: ...
    def models(self) -> list[MeterModel]: ...
    def targets(self) -> dict[str, Callable[[list[str]], str]]: ...
