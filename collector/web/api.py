"""The JSON API under ``/api/`` (documented in docs/api.md and served at /api/openapi.json)."""

from __future__ import annotations

from aiohttp import web

__all__ = ["register"]


def register(app: web.Application) -> None:
    """Add the API routes to ``app`` (called by ``collector.web.app.make_app``)."""
