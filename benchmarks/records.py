"""Synthetic meter captures with values like the demo's meters give (exact Decimals).

The SDM630 reads IEEE float32 registers that the agent decodes to their shortest exact
decimal (``231.47`` V, ``4.567`` A, ``12345.67`` kWh); the EM24 reads scaled integers
(0.1 V, 0.001 A, 0.1 W, 0.1 kWh). Values are drawn from a seeded generator so every run
builds the same bytes; energy registers only grow, like a meter's.
"""

from __future__ import annotations

import argparse
import functools
import random
from dataclasses import dataclass
from decimal import Decimal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.obis import Obis
from protocols.record import ClockSource, Quality, Record, Value, key_id_of, sign_record

__all__ = [
    "EM24_POINTS",
    "GENERIC_POINTS",
    "SDM630_POINTS",
    "MeterModel",
    "gateway_records",
    "meter_ids",
    "signed_records",
]

SLOT_MS = 15 * 60 * 1000  # the demo's capture interval
START_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z, the demo's virtual start

# (OBIS, unit, kind, decimals): kind picks the range, decimals the meter's resolution
SDM630_POINTS: tuple[tuple[str, str, str, int], ...] = (
    ("1-0:32.7.0", "V", "volt", 2),
    ("1-0:52.7.0", "V", "volt", 2),
    ("1-0:72.7.0", "V", "volt", 2),
    ("1-0:31.7.0", "A", "amp", 3),
    ("1-0:51.7.0", "A", "amp", 3),
    ("1-0:71.7.0", "A", "amp", 3),
    ("1-0:21.7.0", "W", "watt", 1),
    ("1-0:41.7.0", "W", "watt", 1),
    ("1-0:61.7.0", "W", "watt", 1),
    ("1-0:16.7.0", "W", "watt3", 1),
    ("1-0:14.7.0", "Hz", "hertz", 2),
    ("1-0:1.8.0", "kWh", "import", 2),
    ("1-0:2.8.0", "kWh", "export", 2),
    ("1-0:3.8.0", "kvarh", "import", 2),
    ("1-0:4.8.0", "kvarh", "export", 2),
)
EM24_POINTS: tuple[tuple[str, str, str, int], ...] = (
    ("1-0:32.7.0", "V", "volt", 1),
    ("1-0:52.7.0", "V", "volt", 1),
    ("1-0:72.7.0", "V", "volt", 1),
    ("1-0:31.7.0", "A", "amp", 3),
    ("1-0:51.7.0", "A", "amp", 3),
    ("1-0:71.7.0", "A", "amp", 3),
    ("1-0:21.7.0", "W", "watt", 1),
    ("1-0:41.7.0", "W", "watt", 1),
    ("1-0:61.7.0", "W", "watt", 1),
    ("1-0:16.7.0", "W", "watt3", 1),
    ("1-0:14.7.0", "Hz", "hertz", 1),
    ("1-0:1.8.0", "kWh", "import", 1),
    ("1-0:2.8.0", "kWh", "export", 1),
)
#: For "N values per record": the billing registers first, then what a meter adds.
GENERIC_POINTS: tuple[tuple[str, str, str, int], ...] = (
    ("1-0:1.8.0", "kWh", "import", 2),
    ("1-0:2.8.0", "kWh", "export", 2),
    ("1-0:32.7.0", "V", "volt", 2),
    ("1-0:52.7.0", "V", "volt", 2),
    ("1-0:72.7.0", "V", "volt", 2),
    ("1-0:31.7.0", "A", "amp", 3),
    ("1-0:51.7.0", "A", "amp", 3),
    ("1-0:71.7.0", "A", "amp", 3),
    ("1-0:16.7.0", "W", "watt3", 1),
    ("1-0:14.7.0", "Hz", "hertz", 2),
    ("1-0:21.7.0", "W", "watt", 1),
    ("1-0:41.7.0", "W", "watt", 1),
    ("1-0:61.7.0", "W", "watt", 1),
    ("1-0:3.8.0", "kvarh", "import", 2),
    ("1-0:4.8.0", "kvarh", "export", 2),
    ("1-0:13.7.0", "", "pf", 3),
    ("1-0:33.7.0", "", "pf", 3),
    ("1-0:53.7.0", "", "pf", 3),
    ("1-0:73.7.0", "", "pf", 3),
    ("1-0:9.7.0", "VA", "watt3", 1),
)

