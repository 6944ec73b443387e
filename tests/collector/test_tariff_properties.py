"""Properties of the tier split, for any usage and any limits: no unit is lost or counted
twice, each tier holds exactly its slice of the period's total, TOU periods partition the
tiers as the wall clock says, on a regular grid (the cached hot path) and off it (an interval
missing: the general path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.rating.engine import rate
from collector.rating.model import UsageInterval
from collector.rating.tariff import load_tariff

AMS = ZoneInfo("Europe/Amsterdam")
START = datetime(2026, 11, 2, tzinfo=AMS)
END = datetime(2026, 11, 4, tzinfo=AMS)

quantities = st.lists(
    st.integers(min_value=0, max_value=5000).map(lambda n: Decimal(n).scaleb(-3)),
    min_size=1,
    max_size=192,
)
limits = st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=4, unique=True)


def write(tmp: Path, limits: list[int]) -> Path:
    ups = sorted(limits)
    prices = [f"0.{20 + i}" for i in range(len(ups) + 1)]
    tou = ", ".join(f"0.{30 + i}" for i in range(len(ups) + 1))
    text = f"""
id = "p"
currency = "EUR"
[[version]]
effective_from = 2026-01-01
[[version.charge]]
type = "tou"
default = "off"
schedule = [{{ hours = "07:00-23:00", period = "day" }}]
tiers_upto = {ups}
periods = {{ day = [{tou}], off = [{", ".join(prices)}] }}
"""
    path = tmp / "p.toml"
    path.write_text(text, encoding="utf-8")
    return path


def usage(qs: list[Decimal], shuffle_grid: bool = False) -> list[UsageInterval]:
    step = timedelta(minutes=15)
    first = START.astimezone(UTC)
    out = [UsageInterval(first + step * i, first + step * (i + 1), q, "kWh", "actual")
           for i, q in enumerate(qs)]  # fmt: skip
    if shuffle_grid and len(out) > 2:
        out.pop(1)  # a missing interval: off the grid, the general path
    return out


@settings(max_examples=60, deadline=None)
@given(qs=quantities, ups=limits)
def test_tiers_hold_exactly_their_slice(tmp_path_factory, qs, ups) -> None:
    tariff = load_tariff(write(tmp_path_factory.mktemp("p"), ups))
    for grid_gap in (False, True):
        u = usage(qs, grid_gap)
        total = sum((x.quantity for x in u), Decimal(0))
        lines = rate(tariff, u, START, END, AMS)
        assert sum(x.quantity for x in lines) == total
        bounds = [Decimal(0), *sorted(Decimal(v) for v in ups), None]
        for t in range(len(bounds) - 1):
            lo, hi = bounds[t], bounds[t + 1]
            expected = max(Decimal(0), (total if hi is None else min(total, hi)) - lo)
            got = sum((x.quantity for x in lines if x.tier == t + 1), Decimal(0))
            assert got == expected, (t, lo, hi, total)
        by_period = {
            p: sum((x.quantity for x in lines if x.period == p), Decimal(0)) for p in ("day", "off")
        }
        day = sum((x.quantity for x in u if 7 <= x.start.astimezone(AMS).hour < 23), Decimal(0))
        assert by_period["day"] == day and by_period["off"] == total - day
