"""Issued bills are never changed; late data for a billed period becomes correction lines on
the next bill (real ingest with VEE, real SQLite, the tariff of ``_bills.ELECTRICITY``)."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from collector.errors import RatingError
from collector.rating.html import render_html
from collector.rating.render import render_text

from ._bills import EXPORT, HOUR, IMPORT, Site, hourly
from ._fixtures import T0, T_END

ACCOUNT = """
[[account]]
id = "acc-1"
name = "Late data"
timezone = "Europe/Amsterdam"
[[account.service_point]]
id = "sp-e"
tariff = "e-tou"
meters = ["em-1"]
"""
DAY = 24 * HOUR
CUT = T_END - 12 * HOUR  # Monday 30 November 12:00 local: the last reading before the issue
ISSUED_AT = T_END + 6 * HOUR  # 1 December 06:00 local (05:00Z)
LATE_AT = T_END + 33 * DAY  # 3 January: December's readings and the missing half-day arrive
DEC_END = 1_798_758_000_000  # 2027-01-01T00:00:00+01:00


def readings(first_ms: int, last_ms: int) -> list:
    """+0.5 kWh import, +0.1 kWh export every hour, counted from 2 h before November."""
    start = T0 - 2 * HOUR
    skip = (first_ms - start) // HOUR
    hours = (last_ms - first_ms) // HOUR
    imp = Decimal("1000.000") + Decimal("0.5") * skip
    exp = Decimal("50.000") + Decimal("0.1") * skip
    step_i, step_e = (lambda _h: Decimal("0.5")), (lambda _h: Decimal("0.1"))
    return hourly(IMPORT, "kWh", first_ms, hours, imp, step_i) + hourly(
        EXPORT, "kWh", first_ms, hours, exp, step_e
    )


@pytest.fixture
def site(tmp_path: Path) -> Site:
    site = Site(tmp_path, ACCOUNT)
    site.enrol(["em-1"])
    site.feed("em-1", readings(T0 - 2 * HOUR, CUT), ISSUED_AT)
    return site


def test_an_issued_bill_is_numbered_stored_and_never_changed(site: Site) -> None:
    doc, state = site.bill("acc-1", "2026-11", ISSUED_AT, issue=True)
    assert state == "issued" and doc["number"] == "B0000001"
    assert doc["issued"] == "2026-12-01T05:00:00.000Z"
    # issuing again, or showing it, returns the stored document as it was
    again, state = site.bill("acc-1", "2026-11", LATE_AT, issue=True)
    assert state == "stored" and again == doc
    site.feed("em-1", readings(CUT, DEC_END + 2 * HOUR), LATE_AT)
    shown, state = site.bill("acc-1", "2026-11", LATE_AT)
    assert state == "stored" and shown == doc
    with sqlite3.connect(site.db) as conn:
        for sql in (
            "UPDATE bills SET total = '0.00'",
            "DELETE FROM bills",
            "UPDATE bill_lines SET amount = '0.00'",
            "DELETE FROM bill_lines",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="never"):
                conn.execute(sql)
        stored = conn.execute("SELECT document FROM bills").fetchone()[0]
    assert json.loads(stored) == doc


def test_a_period_not_over_is_not_issued(site: Site) -> None:
    with pytest.raises(RatingError, match="not over yet"):
        site.bill("acc-1", "2026-11", T_END - HOUR, issue=True)


def test_late_data_after_the_issue_is_corrected_on_the_next_bill(site: Site) -> None:
    nov, _ = site.bill("acc-1", "2026-11", ISSUED_AT, issue=True)
    (section,) = nov["sections"]
    got = {(li["component"], li["tou_period"]): li["amount"] for li in section["lines"]}
    # up to Monday 30 November 12:00: 708 h; peak 336 - 11 = 325 h x 0.5 = 162.5 kWh x 0.30 =
    # 48.75; off-peak 383 h x 0.5 = 191.5 kWh x 0.20 = 38.30; export 70.8 kWh x 0.07 = 4.956
    # -> -4.96; VAT 21 % x (15.00 + 48.75 + 38.30 = 102.05) = 21.4305 -> 21.43
    assert got == {
        ("standing", ""): "15.00",
        ("tou", "peak"): "48.75",
        ("tou", "offpeak"): "38.30",
        ("export", ""): "-4.96",
        ("tax", ""): "21.43",
    }
    assert nov["total"] == "118.52"
    # the rest of 30 November (12:00-24:00: 11 h peak, 1 h off-peak) arrives with December
    site.feed("em-1", readings(CUT, DEC_END + 2 * HOUR), LATE_AT)
    dec, state = site.bill("acc-1", "2026-12", LATE_AT, issue=True)
    assert state == "issued" and dec["number"] == "B0000002"
    corrections = {
        c["corrects_key"].split("|")[0] + "|" + c["tou_period"]: c for c in dec["corrections"]
    }
    # the differences: peak +5.5 kWh = +1.65; off-peak +0.5 kWh = +0.10; export +1.2 kWh:
    # 72 x 0.07 = 5.04 vs 4.96 billed -> -0.08; VAT 21.80 - 21.43 = +0.37
    assert {k: (c["quantity"], c["amount"]) for k, c in corrections.items()} == {
        "tou|peak": ("5.500", "1.65"),
        "tou|offpeak": ("0.500", "0.10"),
        "export|": ("1.200", "-0.08"),
        "tax|": ("1.75", "0.37"),  # the base grew by 1.65 + 0.10 = 1.75
    }
    peak = corrections["tou|peak"]
    assert peak["corrects_period"] == "2026-11" and peak["corrects_bill"] == "B0000001"
    assert peak["label"].startswith("Correction 2026-11 (bill B0000001): ")
    assert peak["billed_amount"] == "48.75"
    assert "late or corrected data: 12 interval(s) of meter em-1 1-0:1.8.0" in peak["reason"]
    assert "derived after bill B0000001 was issued" in peak["reason"]
    assert "standing|" not in corrections  # unchanged lines are not repeated
    lines = sum(Decimal(s["subtotal"]) for s in dec["sections"])
    assert Decimal(dec["total"]) == lines + Decimal("2.04")  # 1.65 + 0.10 - 0.08 + 0.37
    page = render_html(dec)
    assert "Corrections of earlier bills" in page and "B0000001" in page
    text = render_text(dec)
    assert "== Corrections of earlier bills" in text and "Bill number B0000002" in text
    # the November bill is as issued; a later bill does not correct the same difference twice
    assert site.bill("acc-1", "2026-11", LATE_AT)[0] == nov
    jan, _ = site.bill("acc-1", "2027-01", LATE_AT + 30 * DAY)
    assert jan["corrections"] == []
