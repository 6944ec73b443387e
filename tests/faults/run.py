"""Run the fault matrix and print (or write into docs/reliability.md) the table.

    .venv/bin/python -m tests.faults.run [--runs N] [--fault NAME ...] [--seed S]
        [--table docs/reliability.md [--block NAME]] [--short]

Without --runs each fault runs its long-version count (--short: the CI count). The seed is
printed; rerun a failure with the same --seed and --fault. ``--table`` replaces the block
between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` (NAME: ``fault-table``, or
``mc-fault-table`` for the several-collector faults) with this run's table and command.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from .reconcile import Tally
from .registry import FAULTS

HEADER = (
    "| fault | runs | records / readings captured | stored once | in buffer | dropped by "
    "policy | lost | accepted twice | altered | notes |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def row(name: str, t: Tally) -> str:
    extra = []
    if t.duplicate_identity:
        extra.append(f"{t.duplicate_identity} values duplicate of another record's identity")
    if t.conflicts:
        extra.append(f"{t.conflicts} conflicts kept")
    if t.clock_suspect:
        extra.append(f"{t.clock_suspect} records CLOCK_SUSPECT")
    if t.read_errors:
        extra.append(f"{t.read_errors} read errors counted")
    extra += [n for n in t.notes if not n.startswith("run ")][-2:]
    return (
        f"| {name} | {t.runs} | {t.records} / {t.readings} | {t.stored_once} | {t.in_buffer} | "
        f"{t.dropped} | {t.lost} | {t.twice} | {t.altered} | {'; '.join(extra)} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.faults.run")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--fault", nargs="*", choices=sorted(FAULTS), default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--short", action="store_true", help="the CI run counts")
    ap.add_argument("--table", type=Path)
    ap.add_argument("--block", default="fault-table", help="the table's marker name")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", flush=True)
    names = args.fault or [n for n in FAULTS if args.short is False or FAULTS[n][1]]
    rows, failed = [], []
    started = time.monotonic()
    for name in names:
        fn, short, long = FAULTS[name]
        runs = args.runs or (short if args.short else long)
        rng = random.Random(f"{seed}:{name}")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as tmp:
            try:
                tally = fn(Path(tmp), rng, runs)
            except Exception as exc:  # a harness failure is a failed row, not a stop
                tally = Tally(notes=[f"HARNESS FAILURE: {exc!r}"[:300]])
                failed.append(name)
        if not tally.ok:
            failed.append(name)
        rows.append(row(name, tally))
        print(rows[-1] + f"  ({time.monotonic() - t0:.0f} s)", flush=True)
        for note in tally.notes:
            if note.startswith("run ") or "HARNESS" in note:
                print("   ", note, flush=True)
    table = "\n".join([HEADER, *rows])
    print(f"\nseed {seed}\n{table}")
    if args.table:
        begin, end = f"<!-- {args.block}:begin -->", f"<!-- {args.block}:end -->"
        command = " ".join(["python -m tests.faults.run", *(argv or sys.argv[1:])])
        block = (
            f"{begin}\nSeed {seed}, {time.monotonic() - started:.0f} s: `{command}`\n\n"
            f"{table}\n{end}"
        )
        text = args.table.read_text()
        if begin not in text:
            raise SystemExit(f"{args.table}: no {begin} ... {end} block")
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, text, flags=re.S)
        args.table.write_text(text)
    if failed:
        print("FAILED:", ", ".join(sorted(set(failed))), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