# kind -> (low, high) of the value in its unit
_RANGES = {
    "volt": (Decimal("225"), Decimal("245")),
    "amp": (Decimal("0.2"), Decimal("32")),
    "watt": (Decimal("-2500"), Decimal("7000")),
    "watt3": (Decimal("-7500"), Decimal("21000")),
    "hertz": (Decimal("49.9"), Decimal("50.1")),
    "pf": (Decimal("0.8"), Decimal("1")),
}


def meter_ids(count: int, prefix: str = "em-sdm") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(1, count + 1)]


@functools.lru_cache(maxsize=16)
def _parsed_obis(points: tuple[tuple[str, str, str, int], ...]) -> list[Obis]:
    return [Obis.parse(code) for code, *_ in points]


@dataclass
class MeterModel:
    """One meter: draws a capture's values; energy registers grow per capture."""

    meter_id: str
    points: tuple[tuple[str, str, str, int], ...]
    rng: random.Random

    def __post_init__(self) -> None:
        self._obis = _parsed_obis(self.points)
        # registers held as integer counts of their last digit (exact): 1,000-50,000 kWh
        # imported, up to 10,000 exported
        self._counters = {
            i: self.rng.randint(0, (50_000 if kind == "import" else 10_000) * 10**dec)
            + (1000 * 10**dec if kind == "import" else 0)
            for i, (_code, _unit, kind, dec) in enumerate(self.points)
            if kind in ("import", "export")
        }

    def values(self) -> tuple[Value, ...]:
        out = []
        for i, (_code, unit, kind, decimals) in enumerate(self.points):
            if i in self._counters:
                self._counters[i] += self.rng.randint(0, 3 * 10**decimals)  # <= 3 kWh per slot
                number = Decimal(self._counters[i]).scaleb(-decimals)
            else:
                low, high = _RANGES[kind]
                steps = int((high - low) * 10**decimals)
                number = low + Decimal(self.rng.randint(0, steps)).scaleb(-decimals)
                number = number.quantize(Decimal(1).scaleb(-decimals))
            out.append(Value(self._obis[i], number, unit))
        return tuple(out)


def signed_records(
    key: Ed25519PrivateKey,
    gateway_id: str,
    meters: list[str],
    records: int,
    values: int,
    first_seq: int = 1,
    seed: int = 1,
) -> list[bytes]:
    """``records`` signed records, round-robin over ``meters`` (one 15-minute slot per round),
    seqs ``first_seq``...; every (meter, OBIS, time) identity is unique."""
    rng = random.Random(seed)
    points = GENERIC_POINTS[:values]
    models = [MeterModel(m, points, rng) for m in meters]
    out = []
    for n in range(records):
        model = models[n % len(models)]
        captured_ms = START_MS + (n // len(models)) * SLOT_MS
        flags = Quality.RESTARTED if n < len(models) else Quality.NONE
        record = Record(
            gateway_id, model.meter_id, first_seq + n, captured_ms, ClockSource.GATEWAY, flags,
            model.values(),
        )  # fmt: skip
        out.append(sign_record(record, key).raw)
    return out


def gateway_records(
    key: Ed25519PrivateKey,
    gateway_id: str,
    meters: list[str],
    slot_times_ms: list[int],
    values: int,
    seed: int,
) -> list[bytes]:
    """What one gateway's agent captures and signs: every meter at every slot time (slot by
    slot, meters in order), seqs gap-free from 1; ``key_id`` hashed once, not per record."""
    rng = random.Random(seed)
    points = GENERIC_POINTS[:values]
    models = [MeterModel(m, points, rng) for m in meters]
    key_id = key_id_of(key.public_key())
    out = []
    seq = 1
    for captured_ms in slot_times_ms:
        for model in models:
            record = Record(
                gateway_id, model.meter_id, seq, captured_ms, ClockSource.GATEWAY,
                Quality.RESTARTED if seq == 1 else Quality.NONE, model.values(), key_id,
            )  # fmt: skip
            out.append(sign_record(record, key, key_id).raw)
            seq += 1
    return out


def add_record_arguments(parser: argparse.ArgumentParser, batch_help: str) -> None:
    """``--records --values --batch --meters``: the signed records the ingest and VEE
    benchmarks send, and how many go in one batch."""
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--values", type=int, default=10, help="values per record (1-20)")
    parser.add_argument("--batch", type=int, default=200, help=batch_help)
    parser.add_argument("--meters", type=int, default=100)
