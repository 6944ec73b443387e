"""VEE through the real ingest path: signed records -> ``Ingestor`` (with the VEE engine)
-> a real SQLite file; then the stored findings and derived intervals are checked exactly."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.config import load_config
from collector.ingest import Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from collector.vee import VeeEngine
from protocols.obis import Obis

from ._fixtures import IMPORT, message, record, write_public_key

GW = "gw-1"
METER = "em-1"
MIN = 60_000
Q = 15 * MIN
HOUR = 60 * MIN
DAY = 24 * HOUR
WEEK = 7 * DAY
# Monday 2026-11-02 00:00 Europe/Amsterdam (CET, UTC+1)
MONDAY = 1_794_092_400_000
T1 = Obis.parse("1-0:1.8.1")
T2 = Obis.parse("1-0:1.8.2")
POWER = Obis.parse("1-0:1.7.0")

BASE_TOML = """\
[collector]
database = "c.sqlite"

[vee]
timezone = "Europe/Amsterdam"
interval = "15m"
"""


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


class Head:
    """A collector database with VEE on, fed through ``Ingestor.ingest``."""

    def __init__(self, tmp: Path, key: Ed25519PrivateKey, extra: str = "") -> None:
        self.dir = tmp
        self.key = key
        self.config_path = tmp / "collector.toml"
        self.config_path.write_text(BASE_TOML + extra)
        self.config = load_config(self.config_path)
        self.db = self.config.collector.database
        self.seq = 0
        self.batch = 0
        self.enrolled = False

    def feed(
        self,
        captures: Sequence[tuple[int, Sequence[tuple[Obis, str, str]]]],
        meter: str = METER,
        skip_seqs: int = 0,
        received_ms: int | None = None,
        seqs: Sequence[int] | None = None,
    ) -> None:
        """Ingest one batch: (captured_ms, values) per record. ``skip_seqs`` leaves that
        many sequence numbers out first (records lost on the way)."""
        self.seq += skip_seqs
        raws = []
        for n, (ms, values) in enumerate(captures):
            if seqs is not None:
                seq = seqs[n]
            else:
                self.seq += 1
                seq = self.seq
            raws.append(record(self.key, GW, meter, seq, ms, list(values)).raw)
        last = max(ms for ms, _ in captures)
        self.batch += 1
        incoming = message(GW, self.batch, raws, received_ms=received_ms or last + 1000)

        async def go() -> None:
            store = await open_store(self.db)
            try:
                if not self.enrolled:
                    pem = write_public_key(self.key, self.dir / "gw.pem")
                    await enrol_gateway(store, GW, pem, [METER, "em-2"], MONDAY - 60 * DAY)
                    self.enrolled = True
                ingestor = Ingestor(
                    store, clock_ms=lambda: last + 2000, vee=VeeEngine(self.config.vee)
                )
                await ingestor.ingest([incoming])
            finally:
                await store.close()

        asyncio.run(go())

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql, params).fetchall()

    def intervals(self, meter: str = METER, obis: str = "1-0:1.8.0") -> list[tuple]:
        return self.rows(
            "SELECT start_ms, end_ms, value, quality, method FROM intervals WHERE meter_id = ?"
            " AND obis = ? AND superseded_ms IS NULL ORDER BY start_ms",
            (meter, obis),
        )

    def flags(self, rule: str | None = None) -> list[tuple]:
        sql = "SELECT captured_ms, rule, outcome, detail FROM validations"
        if rule:
            return self.rows(sql + " WHERE rule = ? ORDER BY id", (rule,))
        return self.rows(sql + " ORDER BY id")


def profile(start: int, count: int, first: Decimal, usage) -> list[tuple[int, list]]:
    """``count + 1`` register readings every 15 min from ``start``; ``usage(ms)`` gives the
    consumption of the interval that ends at ms."""
    out = []
    value = first
    for k in range(count + 1):
        ms = start + k * Q
        if k:
            value += usage(ms)
        out.append((ms, [(IMPORT, str(value), "kWh")]))
    return out


def shape(ms: int) -> Decimal:
    """A weekday-dependent daily shape in 0.001 kWh steps (exact)."""
    hour = (ms - MONDAY) % DAY // HOUR
    return Decimal("0.050") + Decimal(hour) * Decimal("0.010")


def test_a_day_of_load_profile_gives_96_actual_intervals_exactly(tmp_path, key) -> None:
    head = Head(tmp_path, key)
    head.feed(profile(MONDAY, 96, Decimal("1000.000"), shape))
    got = head.intervals()
    assert len(got) == 96
    assert all(q == "actual" and m == "" for _s, _e, _v, q, m in got)
    assert [Decimal(v) for _s, _e, v, _q, _m in got] == [
        shape(MONDAY + (k + 1) * Q) for k in range(96)
    ]
    assert head.flags() == []
    assert head.rows(
        "SELECT count FROM vee_counters WHERE rule = '' AND outcome = 'validated'"
    ) == [(97,)]
