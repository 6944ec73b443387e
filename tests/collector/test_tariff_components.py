"""Each charge component rated by hand: the arithmetic is written next to each assertion.

Tariffs are written as TOML (the real loader), usage as ``UsageInterval`` lists, and
``rate(...)`` is the engine the bills use.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector.errors import RatingError
from collector.rating.engine import rate
from collector.rating.model import ChargeLine, PriceSeries, RatingContext, UsageInterval
from collector.rating.tariff import load_tariff

AMS = ZoneInfo("Europe/Amsterdam")
D = Decimal


def tariff(tmp_path: Path, charges: str, head: str = "", name: str = "t.toml"):
    text = f"""
id = "t"
name = "Test"
currency = "EUR"
{head}

[[version]]
effective_from = 2020-01-01
{charges}
"""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_tariff(path)


def usage(start: datetime, quantities: list[str], minutes: int = 15, quality: str = "actual"):
    step = timedelta(minutes=minutes)
    first = start.astimezone(UTC)
    return [
        UsageInterval(first + step * i, first + step * (i + 1), D(q), "kWh", quality)
        for i, q in enumerate(quantities)
    ]


def day(y: int, m: int, d: int, tz: ZoneInfo = AMS) -> datetime:
    return datetime(y, m, d, tzinfo=tz)


def by_label(lines: list[ChargeLine]) -> dict[str, ChargeLine]:
    return {line.label: line for line in lines}


def total(lines: list[ChargeLine]) -> Decimal:
    return sum((line.amount for line in lines), D(0))


STANDING_DAY = """
[[version.charge]]
type = "standing"
price = 0.45
"""


def test_standing_per_day_counts_local_days(tmp_path: Path) -> None:
    t = tariff(tmp_path, STANDING_DAY)
    lines = rate(t, [], day(2026, 11, 1), day(2026, 12, 1), AMS)
    # November: 30 days x 0.45 = 13.50
    assert [(x.quantity, x.unit, x.amount) for x in lines] == [(D(30), "day", D("13.50"))]


def test_standing_per_month_prorated_by_days_of_each_month(tmp_path: Path) -> None:
    t = tariff(tmp_path, '[[version.charge]]\ntype = "standing"\nprice = 10\nper = "month"\n')
    lines = rate(t, [], day(2026, 11, 17), day(2026, 12, 17), AMS)
    # Nov 17..30 = 14 days: 10 x 14/30 = 4.6666.. -> 4.67
    # Dec 1..16  = 16 days: 10 x 16/31 = 5.1612.. -> 5.16
    assert [(x.quantity, x.amount) for x in lines] == [(D(14), D("4.67")), (D(16), D("5.16"))]
    assert lines[0].end == day(2026, 12, 1) and lines[1].start == day(2026, 12, 1)


def test_flat_energy_rounds_once(tmp_path: Path) -> None:
    t = tariff(tmp_path, '[[version.charge]]\ntype = "energy"\nprice = 0.27815\n')
    u = usage(day(2026, 11, 2), ["0.125"] * 100)
    (line,) = rate(t, u, day(2026, 11, 1), day(2026, 12, 1), AMS)
    # 100 x 0.125 = 12.5 kWh x 0.27815 = 3.476875 -> 3.48
    assert (line.quantity, line.unit_price, line.amount) == (D("12.5"), D("0.27815"), D("3.48"))
    assert line.actual_intervals == 100 and line.estimated_intervals == 0
    assert any("3.476875" in note for note in line.explanation)


TIERS = """
[[version.charge]]
type = "tiers"
mode = "{mode}"
tiers = [{{ upto = 10, price = 0.20 }}, {{ price = 0.30 }}]
"""


def test_graduated_tier_boundary_inside_one_interval_splits_it(tmp_path: Path) -> None:
    t = tariff(tmp_path, TIERS.format(mode="graduated"))
    # hourly: 3, 4, 5, 2 kWh -> cumulative 3, 7, 12, 14: the limit 10 falls inside the 3rd hour
    u = usage(day(2026, 11, 2), ["3", "4", "5", "2"], minutes=60)
    tier1, tier2 = rate(t, u, day(2026, 11, 2), day(2026, 11, 3), AMS)
    # tier 1: 3 + 4 + (10 - 7 =) 3 = 10 kWh x 0.20 = 2.00
    # tier 2: (12 - 10 =) 2 + 2 = 4 kWh x 0.30 = 1.20
    assert (tier1.quantity, tier1.amount, tier1.tier) == (D(10), D("2.00"), 1)
    assert (tier2.quantity, tier2.amount, tier2.tier) == (D(4), D("1.20"), 2)
    # the split hour is behind both lines
    assert tier1.end == u[2].end and tier2.start == u[2].start
    assert (tier1.actual_intervals, tier2.actual_intervals) == (3, 2)
    assert any("crosses a tier limit: 3 kWh" in n for n in tier1.explanation)
    assert any("crosses a tier limit: 2 kWh" in n for n in tier2.explanation)


def test_volume_tier_prices_all_units_at_the_reached_tier(tmp_path: Path) -> None:
    t = tariff(tmp_path, TIERS.format(mode="volume"))
    u = usage(day(2026, 11, 2), ["3", "4", "5", "2"], minutes=60)
    (line,) = rate(t, u, day(2026, 11, 2), day(2026, 11, 3), AMS)
    # 14 kWh > 10: all 14 kWh at tier 2's 0.30 = 4.20
    assert (line.quantity, line.tier, line.amount) == (D(14), 2, D("4.20"))


def test_volume_tier_limit_itself_is_the_lower_tier(tmp_path: Path) -> None:
    t = tariff(tmp_path, TIERS.format(mode="volume"))
    u = usage(day(2026, 11, 2), ["6", "4"], minutes=60)
    (line,) = rate(t, u, day(2026, 11, 2), day(2026, 11, 3), AMS)
    # exactly 10 kWh stays in tier 1: 10 x 0.20 = 2.00
    assert (line.tier, line.amount) == (1, D("2.00"))


TOU = """
[[version.charge]]
type = "tou"
default = "offpeak"
schedule = [{ days = "weekday", hours = "07:00-23:00", period = "peak" }]
periods = { peak = 0.30, offpeak = 0.20 }
"""


def test_tou_weekday_peak_and_offpeak(tmp_path: Path) -> None:
    t = tariff(tmp_path, TOU)
    # Monday 2026-11-02, 24 hourly intervals of 1 kWh
    lines = by_label(rate(t, usage(day(2026, 11, 2), ["1"] * 24, 60), day(2026, 11, 2),
                          day(2026, 11, 3), AMS))  # fmt: skip
    # peak 07-23 = 16 h x 1 kWh x 0.30 = 4.80; offpeak 8 h x 0.20 = 1.60
    assert lines["Energy, peak"].quantity == 16 and lines["Energy, peak"].amount == D("4.80")
    assert lines["Energy, offpeak"].quantity == 8 and lines["Energy, offpeak"].amount == D("1.60")
    assert lines["Energy, peak"].period == "peak"


def test_tou_public_holiday_is_a_weekend_day(tmp_path: Path) -> None:
    t = tariff(tmp_path, TOU, head="holidays = [2026-12-25]")
    # Friday 2026-12-25 is a holiday: all 24 h offpeak, 24 x 0.20 = 4.80
    lines = by_label(rate(t, usage(day(2026, 12, 25), ["1"] * 24, 60), day(2026, 12, 25),
                          day(2026, 12, 26), AMS))  # fmt: skip
    assert lines["Energy, offpeak"].amount == D("4.80")
    assert lines["Energy, peak"].quantity == 0
    # a holiday from the context (not in the tariff) counts too: Monday 2026-11-02
    ctx = RatingContext(holidays=frozenset({day(2026, 11, 2).date()}))
    lines = by_label(rate(t, usage(day(2026, 11, 2), ["1"] * 24, 60), day(2026, 11, 2),
                          day(2026, 11, 3), AMS, ctx))  # fmt: skip
    assert lines["Energy, offpeak"].quantity == 24


DST_TOU = (
    STANDING_DAY
    + """
