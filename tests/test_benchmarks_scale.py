"""Smoke tests of the issue 9 benchmarks: the load generator's fleet and one small scale run."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.ingest_scale import run_one
from benchmarks.loadgen import FleetPlan, LoadGenerator, sign_fleet
from meterlink.postgres import PostgresCluster
from protocols.record import decode_record


def test_fleet_plan_splits_meters_and_signs_gap_free_verifiable_records() -> None:
    plan = FleetPlan(meters=10, gateways=3, slots=2, outage_fraction=0.34, outage_slots=1)
    split = [plan.meters_of(g) for g in range(3)]
    assert [len(m) for m in split] == [4, 3, 3]
    assert len({m for ms in split for m in ms}) == 10
    fleet = sign_fleet(plan, procs=1)
    assert fleet.count == plan.total_records == 4 * 3 + 3 * 2 + 3 * 2  # gateway 0: a backlog slot
    for g in range(3):
        public = plan.key(g).public_key()
        decoded = [decode_record(raw) for raw in fleet.records[g]]
        assert [d.record.seq for d in decoded] == list(range(1, len(decoded) + 1))
        assert all(d.verify(public) and d.record.gateway_id == plan.gateway_id(g) for d in decoded)
        assert [d.record.meter_id for d in decoded] == split[g] * len(plan.slot_times(g))
        times = sorted({d.record.captured_ms for d in decoded})
        assert times == plan.slot_times(g)
        assert all(len(d.record.values) == plan.values for d in decoded)


def test_fixed_rate_schedule_releases_every_record_in_time_order_at_the_rate() -> None:
    plan = FleetPlan(meters=40, gateways=4, slots=3, outage_fraction=0.5, outage_slots=2)
    fleet = sign_fleet(plan, procs=1)
    generator = LoadGenerator("127.0.0.1", 1, fleet)  # never connected
    events = generator._schedule(rate=100.0)
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    # the two gateways back from the outage hold their backlog from the start
    assert {(g, n) for t, g, n in events if t == 0.0} >= {(0, 20), (1, 20)}
    final = {g: max(n for _t, gg, n in events if gg == g) for g in range(4)}
    assert final == {g: len(fleet.records[g]) for g in range(4)}
    # live slots: 3 x 40 records at 100 records/s: the last release after 1.1 s, none later
    assert max(e[0] for e in events) == (3 * 40 - 10) / 100.0


def test_two_collectors_on_postgres_take_a_small_fleet_without_loss_or_doubles(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    plan = FleetPlan(meters=400, gateways=8, values=5, slots=2)
    fleet = sign_fleet(plan, procs=1)
    args = argparse.Namespace(coalesce=50, batch_max=60, window=2, connections=2, timeout=60.0)
    run = run_one("test", "pg", 2, fleet, postgres, tmp_path / "scale-1", args, rate=0.0)
    assert run.result.complete and run.result.outstanding == 0
    assert run.db_records == fleet.count == run.result.stored
    assert run.db_readings == fleet.count * plan.values
    assert run.result.duplicates == 0 and run.result.rejected == 0
    assert len(run.result.latencies_ms) == run.result.batches == run.result.acked_batches
    assert set(run.cpu) >= {"collector-1", "collector-2", "mosquitto", "postgres", "generator"}
    assert run.bytes_per_reading > 0
