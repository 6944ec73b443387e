"""Coverage-guided fuzzing of one codec with atheris (libFuzzer), if it is installed.

    .venv/bin/pip install atheris
    .venv/bin/python -m tests.fuzz.atheris_run CODEC -runs=1000000 -timeout=2 -rss_limit_mb=512

libFuzzer's own flags follow the codec name; it prints ``Done N runs in S second(s)`` and the
peak RSS, and stops at the first input that raises anything but the codec's documented
errors (written to ``crash-*``). The seed corpus of ``targets.py`` starts it off.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import protocols
    import protocols.batch
    import protocols.clock
    import protocols.dlms.apdu
    import protocols.dlms.axdr
    import protocols.dlms.cosem
    import protocols.dlms.hdlc
    import protocols.dlms.profile
    import protocols.dlms.security
    import protocols.dlms.wrapper
    import protocols.dsmr
    import protocols.iec62056_21
    import protocols.modbus
    import protocols.modbus.rtu
    import protocols.record
    import protocols.status  # noqa: F401

import contextlib

from .targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(
            f"usage: python -m tests.fuzz.atheris_run CODEC [libFuzzer flags]; {sorted(TARGETS)}"
        )
    target = TARGETS[sys.argv[1]]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target.name}-"))
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)

    def one(data: bytes) -> None:
        with contextlib.suppress(target.allowed):
            target.run(data)

    atheris.Setup([sys.argv[0], *sys.argv[2:], str(corpus)], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
