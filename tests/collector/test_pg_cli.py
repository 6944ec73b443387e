"""``meterlink collector`` on a ``postgresql://`` database, as real processes: bill, stats,
quarantine, vee report, gateways, commands, export (then ``meterlink verify``), and a
server that is not there."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector.commands.store import CommandRow
from collector.config import load_config
from collector.ingest import Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from collector.vee import VeeEngine
from meterlink.postgres import PostgresCluster
from meterlink.procs import free_port
from tests.collector._fixtures import IMPORT, POWER, T0, T_END, message, record, write_public_key
from tests.verify._site import ACCOUNTS, CAPTURES, TARIFF

from ._stores import pg_rows

pytestmark = pytest.mark.integration

GW = "gw-1"
DAY = 86_400_000
CONFIG = """
[collector]
database = "{url}"
[billing]
accounts = "accounts.toml"
tariffs = "tariffs"
[vee]
timezone = "Europe/Amsterdam"
"""


@dataclass
class PgSite:
    root: Path
    config: Path
    url: str
    records: int


@pytest.fixture(scope="module")
def site(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> PgSite:
    """A collector config on a PostgreSQL database: seqs 1-7 stored, 9 forged (quarantined),
    8 never arrived, 10 stored; VEE on; one command sent."""
    root = tmp_path_factory.mktemp("pgsite")
    (root / "tariffs").mkdir()
    (root / "tariffs" / "t.toml").write_text(TARIFF)
    (root / "accounts.toml").write_text(ACCOUNTS)
    url = postgres.create_database("cli")
    config = root / "collector.toml"
    config.write_text(CONFIG.format(url=url))
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = write_public_key(key, root / "gw.pem")
    values = lambda kwh: [(IMPORT, kwh, "kWh"), (POWER, "1234", "W")]  # noqa: E731
    good = [
        record(key, GW, meter, seq, ms, values(kwh))
        for seq, (meter, ms, kwh) in enumerate(CAPTURES, start=1)
    ]
    good.append(record(key, GW, "em-1", 10, T_END + DAY, values("1400.00")))
    forged = bytearray(record(key, GW, "em-2", 9, T_END, values("99")).raw)
    forged[-1] ^= 0x01  # a flipped bit in the signature

    async def go() -> None:
        store = await open_store(url)
        try:
            await enrol_gateway(store, GW, pem, ["em-1", "em-2"], T0 - DAY)
            vee = VeeEngine(load_config(config).vee)
            ingestor = Ingestor(store, clock_ms=lambda: T_END + 2 * DAY, vee=vee)
            await ingestor.ingest([message(GW, 1, [r.raw for r in good[:5]])])
            await ingestor.ingest([message(GW, 2, [r.raw for r in good[5:]] + [bytes(forged)])])
            # sent long ago: expired without a reply
            await store.commands.add(CommandRow("cmd-1", GW, "ping", {}, 1_000, 61_000, "ann",
                                                "k", None, None, None, None, None))  # fmt: skip
        finally:
            await store.close()

    asyncio.run(go())
    return PgSite(root, config, url, len(good))


def collector(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meterlink", "collector", *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=cwd, check=False,
    )  # fmt: skip


def test_bill_issues_once_on_postgres(site: PgSite) -> None:
    base = ["bill", "--config", site.config, "--account", "acc-1", "--period", "2026-11"]
    base += ["--as-of", "2026-12-05T00:00:00Z", "--json"]
    first = collector(*base, "--issue")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["number"] == "B0000001" and doc["total"]
    again = collector(*base, "--issue")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == doc  # the stored bill, as issued
    assert pg_rows(site.url, "SELECT number, total FROM bills") == [("B0000001", doc["total"])]


def test_stats_and_quarantine_on_postgres(site: PgSite) -> None:
    stats = collector("stats", "--config", site.config, "--json")
    assert stats.returncode == 0, stats.stderr
    doc = json.loads(stats.stdout)
    assert sum(c["records_stored"] for c in doc["counters"]) == site.records
    assert doc["quarantine"] == {"bad signature": 1}
    quarantine = collector("quarantine", "--config", site.config)
    assert quarantine.returncode == 0, quarantine.stderr
    [line] = quarantine.stdout.splitlines()
    assert f"gateway {GW} seq 9 meter em-2" in line and "bad signature" in line


def test_vee_report_on_postgres(site: PgSite) -> None:
    report = collector("vee", "report", "--config", site.config, "--json")
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert doc["sequence_gaps"] == [{"gateway": GW, "first": 8, "last": 9, "in_quarantine": 1}]
    validated = [c for c in doc["counters"] if c["outcome"] == "validated"]
    assert [(c["meter"], c["count"] > 0) for c in validated] == [("em-1", True), ("em-2", True)]


def test_gateways_and_commands_on_postgres(site: PgSite) -> None:
    gateways = collector("gateways", "--config", site.config, "--json")
    assert gateways.returncode == 0, gateways.stderr
    [gw] = json.loads(gateways.stdout)
    assert gw["gateway"] == GW and sorted(gw["meters"]) == ["em-1", "em-2"]
    assert [k["status"] for k in gw["keys"]] == ["active"]
    commands = collector("commands", "--config", site.config, "--json")
    assert commands.returncode == 0, commands.stderr
    assert [(c["id"], c["action"], c["state"]) for c in json.loads(commands.stdout)] == [
        ("cmd-1", "ping", "expired")
    ]


def test_export_of_a_postgres_database_verifies(site: PgSite, tmp_path: Path) -> None:
    out = tmp_path / "em-1.jsonl"
    done = collector("export", "--config", site.config, "--meter", "em-1", "--out", out)
    assert done.returncode == 0, done.stderr
    header, *lines = [json.loads(line) for line in out.read_text().splitlines()]
    stored = dict(pg_rows(site.url, "SELECT seq, raw FROM records WHERE meter_id = 'em-1'"))
    assert {line["seq"]: base64.b64decode(line["record"]) for line in lines} == stored
    assert header["records"] == len(stored) == 6
    verify = subprocess.run(
        [sys.executable, "-m", "meterlink", "verify", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_stats_with_the_server_not_there_is_one_clear_line(tmp_path: Path) -> None:
    url = f"postgresql://meterlink@127.0.0.1:{free_port()}/meterlink"
    config = tmp_path / "collector.toml"
    config.write_text(f'[collector]\ndatabase = "{url}"\n')
    done = collector("stats", "--config", config)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: database: {url}: cannot connect: "), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
