"""Bill outputs (JSON, CSV, text, HTML) of the three-commodity bill, and ``collector bill``
on the command line: one account, and ``--all`` as a bill run in a real process."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from collector import cli as collector_cli
from collector.rating.html import render_html
from collector.rating.render import CSV_COLUMNS, render_csv, render_text
from meterlink.procs import Proc

from ._bills import AFTER, Site, convergent_site

AS_OF = "2026-12-11T00:00:00Z"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return convergent_site(tmp_path_factory.mktemp("outputs"))


@pytest.fixture(scope="module")
def doc(site: Site) -> dict:
    return site.bill("acc-1", "2026-11", AFTER)[0]


class Checker(HTMLParser):
    """Well-formedness: every opened element is closed in order (void elements excepted)."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.count: dict[str, int] = {}
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.count[tag] = self.count.get(tag, 0) + 1
        self.attrs.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_json_is_complete_and_exact(doc: dict) -> None:
    again = json.loads(json.dumps(doc))
    assert again == doc
    line = doc["sections"][0]["lines"][1]
    for key in (
        "component",
        "label",
        "quantity",
        "unit",
        "unit_price",
        "amount",
        "start",
        "end",
        "actual_intervals",
        "estimated_intervals",
        "explanation",
    ):
        assert key in line
    assert doc["status"] == "draft" and doc["number"] is None
    assert [s["commodity"] for s in doc["sections"]] == ["electricity", "gas", "water"]
    assert all(isinstance(v, str) for v in (doc["total"], line["amount"], line["unit_price"]))


def test_csv_has_a_row_per_line_and_the_rows_add_up_to_the_total(doc: dict) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv([doc]))))
    assert tuple(rows[0]) == CSV_COLUMNS
    lines = [r for r in rows if r["component"] != "total"]
    assert len(lines) == 5 + 2 + 2
    assert {r["commodity"] for r in lines} == {"electricity", "gas", "water"}
    (total,) = [r for r in rows if r["component"] == "total"]
    assert total["amount"] == "235.76"
    assert sum(Decimal(r["amount"]) for r in lines) == Decimal("235.76")


def test_text_shows_each_section_and_how_lines_were_computed(doc: dict) -> None:
    text = render_text(doc)
    assert "== Electricity, service point sp-e" in text
    assert "== Gas, service point sp-g" in text and "== Water, service point sp-w" in text
    assert "Bill number (draft, not issued)" in text
    assert "336 actual, 0 estimated intervals" in text
    assert text.rstrip().splitlines()[-2].split()[-2:] == ["235.76", "EUR"]


def test_html_is_well_formed_self_contained_with_a_tou_coloured_heat_map(doc: dict) -> None:
    page = render_html(doc)
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert page.startswith("<!DOCTYPE html>")
    # nothing loaded from elsewhere: no scripts, links, images or remote URLs
    assert not {"script", "link", "img", "iframe"} & set(checker.count)
    for _tag, attrs in checker.attrs:
        for name, value in attrs.items():
            if name in ("src", "href"):
                pytest.fail(f"external reference {name}={value}")
    assert checker.count["svg"] == 3  # one heat map per service point
    assert checker.count["rect"] == 3 * 30 * 24  # day x hour cells
    fills = {a["fill"] for t, a in checker.attrs if t == "rect" and a.get("fill")}
    assert len(fills) >= 2  # electricity's peak and off-peak differ in colour
    text = "".join(checker.text)
    assert "2026-11-02 07:00 peak: 0.500 kWh" in text  # a cell's title
    assert "Total" in text and "235.76" in text
    assert "21 % of" in text or "VAT" in text  # the tax line is there with its explanation


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = collector_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_bill_command_formats_and_out_file(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "bill",
        "--config",
        site.config_path,
        "--account",
        "acc-1",
        "--period",
        "2026-11",
        "--as-of",
        AS_OF,
    ]
    rc, out, _ = cli(capsys, *base, "--format", "json")
    assert rc == 0 and json.loads(out)["total"] == "235.76"
    rc, out, _ = cli(capsys, *base, "--json")
    assert rc == 0 and json.loads(out)["total"] == "235.76"
    rc, out, _ = cli(capsys, *base, "--format", "csv")
    assert rc == 0 and out.splitlines()[0].startswith("bill,account,period")
    page = tmp_path / "bill.html"
    rc, out, err = cli(capsys, *base, "--format", "html", "--out", page)
    assert rc == 0 and out == "" and "draft" in err and str(page) in err
    assert page.read_text().startswith("<!DOCTYPE html>")
    rc, _, err = cli(capsys, *base[:-4], "--account", "nope", "--period", "2026-11")
    assert rc == 2 and "no account 'nope' (known: acc-1)" in err
    rc, _, err = cli(
        capsys, *base[:5], "--period", "2026-11", "--as-of", "2026-11-20T00:00:00Z", "--issue"
    )
    assert rc == 2 and "not over yet" in err


ALL = """
[[account]]
id = "acc-1"
name = "One"
timezone = "Europe/Amsterdam"
[[account.service_point]]
tariff = "e-tou"
meters = ["em-1"]

[[account]]
id = "acc-2"
name = "Two (gas, priced by an electricity tariff: fails)"
timezone = "Europe/Amsterdam"
[[account.service_point]]
commodity = "gas"
tariff = "e-tou"
meters = ["gm-1"]

[[account]]
id = "acc-3"
name = "Three"
timezone = "Europe/Amsterdam"
[[account.service_point]]
commodity = "water"
tariff = "water-flat"
meters = ["wm-1"]
"""


@pytest.mark.integration
def test_bill_run_all_as_a_process_issues_every_bill_it_can_with_progress(
    tmp_path: Path,
) -> None:
    site = convergent_site(tmp_path / "site")
    (site.root / "accounts.toml").write_text(ALL)
    out = tmp_path / "bills"
    args = [
        "collector",
        "bill",
        "--all",
        "--period",
        "2026-11",
        "--config",
        str(site.config_path),
        "--as-of",
        AS_OF,
        "--issue",
        "--format",
        "html",
        "--out",
        str(out),
    ]
    proc = Proc.python("meterlink", *args, name="bill-run", cwd=tmp_path)
    try:
        rc = proc.popen.wait(timeout=120)
    finally:
        proc.stop()
    text = proc.output
    assert rc == 2, text  # acc-2 cannot be billed; the others are
    assert "[1/3] acc-1: issued B0000001, total " in text
    assert (
        "[2/3] acc-2: FAILED: account acc-2 service point acc-2-gas (gas, m3): tariff e-tou" in text
    )
    assert "[3/3] acc-3: issued B0000002, total 13.20 EUR" in text
    assert "bill run 2026-11: 2 bill(s) (2 issued now, 0 issued before, 0 draft), 1 failed" in text
    assert sorted(p.name for p in out.iterdir()) == ["acc-1-2026-11.html", "acc-3-2026-11.html"]
    # a second run issues nothing new: the stored bills are shown as issued
    csv_out = tmp_path / "run.csv"
    again = Proc.python(
        "meterlink",
        *args[:-4],
        "--format",
        "csv",
        "--out",
        str(csv_out),
        name="bill-run-2",
        cwd=tmp_path,
    )
    try:
        assert again.popen.wait(timeout=120) == 2
    finally:
        again.stop()
    assert "(0 issued now, 2 issued before, 0 draft)" in again.output
    rows = list(csv.DictReader(csv_out.open()))
    assert {r["bill"] for r in rows} == {"B0000001", "B0000002"}
