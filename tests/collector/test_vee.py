"""VEE through the real ingest path: signed records -> ``Ingestor`` (with the VEE engine)
-> a real SQLite file; then the stored findings and derived intervals are checked exactly."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.config import load_config
from collector.ingest import Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from collector.vee import VeeEngine
from protocols.obis import Obis

from ._fixtures import IMPORT, message, record, write_public_key

GW = "gw-1"
METER = "em-1"
MIN = 60_000
Q = 15 * MIN
HOUR = 60 * MIN
DAY = 24 * HOUR
WEEK = 7 * DAY
# Monday 2026-11-02 00:00 Europe/Amsterdam (CET, UTC+1); the weeks before it cross the
# end of summer time (2026-10-25), so like-day look-ups must go by local time
MONDAY = 1_793_574_000_000
ZONE = ZoneInfo("Europe/Amsterdam")
T1 = Obis.parse("1-0:1.8.1")
T2 = Obis.parse("1-0:1.8.2")
POWER = Obis.parse("1-0:1.7.0")

BASE_TOML = """\
[collector]
database = "c.sqlite"

[vee]
timezone = "Europe/Amsterdam"
interval = "15m"
"""


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


class Head:
    """A collector database with VEE on, fed through ``Ingestor.ingest``."""

    def __init__(self, tmp: Path, key: Ed25519PrivateKey, extra: str = "") -> None:
        self.dir = tmp
        self.key = key
        self.config_path = tmp / "collector.toml"
        self.config_path.write_text(BASE_TOML + extra)
        self.config = load_config(self.config_path)
        self.db = self.config.collector.database
        self.seq = 0
        self.batch = 0
        self.enrolled = False

    def feed(
        self,
        captures: Sequence[tuple[int, Sequence[tuple[Obis, str, str]]]],
        meter: str = METER,
        skip_seqs: int = 0,
        received_ms: int | None = None,
        seqs: Sequence[int] | None = None,
        now_ms: int | None = None,
        meters: Sequence[str] | None = None,
        clock_of: Callable[[int], int] | None = None,
    ) -> None:
        """Ingest one batch: (captured_ms, values) per record. ``skip_seqs`` leaves that
        many sequence numbers out first (records lost on the way)."""
        self.seq += skip_seqs
        raws = []
        for n, (ms, values) in enumerate(captures):
            if seqs is not None:
                seq = seqs[n]
            else:
                self.seq += 1
                seq = self.seq
            who = meters[n] if meters is not None else meter
            raws.append(record(self.key, GW, who, seq, ms, list(values)).raw)
        last = max(ms for ms, _ in captures)
        self.batch += 1
        incoming = message(GW, self.batch, raws, received_ms=received_ms or last + 1000)

        async def go() -> None:
            store = await open_store(self.db)
            try:
                if not self.enrolled:
                    pem = write_public_key(self.key, self.dir / "gw.pem")
                    await enrol_gateway(store, GW, pem, [METER, "em-2"], MONDAY - 60 * DAY)
                    self.enrolled = True
                ingestor = Ingestor(
                    store,
                    clock_ms=lambda: now_ms or last + 2000,
                    vee=VeeEngine(self.config.vee, clock_of),
                )
                await ingestor.ingest([incoming])
            finally:
                await store.close()

        asyncio.run(go())

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, params).fetchall()

    def intervals(self, meter: str = METER, obis: str = "1-0:1.8.0") -> list[tuple]:
        return self.rows(
            "SELECT start_ms, end_ms, value, quality, method FROM intervals WHERE meter_id = ?"
            " AND obis = ? AND superseded_ms IS NULL ORDER BY start_ms",
            (meter, obis),
        )

    def flags(self, rule: str | None = None) -> list[tuple]:
        sql = "SELECT captured_ms, rule, outcome, detail FROM validations"
        if rule:
            return self.rows(sql + " WHERE rule = ? ORDER BY id", (rule,))
        return self.rows(sql + " ORDER BY id")


def profile(start: int, count: int, first: Decimal, usage) -> list[tuple[int, list]]:
    """``count + 1`` register readings every 15 min from ``start``; ``usage(ms)`` gives the
    consumption of the interval that ends at ms."""
    out = []
    value = first
    for k in range(count + 1):
        ms = start + k * Q
        if k:
            value += usage(ms)
        out.append((ms, [(IMPORT, str(value), "kWh")]))
    return out


def shape(ms: int) -> Decimal:
    """Consumption of the interval ending at ``ms``: by local hour of day and weekday, in
    0.001 kWh steps (exact)."""
    local = datetime.fromtimestamp((ms - Q) / 1000, ZONE)
    return Decimal("0.050") + Decimal(local.hour) * Decimal("0.010") + Decimal(local.weekday())


def test_a_day_of_load_profile_gives_96_actual_intervals_exactly(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    head.feed(profile(MONDAY, 96, Decimal("1000.000"), shape))
    got = head.intervals()
    assert len(got) == 96
    assert all(q == "actual" and m == "" for _s, _e, _v, q, m in got)
    assert [Decimal(v) for _s, _e, v, _q, _m in got] == [
        shape(MONDAY + (k + 1) * Q) for k in range(96)
    ]
    assert head.flags() == []
    assert head.rows(
        "SELECT count FROM vee_counters WHERE rule = '' AND outcome = 'validated'"
    ) == [(97,)]


def test_rollover_at_99999999_9_kwh_is_consumption_exactly(tmp_path, key) -> None:
    head = Head(tmp_path, key, '[vee.register_max]\n"1-0:1.8.0" = "99999999.9"\n')
    values = ["99999999.2", "99999999.9", "0.3", "1.0"]
    head.feed([(MONDAY + k * Q, [(IMPORT, v, "kWh")]) for k, v in enumerate(values)])
    assert [(v, q) for _s, _e, v, q, _m in head.intervals()] == [
        ("0.7", "actual"),
        ("0.4", "actual"),  # 99999999.9 -> 0.3 over the wrap at 100000000.0
        ("0.7", "actual"),
    ]
    [flag] = head.flags()
    assert flag[:3] == (MONDAY + 2 * Q, "monotonic", "info")
    assert "rollover at 99999999.9: 99999999.9 -> 0.3 is a consumption of 0.4" in flag[3]


def test_a_decrease_that_is_no_rollover_is_an_error_and_not_used(tmp_path, key) -> None:
    head = Head(tmp_path, key, '[vee.register_max]\n"1-0:1.8.0" = "99999999.9"\n')
    values = ["500.0", "500.5", "120.0", "501.0"]  # 120.0: a glitch, not near the top
    head.feed([(MONDAY + k * Q, [(IMPORT, v, "kWh")]) for k, v in enumerate(values)])
    [flag] = head.flags("monotonic")
    assert flag[:3] == (MONDAY + 2 * Q, "monotonic", "error")
    assert "register decreased: 500.5 -> 120.0" in flag[3]
    [gap] = head.flags("gaps")  # the glitch is skipped: 500.5 -> 501.0 is a 30-min gap
    assert gap[:3] == (MONDAY + 3 * Q, "gaps", "info")
    assert "estimated (linear)" in gap[3]
    assert [(v, q, m) for _s, _e, v, q, m in head.intervals()] == [
        ("0.5", "actual", ""),
        ("0.3", "estimated", "linear"),
        ("0.2", "estimated", "linear"),
    ]


def test_dst_change_day_has_100_intervals_summing_to_the_register_delta(tmp_path, key) -> None:
    # Sunday 2026-10-25, Europe/Amsterdam: 02:00-03:00 happens twice (25 hours)
    day_start = 1_792_447_200_000  # 2026-10-25T00:00+02:00
    day_end = 1_792_537_200_000  # 2026-10-26T00:00+01:00
    assert day_end - day_start == 25 * HOUR
    head = Head(tmp_path, key)
    head.feed(profile(day_start, 100, Decimal("10.000"), lambda ms: Decimal("0.125")))
    got = head.intervals()
    assert len(got) == 100
    assert (got[0][0], got[-1][1]) == (day_start, day_end)
    assert sum(Decimal(v) for _s, _e, v, _q, _m in got) == Decimal("12.500")
    assert head.flags() == []


def test_a_meter_clock_10_minutes_fast_is_flagged(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    for k in range(3):  # each record arrives 5 s after the real capture, 10 min fast
        real = MONDAY + k * Q
        head.feed([(real + 10 * MIN, [(IMPORT, f"{100 + k}.0", "kWh")])], received_ms=real + 5000)
    found = head.flags("timestamps")
    assert [(ms, outcome) for ms, _r, outcome, _d in found] == [
        (MONDAY + 10 * MIN, "warn"),
        (MONDAY + 10 * MIN, "warn"),
        (MONDAY + Q + 10 * MIN, "warn"),
        (MONDAY + Q + 10 * MIN, "warn"),
        (MONDAY + 2 * Q + 10 * MIN, "warn"),
        (MONDAY + 2 * Q + 10 * MIN, "warn"),
    ]
    details = {d for _ms, _r, _o, d in found}
    assert "clock drift: -5m off the 15m grid" in details
    assert "clock drift: captured 9m55s after the collector received it" in details


def test_on_a_virtual_clock_drift_is_judged_on_that_clock(tmp_path, key) -> None:
    """A test rig's fleet runs 30 days ahead of the wall clock: records are received at
    wall-clock times, captured at the fleet's. The check compares them on one clock, so
    only the meter that is really 10 minutes fast is flagged."""
    ahead = 30 * DAY
    head = Head(tmp_path, key)
    for k in range(2):
        fleet = MONDAY + k * Q  # the capture instant on the fleet's clock
        head.feed([(fleet, [(IMPORT, f"{100 + k}.0", "kWh")])], received_ms=fleet - ahead + 5000,
                  now_ms=fleet + 6000, clock_of=lambda ms: ms + ahead)  # fmt: skip
    assert head.flags("timestamps") == []
    late = MONDAY + 2 * Q
    head.feed([(late + 10 * MIN, [(IMPORT, "102.0", "kWh")])], received_ms=late - ahead + 5000,
              now_ms=late + 6000, clock_of=lambda ms: ms + ahead)  # fmt: skip
    details = {d for _ms, _r, _o, d in head.flags("timestamps")}
    assert "clock drift: captured 9m55s after the collector received it" in details


def history(head: Head, weeks: int, meter: str = METER) -> Decimal:
    """``weeks`` weeks of 15-min profile before MONDAY; returns the register at MONDAY."""
    start = MONDAY - weeks * WEEK
    captures = profile(start, weeks * 7 * 96, Decimal("1000.000"), shape)
    head.feed(captures, meter=meter)
    return Decimal(captures[-1][1][0][1])


def gap_day(head: Head, register: Decimal, gap_from: int, gap_to: int, factor: int = 1,
            skip: int = 0, end: int = MONDAY + DAY) -> list:  # fmt: skip
    """Profile from MONDAY to ``end`` with no readings strictly inside (gap_from, gap_to);
    consumption in the gap is ``factor`` x the usual shape. Returns the held-back captures."""
    usage = lambda ms: shape(ms) * (factor if gap_from < ms <= gap_to else 1)  # noqa: E731
    captures = profile(MONDAY, (end - MONDAY) // Q, register, usage)[1:]
    sent = [c for c in captures if not gap_from < c[0] < gap_to]
    held = [c for c in captures if gap_from < c[0] < gap_to]
    before = [c for c in sent if c[0] <= gap_from]
    after = [c for c in sent if c[0] > gap_from]
    head.feed(before)
    head.feed(after, skip_seqs=skip)
    return held


def test_3_hour_gap_is_estimated_from_the_like_day_profile_exactly(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    register = history(head, 2)
    gap_from, gap_to = MONDAY + 8 * HOUR, MONDAY + 11 * HOUR
    gap_day(head, register, gap_from, gap_to, factor=2)
    inside = [i for i in head.intervals() if gap_from <= i[0] < gap_to]
    assert len(inside) == 12
    # the real delta (2 x the usual) spread by the like-day shape: exactly 2 x shape
    assert [(Decimal(v), q, m) for _s, _e, v, q, m in inside] == [
        (2 * shape(s + Q), "estimated", "like-day") for s, *_ in inside
    ]
    [gap] = head.flags("gaps")
    assert gap[:3] == (gap_to, "gaps", "info")
    assert gap[3].startswith("gap of 3h (11 intervals missing); never taken:")
    assert gap[3].endswith("estimated (like-day)")


def test_3_hour_gap_without_history_is_left_as_a_gap_for_review(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    gap_from, gap_to = MONDAY + 8 * HOUR, MONDAY + 11 * HOUR
    head.feed([(MONDAY, [(IMPORT, "1000.000", "kWh")])])
    gap_day(head, Decimal("1000.000"), gap_from, gap_to)
    got = head.intervals()
    gaps = [i for i in got if i[3] == "gap"]
    expected = sum((shape(gap_from + k * Q) for k in range(1, 13)), Decimal(0))
    assert gaps == [(gap_from, gap_to, str(expected), "gap", "no basis")]
    assert len(got) == 96 - 12 + 1
    [flag] = head.flags("gaps")
    assert flag[2] == "warn" and "left as a gap for review" in flag[3]


def test_3_day_gap_is_estimated_like_day_and_sums_to_the_register(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    register = history(head, 2)
    gap_from, gap_to = MONDAY + 6 * HOUR, MONDAY + 3 * DAY + 6 * HOUR
    gap_day(head, register, gap_from, gap_to, factor=3, end=MONDAY + 4 * DAY)
    inside = [i for i in head.intervals() if gap_from <= i[0] < gap_to]
    assert len(inside) == 3 * 96
    assert all(q == "estimated" and m == "like-day" for _s, _e, _v, q, m in inside)
    assert [Decimal(v) for _s, _e, v, _q, _m in inside] == [3 * shape(s + Q) for s, *_ in inside]


def test_a_short_gap_is_interpolated_linearly(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    values = ["10.00", "10.10", "10.30"]  # 15 min, then 45 min (3 intervals) later
    head.feed(
        [(MONDAY + ms, [(IMPORT, v, "kWh")]) for ms, v in zip((0, Q, 4 * Q), values, strict=True)]
    )
    assert [(v, q, m) for _s, _e, v, q, m in head.intervals()] == [
        ("0.10", "actual", ""),
        ("0.07", "estimated", "linear"),  # 0.20 in 3: largest remainder, exact sum
        ("0.07", "estimated", "linear"),
        ("0.06", "estimated", "linear"),
    ]


def test_lost_records_arriving_later_replace_the_estimate_and_both_are_kept(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    register = history(head, 2)
    gap_from, gap_to = MONDAY + 8 * HOUR, MONDAY + 11 * HOUR
    before_seq = head.seq
    held = gap_day(head, register, gap_from, gap_to, skip=11)
    [gap] = head.flags("gaps")
    assert "lost: 11 records of gw-1 between seq" in gap[3]
    estimated = [i for i in head.intervals() if gap_from <= i[0] < gap_to]
    assert {(q, m) for *_x, q, m in estimated} == {("estimated", "like-day")}
    # the backlog arrives with the sequence numbers it was made with
    first = before_seq + 32 + 1  # 32 records up to 08:00, then the 11 lost ones
    head.feed(held, seqs=list(range(first, first + 11)))
    now = [i for i in head.intervals() if gap_from <= i[0] < gap_to]
    assert [(Decimal(v), q) for _s, _e, v, q, _m in now] == [
        (shape(s + Q), "actual") for s, *_ in now
    ]
    old = head.rows(
        "SELECT start_ms, quality, method, superseded_why FROM intervals"
        " WHERE superseded_ms IS NOT NULL ORDER BY start_ms"
    )
    assert [(s, q, m) for s, q, m, _w in old] == [
        (gap_from + k * Q, "estimated", "like-day") for k in range(12)
    ]
    assert all(w.startswith("replaced by actual: ingest of 11 reading(s)") for *_x, w in old)
    newer = head.rows(
        "SELECT created_by, why FROM intervals WHERE superseded_ms IS NULL AND start_ms = ?",
        (gap_from,),
    )
    assert newer[0][0] == "vee" and "replaces estimated (like-day)" in newer[0][1]


def cli(head: Head, *args: str) -> int:
    from collector.cli import main

    return main(["vee", *args, "--config", str(head.config_path)])


def test_a_recorded_meter_swap_never_mixes_the_old_and_new_registers(tmp_path, key, capsys) -> None:
    head = Head(tmp_path, key)
    old = [(MONDAY + k * Q, [(IMPORT, v, "kWh")]) for k, v in enumerate(["5000.0", "5000.5"])]
    new = [(MONDAY + k * Q, [(IMPORT, v, "kWh")]) for k, v in ((2, "0.4"), (3, "0.9"))]
    head.feed(old + new)  # the swap is not recorded yet: the new register looks like a drop
    assert [f[:3] for f in head.flags("monotonic")] == [
        (MONDAY + 2 * Q, "monotonic", "error"),
        (MONDAY + 3 * Q, "monotonic", "error"),
    ]
    assert [v for _s, _e, v, _q, _m in head.intervals()] == ["0.5"]
    at = "2026-11-01T23:20:00Z"  # MONDAY + 20 min, inside the second interval
    swap = ["--meter", METER, "--at", at, "--old-final", "5000.7", "--new-initial", "0.0"]
    assert cli(head, "swap", *swap, "--reason", "meter replaced, job 42", "--by", "ann") == 0
    assert "2 decrease finding(s) accepted" in capsys.readouterr().out
    # (5000.7 - 5000.5) of the old + (0.4 - 0.0) of the new; never 0.4 - 5000.5
    assert [(v, q) for _s, _e, v, q, _m in head.intervals()] == [
        ("0.5", "actual"),
        ("0.6", "actual"),
        ("0.5", "actual"),
    ]
    audit = head.rows("SELECT action, who, reason FROM vee_audit ORDER BY id")
    assert audit == [("accept", "ann", "explained by meter swap #1: meter replaced, job 42")] * 2


def test_a_swap_without_final_reads_leaves_a_gap_of_unknown_size(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    assert cli(head, "swap", "--meter", METER, "--at", "2026-11-01T23:20:00Z",
               "--reason", "replaced") == 0  # fmt: skip
    values = [(0, "5000.0"), (1, "5000.5"), (2, "0.4"), (3, "0.9")]
    head.feed([(MONDAY + k * Q, [(IMPORT, v, "kWh")]) for k, v in values])
    assert [f[2] for f in head.flags("monotonic")] == ["info"]
    assert [(v, q) for _s, _e, v, q, _m in head.intervals()] == [
        ("0.5", "actual"),
        (None, "gap"),
        ("0.5", "actual"),
    ]


def test_operator_reject_accept_and_edit_are_audited_never_overwrites(
    tmp_path, key, capsys
) -> None:
    head = Head(tmp_path, key, '[vee.max]\n"1-0:1.8.0" = 2000\n')
    values = ["1000.0", "1000.4", "2500.0", "1001.0"]  # 2500.0 above the physical limit
    head.feed([(MONDAY + k * Q, [(IMPORT, v, "kWh")]) for k, v in enumerate(values)])
    [limit] = head.rows("SELECT id, outcome FROM validations WHERE rule = 'limits'")
    assert limit[1] == "error"
    assert [(v, q, m) for _s, _e, v, q, m in head.intervals()] == [
        ("0.4", "actual", ""), ("0.3", "estimated", "linear"), ("0.3", "estimated", "linear"),
    ]  # fmt: skip
    at = ["--meter", METER, "--obis", "1.8.0", "--at", "2026-11-01T23:30:00Z"]
    assert cli(head, "edit", *at, "--value", "1000.5", "--reason", "read on site") == 0
    assert [(v, q) for _s, _e, v, q, _m in head.intervals()] == [
        ("0.4", "actual"), ("0.1", "edited"), ("0.5", "edited"),
    ]  # fmt: skip
    assert cli(head, "reject", str(limit[0]), "--reason", "edit was wrong too") == 0
    assert [q for _s, _e, _v, q, _m in head.intervals()] == ["actual", "estimated", "estimated"]
    assert cli(head, "accept", str(limit[0]), "--reason", "no: keep it", "--by", "bob") == 0
    assert [(v, q) for _s, _e, v, q, _m in head.intervals()] == [
        ("0.4", "actual"), ("1499.6", "actual"), (None, "gap"),  # 2500.0 -> 1001.0: no delta
    ]  # fmt: skip
    assert [a for a, *_ in head.rows("SELECT action FROM vee_audit ORDER BY id")] == [
        "edit", "reject", "accept",
    ]  # fmt: skip
    # the reading as received is untouched; every derivation is kept
    assert head.rows("SELECT value FROM readings WHERE captured_ms = ?", (MONDAY + 2 * Q,)) == [
        ("2500.0",)
    ]
    assert head.rows("SELECT COUNT(*) FROM intervals WHERE start_ms = ?", (MONDAY + Q,)) == [(4,)]
    assert cli(head, "reject", "999", "--reason", "x") == 2
    assert "no finding #999" in capsys.readouterr().err
    assert cli(head, "accept", str(limit[0]), "--reason", "  ") == 2


def test_vee_report_lists_flags_estimates_swaps_and_sequence_gaps(tmp_path, key, capsys) -> None:
    head = Head(tmp_path, key)
    head.feed([(MONDAY, [(IMPORT, "1.000", "kWh")])])
    head.feed([(MONDAY + 4 * HOUR, [(IMPORT, "2.000", "kWh")])], skip_seqs=3)
    capsys.readouterr()
    assert cli(head, "report", "--meter", METER) == 0
    out = capsys.readouterr().out
    assert "validated 2" in out and "gaps warn 1" in out
    assert "gaps warn: gap of 4h (15 intervals missing); lost: 3 records of gw-1" in out
    assert "2026-11-01T23:00:00.000Z .. 2026-11-02T03:00:00.000Z: 1.000 kWh gap (no basis)" in out
    assert "gw-1 seq 2..4 (3 missing, 0 in quarantine)" in out
    assert cli(head, "report", "--json", "--since", "2026-11-02T00:00:00Z") == 0
    doc = __import__("json").loads(capsys.readouterr().out)
    assert doc["sequence_gaps"] == [{"gateway": "gw-1", "first": 2, "last": 4, "in_quarantine": 0}]
    assert [f["rule"] for f in doc["flags"]] == ["gaps"]


def test_units_limits_and_negative_are_errors_on_the_reading(tmp_path, key) -> None:
    head = Head(tmp_path, key, '[vee.max]\n"1-0:1.7.0" = 23000\n')
    head.feed(
        [
            (MONDAY, [(IMPORT, "10.0", "kWh"), (POWER, "1200", "W")]),
            (MONDAY + Q, [(IMPORT, "10.5", "W"), (POWER, "24000", "W")]),
            (MONDAY + 2 * Q, [(IMPORT, "11.0", "kWh"), (POWER, "-5", "W")]),
        ]
    )
    found = [(ms - MONDAY, rule, outcome, d) for ms, rule, outcome, d in head.flags()]
    assert (Q, "units", "error", "unit 'W', expected 'kWh' for 1-0:1.8.0") in found
    assert (Q, "limits", "error", "24000 W above the limit 23000") in found
    assert (2 * Q, "negative", "error", "negative value -5 W on an import quantity") in found
    # the reading in W is not used: 10.0 -> 11.0 over two intervals, linear
    assert [(v, q) for _s, _e, v, q, _m in head.intervals()] == [
        ("0.5", "estimated"),
        ("0.5", "estimated"),
    ]


def test_timestamps_in_the_future_or_beyond_retention_are_flagged(tmp_path, key) -> None:
    head = Head(tmp_path, key, 'retention = "30d"\nfuture_tolerance = "5m"\n')
    old = MONDAY - 40 * DAY
    head.feed([(old, [(POWER, "100", "W")])], received_ms=MONDAY, now_ms=MONDAY)
    head.feed([(MONDAY + HOUR, [(POWER, "100", "W")])], received_ms=MONDAY + HOUR, now_ms=MONDAY)
    assert [(ms, d) for ms, _r, _o, d in head.flags("timestamps")] == [
        (old, "captured 40d ago, beyond the retention limit"),
        (MONDAY + HOUR, "captured 1h ahead of the collector's clock"),
    ]


def test_spike_above_factor_times_third_highest_of_the_day_is_flagged(tmp_path, key) -> None:
    head = Head(tmp_path, key, "spike_factor = 5\n")
    usage = lambda ms: Decimal("2.000") if ms == MONDAY + 20 * HOUR else Decimal("0.100")  # noqa: E731
    head.feed(profile(MONDAY, 96, Decimal("0.000"), usage))
    [flag] = head.flags("spike")
    assert flag[:3] == (MONDAY + 20 * HOUR, "spike", "warn")
    assert "2.000 is more than 5 x the third-highest of the day before (0.100)" in flag[3]


def test_zero_consumption_for_a_day_is_flagged_once(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    head.feed(profile(MONDAY, 2 * 96, Decimal("7.000"), lambda ms: Decimal(0)))
    [flag] = head.flags("zero")
    assert flag[:3] == (MONDAY + DAY, "zero", "warn")
    assert flag[3] == "no consumption for 1d"


def test_tou_registers_must_add_up_to_the_total(tmp_path, key) -> None:
    head = Head(tmp_path, key, '[vee.tou]\n"1-0:1.8.0" = ["1-0:1.8.1", "1-0:1.8.2"]\n')
    head.feed(
        [
            (MONDAY, [(IMPORT, "30.0", "kWh"), (T1, "10.0", "kWh"), (T2, "20.0", "kWh")]),
            (MONDAY + Q, [(IMPORT, "31.0", "kWh"), (T1, "10.5", "kWh"), (T2, "20.0", "kWh")]),
        ]
    )
    [flag] = head.flags("sumcheck")
    assert flag[:3] == (MONDAY + Q, "sumcheck", "warn")
    assert flag[3] == "tariff registers 1-0:1.8.1 + 1-0:1.8.2 = 30.5, total 31.0 (difference 0.5)"


def test_register_reads_off_the_grid_are_apportioned_across_intervals(tmp_path, key) -> None:
    settings = '[vee.meter.em-1]\ninterval = "1h"\nread_every = "3h"\naligned = false\n'
    head = Head(tmp_path, key, settings)
    # 3-hourly register reads at :20 past; 1-hour intervals
    reads = [
        (MONDAY + 20 * MIN + k * 3 * HOUR, v) for k, v in enumerate(["100.0", "103.0", "103.6"])
    ]
    head.feed([(ms, [(IMPORT, v, "kWh")]) for ms, v in reads])
    got = head.intervals()
    # 00:20 .. 03:20 carries 3.0 by time: 0.7 | 1.0 | 1.0 | 0.3 (whole 0.1 kWh steps, largest
    # remainder); 03:20 .. 06:20 carries 0.6: 0.1 | 0.2 | 0.2 | 0.1. 3:00-4:00 = 0.3 + 0.1.
    # Only complete intervals: 0:00-1:00 (before the first read) and 6:00-7:00 are not.
    assert [(s - MONDAY, v, q, m) for s, _e, v, q, m in got] == [
        (1 * HOUR, "1.0", "actual", "apportioned"),
        (2 * HOUR, "1.0", "actual", "apportioned"),
        (3 * HOUR, "0.4", "actual", "apportioned"),
        (4 * HOUR, "0.2", "actual", "apportioned"),
        (5 * HOUR, "0.2", "actual", "apportioned"),
    ]
    assert head.flags("gaps") == [] and head.flags("timestamps") == []


def test_vee_config_errors_name_the_file_line_and_key(tmp_path) -> None:
    from collector.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(BASE_TOML.replace('"15m"', '"7m"'))
    with pytest.raises(ConfigError, match=r"c.toml, line 6: key 'vee.interval': must divide"):
        load_config(path)
    path.write_text(BASE_TOML + '[vee.class.home]\nmeters = ["a"]\nrules = ["spikes"]\n')
    with pytest.raises(ConfigError, match=r"line 9: key 'vee.class.home.rules': unknown rule"):
        load_config(path)
    path.write_text(BASE_TOML + '[vee.meter.a]\nclass = "office"\n')
    with pytest.raises(ConfigError, match=r"line 8: key 'vee.meter.a.class': no \[vee.class"):
        load_config(path)


def test_meter_settings_come_from_defaults_then_class_then_meter(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        BASE_TOML
        + 'spike_factor = 4\n[vee.class.home]\nmeters = ["a", "b"]\ninterval = "30m"\n'
        + '[vee.meter.b]\nspike_factor = 8\n[vee.max]\n"1-0:1.7.0" = 9000\n'
    )
    vee = load_config(path).vee
    a, b, c = (vee.for_meter(m) for m in "abc")
    assert (a.interval_ms, a.spike_factor, a.meter_class) == (30 * MIN, 4, "home")
    assert (b.interval_ms, b.spike_factor) == (30 * MIN, 8)
    assert (c.interval_ms, c.spike_factor, c.max) == (Q, 4, {"1-0:1.7.0": Decimal(9000)})
    assert vee.enabled and a.timezone == "Europe/Amsterdam"


def test_rating_reads_current_intervals_and_the_history_through_the_store(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    head.feed([(MONDAY, [(IMPORT, "1.00", "kWh")]), (MONDAY + 3 * Q, [(IMPORT, "1.30", "kWh")])])
    head.feed([(MONDAY + Q, [(IMPORT, "1.05", "kWh")])], seqs=[3])  # a late real reading

    async def read() -> tuple[list, list]:
        store = await open_store(head.db)
        try:
            now = await store.vee.intervals(METER, "1-0:1.8.0", MONDAY, MONDAY + HOUR)
            every = await store.vee.intervals(METER, "1-0:1.8.0", MONDAY, MONDAY + HOUR, True)
            return now, every
        finally:
            await store.close()

    now, every = asyncio.run(read())
    assert [(r.value, r.quality, r.method) for r in now] == [
        ("0.05", "actual", ""),
        ("0.13", "estimated", "linear"),  # 1.05 -> 1.30 over 30 min, still a gap
        ("0.12", "estimated", "linear"),
    ]
    assert len(every) == 6 and sum(r.superseded_ms is not None for r in every) == 3
    assert all(r.unit == "kWh" and r.created_by == "vee" for r in every)


@pytest.mark.integration
def test_vee_report_runs_as_a_process_and_exits_2_on_a_bad_flag(tmp_path, key) -> None:
    import subprocess
    import sys

    head = Head(tmp_path, key)
    head.feed([(MONDAY, [(IMPORT, "1.000", "kWh")]), (MONDAY + 4 * HOUR, [(IMPORT, "2.0", "kWh")])])
    base = [sys.executable, "-m", "collector", "vee"]
    config = ["--config", str(head.config_path)]
    done = subprocess.run([*base, "report", *config], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "gap of 4h" in done.stdout and "left as a gap for review" in done.stdout
    bad = [*base, "accept", "77", "--reason", "x", *config]
    done = subprocess.run(bad, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no finding #77" in done.stderr


def test_load_profile_summed_between_register_reads_must_match_the_register(tmp_path, key) -> None:
    profile_obis = Obis.parse("1-0:1.29.0")
    settings = (
        '[vee.profile_sum]\n"1-0:1.8.0" = "1-0:1.29.0"\n[vee.meter.em-1]\nread_every = "1h"\n'
    )
    head = Head(tmp_path, key, settings)
    captures = []
    for k in range(1, 9):  # 15-min profile values over two hours
        captures.append((MONDAY + k * Q, [(profile_obis, f"0.{k % 4 + 1}", "kWh")]))
    head.feed(captures)
    head.feed(
        [
            (MONDAY, [(IMPORT, "10.0", "kWh")]),
            (MONDAY + HOUR, [(IMPORT, "11.0", "kWh")]),  # profile: 0.2+0.3+0.4+0.1 = 1.0
            (MONDAY + 2 * HOUR, [(IMPORT, "12.5", "kWh")]),  # profile 1.0 again, register 1.5
        ]
    )
    [flag] = head.flags("sumcheck")
    assert flag[:3] == (MONDAY + 2 * HOUR, "sumcheck", "warn")
    assert flag[3] == (
        "load profile 1-0:1.29.0 sums to 1.0 over 4 intervals, the register moved 1.5"
        " (difference 0.5)"
    )


def test_a_version_2_database_is_migrated_to_the_vee_tables(tmp_path) -> None:
    from collector.store.sqlite import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        for version in (1, 2):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")

    async def reopen() -> None:
        store = await open_store(path)
        await store.close()

    asyncio.run(reopen())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"validations", "vee_counters", "intervals", "vee_audit", "vee_swaps"} <= tables


def test_a_new_serial_number_is_a_meter_swap_and_registers_are_not_mixed(tmp_path, key) -> None:
    serial = Obis.parse("0-0:96.1.0")
    head = Head(tmp_path, key)
    rows = [(0, "81234567", "7000.0"), (1, "81234567", "7000.4"), (2, "99000001", "0.3")]
    rows += [(3, "99000001", "0.8")]
    head.feed([(MONDAY + k * Q, [(serial, s, ""), (IMPORT, v, "kWh")]) for k, s, v in rows])
    detected, register = head.flags("monotonic")
    assert detected[:3] == (MONDAY + 2 * Q, "monotonic", "info")
    assert detected[3] == "meter swap #1 detected: serial number changed from 81234567 to 99000001"
    assert register[3] == (
        "meter swap #1 between the readings (serial number changed from 81234567 to 99000001):"
        " unknown consumption"
    )
    assert head.rows("SELECT at_ms, who FROM vee_swaps") == [(MONDAY + 2 * Q, "vee")]
    assert [(v, q) for _s, _e, v, q, _m in head.intervals()] == [
        ("0.4", "actual"),
        (None, "gap"),  # 7000.4 of the old meter and 0.3 of the new: unknown in between
        ("0.5", "actual"),
    ]
    # the operator adds the final reads: they take precedence over the detected swap
    at = "2026-11-01T23:30:00Z"
    finals = ["--old-final", "7000.5", "--new-initial", "0.0"]
    assert cli(head, "swap", "--meter", METER, "--at", at, *finals, "--reason", "job sheet") == 0
    assert [v for _s, _e, v, _q, _m in head.intervals()] == ["0.4", "0.4", "0.5"]


def test_a_gap_longer_than_max_gap_is_one_row_for_review(tmp_path, key) -> None:
    head = Head(tmp_path, key, 'max_gap = "35d"\n')
    later = MONDAY + 40 * DAY
    head.feed([(MONDAY, [(IMPORT, "5.0", "kWh")]), (later, [(IMPORT, "405.0", "kWh")])])
    assert head.intervals() == [(MONDAY, later, "400.0", "gap", "no basis")]
    [flag] = head.flags("gaps")
    assert flag[2] == "warn" and "left as a gap for review" in flag[3]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_arrival_order_ends_with_the_same_actual_intervals(tmp_path, key, seed) -> None:
    """Batches of a day's profile arrive shuffled (a backlog drained out of order, two
    gateways): once everything is in, every interval is the actual one, estimates gone."""
    import random

    head = Head(tmp_path, key)
    captures = profile(MONDAY, 96, Decimal("500.000"), shape)
    seqs = list(range(1, len(captures) + 1))
    chunks = []
    rng = random.Random(seed)
    i = 0
    while i < len(captures):
        n = rng.randint(1, 12)
        chunks.append((captures[i : i + n], seqs[i : i + n]))
        i += n
    rng.shuffle(chunks)
    for chunk, chunk_seqs in chunks:
        head.feed(chunk, seqs=chunk_seqs, now_ms=MONDAY + DAY + HOUR)
    got = head.intervals()
    assert [(s, v, q) for s, _e, v, q, _m in got] == [
        (MONDAY + k * Q, str(shape(MONDAY + (k + 1) * Q)), "actual") for k in range(96)
    ]


@pytest.mark.parametrize("seed", [4, 5])
def test_off_grid_register_reads_in_any_order_derive_as_in_order(tmp_path, key, seed) -> None:
    import random

    settings = '[vee.meter.em-1]\ninterval = "1h"\nread_every = "3h"\naligned = false\n'
    rng = random.Random(seed)
    value = Decimal("100.00")
    captures = []
    ms = MONDAY
    for k in range(30):  # every ~3 h at odd minutes, sometimes a longer pause
        ms += 2 * HOUR + rng.randint(1, 119) * MIN + (5 * HOUR if k % 11 == 10 else 0)
        value += Decimal(rng.randint(0, 500)) / 100
        captures.append((ms, [(IMPORT, str(value), "kWh")]))
    ordered = Head(tmp_path / "a", key, settings) if (tmp_path / "a").mkdir() is None else None
    shuffled = Head(tmp_path / "b", key, settings) if (tmp_path / "b").mkdir() is None else None
    assert ordered is not None and shuffled is not None
    seqs = list(range(1, len(captures) + 1))
    ordered.feed(captures, seqs=seqs)
    for k in rng.sample(range(len(captures)), len(captures)):
        shuffled.feed([captures[k]], seqs=[seqs[k]], now_ms=captures[-1][0] + HOUR)
    assert shuffled.intervals() == ordered.intervals()
    starts = [s for s, *_x in ordered.intervals()]
    assert starts == sorted(set(starts))  # no overlapping current rows


def test_rejecting_a_power_reading_is_audited_and_derives_nothing(tmp_path, key) -> None:
    head = Head(tmp_path, key, '[vee.max]\n"1-0:1.7.0" = 23000\n')
    head.feed([(MONDAY + k * Q, [(POWER, p, "W")]) for k, p in enumerate(["100", "99999"])])
    [(flag_id,)] = head.rows("SELECT id FROM validations WHERE rule = 'limits'")
    assert cli(head, "reject", str(flag_id), "--reason", "spurious") == 0
    assert head.rows("SELECT action, reason FROM vee_audit") == [("reject", "spurious")]
    assert head.rows("SELECT COUNT(*) FROM intervals") == [(0,)]


@pytest.mark.parametrize(("factor", "word"), [(Decimal(5), "high"), (Decimal("0.2"), "low")])
def test_a_day_high_or_low_against_the_same_weekday_is_flagged(tmp_path, key, factor, word):
    head = Head(tmp_path, key)
    register = history(head, 3)  # its first day starts at 01:00 local (summer time): 2 whole
    head.feed(profile(MONDAY, 96, register, lambda ms: shape(ms) * factor)[1:])
    [flag] = head.flags("history")
    assert flag[:3] == (MONDAY + DAY, "history", "warn")
    usual = sum((shape(MONDAY + k * Q) for k in range(1, 97)), Decimal(0))
    assert flag[3] == (
        f"day total {usual * factor} is {word} against the same weekday of the 2 weeks"
        f" before (mean {usual.quantize(Decimal('0.001'))})"
    )
    assert head.flags("spike") == []


def test_a_vee_fault_on_one_meter_keeps_its_readings_and_the_other_meters(
    tmp_path, key, monkeypatch
) -> None:
    # A fault injected into the engine: no real input makes the rules raise (that is the
    # point of them), so this one place patches the timestamps rule to fail for em-2.
    from collector.vee import timestamps

    real = timestamps.check

    def broken(reading, *args):  # type: ignore[no-untyped-def]
        if reading.meter_id == "em-2":
            raise ZeroDivisionError("injected")
        return real(reading, *args)

    monkeypatch.setattr(timestamps, "check", broken)
    head = Head(tmp_path, key)
    captures = [(MONDAY + k * Q, [(IMPORT, f"{k}.0", "kWh")]) for k in range(3)]
    head.feed([(MONDAY, [(IMPORT, "1.0", "kWh")]), *captures], meters=["em-2"] + [METER] * 3)
    assert head.rows("SELECT meter_id, COUNT(*) FROM readings GROUP BY 1") == [
        ("em-1", 3),
        ("em-2", 1),
    ]
    assert head.flags() == [
        (MONDAY, "vee", "warn", "internal error, readings stored unvalidated: "
         "ZeroDivisionError('injected')"),
    ]  # fmt: skip
    assert len(head.intervals()) == 2


def test_editing_a_high_glitch_clears_the_decreases_it_caused(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    values = ["500.0", "9500.0", "501.0", "501.5"]  # 9500.0: a glitch, but it grows
    head.feed([(MONDAY + k * Q, [(IMPORT, v, "kWh")]) for k, v in enumerate(values)])
    assert [f[:3] for f in head.flags("monotonic")] == [
        (MONDAY + 2 * Q, "monotonic", "error"),
        (MONDAY + 3 * Q, "monotonic", "error"),
    ]
    at = ["--meter", METER, "--obis", "1-0:1.8.0", "--at", "2026-11-01T23:15:00Z"]
    assert cli(head, "edit", *at, "--value", "500.5", "--reason", "glitch", "--by", "ann") == 0
    assert [(v, q) for _s, _e, v, q, _m in head.intervals()] == [
        ("0.5", "edited"),
        ("0.5", "edited"),
        ("0.5", "actual"),
    ]
    assert head.rows("SELECT action, who, reason FROM vee_audit ORDER BY id") == [
        ("edit", "ann", "glitch"),
        ("accept", "vee", "re-checked after audit #1: no longer a decrease (500.5 -> 501.0)"),
        ("accept", "vee", "re-checked after audit #1: no longer a decrease (501.0 -> 501.5)"),
    ]


def test_like_day_keeps_the_local_time_across_the_end_of_summer_time() -> None:
    from collector.vee.estimate import week_back_starts

    eight = MONDAY + 8 * HOUR  # Monday 2026-11-02 08:00 CET = 07:00 UTC
    one, two = week_back_starts(eight, ZONE, 2)
    assert one == eight - WEEK  # 2026-10-26 08:00 CET
    assert two == eight - 2 * WEEK - HOUR  # 2026-10-19 08:00 CEST = 06:00 UTC
    assert datetime.fromtimestamp(two / 1000, ZONE).hour == 8
