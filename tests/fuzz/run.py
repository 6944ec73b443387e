"""The long fuzz run: ``python -m tests.fuzz.run --cases 1000000 [--codec NAME] [--jobs N]``.

A mutation fuzzer over each codec's seed corpus (``targets.py``): every case is a seed (or
an earlier case that was accepted) with 1-4 random edits (byte flips, cuts, inserts,
duplicated chunks, splices of another seed, "interesting" tokens such as ``1e999999``,
``[``, ``\\xff`` runs), or plain random bytes. Each case runs under a time limit (SIGALRM,
``--timeout`` seconds) so that a hang is reported as one. Reports per codec: cases, cases/s,
accepted inputs, documented errors, defects (any other exception, broken promise or hang)
with the first input of each kind, and the process's peak RSS. Exit 1 if any defect.

Deterministic for a given ``--seed``; runs codecs in parallel with ``--jobs``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

from .targets import TARGETS

TOKENS = [
    b"1e999999",
    b"0E0488888888888888888888",
    b"-1",
    b"[",
    b"{",
    b'"',
    b"null",
    b"true",
    b"0" * 64,
    b"9" * 30,
    b"\xff" * 10,
    b"\x80" * 10,
    b"\x00",
    b"\x7f",
    b"=",
    b"\n[[registers]]\n",
    b"@",
    b"x",
    b"/",
    b"*",
]


class Hang(Exception):
    pass


def _alarm(_signum: int, _frame: object) -> None:
    raise Hang()


@dataclass
class Report:
    codec: str
    cases: int = 0
    seconds: float = 0.0
    accepted: int = 0
    documented_errors: int = 0
    defects: int = 0
    hangs: int = 0
    first_defects: dict[str, str] = field(default_factory=dict)  # kind -> input (hex)
    slowest_case_ms: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def rate(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0


def mutate(rnd: random.Random, pool: list[bytes], seeds: list[bytes]) -> bytes:
    if rnd.random() < 0.05:
        return rnd.randbytes(rnd.randint(0, 64))
    data = bytearray(rnd.choice(pool) if rnd.random() < 0.5 else rnd.choice(seeds))
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(7)
        pos = rnd.randint(0, len(data))
        if op == 0 and data:
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        elif op == 1 and data:
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        elif op == 2:
            del data[pos : pos + rnd.randint(1, 32)]
        elif op == 3:
            data[pos:pos] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 4:
            data[pos:pos] = rnd.choice(TOKENS)
        elif op == 5 and data:
            start = rnd.randrange(len(data))
            data[pos:pos] = data[start : start + rnd.randint(1, 64)]
        else:
            other = rnd.choice(seeds)
            cut = rnd.randint(0, len(other))
            data[pos:] = other[cut:]
    return bytes(data)


def fuzz(codec: str, cases: int, seed: int, timeout: float) -> Report:
    target = TARGETS[codec]
    seeds = target.seeds()
    pool = list(seeds)
    rnd = random.Random(f"{seed}:{codec}")
    report = Report(codec)
    signal.signal(signal.SIGALRM, _alarm)
    run, allowed = target.run, target.allowed
    started = time.perf_counter()
    slowest = 0.0
    for _ in range(cases):
        data = mutate(rnd, pool, seeds)
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            run(data)
            report.accepted += 1
            if len(pool) < 5000 and rnd.random() < 0.01:
                pool.append(data)  # accepted inputs seed further mutations
        except allowed:
            report.documented_errors += 1
        except Hang:
            report.hangs += 1
            report.defects += 1
            report.first_defects.setdefault("hang", data.hex())
        except Exception as exc:  # a defect: not the codec's documented error
            report.defects += 1
            kind = f"{type(exc).__name__}: {str(exc)[:120]}"
            if len(report.first_defects) < 20:
                report.first_defects.setdefault(kind, data.hex())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.perf_counter() - t0)
        report.cases += 1
    report.seconds = time.perf_counter() - started
    report.slowest_case_ms = slowest * 1000
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _fuzz_args(args: tuple[str, int, int, float]) -> Report:
    return fuzz(*args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("--cases", type=int, default=1_000_000, help="cases per codec")
    parser.add_argument("--codec", action="append", choices=sorted(TARGETS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per case")
    parser.add_argument("--jobs", type=int, default=1, help="codecs fuzzed in parallel")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    codecs = args.codec or sorted(TARGETS)
    work = [(c, args.cases, args.seed, args.timeout) for c in codecs]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            reports = list(pool.map(_fuzz_args, work))
    else:
        reports = [_fuzz_args(w) for w in work]
    if args.json:
        print(json.dumps([asdict(r) | {"rate": r.rate} for r in reports], indent=2))
    else:
        print(
            f"{'codec':<16}{'cases':>10}{'cases/s':>10}{'accepted':>10}{'doc.err':>10}"
            f"{'defects':>9}{'hangs':>7}{'slowest ms':>12}{'peak RSS MB':>13}"
        )
        for r in reports:
            print(
                f"{r.codec:<16}{r.cases:>10}{r.rate:>10.0f}{r.accepted:>10}"
                f"{r.documented_errors:>10}{r.defects:>9}{r.hangs:>7}"
                f"{r.slowest_case_ms:>12.1f}{r.peak_rss_mb:>13.1f}"
            )
            for kind, data in r.first_defects.items():
                print(f"    DEFECT {kind}\n      input (hex): {data[:400]}")
    return 1 if any(r.defects for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