[[version.charge]]
type = "tou"
default = "day"
schedule = [{ hours = "00:00-07:00", period = "night" }]
periods = { night = 0.20, day = 0.30 }
"""
)


def test_dst_23_hour_day(tmp_path: Path) -> None:
    t = tariff(tmp_path, DST_TOU)
    start, end = day(2026, 3, 29), day(2026, 3, 30)
    n = int((end.astimezone(UTC) - start.astimezone(UTC)) / timedelta(minutes=15))
    assert n == 92  # 23 h: 02:00-03:00 does not exist
    lines = by_label(rate(t, usage(start, ["0.1"] * n), start, end, AMS))
    # night: local 00, 01, 03, 04, 05, 06 = 6 h = 24 intervals = 2.4 kWh x 0.20 = 0.48
    # day:   07..23 = 17 h = 68 intervals = 6.8 kWh x 0.30 = 2.04
    # standing: one (short) day x 0.45 = 0.45
    assert lines["Energy, night"].quantity == D("2.4") and lines["Energy, night"].amount == D(
        "0.48"
    )
    assert lines["Energy, day"].quantity == D("6.8") and lines["Energy, day"].amount == D("2.04")
    assert lines["Standing charge"].quantity == 1 and lines["Standing charge"].amount == D("0.45")


def test_dst_25_hour_day(tmp_path: Path) -> None:
    t = tariff(tmp_path, DST_TOU)
    start, end = day(2026, 10, 25), day(2026, 10, 26)
    n = int((end.astimezone(UTC) - start.astimezone(UTC)) / timedelta(minutes=15))
    assert n == 100  # 25 h: 02:00-03:00 twice
    lines = by_label(rate(t, usage(start, ["0.1"] * n), start, end, AMS))
    # night: local 00, 01, 02, 02 (again), 03, 04, 05, 06 = 8 h = 32 intervals = 3.2 kWh x 0.20
    #        = 0.64; day: 17 h = 68 intervals = 6.8 kWh x 0.30 = 2.04; standing one day 0.45
    assert lines["Energy, night"].quantity == D("3.2") and lines["Energy, night"].amount == D(
        "0.64"
    )
    assert lines["Energy, day"].amount == D("2.04")
    assert lines["Standing charge"].quantity == 1


def test_leap_day(tmp_path: Path) -> None:
    monthly = '[[version.charge]]\ntype = "standing"\nprice = 10\nper = "month"\n'
    t = tariff(tmp_path, monthly + STANDING_DAY + TOU)
    start, end = day(2028, 2, 1), day(2028, 3, 1)
    lines = rate(t, usage(day(2028, 2, 29), ["1"] * 24, 60), start, end, AMS)
    labels = by_label(lines)
    # February 2028 has 29 days: 10 x 29/29 = 10.00; per day 29 x 0.45 = 13.05
    assert labels["Standing charge, Feb 2028 (29/29 days)"].amount == D("10.00")
    assert labels["Standing charge"].quantity == 29
    assert labels["Standing charge"].amount == D("13.05")
    # Tuesday 2028-02-29 is a weekday: 16 h peak x 0.30 = 4.80, 8 h offpeak x 0.20 = 1.60
    assert labels["Energy, peak"].amount == D("4.80")
    assert labels["Energy, offpeak"].amount == D("1.60")
    # across the leap day: Feb 15..29 = 15/29 of 10 = 5.1724.. -> 5.17; Mar 1..14 = 14/31 of 10
    # = 4.5161.. -> 4.52
    t2 = tariff(tmp_path, monthly, name="m.toml")
    lines = rate(t2, [], day(2028, 2, 15), day(2028, 3, 15), AMS)
    assert [x.amount for x in lines] == [D("5.17"), D("4.52")]


DYNAMIC = """
[[version.charge]]
type = "dynamic"
prices = "prices.csv"
multiplier = 1.1
adder = 0.02
"""


def test_dynamic_prices_per_interval_with_multiplier_and_adder(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text(
        "start,price\n2026-11-02T00:00:00+01:00,0.10\n2026-11-02T01:00:00+01:00,0.25\n",
        encoding="utf-8",
    )
    t = tariff(tmp_path, DYNAMIC)
    u = usage(day(2026, 11, 2), ["0.5"] * 8)
    (line,) = rate(t, u, day(2026, 11, 2), day(2026, 11, 3), AMS)
    # hour 1: 4 x 0.5 = 2 kWh x (0.10 x 1.1 + 0.02 = 0.13) = 0.26
    # hour 2: 4 x 0.5 = 2 kWh x (0.25 x 1.1 + 0.02 = 0.295) = 0.59
    # total 0.85 for 4 kWh: average unit price 0.2125
    assert (line.quantity, line.amount, line.unit_price) == (D(4), D("0.85"), D("0.2125"))
    # a series from the context replaces the file's: all at 0.30 -> 4 x (0.33 + 0.02) = 1.40
    series = PriceSeries("prices", (day(2026, 11, 2),), (D("0.30"),), day(2026, 11, 3))
    (line,) = rate(t, u, day(2026, 11, 2), day(2026, 11, 3), AMS,
                   RatingContext(price_series={"prices": series}))  # fmt: skip
    assert line.amount == D("1.40")


def test_dynamic_price_missing_names_the_interval(tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("2026-11-02T00:00:00+01:00,0.10\n", encoding="utf-8")
    t = tariff(tmp_path, DYNAMIC)
    u = usage(day(2026, 11, 2), ["0.5"] * 8)  # the second hour has no price
    with pytest.raises(RatingError, match=r"no price for the whole interval 2026-11-02T00:00"):
        rate(t, u, day(2026, 11, 2), day(2026, 11, 3), AMS)


DEMAND = """
[[version.charge]]
type = "demand"
window = {window}
price = 5.00
ratchet = 80
ratchet_months = {months}
"""


def test_demand_max_average_power_in_the_window(tmp_path: Path) -> None:
    t = tariff(tmp_path, DEMAND.format(window=15, months=11))
    u = usage(day(2026, 11, 2), ["1", "2.5", "0.5", "1"])
    (line,) = rate(t, u, day(2026, 11, 2), day(2026, 11, 3), AMS)
    # highest 15 min: 2.5 kWh x 4 = 10 kW x 5.00 = 50.00
    assert (line.quantity, line.unit, line.amount) == (D(10), "kW", D("50.00"))
    t60 = tariff(tmp_path, DEMAND.format(window=60, months=11), name="t60.toml")
    (line,) = rate(t60, u, day(2026, 11, 2), day(2026, 11, 3), AMS)
    # one hour: 1 + 2.5 + 0.5 + 1 = 5 kWh x 1 = 5 kW x 5.00 = 25.00
    assert (line.quantity, line.amount) == (D(5), D("25.00"))


def test_demand_ratchet_from_previous_months(tmp_path: Path) -> None:
    u = usage(day(2026, 11, 2), ["1", "2.5", "0.5", "1"])
    ctx = RatingContext(previous_peaks=(D(12), D(20), D(15)))
    t = tariff(tmp_path, DEMAND.format(window=15, months=11))
    (line,) = rate(t, u, day(2026, 11, 2), day(2026, 11, 3), AMS, ctx)
    # ratchet 80% of max(12, 20, 15) = 16 kW > measured 10 kW: 16 x 5.00 = 80.00
    assert (line.quantity, line.amount) == (D(16), D("80.00"))
    t1 = tariff(tmp_path, DEMAND.format(window=15, months=1), name="t1.toml")
    (line,) = rate(t1, u, day(2026, 11, 2), day(2026, 11, 3), AMS, ctx)
    # only the last month counts: 80% of 15 = 12 kW > 10: 12 x 5.00 = 60.00
    assert (line.quantity, line.amount) == (D(12), D("60.00"))


def test_demand_within_tou_periods(tmp_path: Path) -> None:
    charges = """
