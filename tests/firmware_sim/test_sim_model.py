"""The consumption model: monotone registers, power = energy slope, deterministic, PV."""

from __future__ import annotations

from decimal import Decimal

from firmware_sim.model import BUCKET_NS, MeterModel, ModelParams
from protocols.obis import Obis

DAY = 86_400 * 10**9
ORIGIN = 1_780_272_000 * 10**9  # 2026-06-01T00:00:00Z, a Monday
IMPORT, EXPORT = Obis.parse("1-0:1.8.0"), Obis.parse("1-0:2.8.0")
NET = Obis.parse("1-0:16.7.0")


def pv_meter(seed: int = 7) -> MeterModel:
    return MeterModel("em-test-01", seed, ModelParams(pv_peak_w=4000), origin_ns=ORIGIN)


def test_registers_never_decrease_over_a_month() -> None:
    model = pv_meter()
    last = model.energies_mwh(ORIGIN)
    for step in range(1, 30 * 24 * 4 + 1):  # every 15 minutes
        now = model.energies_mwh(ORIGIN + step * 15 * BUCKET_NS + 7)
        assert all(b >= a for a, b in zip(last, now, strict=True))
        last = now
    assert last[0] > 0 and last[1] > 0


def test_initial_values_at_the_origin() -> None:
    values = pv_meter().values_at(ORIGIN)
    assert values[IMPORT] == Decimal("12345.67")
    assert values[EXPORT] == 0


def test_power_is_the_slope_of_energy() -> None:
    model = pv_meter()
    for minute in (0, 600, 780, 1200):
        start = ORIGIN + minute * BUCKET_NS
        values = model.values_at(start)
        after = model.values_at(start + BUCKET_NS - 1)
        slope_kwh = (after[IMPORT] - values[IMPORT]) - (after[EXPORT] - values[EXPORT])
        nxt = model.values_at(start + BUCKET_NS)
        bucket_kwh = (nxt[IMPORT] - values[IMPORT]) - (nxt[EXPORT] - values[EXPORT])
        # one minute of P watts is P/60 Wh = P/60000 kWh, exactly
        assert bucket_kwh == values[NET] / 60_000
        assert abs(slope_kwh) <= abs(bucket_kwh)


def test_phase_powers_sum_to_the_total() -> None:
    values = pv_meter().values_at(ORIGIN + 9 * 3600 * 10**9)
    phases = [values[Obis.parse(f"1-0:{c}.7.0")] for c in (21, 41, 61)]
    assert sum(phases) == values[NET]


def test_deterministic_for_seed_and_meter_in_any_query_order() -> None:
    times = [ORIGIN + k * 3_333_333_333_333 for k in range(20)]
    forward = [pv_meter().values_at(t) for t in times]
    model = pv_meter()
    backward = [model.values_at(t) for t in reversed(times)][::-1]
    assert forward == backward
    other = MeterModel("em-test-01", 8, ModelParams(pv_peak_w=4000), origin_ns=ORIGIN)
    assert other.values_at(times[5]) != forward[5]


def test_queries_before_the_origin_count_back() -> None:
    model = pv_meter()
    before = model.values_at(ORIGIN - DAY)
    assert before[IMPORT] < Decimal("12345.67")


def test_pv_meter_exports_at_noon_not_at_midnight() -> None:
    model = pv_meter()
    for day in range(7):
        noon = ORIGIN + day * DAY + 13 * 3600 * 10**9
        midnight = ORIGIN + day * DAY
        assert model.values_at(noon)[NET] < 0
        assert model.values_at(midnight)[NET] > 0
        assert model.pv_mw(midnight // BUCKET_NS) == 0


def test_meter_without_pv_never_exports() -> None:
    model = MeterModel("em-test-02", 7, ModelParams(), origin_ns=ORIGIN)
    assert model.values_at(ORIGIN + 7 * DAY)[EXPORT] == 0


def test_weekend_differs_from_weekday() -> None:
    model = MeterModel("c", 1, ModelParams(kind="commercial", base_load_w=1000), origin_ns=ORIGIN)
    monday_10h = (ORIGIN + 10 * 3600 * 10**9) // BUCKET_NS
    saturday_10h = monday_10h + 5 * 1440
    assert model.load_mw(monday_10h) > 2 * model.load_mw(saturday_10h)
