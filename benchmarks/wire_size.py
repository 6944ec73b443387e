"""Bytes per reading on the wire: record, batch, and MQTT 5 PUBLISH overhead.

    .venv/bin/python -m benchmarks.wire_size

Records are built and signed with the real encoder (``protocols.record``), with values like
the demo's meters give (SDM630: 15 values, EM24: 13) and with 1, 5, 10, 20 values. The MQTT
overhead is computed: fixed header (1 byte + 1-4 bytes remaining length), topic (2 + its
length), packet id (2, QoS 1), MQTT 5 property length (1 byte, no properties). TCP/IP
headers are not counted (with Nagle and 40 kB messages they are ~1-2% more).
"""

from __future__ import annotations

import argparse
import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.batch import encode_batch
from protocols.record import ClockSource, Quality, Record, sign_record
from protocols.topics import readings_topic

from .machine import print_header, print_summary
from .records import (
    EM24_POINTS,
    GENERIC_POINTS,
    SDM630_POINTS,
    SLOT_MS,
    START_MS,
    MeterModel,
)

GATEWAY = "gw-demo-01"  # the demo's ids: their length counts
TARGET = 60.0  # bytes per reading on the wire, from the issue
BATCHES = (1, 20, 200)


def mqtt_publish_size(topic: str, payload_size: int) -> int:
    """Bytes of an MQTT 5 QoS 1 PUBLISH with no properties carrying ``payload_size``."""
    variable = 2 + len(topic.encode()) + 2 + 1  # topic, packet id, property length 0
    remaining = variable + payload_size
    length_bytes = 1
    while remaining >= 128**length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


def records_for(
    key: Ed25519PrivateKey, meter: str, points: tuple, count: int, seed: int
) -> list[bytes]:
    model = MeterModel(meter, points, random.Random(seed))
    out = []
    for n in range(count):
        record = Record(
            GATEWAY, meter, 1_000_000 + n, START_MS + n * SLOT_MS, ClockSource.GATEWAY,
            Quality.NONE, model.values(),
        )  # fmt: skip
        out.append(sign_record(record, key).raw)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="records per kind averaged")
    args = parser.parse_args(argv)
    topic = readings_topic(GATEWAY)
    print_header(
        "wire_size: bytes per reading",
        {"gateway": GATEWAY, "topic": topic, "seq": "~1e6 (3-byte varint)",
         "samples": args.samples, "mqtt": "5, QoS 1, no properties"},
    )  # fmt: skip
    key = Ed25519PrivateKey.generate()
    kinds = [
        ("SDM630 (demo)", "em-sdm-01", SDM630_POINTS),
        ("EM24 (demo)", "em-em24-01", EM24_POINTS),
    ] + [(f"{n} values", "em-sdm-01", GENERIC_POINTS[:n]) for n in (1, 5, 10, 20)]
    head = f"{'record kind':<14} {'values':>6} {'record B':>9} {'B/reading':>9}"
    for size in BATCHES:
        head += f" {f'batch {size}':>9} {f'+MQTT {size}':>9}"
    print(head)
    print(" " * 42 + "(bytes per reading: batch payload only, then the whole PUBLISH)")
    summary: dict[str, float] = {}
    for label, meter, points in kinds:
        raws = records_for(key, meter, points, args.samples, seed=len(points))
        values = len(points)
        mean = sum(len(r) for r in raws) / len(raws)
        line = f"{label:<14} {values:>6} {mean:>9.1f} {mean / values:>9.1f}"
        for size in BATCHES:
            total_payload = total_wire = 0
            readings = 0
            for i in range(0, len(raws) - size + 1, size):
                payload = encode_batch(GATEWAY, 1234, raws[i : i + size])
                total_payload += len(payload)
                total_wire += mqtt_publish_size(topic, len(payload))
                readings += size * values
            line += f" {total_payload / readings:>9.1f} {total_wire / readings:>9.1f}"
            summary[f"{values}v_batch{size}_wire"] = round(total_wire / readings, 1)
        print(line)
    signature = 64
    print(
        f"signature share: {signature} bytes per record = {signature / 10:.1f} bytes/reading at "
        f"10 values, {signature / 15:.1f} at 15; a value costs 6 (OBIS) + 1 (unit) + 1 "
        f"(exponent) + 2-5 (mantissa) + 1 (flags) bytes"
    )
    print(f"target: <= {TARGET:.0f} bytes/reading on the wire")
    print_summary(
        "wire_size",
        {
            "sdm630_batch200_wire": summary["15v_batch200_wire"],
            "em24_batch200_wire": summary["13v_batch200_wire"],
            "v10_batch200_wire": summary["10v_batch200_wire"],
            "v10_batch1_wire": summary["10v_batch1_wire"],
            "v1_batch1_wire": summary["1v_batch1_wire"],
            "target_bytes_per_reading": TARGET,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
