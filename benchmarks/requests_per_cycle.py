"""Requests per poll cycle for each shipped device profile, with and without request
planning (block reads), and what that costs on an RS-485 bus at 9600 baud 8E1.

    .venv/bin/python -m benchmarks.requests_per_cycle

Without planning a driver sends one read per value (each value's own registers); with
planning (``protocols.modbus.plan``, what the agent's Modbus TCP and RTU drivers do) the
values are merged into block reads within the profile's ``max_count`` and ``max_gap``. The
bus time is computed from frame sizes (request 8 bytes, answer 5 + 2 x registers, the
3.5-character silence after each frame) at 9600 baud, 11 bits per character: a device's
own reaction time comes on top (per request, so planning saves it too).
"""

from __future__ import annotations

from agent.drivers.modbus_scan import PROFILES_DIR, load_known_profiles
from protocols.modbus.rtu import SerialLine

from .machine import print_header, print_summary

LINE = SerialLine(9600, 8, "E", 1)


def main() -> int:
    print_header("requests_per_cycle", {"profiles": str(PROFILES_DIR), "line": "9600 8E1"})
    profiles = load_known_profiles()
    figures: dict[str, object] = {}
    print(
        f"{'profile':<24}{'values':>7}{'unplanned':>11}{'planned':>9}{'ratio':>7}"
        f"{'bus ms unplanned':>18}{'bus ms planned':>16}{'registers read':>16}"
    )
    for profile in profiles:
        plan = profile.plan()
        unplanned_ms = sum(LINE.transaction(s.count).total for s in profile.registers) * 1000
        planned_ms = sum(LINE.transaction(r.count).total for r in plan) * 1000
        registers = sum(r.count for r in plan)
        needed = sum(s.count for s in profile.registers)
        ratio = len(profile.registers) / len(plan)
        print(
            f"{profile.name:<24}{len(profile.registers):>7}{len(profile.registers):>11}"
            f"{len(plan):>9}{ratio:>6.1f}x{unplanned_ms:>18.1f}{planned_ms:>16.1f}"
            f"{f'{registers} ({needed} needed)':>16}"
        )
        figures[profile.name] = {
            "values": len(profile.registers),
            "requests_unplanned": len(profile.registers),
            "requests_planned": len(plan),
            "bus_ms_unplanned": round(unplanned_ms, 1),
            "bus_ms_planned": round(planned_ms, 1),
        }
    print_summary("requests_per_cycle", {"profiles": figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
