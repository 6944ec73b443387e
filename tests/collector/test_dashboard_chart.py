"""The dashboard's server-side pieces without a browser: the SVG readings chart and the
formatting filters of the pages."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from collector.web.chart import ChartPoint, line_chart, thin
from collector.web.pages import _duration, _obis_key, _percent

SVG = "{http://www.w3.org/2000/svg}"
HOUR = 3_600_000


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def _points(n: int, start: int = 1_793_491_200_000) -> list[ChartPoint]:
    return [ChartPoint(start + i * 900_000, Decimal(i) / 4) for i in range(n)]


def test_an_empty_series_draws_a_message_not_a_line() -> None:
    root = _parse(line_chart([], label="m 1-0:1.8.0", unit="kWh"))
    assert root.find(f"{SVG}polyline") is None
    assert "no readings" in "".join(root.itertext())


def test_one_reading_is_one_point_in_the_middle() -> None:
    root = _parse(line_chart(_points(1), label="m", unit="kWh", width=400, height=200))
    circles = root.findall(f"{SVG}circle")
    assert len(circles) == 1
    assert 0 < float(circles[0].get("cx")) < 400 and 0 < float(circles[0].get("cy")) < 200


def test_every_reading_is_a_point_with_its_time_and_exact_value() -> None:
    points = [
        ChartPoint(1_793_491_200_000, Decimal("12345.678")),
        ChartPoint(1_793_491_200_000 + HOUR, Decimal("12346.001"), flagged=True),
    ]
    root = _parse(line_chart(points, label="m", unit="kWh"))
    circles = root.findall(f"{SVG}circle")
    assert [c.find(f"{SVG}title").text for c in circles] == [
        "2026-11-01 00:00 UTC: 12345.678 kWh",
        "2026-11-01 01:00 UTC: 12346.001 kWh",
    ]
    assert circles[1].get("class") == "pt flagged"
    # the higher value is drawn higher (smaller y)
    assert float(circles[1].get("cy")) < float(circles[0].get("cy"))


def test_markup_in_the_label_and_unit_stays_text() -> None:
    svg = line_chart(_points(3), label='<script>alert("x")</script>', unit="<b>")
    assert "<script>" not in svg and "<b>" not in svg
    _parse(svg)


def test_thin_keeps_the_first_and_last_and_at_most_the_limit() -> None:
    points = _points(1000)
    kept = thin(points, 400)
    assert len(kept) <= 400
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert kept == sorted(kept, key=lambda p: p.captured_ms)
    assert thin(points[:10], 400) == points[:10]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**12),
            st.decimals(min_value=-(10**9), max_value=10**9, places=3, allow_nan=False),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_every_point_lies_inside_the_drawing(raw: list[tuple[int, Decimal]]) -> None:
    points = [ChartPoint(t, v) for t, v in sorted(raw)]
    root = _parse(line_chart(points, label="m", unit="W", width=500, height=200))
    for circle in root.findall(f"{SVG}circle"):
        assert 0 <= float(circle.get("cx")) <= 500
        assert 0 <= float(circle.get("cy")) <= 200
    assert len(root.findall(f"{SVG}circle")) == len(points)


def test_durations_read_like_a_person_writes_them() -> None:
    assert _duration(850) == "850 ms"
    assert _duration(3_000) == "3 s"
    assert _duration(3_725_000) == "1 h 2 min"
    assert _duration(90_061_000) == "1 d 1 h"
    assert _duration(-5_000) == "-5 s"
    assert _duration(None) == ""


def test_success_rates_are_exact_percentages() -> None:
    assert _percent("0.9875") == "98.75 %"
    assert _percent("1.0000") == "100 %"
    assert _percent(None) == "–"


def test_obis_codes_sort_by_number() -> None:
    codes = ["1-0:14.7.0", "1-0:2.8.0", "1-0:1.8.0", "1-0:32.7.0"]
    assert sorted(codes, key=_obis_key) == ["1-0:1.8.0", "1-0:2.8.0", "1-0:14.7.0", "1-0:32.7.0"]