[[version.charge]]
type = "demand"
window = 15
default = "offpeak"
schedule = [{ days = "weekday", hours = "07:00-23:00", period = "peak" }]
periods = { peak = 8.00, offpeak = 2.00 }
"""
    t = tariff(tmp_path, charges)
    quantities = ["0.25"] * 96
    quantities[4 * 3] = "3"  # 03:00 offpeak: 3 kWh in 15 min = 12 kW
    quantities[4 * 12] = "2"  # 12:00 peak: 8 kW
    lines = by_label(rate(t, usage(day(2026, 11, 2), quantities), day(2026, 11, 2),
                          day(2026, 11, 3), AMS))  # fmt: skip
    # peak 8 kW x 8.00 = 64.00; offpeak 12 kW x 2.00 = 24.00
    assert lines["Demand, peak"].quantity == 8 and lines["Demand, peak"].amount == D("64.00")
    assert lines["Demand, offpeak"].quantity == 12 and lines["Demand, offpeak"].amount == D("24.00")


def test_minimum_charge_tops_up(tmp_path: Path) -> None:
    charges = """
[[version.charge]]
type = "energy"
price = 0.27815
[[version.charge]]
type = "minimum"
amount = 10
per = "month"
"""
    t = tariff(tmp_path, charges)
    lines = rate(t, usage(day(2026, 11, 2), ["0.125"] * 100), day(2026, 11, 1),
                 day(2026, 12, 1), AMS)  # fmt: skip
    # energy 3.48 (as above) < 10.00: top-up 6.52, total 10.00
    assert [(x.component, x.amount) for x in lines] == [("energy", D("3.48")),
                                                        ("minimum", D("6.52"))]  # fmt: skip
    assert total(lines) == D("10.00")


def test_taxes_in_their_stated_order(tmp_path: Path) -> None:
    charges = """
