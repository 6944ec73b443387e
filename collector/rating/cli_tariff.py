"""``meterlink tariff``: tariff file tools.

    meterlink tariff import-urdb FILE.json [--out T.toml] [--item N] [--id ID]
    meterlink tariff check T.toml [T2.toml ...]

``import-urdb`` writes the TOML to ``--out`` (or stdout) and lists on stderr, one line each,
the parts of the URDB rate it could not carry; the written file is loaded back before it is
kept, so what it writes always loads. ``check`` loads tariff files and prints their versions and
charges, or the first error (file, line, key).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..errors import CollectorError
from .tariff import load_tariff
from .urdb import convert_urdb, load_urdb, to_toml

__all__ = ["main"]


def _import(args: argparse.Namespace) -> int:
    rate = load_urdb(args.file, args.item)
    result = convert_urdb(rate, args.id)
    text = to_toml(result, args.file.name)
    with tempfile.TemporaryDirectory() as tmp:  # what is written must load
        probe = Path(tmp) / "probe.toml"
        probe.write_text(text, encoding="utf-8")
        load_tariff(probe)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out} ({len(result.charges)} charges)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for line in result.dropped:
        print(f"not carried: {line}", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    for path in args.files:
        tariff = load_tariff(path)
        print(f"{path}: {tariff.id} ({tariff.name}), {tariff.currency}, per {tariff.unit}")
        for version in tariff.versions:
            until = version.effective_to.isoformat() if version.effective_to else "open"
            since = "always" if version.effective_from.year == 1 else str(version.effective_from)
            kinds = ", ".join(f"{c.kind} {c.label!r}" for c in version.components)
            print(f"  {since} .. {until}: {kinds}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meterlink tariff", description="Tariff file tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-urdb", help="convert an OpenEI URDB rate (JSON) to TOML")
    imp.add_argument("file", type=Path)
    imp.add_argument("--out", type=Path, help="the TOML file to write (default: stdout)")
    imp.add_argument("--item", type=int, default=0, help="which of an API answer's items")
    imp.add_argument("--id", help="tariff id (default: urdb-LABEL)")
    imp.set_defaults(run=_import)
    chk = sub.add_parser("check", help="load tariff files and list their versions")
    chk.add_argument("files", type=Path, nargs="+")
    chk.set_defaults(run=_check)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except CollectorError as exc:
        print(f"meterlink tariff: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
