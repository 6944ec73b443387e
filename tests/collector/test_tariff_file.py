"""Tariff files: versions, a tariff change mid-period, the first version's flat form, errors that
name the file, the line and the key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector.errors import ConfigError, RatingError
from collector.rating.engine import rate
from collector.rating.model import UsageInterval
from collector.rating.tariff import load_tariff, load_tariffs

AMS = ZoneInfo("Europe/Amsterdam")
D = Decimal
REPO = Path(__file__).resolve().parents[2]


def day(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=AMS)


def hourly(start: datetime, end: datetime, quantity: str) -> list[UsageInterval]:
    out, t, stop = [], start.astimezone(UTC), end.astimezone(UTC)
    while t < stop:
        out.append(UsageInterval(t, t + timedelta(hours=1), D(quantity), "kWh", "actual"))
        t += timedelta(hours=1)
    return out


CHANGE = """
id = "change"
name = "Price change on the 16th"
currency = "EUR"

[[version]]
effective_from = 2026-01-01
effective_to = 2026-11-16

[[version.charge]]
type = "standing"
price = 0.45

[[version.charge]]
type = "energy"
price = 0.20

[[version]]
effective_from = 2026-11-16
note = "new prices"

[[version.charge]]
type = "standing"
price = 0.50

[[version.charge]]
type = "energy"
price = 0.30
"""


def test_tariff_change_mid_period_splits_the_lines(tmp_path: Path) -> None:
    path = tmp_path / "change.toml"
    path.write_text(CHANGE, encoding="utf-8")
    t = load_tariff(path)
    start, end = day(2026, 11, 1), day(2026, 12, 1)
    lines = rate(t, hourly(start, end, "0.1"), start, end, AMS)
    got = [(x.component, x.tariff_version, x.quantity, x.amount) for x in lines]
    # Nov 1-15: standing 15 x 0.45 = 6.75; 15 x 24 x 0.1 = 36 kWh x 0.20 = 7.20
    # Nov 16-30: standing 15 x 0.50 = 7.50; 36 kWh x 0.30 = 10.80
    assert got == [
        ("standing", "2026-01-01", D(15), D("6.75")),
        ("energy", "2026-01-01", D("36.0"), D("7.20")),
        ("standing", "2026-11-16", D(15), D("7.50")),
        ("energy", "2026-11-16", D("36.0"), D("10.80")),
    ]
    assert lines[1].end == day(2026, 11, 16) and lines[3].start == day(2026, 11, 16)
    assert sum(x.amount for x in lines) == D("32.25")


def test_tier_limits_are_prorated_when_a_version_covers_part_of_the_period(
    tmp_path: Path,
) -> None:
    text = CHANGE.replace(
        'type = "energy"\nprice = 0.20',
        'type = "tiers"\ntiers = [{ upto = 30, price = 0.20 }, { price = 0.25 }]',
    )
    path = tmp_path / "tiers.toml"
    path.write_text(text, encoding="utf-8")
    start, end = day(2026, 11, 1), day(2026, 12, 1)
    lines = rate(load_tariff(path), hourly(start, end, "0.1"), start, end, AMS)
    tiers = [x for x in lines if x.component == "tier"]
    # the old version covers 15 of 30 days: limit 30 x 15/30 = 15 kWh
    # tier 1: 15 kWh x 0.20 = 3.00; tier 2: 36 - 15 = 21 kWh x 0.25 = 5.25
    assert [(x.quantity, x.amount) for x in tiers] == [(D(15), D("3.00")), (D(21), D("5.25"))]


def test_no_version_in_effect_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "late.toml"
    path.write_text(CHANGE.replace("effective_from = 2026-01-01", "effective_from = 2026-11-05"))
    with pytest.raises(RatingError, match="no version in effect on 2026-11-01"):
        rate(load_tariff(path), [], day(2026, 11, 1), day(2026, 12, 1), AMS)


def test_overlapping_versions_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "overlap.toml"
    path.write_text(CHANGE.replace("effective_to = 2026-11-16", "effective_to = 2026-11-20"))
    with pytest.raises(ConfigError, match="versions overlap"):
        load_tariff(path)


def test_the_shipped_tariffs_load_and_the_flat_form_still_works() -> None:
    tariffs = load_tariffs(REPO / "config" / "tariffs")
    assert {"flat-2026", "basic-2026"} <= set(tariffs)
    flat = tariffs["flat-2026"]
    kinds = [c.kind for c in flat.versions[0].components]
    assert kinds == ["standing", "energy", "export"]
    start, end = day(2026, 11, 1), day(2026, 11, 2)
    lines = rate(flat, hourly(start, end, "0.5"), start, end, AMS)
    # standing 1 day x 0.61234 = 0.61; 12 kWh x 0.27815 = 3.3378 -> 3.34; no export: 0.00
    assert [x.amount for x in lines] == [D("0.61"), D("3.34"), D("0.00")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('type = "energy"\nprice = 0.20', 'type = "energie"\nprice = 0.20'),
         r"line 15: key 'version.charge\[1\].type': unknown charge type 'energie'"),
        (("price = 0.20", "price = -0.20"), r"line 16: key 'version.charge\[1\].price'"),
        (("price = 0.20", "price = 0.20\nprise = 1"), r"line 17: key 'version.charge\[1\].prise'"),
        (('currency = "EUR"', 'currency = "XYZ"'), "unknown currency 'XYZ'"),
        (('currency = "EUR"', 'currency = "EUR"\nrounding = "nearest"'), "rounding"),
    ],
)  # fmt: skip
def test_errors_name_file_line_and_key(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CHANGE.replace(*change, 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_tariff(path)
    assert str(path) in str(info.value)


def test_schedule_that_leaves_times_uncovered_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tou.toml"
    path.write_text(
        'id = "x"\ncurrency = "EUR"\n[[version]]\neffective_from = 2026-01-01\n'
        '[[version.charge]]\ntype = "tou"\nperiods = { peak = 0.3 }\n'
        'schedule = [{ days = "weekday", hours = "07:00-23:00", period = "peak" }]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="uncovered: add default"):
        load_tariff(path)


def test_holidays_file_and_finer_than_hour_rules(tmp_path: Path) -> None:
    (tmp_path / "holidays.txt").write_text("# NL\n2026-12-25\n2026-12-26\n", encoding="utf-8")
    path = tmp_path / "tou.toml"
    path.write_text(
        'id = "x"\ncurrency = "EUR"\nholidays_file = "holidays.txt"\n'
        "[[version]]\neffective_from = 2026-01-01\n"
        '[[version.charge]]\ntype = "tou"\ndefault = "off"\n'
        "periods = { peak = 0.3, off = 0.1 }\n"
        'schedule = [{ days = "weekday", hours = "07:30-08:15", period = "peak" }]\n',
        encoding="utf-8",
    )
    t = load_tariff(path)
    assert day(2026, 12, 25).date() in t.versions[0].holidays
    start = day(2026, 11, 2)
    step = timedelta(minutes=15)
    u = [UsageInterval(start.astimezone(UTC) + step * i, start.astimezone(UTC) + step * (i + 1),
                       D(1), "kWh", "actual") for i in range(96)]  # fmt: skip
    lines = {x.period: x for x in rate(t, u, start, day(2026, 11, 3), AMS)}
    # 07:30, 07:45, 08:00 are peak: 3 kWh x 0.3 = 0.90; the other 93 x 0.1 = 9.30
    assert (lines["peak"].quantity, lines["peak"].amount) == (D(3), D("0.90"))
    assert lines["off"].amount == D("9.30")


def test_combination_on_the_shipped_tou_tariff_across_its_price_change() -> None:
    t = load_tariff(REPO / "config" / "tariffs" / "tou-2026.toml")
    # Mon 29 Jun .. Thu 2 Jul 2026, 1 kWh an hour; summer weekday peak is 07-21 = 14 h a day
    start, end = day(2026, 6, 29), day(2026, 7, 3)
    lines = rate(t, hourly(start, end, "1"), start, end, AMS)
    got = [(x.tariff_version, x.label, x.quantity, x.amount) for x in lines]
    old, new = "2026-01-01", "2026-07-01"
    assert got == [
        # 29-30 Jun: standing 2 x 0.61234 = 1.22468 -> 1.22; peak 28 kWh x 0.2850 = 7.98;
        # offpeak 20 x 0.2110 = 4.22; no export; energy tax 48 x 0.1088 = 5.2224 -> 5.22;
        # VAT 21% of (1.22 + 7.98 + 4.22 + 0.00 + 5.22 = 18.64) = 3.9144 -> 3.91
        (old, "Standing charge", D(2), D("1.22")),
        (old, "Energy, peak (Mon-Fri day)", D(28), D("7.98")),
        (old, "Energy, offpeak (nights, weekends, holidays)", D(20), D("4.22")),
        (old, "Export credit", D(0), D("0.00")),
        (old, "Energy tax", D(48), D("5.22")),
        (old, "VAT 21%", D("18.64"), D("3.91")),
        # 1-2 Jul: standing 2 x 0.63101 = 1.26202 -> 1.26; peak 28 x 0.2790 = 7.812 -> 7.81;
        # offpeak 20 x 0.2035 = 4.07; energy tax 5.22;
        # VAT 21% of (1.26 + 7.81 + 4.07 + 0.00 + 5.22 = 18.36) = 3.8556 -> 3.86
        (new, "Standing charge", D(2), D("1.26")),
        (new, "Energy, peak (Mon-Fri day)", D(28), D("7.81")),
        (new, "Energy, offpeak (nights, weekends, holidays)", D(20), D("4.07")),
        (new, "Export credit", D(0), D("0.00")),
        (new, "Energy tax", D(48), D("5.22")),
        (new, "VAT 21%", D("18.36"), D("3.86")),
    ]
    # total = 18.64 + 3.91 + 18.36 + 3.86 = 44.77
    assert sum(x.amount for x in lines) == D("44.77")


def test_prorated_tier_limit_is_exact_for_any_share_of_days(tmp_path: Path) -> None:
    text = CHANGE.replace(
        'type = "energy"\nprice = 0.20',
        'type = "tiers"\ntiers = [{ upto = 30, price = 0.20 }, { price = 0.25 }]',
    ).replace("2026-11-16", "2026-11-18")
    path = tmp_path / "tiers17.toml"
    path.write_text(text, encoding="utf-8")
    start, end = day(2026, 11, 1), day(2026, 12, 1)
    lines = rate(load_tariff(path), hourly(start, end, "0.1"), start, end, AMS)
    tiers = [x for x in lines if x.component == "tier"]
    # the old version covers 17 of 30 days: limit 30 x 17 / 30 = 17 kWh exactly (not
    # 17.00000000000000000000000001); usage 17 x 2.4 = 40.8 kWh
    # tier 1: 17 x 0.20 = 3.40; tier 2: 23.8 x 0.25 = 5.95
    assert [(x.quantity, x.amount) for x in tiers] == [(D(17), D("3.40")), (D("23.8"), D("5.95"))]
    assert "17 of the period's 30 days" in tiers[0].explanation[0]
