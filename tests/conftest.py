"""Fixtures shared by the test packages: a real mosquitto on a free loopback port, and a real
PostgreSQL server (Debian's, a throwaway cluster for the session) with a fresh database per
test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meterlink.postgres import PostgresCluster
from tests.support.procs import Mosquitto

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private mosquitto with persistence on 127.0.0.1 (port chosen free), stopped after."""
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the session (initdb in a temp folder, 127.0.0.1, free port)."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """The URL of a new, empty database on the session's server, for this test only."""
    _databases[0] += 1
    return postgres.create_database(f"t{_databases[0]}")


_databases = [0]
