"""Accounts, service points over time (move-in, move-out, meter swap, tariff change) and
billing periods by cycle day, loaded from real TOML files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.errors import ConfigError, RatingError
from collector.rating.accounts import load_accounts, parse_period

from ._fixtures import T0, T_END

REPO = Path(__file__).resolve().parents[2]
TARIFFS = {"flat", "tou", "gas", "water"}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).astimezone(UTC).timestamp() * 1000)


def load(tmp_path: Path, text: str):
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return load_accounts(path, TARIFFS)


def test_the_demo_accounts_load_with_a_service_point_per_meter() -> None:
    tariffs = {path.stem for path in (REPO / "config/tariffs").glob("*.toml")}
    accounts = load_accounts(REPO / "config/accounts/demo.toml", tariffs)
    assert sorted(accounts) == [f"acc-100{i}" for i in range(1, 8)]
    assert accounts["acc-1006"].service_points[0].tariffs[0].tariff_id == "tou-2026"
    assert accounts["acc-1002"].meters == ("em-sdm-02", "em-em24-01")
    assert [p.commodity for p in accounts["acc-1004"].service_points] == ["electricity"] * 2


def test_the_first_versions_shorthand_is_one_electricity_service_point(tmp_path: Path) -> None:
    accounts = load(
        tmp_path,
        '[[account]]\nid = "a-1"\ntimezone = "Europe/Amsterdam"\ntariff = "flat"\n'
        'meters = ["em-1", "em-2"]\n',
    )
    (point,) = accounts["a-1"].service_points
    assert (point.id, point.commodity, point.unit) == ("a-1-electricity", "electricity", "kWh")
    # plain ids are all there all along (their usage adds up); a history takes tables
    assert [(m.meter_id, m.start_ms) for m in point.meters] == [("em-1", 0), ("em-2", 0)]
    assert point.meters[0].end_ms == point.meters[1].end_ms


def test_move_in_swap_and_tariff_change_are_instants_in_the_accounts_zone(
    tmp_path: Path,
) -> None:
    accounts = load(
        tmp_path,
        """
[[account]]
id = "a-1"
name = "New tenant"
timezone = "Europe/Amsterdam"
cycle_day = 17

[[account.service_point]]
id = "sp-e"
commodity = "electricity"
moved_in = 2026-11-17
tariffs = [{ tariff = "flat", from = 2026-01-01 }, { tariff = "tou", from = 2026-12-01 }]
meters = [
  { meter = "em-old", to = 2026-11-20T10:30:00 },
  { meter = "em-new", from = 2026-11-20T10:30:00 },
]

[[account.service_point]]
commodity = "gas"
moved_in = 2026-11-17
moved_out = 2027-03-01
tariff = "gas"
meters = ["gm-1"]
""",
    )
    e, gas = accounts["a-1"].service_points
    assert e.start_ms == ms("2026-11-17T00:00:00+01:00")
    assert (e.meters[0].meter_id, e.meters[0].end_ms) == (
        "em-old",
        ms("2026-11-20T10:30:00+01:00"),
    )
    assert e.meters[1].start_ms == ms("2026-11-20T10:30:00+01:00")
    assert [t.tariff_id for t in e.tariffs] == ["flat", "tou"]
    assert e.tariffs[0].end_ms == e.tariffs[1].start_ms == ms("2026-12-01T00:00:00+01:00")
    assert (gas.id, gas.unit, gas.end_ms) == ("a-1-gas", "m3", ms("2027-03-01T00:00:00+01:00"))
    period = parse_period("2026-11", accounts["a-1"])
    assert (period.start_ms, period.end_ms) == (
        ms("2026-11-17T00:00:00+01:00"),
        ms("2026-12-17T00:00:00+01:00"),
    )
    spans = e.meters_between(period.start_ms, period.end_ms)
    assert [(s.meter_id, s.start_ms) for s in spans] == [
        ("em-old", ms("2026-11-17T00:00:00+01:00")),
        ("em-new", ms("2026-11-20T10:30:00+01:00")),
    ]
    assert [t.tariff_id for t in e.tariffs_between(period.start_ms, period.end_ms)] == [
        "flat",
        "tou",
    ]


def test_a_cycle_day_beyond_a_short_month_is_its_last_day(tmp_path: Path) -> None:
    accounts = load(
        tmp_path,
        '[[account]]\nid = "a-1"\ntimezone = "UTC"\ncycle_day = 31\ntariff = "flat"\n'
        'meters = ["em-1"]\n',
    )
    feb = parse_period("2027-02", accounts["a-1"])
    assert (str(feb.first_day), str(feb.next_first_day), feb.days) == (
        "2027-02-28",
        "2027-03-31",
        31,
    )
    monthly = load(
        tmp_path,
        '[[account]]\nid = "a-2"\ntimezone = "Europe/Amsterdam"\ntariff = "flat"\n'
        'meters = ["em-1"]\n',
    )
    nov = parse_period("2026-11", monthly["a-2"])
    assert (nov.start_ms, nov.end_ms, nov.days) == (T0, T_END, 30)


def test_a_meter_may_pass_to_the_next_tenant_but_not_serve_two_at_once(tmp_path: Path) -> None:
    two = """
[[account]]
id = "a-old"
timezone = "Europe/Amsterdam"
[[account.service_point]]
moved_out = 2026-11-17
tariff = "flat"
meters = ["em-1"]

[[account]]
id = "a-new"
timezone = "Europe/Amsterdam"
[[account.service_point]]
moved_in = MOVE_IN
tariff = "flat"
meters = ["em-1"]
"""
    accounts = load(tmp_path, two.replace("MOVE_IN", "2026-11-17"))
    assert (
        accounts["a-new"].service_points[0].start_ms == accounts["a-old"].service_points[0].end_ms
    )
    with pytest.raises(ConfigError) as err:
        load(tmp_path, two.replace("MOVE_IN", "2026-11-16"))
    assert "meter em-1 already in account a-old (service point a-old-electricity)" in str(err.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('commodity = "steam"\ntariff = "flat"\nmeters = ["m"]', "unknown commodity 'steam'"),
        ('tariff = "nope"\nmeters = ["m"]', "unknown tariff 'nope'"),
        ('tariff = "flat"\nmeters = ["m"]\nmoved_in = "soon"', "must be a date"),
        (
            'tariff = "flat"\nmeters = ["m"]\nmoved_in = 2026-11-17\nmoved_out = 2026-11-01',
            "must be after moved_in",
        ),
        (
            'tariff = "flat"\nmeters = [{ meter = "a", to = 2026-11-20 }, '
            '{ meter = "b", from = 2026-11-19 }]',
            "b starts before a ends (overlap)",
        ),
        ('tariff = "flat"', "missing key 'meters'"),
    ],
)
def test_a_wrong_service_point_names_file_line_and_key(
    tmp_path: Path, body: str, message: str
) -> None:
    text = f'[[account]]\nid = "a-1"\ntimezone = "UTC"\n\n[[account.service_point]]\n{body}\n'
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert message in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'accounts.toml'}, line ")


def test_a_bad_period_says_the_form() -> None:
    tariffs = {path.stem for path in (REPO / "config/tariffs").glob("*.toml")}
    accounts = load_accounts(REPO / "config/accounts/demo.toml", tariffs)
    with pytest.raises(RatingError, match="expected YYYY-MM"):
        parse_period("2026-13", accounts["acc-1001"])
