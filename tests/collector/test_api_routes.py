"""The OpenAPI document describes exactly the API routes the application has (every route
under /api/ and /metrics, with its methods), and the access rule covers every route."""

from __future__ import annotations

from pathlib import Path

from collector.config import load_config
from collector.web.app import make_app
from collector.web.auth import Auth
from collector.web.openapi import OPENAPI


def _app(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "c.toml"
    config.write_text('[collector]\ndatabase = "c.sqlite"\n[http]\nusers = "u.toml"\n')
    return make_app(None, load_config(config), fleet=None, auth=Auth([], []))


def test_openapi_describes_every_api_route_and_method(tmp_path: Path) -> None:
    app = _app(tmp_path)
    routes: dict[str, set[str]] = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if (path.startswith("/api/") or path == "/metrics") and route.method != "HEAD":
            routes.setdefault(path, set()).add(route.method.lower())
    described = {path: set(methods) for path, methods in OPENAPI["paths"].items()}
    assert routes == described


def test_only_login_logout_openapi_and_metrics_are_public(tmp_path: Path) -> None:
    app = _app(tmp_path)
    public = set()
    for route in app.router.routes():
        handler = getattr(route.handler, "__wrapped__", route.handler)
        if getattr(handler, "meterlink_public", False) and route.method != "HEAD":
            public.add((route.method, route.resource.canonical))
    allowed = {
        ("POST", "/login"), ("POST", "/logout"), ("GET", "/login"), ("GET", "/api/whoami"),
        ("GET", "/api/openapi.json"), ("GET", "/metrics"),
    }  # fmt: skip
    # the dashboard's static files are public too (CSS, JS: no data)
    assert {r for r in public if not r[1].startswith("/static")} <= allowed
    assert not any(method != "GET" for method, path in public if path not in ("/login", "/logout"))
