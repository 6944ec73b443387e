"""Request planning: which block reads fetch a set of register points.

A meter answers one read of many neighbouring registers about as fast as one read of two, so
points of the same function are merged into blocks of at most ``max_count`` registers (125 is
the Modbus limit for FC03/FC04; some meters accept fewer), bridging holes of up to
``max_gap`` registers. A hole that contains an address the profile marks as unreadable is
never bridged (some meters answer a whole block with an exception if one address in it is
not mapped). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import ModbusPlanError, ModbusValueError

__all__ = [
    "FUNCTION_HOLDING",
    "FUNCTION_INPUT",
    "MAX_READ_COUNT",
    "AddressRange",
    "Point",
    "ReadRequest",
    "plan_reads",
    "split_response",
]

FUNCTION_HOLDING = 3  # Read Holding Registers
FUNCTION_INPUT = 4  # Read Input Registers
MAX_READ_COUNT = 125  # registers per FC03/FC04 request (Modbus Application Protocol 1.1b3)


@dataclass(frozen=True, slots=True)
class Point:
    """One value to read: ``count`` registers from ``address`` with ``function``."""

    function: int
    address: int
    count: int
    id: Hashable

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class AddressRange:
    """Addresses ``start`` (inclusive) to ``stop`` (exclusive) that must not be read;
    ``function`` None means for both read functions."""

    start: int
    stop: int
    function: int | None = None

    def hits(self, function: int, start: int, stop: int) -> bool:
        """Whether [start, stop) touches this range for this function."""
        if self.function is not None and self.function != function:
            return False
        return start < self.stop and self.start < stop


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One block read and the points it carries."""

    function: int
    address: int
    count: int
    points: tuple[Point, ...]


def _check(point: Point, max_count: int) -> None:
    if point.function not in (FUNCTION_HOLDING, FUNCTION_INPUT):
        raise ModbusPlanError(
            f"point {point.id!r}: function {point.function} is not 3 (holding) or 4 (input)"
        )
    if point.count < 1 or point.count > max_count:
        raise ModbusPlanError(f"point {point.id!r}: count {point.count} not in 1..{max_count}")
    if point.address < 0 or point.end > 0x10000:
        raise ModbusPlanError(
            f"point {point.id!r}: registers {point.address}..{point.end - 1} "
            "outside the address space 0..65535"
        )


def plan_reads(
    points: Iterable[Point],
    *,
    max_gap: int = 10,
    max_count: int = MAX_READ_COUNT,
    unreadable: Iterable[AddressRange] = (),
) -> list[ReadRequest]:
    """Merge points into block reads, ordered by function then address.

    Points may overlap (two views of the same registers); each keeps its own slice.
    """
    if max_gap < 0:
        raise ModbusPlanError(f"max_gap must be >= 0, got {max_gap}")
    if not 1 <= max_count <= MAX_READ_COUNT:
        raise ModbusPlanError(f"max_count must be in 1..{MAX_READ_COUNT}, got {max_count}")
    forbidden = tuple(unreadable)
    seen: set[Hashable] = set()
    ordered: list[Point] = []
    for point in points:
        _check(point, max_count)
        if point.id in seen:
            raise ModbusPlanError(f"point id {point.id!r} is used twice")
        seen.add(point.id)
        for gap in forbidden:
            if gap.hits(point.function, point.address, point.end):
                raise ModbusPlanError(
                    f"point {point.id!r}: registers {point.address}..{point.end - 1} "
                    f"overlap the unreadable range {gap.start}..{gap.stop - 1}"
                )
        ordered.append(point)
    ordered.sort(key=lambda p: (p.function, p.address, p.count))

    requests: list[ReadRequest] = []
    block: list[Point] = []
    start = end = 0
    for point in ordered:
        if block and _joins(block[0].function, start, end, point, max_gap, max_count, forbidden):
            block.append(point)
            end = max(end, point.end)
            continue
        if block:
            requests.append(ReadRequest(block[0].function, start, end - start, tuple(block)))
        block, start, end = [point], point.address, point.end
    if block:
        requests.append(ReadRequest(block[0].function, start, end - start, tuple(block)))
    return requests


def _joins(
    function: int,
    start: int,
    end: int,
    point: Point,
    max_gap: int,
    max_count: int,
    forbidden: Sequence[AddressRange],
) -> bool:
    if point.function != function:
        return False
    if point.address - end > max_gap:
        return False
    if max(end, point.end) - start > max_count:
        return False
    hole_start, hole_stop = end, point.address
    return not (
        hole_stop > hole_start
        and any(gap.hits(function, hole_start, hole_stop) for gap in forbidden)
    )


def split_response(request: ReadRequest, registers: Sequence[int]) -> Mapping[Hashable, list[int]]:
    """Slice a block response into each point's registers, by point id.

    A response of the wrong length is the device's fault: ModbusValueError.
    """
    if len(registers) != request.count:
        raise ModbusValueError(
            f"read of {request.count} registers from {request.address} "
            f"(function {request.function}) answered with {len(registers)} registers"
        )
    return {
        point.id: list(registers[point.address - request.address : point.end - request.address])
        for point in request.points
    }
