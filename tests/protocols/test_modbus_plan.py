"""Block read planning."""

from __future__ import annotations

import pytest

from protocols.modbus import (
    AddressRange,
    ModbusPlanError,
    ModbusValueError,
    Point,
    plan_reads,
    split_response,
)


def p(address: int, count: int = 2, function: int = 4, name: str | None = None) -> Point:
    return Point(function, address, count, name or f"{function}:{address}")


def test_neighbours_merge_into_one_read() -> None:
    (request,) = plan_reads([p(0), p(2), p(4)])
    assert (request.function, request.address, request.count) == (4, 0, 6)
    assert len(request.points) == 3


def test_gap_up_to_max_gap_is_bridged() -> None:
    assert len(plan_reads([p(0), p(12)], max_gap=10)) == 1
    assert len(plan_reads([p(0), p(13)], max_gap=10)) == 2
    assert len(plan_reads([p(0), p(3)], max_gap=0)) == 2
    assert len(plan_reads([p(0), p(2)], max_gap=0)) == 1


def test_functions_are_never_merged() -> None:
    requests = plan_reads([p(0, function=3), p(2, function=4)])
    assert [(r.function, r.address) for r in requests] == [(3, 0), (4, 2)]


def test_reads_are_at_most_max_count_registers() -> None:
    points = [p(a) for a in range(0, 300, 2)]
    requests = plan_reads(points)
    assert all(r.count <= 125 for r in requests)
    assert sum(len(r.points) for r in requests) == 150
    assert max(r.count for r in plan_reads(points, max_count=80)) <= 80


def test_a_value_is_never_split_across_reads() -> None:
    requests = plan_reads([p(a, 4) for a in range(0, 200, 4)], max_count=10)
    for r in requests:
        assert r.count == 8


def test_unreadable_hole_is_not_bridged() -> None:
    hole = AddressRange(3, 5)
    assert len(plan_reads([p(0), p(6)], unreadable=[hole])) == 2
    assert len(plan_reads([p(0), p(6)], unreadable=[AddressRange(3, 5, function=3)])) == 1


def test_point_in_unreadable_range_is_an_error() -> None:
    with pytest.raises(ModbusPlanError, match="unreadable"):
        plan_reads([p(4)], unreadable=[AddressRange(3, 5)])


@pytest.mark.parametrize(
    "point",
    [p(0, function=6), p(0, count=0), p(0, count=126), p(65535, count=2)],
)
def test_bad_points_are_rejected(point: Point) -> None:
    with pytest.raises(ModbusPlanError):
        plan_reads([point])


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ModbusPlanError, match="twice"):
        plan_reads([p(0, name="a"), p(2, name="a")])


def test_split_response_slices_each_point() -> None:
    (request,) = plan_reads([p(0, name="v"), p(4, 1, name="hz"), p(6, name="e")])
    assert request.count == 8
    sliced = split_response(request, [10, 11, 0, 0, 12, 0, 13, 14])
    assert sliced == {"v": [10, 11], "hz": [12], "e": [13, 14]}


def test_split_response_rejects_a_short_answer() -> None:
    (request,) = plan_reads([p(0), p(2)])
    with pytest.raises(ModbusValueError, match="answered with 3"):
        split_response(request, [1, 2, 3])


def test_overlapping_points_each_get_their_slice() -> None:
    (request,) = plan_reads([p(0, 4, name="wide"), p(2, 2, name="low")])
    assert split_response(request, [1, 2, 3, 4]) == {"wide": [1, 2, 3, 4], "low": [3, 4]}
