"""The OpenAPI document describes exactly the API routes the application has (every route
under /api/ and /metrics, with its methods), and the access rule covers every route."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from collector.config import load_config
from collector.web.app import make_app
from collector.web.auth import Auth
from collector.web.openapi import OPENAPI
from meterlink.procs import Proc


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


@pytest.mark.integration
def test_collector_run_refuses_a_taken_port_and_an_open_users_file(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text(f'[[token]]\nname = "t"\nrole = "read-only"\nsha256 = "{"0" * 64}"\n')
    users.chmod(0o600)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(
            '[collector]\ndatabase = "c.sqlite"\n[mqtt]\nport = 1\n'
            f'[http]\nport = {port}\nusers = "users.toml"\n'
        )
        proc = Proc([sys.executable, "-m", "collector", "run", str(config)], "collector")
        try:
            assert proc.popen.wait(timeout=30) == 2
        finally:
            proc.stop()
        assert f"[http] cannot listen on 127.0.0.1:{port}" in proc.output
    users.chmod(0o644)
    proc = Proc([sys.executable, "-m", "collector", "run", str(config)], "collector")
    try:
        assert proc.popen.wait(timeout=30) == 2
    finally:
        proc.stop()
    assert f"{users}: users file is mode 0644" in proc.output
