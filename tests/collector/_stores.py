"""Stores on both backends for the store-level tests: SQLite (a file) and PostgreSQL (a fresh
database on the session's server).

``Backend`` opens the store under test and looks at its tables directly (sqlite3 or psycopg,
the same SQL text), so a test asserts what is stored, not what the store says it stored.

``redirect_to_postgres`` runs tests written for the SQLite store on PostgreSQL unchanged:
every ``open_store(path)`` of a SQLite file opens a PostgreSQL database made for that path,
and the ``sqlite3.connect(path)`` the tests look with opens a psycopg session on it. The
``tests/collector/test_pg_*`` modules that re-run a suite use it.
"""

from __future__ import annotations

import sqlite3
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

import collector.store.sqlite as sqlite_store
from collector.store import open_store
from collector.store.pg import translate
from meterlink.postgres import PostgresCluster

__all__ = [
    "BACKENDS",
    "Backend",
    "make_backend",
    "on_postgres",
    "pg_rows",
    "redirect_to_postgres",
    "schema_url",
]

BACKENDS = ("sqlite", "postgresql")

# (psycopg's exception for what SQLite reports as an IntegrityError: a RAISE in a trigger)
_INTEGRITY = (sqlite3.IntegrityError, psycopg.errors.IntegrityError, psycopg.errors.RaiseException)


def pg_rows(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run one statement on its own autocommit session; its rows (none for a write)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(translate(sql), tuple(params)) if params else conn.execute(sql)
        return [tuple(r) for r in cur.fetchall()] if cur.description is not None else []


class Backend:
    """The store under test on one backend, and a direct look at its tables."""

    def __init__(self, kind: str, target: Path | str) -> None:
        self.kind = kind
        self.target = target

    @property
    def is_pg(self) -> bool:
        return self.kind == "postgresql"

    async def open(self) -> Any:
        return await open_store(self.target)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        if self.is_pg:
            return pg_rows(str(self.target), sql, params)
        with sqlite3.connect(self.target) as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    def integrity_error(self) -> tuple[type[BaseException], ...]:
        """What a refused write raises on a direct connection."""
        return _INTEGRITY

    def __repr__(self) -> str:
        return f"Backend({self.kind})"


def schema_url(cluster: PostgresCluster) -> str:
    """A URL whose tables live in a new, empty schema of one database of the session.

    As good as an empty database for the store (every name it makes or looks up goes
    through ``search_path``), and far cheaper: a schema is made in milliseconds, a database
    in a third of a second. Tests that are about the database itself (migrating an empty
    one, two stores opening it at once) use ``pg_url``."""
    base = _shared.get(str(cluster.root))
    if base is None:
        base = _shared[str(cluster.root)] = cluster.create_database("stores")
    _made[0] += 1
    name = f"s{_made[0]}"
    pg_rows(base, f"CREATE SCHEMA {name}")
    return f"{base}?options=-csearch_path%3D{name}"


_shared: dict[str, str] = {}
_made = [0]


def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """For a fixture parametrised with ``BACKENDS``."""
    if request.param == "postgresql":
        return Backend("postgresql", schema_url(request.getfixturevalue("postgres")))
    return Backend("sqlite", tmp_path / "c.sqlite")


class _PgSession:
    """A psycopg session that answers the few sqlite3 calls the tests make."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        if params:
            return self._conn.execute(translate(sql), tuple(params))
        return self._conn.execute(sql.encode())

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> _PgSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()


def redirect_to_postgres(
    monkeypatch: pytest.MonkeyPatch, cluster: PostgresCluster, *suites: types.ModuleType
) -> dict[str, str]:
    """Point SQLite store files at PostgreSQL databases for one test; returns path -> URL.

    ``suites``: the test modules (and their helper modules) whose ``sqlite3`` is replaced by
    a stand-in that opens the database of a redirected path (any other path: SQLite).
    """
    urls: dict[str, str] = {}

    def url_of(path: Path | str) -> str:
        key = str(Path(path).resolve())
        if key not in urls:
            urls[key] = schema_url(cluster)
        return urls[key]

    async def open_on_postgres(path: Path | str) -> Any:
        from collector.store.postgres import open_pg_store

        return await open_pg_store(url_of(path))

    def connect(path: Any, *args: Any, **kwargs: Any) -> Any:
        key = str(Path(str(path)).resolve())
        if key in urls:
            return _PgSession(urls[key])
        return sqlite3.connect(path, *args, **kwargs)

    stand_in = types.ModuleType("sqlite3_on_postgres")
    stand_in.__dict__.update({k: getattr(sqlite3, k) for k in dir(sqlite3) if k[0] != "_"})
    stand_in.connect = connect  # type: ignore[attr-defined]
    stand_in.IntegrityError = _INTEGRITY  # type: ignore[attr-defined]  # pytest.raises takes a tuple
    monkeypatch.setattr(sqlite_store, "open_sqlite_store", open_on_postgres)
    for suite in suites:
        if getattr(suite, "sqlite3", None) is sqlite3:
            monkeypatch.setattr(suite, "sqlite3", stand_in)
    return urls


def on_postgres(*suites: types.ModuleType) -> Any:
    """An autouse fixture running the tests of a module on PostgreSQL (``redirect_to_
    postgres``); it fails a test that opened no store (it would have proven nothing)."""

    @pytest.fixture(autouse=True)
    def _on_postgres(monkeypatch: pytest.MonkeyPatch, postgres: PostgresCluster) -> Iterator[None]:
        used = redirect_to_postgres(monkeypatch, postgres, *suites)
        yield
        assert used, "the test opened no store: it ran on nothing of PostgreSQL's"

    return _on_postgres
