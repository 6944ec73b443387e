"""The convergent bill from VEE's derived intervals (real ingest with VEE, real SQLite):
electricity, gas and water of one account on one bill, a move-in on the 17th, a meter swap
mid-period, against hand-computed amounts.

November 2026 in Europe/Amsterdam: 1 November is a Sunday; 30 days, 720 hours (no DST change);
weekdays: 2-6, 9-13, 16-20, 23-27 and 30 November = 21 days. The electricity tariff
(``_bills.ELECTRICITY``): standing 0.50/day, TOU peak Mon-Fri 07:00-23:00 at 0.30/kWh, off-peak
0.20/kWh, export credit 0.07/kWh, VAT 21 % on standing + TOU.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ._bills import AFTER, FIRST, HOUR, Site, convergent_site, electricity
from ._fixtures import T0


def by(doc: dict, point: str) -> dict:
    return next(s for s in doc["sections"] if s["service_point"] == point)


def amounts(section: dict) -> dict[tuple[str, str], str]:
    return {(line["component"], line["tou_period"]): line["amount"] for line in section["lines"]}


@pytest.fixture(scope="module")
def convergent(tmp_path_factory: pytest.TempPathFactory) -> dict:
    site = convergent_site(tmp_path_factory.mktemp("convergent"))
    doc, state = site.bill("acc-1", "2026-11", AFTER)
    assert state == "draft"
    return doc


def test_one_bill_has_a_section_per_commodity_with_hand_computed_lines(convergent: dict) -> None:
    doc = convergent
    assert [s["commodity"] for s in doc["sections"]] == ["electricity", "gas", "water"]
    e = by(doc, "sp-e")
    # standing 30 x 0.50 = 15.00; peak 21 days x 16 h x 0.5 kWh = 168 kWh x 0.30 = 50.40;
    # off-peak (720 - 336) h x 0.5 = 192 kWh x 0.20 = 38.40; export 720 x 0.1 = 72 kWh x 0.07
    # = 5.04 credit; VAT 21 % x (15.00 + 50.40 + 38.40 = 103.80) = 21.798 -> 21.80
    assert amounts(e) == {
        ("standing", ""): "15.00",
        ("tou", "peak"): "50.40",
        ("tou", "offpeak"): "38.40",
        ("export", ""): "-5.04",
        ("tax", ""): "21.80",
    }
    tou = {line["tou_period"]: line for line in e["lines"] if line["component"] == "tou"}
    assert (Decimal(tou["peak"]["quantity"]), Decimal(tou["offpeak"]["quantity"])) == (168, 192)
    assert tou["peak"]["actual_intervals"] == 336 and tou["peak"]["estimated_intervals"] == 0
    assert e["subtotal"] == "120.56"  # 15.00 + 50.40 + 38.40 - 5.04 + 21.80
    # gas: 30 x 0.40 = 12.00 + 720 x 0.1 = 72 m3 x 1.25 = 90.00
    assert amounts(by(doc, "sp-g")) == {("standing", ""): "12.00", ("energy", ""): "90.00"}
    # water: 30 x 0.20 = 6.00 + 720 x 0.005 = 3.6 m3 x 2.0 = 7.20
    assert amounts(by(doc, "sp-w")) == {("standing", ""): "6.00", ("energy", ""): "7.20"}
    assert doc["total"] == "235.76"  # 120.56 + 102.00 + 13.20
    assert Decimal(doc["total"]) == sum(Decimal(line["amount"]) for line in doc["lines"])


def test_each_section_names_its_meters_quantities_and_interval_qualities(
    convergent: dict,
) -> None:
    e, gas, water = convergent["sections"]
    (meter,) = e["meters"]
    quantities = {q["obis"]: q for q in meter["quantities"]}
    assert quantities["1-0:1.8.0"]["total"] == "360.000"  # exact, at the register's resolution
    assert quantities["1-0:1.8.0"]["intervals"] == {"actual": 720}
    assert quantities["1-0:1.8.0"]["source"] == "vee"
    assert quantities["1-0:2.8.0"]["total"] == "72.000"
    (gq,) = gas["meters"][0]["quantities"]
    assert (gq["obis"], gq["unit"], gq["total"]) == ("7-0:3.0.0", "m3", "72.000")
    assert water["meters"][0]["quantities"][0]["obis"] == "8-0:1.0.0"
    assert len(e["usage_by_hour"]) == 30 and len(e["usage_by_hour"]["2026-11-02"]) == 24
    assert e["usage_by_hour"]["2026-11-02"][7] == "0.500"
    assert e["tou_by_hour"]["2026-11-02"][7] == "peak"  # Monday 07:00
    assert e["tou_by_hour"]["2026-11-01"][12] == "offpeak"  # Sunday


MOVE = """
[[account]]
id = "acc-old"
name = "Leaving"
timezone = "Europe/Amsterdam"
[[account.service_point]]
id = "sp-old"
moved_out = 2026-11-17
tariff = "e-tou"
meters = ["em-1"]

