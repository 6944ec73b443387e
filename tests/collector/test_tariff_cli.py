"""``meterlink rate`` as a process: a usage CSV rated against a tariff file, text and JSON, and
errors that name the file and line."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytestmark = pytest.mark.integration

AMS = ZoneInfo("Europe/Amsterdam")
TARIFF = """
id = "home-tou"
name = "Home TOU"
currency = "EUR"
holidays = [2026-11-11]

[[version]]
effective_from = 2026-01-01

[[version.charge]]
type = "standing"
price = 0.45

[[version.charge]]
type = "tou"
default = "offpeak"
schedule = [{ days = "weekday", hours = "07:00-23:00", period = "peak" }]
periods = { peak = 0.30, offpeak = 0.20 }

[[version.charge]]
type = "export"
price = 0.07

[[version.charge]]
type = "tax"
label = "VAT"
percent = 21
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meterlink", "rate", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def write_usage(path: Path, start: datetime, hours: int, quantity: str) -> None:
    lines = ["start,quantity,quality"]
    for i in range(hours):
        t = (start + timedelta(hours=i)).astimezone(AMS)  # wall clock + offset, as a meter file
        lines.append(f"{t.isoformat()},{quantity},{'estimated' if i == 0 else 'actual'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_rate_prints_the_bill_as_text_and_json(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(TARIFF, encoding="utf-8")
    (tmp_path / "account.toml").write_text(
        'timezone = "Europe/Amsterdam"\nholidays = [2026-11-10]\n', encoding="utf-8"
    )
    # Monday 2026-11-09 .. Thursday 2026-11-12 (3 days), 1 kWh an hour; export 2 kWh
    start = datetime(2026, 11, 9, tzinfo=AMS)
    write_usage(tmp_path / "usage.csv", start, 72, "1")
    write_usage(tmp_path / "export.csv", start, 2, "1")
    args = ["--tariff", str(tmp_path / "t.toml"), "--usage", str(tmp_path / "usage.csv"),
            "--account-file", str(tmp_path / "account.toml"), "--export",
            str(tmp_path / "export.csv")]  # fmt: skip
    done = run(*args, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    amounts = {line["label"]: Decimal(line["amount"]) for line in doc["lines"]}
    # days 9 (Mon), 10 (holiday from the account file), 11 (holiday in the tariff): only the
    # 9th has peak hours: 16 x 0.30 = 4.80; offpeak 8 + 24 + 24 = 56 x 0.20 = 11.20
    # standing 3 x 0.45 = 1.35; export 2 x 0.07 = -0.14; VAT 21% of 17.21 = 3.6141 -> 3.61
    assert amounts == {
        "Standing charge": Decimal("1.35"),
        "Energy, peak": Decimal("4.80"),
        "Energy, offpeak": Decimal("11.20"),
        "Export credit": Decimal("-0.14"),
        "VAT 21%": Decimal("3.61"),
    }
    assert doc["total"] == "20.82"
    assert doc["intervals"] == {"count": 72, "actual": 71, "estimated": 1, "gap": 0}
    assert doc["period"]["start"] == "2026-11-09T00:00:00+01:00"
    text = run(*args)
    assert text.returncode == 0, text.stderr
    assert "Total 20.82 EUR" in text.stdout
    assert "16 kWh x 0.3 EUR/kWh = 4.8" in text.stdout  # the explanation lines


def test_rate_names_the_bad_line_of_the_usage_file(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(TARIFF, encoding="utf-8")
    usage = tmp_path / "usage.csv"
    usage.write_text("start,quantity\n2026-11-09T00:00:00+01:00,1\n2026-11-09T01:00:00,1\n")
    done = run("--tariff", str(tmp_path / "t.toml"), "--usage", str(usage))
    assert done.returncode == 1
    assert f"{usage}:3: '2026-11-09T01:00:00' has no UTC offset" in done.stderr


def test_rating_benchmark_runs_and_prints_its_summary() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.rating", "--accounts", "3", "--pool", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = next(line for line in done.stdout.splitlines() if line.startswith("SUMMARY "))
    figures = json.loads(summary[len("SUMMARY ") :])
    assert figures["bench"] == "rating" and figures["intervals"] == 3 * 2880