[[version.charge]]
type = "energy"
price = 0.27815
[[version.charge]]
type = "tax"
label = "Energy tax"
per_unit = 0.1
[[version.charge]]
type = "tax"
label = "VAT"
percent = 21
on = "all"
"""
    t = tariff(tmp_path, charges)
    lines = rate(t, usage(day(2026, 11, 2), ["0.125"] * 100), day(2026, 11, 1),
                 day(2026, 12, 1), AMS)  # fmt: skip
    energy, levy, vat = lines
    assert energy.amount == D("3.48")
    # energy 3.48; energy tax 12.5 kWh x 0.1 = 1.25; VAT 21% of (3.48 + 1.25 = 4.73) = 0.9933
    # -> 0.99; total 5.72
    assert (levy.amount, vat.quantity, vat.amount) == (D("1.25"), D("4.73"), D("0.99"))
    assert total(lines) == D("5.72")


VAT_CASE = """
[[version.charge]]
type = "standing"
price = 0.50
[[version.charge]]
type = "energy"
price = 0.25
[[version.charge]]
type = "tax"
label = "VAT"
percent = 21
per_line = {per_line}
"""


def test_vat_rounding_per_line_and_on_total_differ(tmp_path: Path) -> None:
    u = usage(day(2026, 11, 2), ["0.5"] * 4, 60)  # 2 kWh x 0.25 = 0.50
    start, end = day(2026, 11, 2), day(2026, 11, 3)  # one day x 0.50 = 0.50
    on_total = rate(tariff(tmp_path, VAT_CASE.format(per_line="false")), u, start, end, AMS)
    per_line = rate(tariff(tmp_path, VAT_CASE.format(per_line="true"), name="p.toml"), u, start,
                    end, AMS)  # fmt: skip
    # on the total: 21% of (0.50 + 0.50) = 0.21 -> 0.21; bill 1.21
    assert [x.amount for x in on_total if x.component == "tax"] == [D("0.21")]
    assert total(on_total) == D("1.21")
    # per line: 21% of 0.50 = 0.105 -> 0.11 (half-up), twice = 0.22; bill 1.22
    assert [x.amount for x in per_line if x.component == "tax"] == [D("0.11"), D("0.11")]
    assert total(per_line) == D("1.22")


def test_rounding_mode_half_even(tmp_path: Path) -> None:
    charges = '[[version.charge]]\ntype = "energy"\nprice = 0.05\n'
    u = usage(day(2026, 11, 2), ["0.5"])
    start, end = day(2026, 11, 2), day(2026, 11, 3)
    # 0.5 kWh x 0.05 = 0.025: half-up 0.03, half-even 0.02
    (up,) = rate(tariff(tmp_path, charges), u, start, end, AMS)
    (even,) = rate(tariff(tmp_path, charges, 'rounding = "half-even"', "e.toml"), u, start, end,
                   AMS)  # fmt: skip
    assert (up.amount, even.amount) == (D("0.03"), D("0.02"))


def test_export_credit_is_a_negative_line(tmp_path: Path) -> None:
    t = tariff(tmp_path, '[[version.charge]]\ntype = "export"\nprice = 0.07\n')
    export = usage(day(2026, 11, 2), ["1.25"] * 4, 60)
    (line,) = rate(t, [], day(2026, 11, 1), day(2026, 12, 1), AMS, RatingContext(export=export))
    # 5 kWh x 0.07 = 0.35 credited
    assert (line.quantity, line.amount) == (D(5), D("-0.35"))


def test_estimated_and_edited_intervals_are_counted(tmp_path: Path) -> None:
    t = tariff(tmp_path, '[[version.charge]]\ntype = "energy"\nprice = 0.2\n')
    u = usage(day(2026, 11, 2), ["1"] * 3) + usage(day(2026, 11, 3), ["1"] * 2, quality="estimated")
    u += usage(day(2026, 11, 4), ["1"], quality="edited")
    (line,) = rate(t, u, day(2026, 11, 1), day(2026, 12, 1), AMS)
    assert (line.actual_intervals, line.estimated_intervals) == (3, 3)


def test_usage_in_another_unit_is_refused(tmp_path: Path) -> None:
    t = tariff(tmp_path, '[[version.charge]]\ntype = "energy"\nprice = 0.2\n')
    u = [UsageInterval(day(2026, 11, 2), day(2026, 11, 3), D(1), "m3", "actual")]
    with pytest.raises(RatingError, match="prices kWh, the usage is in m3"):
        rate(t, u, day(2026, 11, 1), day(2026, 12, 1), AMS)
