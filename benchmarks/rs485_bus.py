"""RS-485 bus utilisation at 9600 baud: the agent's Modbus RTU driver polling a bus of ten
meters (two profiles) against the theoretical maximum for the same requests.

    .venv/bin/python -m benchmarks.rs485_bus [--units 10] [--cycles 5] [--baud 9600]

The bus is ``meterlink sim run`` with an ``[[rtu]]`` table (a real process on a pty; the
agent's side is ``agent.drivers.modbus_rtu`` itself, every meter read by its planned block
reads, one transaction at a time). A pty does not enforce a baud rate: bytes pass at memory
speed. The simulator therefore paces its answers as the wire would: an answer is written
once the request and the answer would both have been completely transmitted at the line's
rate, plus the 3.5-character silence between them. So:

* theoretical minimum cycle = sum over the requests of (request + answer + the
  3.5-character silence after each) at the baud rate, computed from frame sizes;
* measured cycle = the real time of one poll of every meter (the driver's silence before
  each request, the paced answers, the driver's own time);
* utilisation = theoretical / measured (target >= 90%): what the driver's own overhead
  (its silence before each request, asyncio, decoding) leaves of the line's capacity.

A real meter's reaction time (typically 5..50 ms) comes on top of both and is the meter's,
not the driver's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent.config import SerialSettings
from agent.drivers.modbus_rtu import RtuBus, RtuMeter
from meterlink.procs import Proc
from protocols.modbus import load_profile
from protocols.modbus.rtu import SerialLine

from .machine import print_header, print_summary

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("eastron_sdm630", "carlo_gavazzi_em24_e1")
TARGET = 0.90


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--baud", type=int, default=9600)
    args = parser.parse_args()
    print_header(
        "rs485_bus",
        {"units": args.units, "cycles": args.cycles, "line": f"{args.baud} 8E1",
         "profiles": ",".join(PROFILES)},
    )  # fmt: skip
    line = SerialLine(args.baud, 8, "E", 1)
    profiles = {
        name: load_profile(REPO / "config" / "profiles" / f"{name}.toml") for name in PROFILES
    }
    units = {u: PROFILES[(u - 1) % len(PROFILES)] for u in range(1, args.units + 1)}
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "bus.toml"
        scenario.write_text(
            f'[[rtu]]\npty_link = "ttyBENCH"\nbaud = {args.baud}\nparity = "E"\n'
            + "".join(f'[[rtu.units]]\nunit = {u}\nprofile = "{p}"\n' for u, p in units.items())
        )
        sim = Proc([sys.executable, "-m", "meterlink", "sim", "run", str(scenario)], "sim")
        try:
            sim.wait_line(lambda t: t.startswith("READY rtu"), timeout=60)
            cycles = asyncio.run(_poll(Path(tmp) / "ttyBENCH", args, units, profiles))
        finally:
            sim.stop()
    requests = [r for u, p in units.items() for r in profiles[p].plan()]
    theory = sum(line.transaction(r.count).total for r in requests)
    measured = cycles
    median = statistics.median(measured)
    utilisation = theory / median
    print(
        f"{len(requests)} requests per cycle ({args.units} meters, "
        f"{sum(r.count for r in requests)} registers)"
    )
    print(f"theoretical minimum cycle at {args.baud} baud: {theory * 1000:.1f} ms (frame sizes)")
    print(
        f"measured cycle (pty, both frames' wire time paced by the simulator): "
        f"median {median * 1000:.1f} ms, min {min(measured) * 1000:.1f}, "
        f"max {max(measured) * 1000:.1f} over {len(measured)} cycles"
    )
    print(
        f"utilisation: {utilisation:.1%} of the theoretical maximum "
        f"(target >= {TARGET:.0%}: {'met' if utilisation >= TARGET else 'NOT met'})"
    )
    print_summary(
        "rs485_bus",
        {
            "baud": args.baud,
            "requests_per_cycle": len(requests),
            "theory_ms": round(theory * 1000, 1),
            "cycle_ms": round(median * 1000, 1),
            "utilisation": round(utilisation, 4),
            "target": TARGET,
        },
    )
    return 0


async def _poll(
    link: Path, args: argparse.Namespace, units: dict[int, str], profiles: dict[str, object]
) -> list[float]:
    bus = RtuBus(SerialSettings(str(link), args.baud, 8, "E", 1))
    meters = [
        RtuMeter(f"m{u}", u, profiles[p], bus, timeout=2.0, retries=0)  # type: ignore[arg-type]
        for u, p in units.items()
    ]
    try:
        for meter in meters:  # warm-up: the port open, the models computed
            await meter.read()
        cycles = []
        for _ in range(args.cycles):
            started = time.perf_counter()
            for meter in meters:
                outcome = await meter.read()
                assert not outcome.errors, outcome.errors
            cycles.append(time.perf_counter() - started)
        return cycles
    finally:
        await bus.close()


if __name__ == "__main__":
    raise SystemExit(main())
