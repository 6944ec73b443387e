"""A meter's readings drawn over time as an inline SVG line chart, rendered on the server.

No chart library and no JavaScript: the dashboard must work without a build step or scripts,
and a chart of one quantity over time is a polyline, a few circles and two axes. Values stay
``Decimal`` until they become pixel coordinates (rounded to 0.1 px).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from html import escape

__all__ = ["ChartPoint", "line_chart", "thin"]

_TENTH = Decimal("0.1")


@dataclass(frozen=True)
class ChartPoint:
    captured_ms: int
    value: Decimal
    flagged: bool = False  # a reading with flags (estimated, clock not set, VEE...)


def thin(points: Sequence[ChartPoint], limit: int) -> list[ChartPoint]:
    """At most ``limit`` points, evenly spaced over the sequence, first and last kept."""
    if len(points) <= limit or limit < 2:
        return list(points)
    step = Decimal(len(points) - 1) / Decimal(limit - 1)
    picked = {int((step * i).to_integral_value()) for i in range(limit)}
    return [points[i] for i in sorted(picked)]


def _utc(ms: int, with_date: bool = True) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


def _coord(value: Decimal) -> str:
    return str(value.quantize(_TENTH))


def line_chart(
    points: Sequence[ChartPoint],
    *,
    label: str,
    unit: str,
    width: int = 760,
    height: int = 240,
    limit: int = 400,
) -> str:
    """The SVG text of ``points`` (oldest first) as a line with a marker per point; each
    marker has a ``<title>`` (time and value) for the browser's tooltip."""
    left, right, top, bottom = 78, 12, 14, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    title = escape(f"{label} ({unit})" if unit else label)
    head = (
        # scales to its box (the viewBox keeps the proportions), at most its drawn size
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="100%" '
        f'style="max-width:{width}px" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{title}">'
    )
    if not points:
        return (
            f'{head}<text x="{width // 2}" y="{height // 2}" text-anchor="middle" '
            f'class="empty">no readings in this range</text></svg>'
        )
    shown = thin(points, limit)
    t0, t1 = shown[0].captured_ms, shown[-1].captured_ms
    low = min(p.value for p in shown)
    high = max(p.value for p in shown)
    span_t = Decimal(max(t1 - t0, 1))
    span_v = high - low if high > low else Decimal(1)

    def x(ms: int) -> Decimal:
        if t1 == t0:
            return Decimal(left + plot_w // 2)
        return left + Decimal(ms - t0) * plot_w / span_t

    def y(value: Decimal) -> Decimal:
        if high == low:
            return Decimal(top + plot_h // 2)
        return top + (high - value) * plot_h / span_v

    out = [head]
    # axes and the value / time labels at the ends
    base_y, right_x = top + plot_h, left + plot_w
    out.append(
        f'<path class="axis" d="M{left} {top} V{base_y} H{right_x}" fill="none"/>'
        f'<text class="tick" x="{left - 6}" y="{top + 4}" text-anchor="end">'
        f"{escape(str(high))}</text>"
        f'<text class="tick" x="{left - 6}" y="{base_y}" text-anchor="end">'
        f"{escape(str(low))}</text>"
        f'<text class="tick" x="{left}" y="{base_y + 16}">{_utc(t0)}</text>'
        f'<text class="tick" x="{right_x}" y="{base_y + 16}" text-anchor="end">'
        f"{_utc(t1)} UTC</text>"
        f'<text class="tick unit" x="{left - 6}" y="{base_y + 30}" text-anchor="end">'
        f"{escape(unit)}</text>"
    )
    line = " ".join(f"{_coord(x(p.captured_ms))},{_coord(y(p.value))}" for p in shown)
    out.append(f'<polyline class="line" fill="none" points="{line}"/>')
    for p in shown:
        cls = "pt flagged" if p.flagged else "pt"
        tip = escape(f"{_utc(p.captured_ms)} UTC: {p.value} {unit}".rstrip())
        out.append(
            f'<circle class="{cls}" cx="{_coord(x(p.captured_ms))}" '
            f'cy="{_coord(y(p.value))}" r="2.5"><title>{tip}</title></circle>'
        )
    out.append("</svg>")
    return "".join(out)
