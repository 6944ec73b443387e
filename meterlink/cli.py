"""``meterlink SUBCOMMAND ...``: dispatch to the part that owns the subcommand.

Each part keeps its own ``main(argv) -> int``; importing lazily keeps ``meterlink agent``
from loading the collector and the other way round (they never import each other).
"""

from __future__ import annotations

import importlib
import sys

from . import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("meterlink.demo", "a demo fleet: simulated meters, broker, agent, collector, bills"),
    "agent": ("agent.cli", "the field agent: run, check, keys, status"),
    "collector": ("collector.cli", "the head-end: run, enrol, revoke, bill, stats, export, ..."),
    "sim": ("firmware_sim.cli", "simulated meters: modbus, run SCENARIO"),
    "verify": ("meterlink.verify", "check an export's signatures (and a bill's readings) offline"),
    "tariff": ("collector.rating.cli_tariff", "tariff files: import-urdb FILE.json, check"),
    "rate": ("collector.rating.cli_rate", "what-if rating of a usage CSV against a tariff file"),
}


def usage() -> str:
    lines = ["usage: meterlink COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "meterlink COMMAND --help shows a command's own options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        print(f"meterlink {__version__}")
        return 0
    entry = COMMANDS.get(args[0])
    if entry is None:
        print(f"meterlink: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
