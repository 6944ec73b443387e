"""The insight tables of the store (schema step owned by the insight feature; see MIGRATIONS)."""

from __future__ import annotations

__all__ = ["MIGRATION"]

#: SQLite DDL; collector.store.postgres_schema translates it for PostgreSQL.
MIGRATION: list[str] = []
