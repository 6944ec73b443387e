"""Run every benchmark, each in its own process, then print one summary table.

    .venv/bin/python -m benchmarks.run_all      (``make bench``)

Each benchmark runs as ``python -m benchmarks.NAME`` (its own process, so peak RSS and
CPU pinning of one do not leak into the next); its output is shown as it comes and its
``SUMMARY`` line is collected. A benchmark that fails is reported, and the others still run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from .machine import SUMMARY_PREFIX, print_header

BENCHES = ("wire_size", "capture", "ingest", "drain", "dlms_backfill", "dlms_read", "vee",
           "rs485_bus", "requests_per_cycle", "rating", "api", "ingest_scale",
           "bill_pg", "advise", "latency", "fleet_flush", "sla")  # fmt: skip


def run(name: str) -> dict | None:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", f"benchmarks.{name}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    summary = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
        else:
            print(line, end="")
    code = proc.wait()
    if code != 0:
        print(f"!! benchmarks.{name} exited with {code}")
    return summary


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "meets target" if ok else "BELOW target"


def _scale_label(key: str) -> str:
    """``pg2_wave`` -> ``PostgreSQL, 2 collectors, wave``."""
    store, _, scenario = key.partition("_")
    name = "PostgreSQL" if store.startswith("pg") else "SQLite"
    count = store.lstrip("pgsqlite")
    return f"{name}, {count} collector(s), {scenario or 'saturated'}"


def main() -> int:
    print_header("run_all", {"benchmarks": ",".join(BENCHES)})
    t0 = time.perf_counter()
    results = {}
    for name in BENCHES:
        print()
        results[name] = run(name)
    rows: list[tuple[str, str, str, str]] = []
    w = results.get("wire_size")
    if w:
        for key, label in (
            ("sdm630_batch200_wire", "wire: SDM630 record, batch 200"),
            ("em24_batch200_wire", "wire: EM24 record, batch 200"),
            ("v10_batch1_wire", "wire: 10 values, batch 1"),
        ):
            target = w["target_bytes_per_reading"]
            rows.append((label, f"{w[key]:.1f} B/reading", f"<= {target:.0f}",
                         verdict(w[key], target, False)))  # fmt: skip
    c = results.get("capture")
    if c:
        rows.append(("capture -> sign -> commit (agent, 1 core)",
                     f"{c['readings_per_s']:,} readings/s", f">= {c['target_readings_per_s']:,}",
                     verdict(c["readings_per_s"], c["target_readings_per_s"])))  # fmt: skip
        rows.append(("  agent peak RSS", f"{c['peak_rss_mib']} MiB", "", ""))
    i = results.get("ingest")
    if i:
        rows.append(("ingest via mosquitto (collector, 1 core)",
                     f"{i['readings_per_s']:,} readings/s", f">= {i['target_readings_per_s']:,}",
                     verdict(i["readings_per_s"], i["target_readings_per_s"])))  # fmt: skip
        rows.append(("  in-process Ingestor (no MQTT)",
                     f"{i['inprocess_readings_per_s']:,} readings/s", "", ""))  # fmt: skip
        rows.append(("  collector peak RSS", f"{i['collector_peak_rss_mib']} MiB", "", ""))
    d = results.get("drain")
    if d:
        rows.append(("backlog drain with acks (agent+collector)",
                     f"{d['readings_per_s']:,} readings/s", f">= {d['target_readings_per_s']:,}",
                     verdict(d["readings_per_s"], d["target_readings_per_s"])))  # fmt: skip
    v = results.get("vee")
    if v:
        rows.append(("ingest + VEE (in-process)", f"{v['vee_readings_per_s']:,} readings/s",
                     ">= 50% of plain", verdict(v["ratio"], 0.5)))  # fmt: skip
    b = results.get("rs485_bus")
    if b:
        rows.append((f"RS-485 bus utilisation at {b['baud']} baud vs theory",
                     f"{b['utilisation']:.1%}", f">= {b['target']:.0%}",
                     verdict(b["utilisation"], b["target"])))  # fmt: skip
    q = results.get("requests_per_cycle")
    if q:
        for name, f in q["profiles"].items():
            rows.append((f"requests per cycle {name}", f"{f['requests_planned']} planned, "
                         f"{f['requests_unplanned']} unplanned", "", ""))  # fmt: skip
    r = results.get("rating")
    if r:
        rows.append(("rating, TOU + tiers (1 core)", f"{r['intervals_per_s']:,} intervals/s",
                     f">= {r['target_intervals_per_s']:,}",
                     verdict(r["intervals_per_s"], r["target_intervals_per_s"])))  # fmt: skip
    d = results.get("dlms_read")
    if d:
        rows.append(("DLMS full read, TCP wrapper (clock + 6 reg.)",
                     f"{d['median_ms']} ms median, p95 {d['p95_ms']} ms", "", ""))  # fmt: skip
    d = results.get("dlms_backfill")
    if d:
        rows.append((f"DLMS {d['days']}-day 15-min profile backfill",
                     f"{d['seconds']} s ({d['entries']:,} entries, {d['entries_per_s']:,}/s)",
                     "", ""))  # fmt: skip
    a = results.get("api")
    if a:
        rows.append((f"API fleet overview, {a['gateways']:,} gw / {a['meters']:,} meters",
                     f"p95 {a['overview_p95_ms']} ms", f"<= {a['target_p95_ms']} ms",
                     verdict(a["overview_p95_ms"], a["target_p95_ms"], False)))  # fmt: skip
    s = results.get("ingest_scale")
    if s:
        for key, fig in s["runs"].items():
            rows.append((f"scale: {_scale_label(key)}",
                         f"{fig['readings_per_s']:,} readings/s; "
                         f"{fig['readings_per_collector_cpu_s']:,} per collector CPU-s",
                         f"p95 {fig['latency_p95_ms']} ms", "" if fig["lost"] == 0 and
                         fig["complete"] else "LOST RECORDS"))  # fmt: skip
    p = results.get("bill_pg")
    if p:
        for kind, name in (("pg", "PostgreSQL"), ("sqlite", "SQLite")):
            if f"{kind}_bills_per_s" in p:
                rows.append((f"bill run on {name} ({p['accounts']} accounts, 1 core)",
                             f"{p[f'{kind}_bills_per_s']} bills/s, "
                             f"{p[f'{kind}_intervals_per_s']:,} intervals/s", "", ""))  # fmt: skip
    r = results.get("advise")
    if r:
        rows.append((f"best-tariff advice, 12 months x {r['tariffs']} tariffs",
                     f"{r['accounts_per_s']} accounts/s; {r['cpu_accounts_per_s']} per CPU-s",
                     f"{r['intervals_rated_per_s']:,} intervals rated/s", ""))  # fmt: skip
    t = results.get("latency")
    if t and t.get("default_p99_ms") is not None:
        rows.append((f"capture -> commit, {t['rate']:,.0f} records/s wave, default batching",
                     f"p50 {t['default_p50_ms']:,} / p95 {t['default_p95_ms']:,} / p99 "
                     f"{t['default_p99_ms']:,} ms", f"p99 < {t['target_p99_ms']:,} ms",
                     verdict(t["default_p99_ms"], t["target_p99_ms"] - 1, False)))  # fmt: skip
    f = results.get("fleet_flush")
    if f:
        for kind in ("sqlite", "postgresql"):
            if f"{kind}_chunked_longest_wait_ms" in f:
                before = f[f"{kind}_whole_longest_wait_ms"]
                rows.append((f"ingest wait behind a fleet flush, {f['meters']:,} meters, {kind}",
                             f"{f[f'{kind}_chunked_longest_wait_ms']} ms longest",
                             f"was {before:,} ms unchunked", ""))  # fmt: skip
    s = results.get("sla")
    if s:
        day = f"{s['meters_per_s_day']:,} meters/s for 24 h (a metrics refresh)"
        rows.append((f"SLA evaluation, {s['meters']:,} meters x {s['days']} days",
                     f"{s['meters_per_s_period']:,} meters/s for the period", day, ""))  # fmt: skip
    print()
    print(f"== summary ({time.perf_counter() - t0:.0f}s)")
    widths = [max(len(r[k]) for r in rows) if rows else 0 for k in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[k]) for k, cell in enumerate(row)).rstrip())
    missing = [n for n, r in results.items() if r is None]
    if missing:
        print(f"no figures from: {', '.join(missing)}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