[[account]]
id = "acc-new"
name = "Arriving"
timezone = "Europe/Amsterdam"
[[account.service_point]]
id = "sp-new"
moved_in = 2026-11-17
tariff = "e-tou"
meters = ["em-1"]
"""


def test_move_in_on_the_17th_bills_14_days_and_the_usage_from_that_midnight(
    tmp_path: Path,
) -> None:
    site = Site(tmp_path, MOVE)
    site.enrol(["em-1"])
    site.feed("em-1", electricity(), AFTER)
    new, _ = site.bill("acc-new", "2026-11", AFTER)
    (section,) = new["sections"]
    assert section["start_local"] == "2026-11-17T00:00:00+01:00"
    # 17..30 November: 14 days x 0.50 = 7.00; 336 h; weekdays 17-20, 23-27, 30 = 10 days:
    # peak 160 h x 0.5 = 80 kWh x 0.30 = 24.00; off-peak 176 h x 0.5 = 88 kWh x 0.20 = 17.60;
    # export 336 x 0.1 = 33.6 kWh x 0.07 = 2.352 -> -2.35;
    # VAT 21 % x (7.00 + 24.00 + 17.60 = 48.60) = 10.206 -> 10.21
    assert amounts(section) == {
        ("standing", ""): "7.00",
        ("tou", "peak"): "24.00",
        ("tou", "offpeak"): "17.60",
        ("export", ""): "-2.35",
        ("tax", ""): "10.21",
    }
    assert new["total"] == "56.46"
    old, _ = site.bill("acc-old", "2026-11", AFTER)
    (section,) = old["sections"]
    # 1..16 November: 16 days x 0.50 = 8.00; 384 h of which peak: weekdays 2-6, 9-13, 16 =
    # 11 days x 16 h = 176 h (88 kWh x 0.30 = 26.40), off-peak 208 h (104 kWh x 0.20 = 20.80)
    got = amounts(section)
    assert (got[("standing", "")], got[("tou", "peak")], got[("tou", "offpeak")]) == (
        "8.00",
        "26.40",
        "20.80",
    )
    assert section["end_local"] == "2026-11-17T00:00:00+01:00"


SWAP = """
[[account]]
id = "acc-1"
name = "Swap"
timezone = "Europe/Amsterdam"
[[account.service_point]]
id = "sp-e"
tariff = "e-tou"
meters = [
  { meter = "em-old", to = 2026-11-12T10:00:00 },
  { meter = "em-new", from = 2026-11-12T10:00:00 },
]
"""


def test_a_meter_swap_mid_period_joins_both_meters_intervals(tmp_path: Path) -> None:
    site = Site(tmp_path, SWAP)
    site.enrol(["em-old", "em-new"])
    swap = T0 + (11 * 24 + 10) * HOUR  # 12 November 10:00 local = 274 h into the month
    site.feed("em-old", electricity(FIRST, 276, "7000.000"), AFTER)  # final read at the swap
    site.feed("em-new", electricity(swap, 720 - 274 + 2, "0.000"), AFTER)
    doc, _ = site.bill("acc-1", "2026-11", AFTER)
    (section,) = doc["sections"]
    old, new = section["meters"]
    assert (old["meter"], old["end_local"]) == ("em-old", "2026-11-12T10:00:00+01:00")
    assert (new["meter"], new["start_local"]) == ("em-new", "2026-11-12T10:00:00+01:00")
    old_import = next(q for q in old["quantities"] if q["obis"] == "1-0:1.8.0")
    new_import = next(q for q in new["quantities"] if q["obis"] == "1-0:1.8.0")
    # 274 h x 0.5 = 137 kWh on the old meter, 446 h x 0.5 = 223 kWh on the new one
    assert (old_import["total"], new_import["total"]) == ("137.000", "223.000")
    # together the whole month: the same amounts as one meter all month
    assert amounts(section)[("tou", "peak")] == "50.40"
    assert amounts(section)[("tou", "offpeak")] == "38.40"
    assert doc["total"] == "120.56"
