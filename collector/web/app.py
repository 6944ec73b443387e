"""The collector's web server (aiohttp, in the collector's own asyncio loop).

``make_app`` builds the application; route modules each have ``register(app)`` and add
their handlers with ``app.router``:

* ``collector/web/api.py``: the JSON API under ``/api/`` (and ``/metrics``);
* ``collector/web/api_commands.py``: the command endpoints (registered by api.py);
* ``collector/web/pages.py``: the dashboard's HTML pages (optional: skipped if absent).

Access rules, applied by one middleware to every route:

* a handler marked ``@public`` needs no login (``/login``, static files, /metrics unless
  ``[http] metrics_auth``);
* GET and HEAD need any login (role ``read-only`` or ``operator``);
* every other method needs role ``operator`` (a handler may ask for more with ``@requires``);
* no login: ``/api/...`` answers 401 JSON, a page redirects to ``/login?next=...``;
* a cookie-authenticated write whose ``Origin`` is another site is refused (403): the cookie
  is ``SameSite=Strict`` too, so a form on another site cannot act with an operator's login.

Handlers reach the store, the config, the fleet state and the auth through
``request.app[CTX]`` (a ``WebContext``); the principal is ``request[PRINCIPAL]``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from collector.config import Config

from .auth import COOKIE, OPERATOR, READ_ONLY, Auth, Principal

__all__ = [
    "CTX",
    "PRINCIPAL",
    "WebContext",
    "json_error",
    "make_app",
    "public",
    "requires",
    "start_http",
]

log = logging.getLogger("collector.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class WebContext:
    store: Any  # collector.store.SqliteStore
    config: Config
    fleet: Any  # collector.fleet.Fleet (or None when a test runs without one)
    auth: Auth
    started_ms: int
    metrics: Any = None  # collector.fleet.metrics.FleetMetrics (None: /metrics answers 404)
    keeper: Any = None  # collector.fleet.tracking.FleetKeeper (writes the fleet state)


CTX = web.AppKey("meterlink_ctx", WebContext)
PRINCIPAL = web.RequestKey("meterlink_principal", Principal)


def public(handler: Handler) -> Handler:
    """Mark a handler as open to anyone (no login)."""
    handler.meterlink_public = True  # type: ignore[attr-defined]
    return handler


def requires(role: str) -> Callable[[Handler], Handler]:
    """Mark a handler as needing ``role`` (``read-only`` or ``operator``) whatever its method."""

    def mark(handler: Handler) -> Handler:
        handler.meterlink_role = role  # type: ignore[attr-defined]
        return handler

    return mark


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path == "/metrics"


def _principal(request: web.Request, auth: Auth) -> Principal | None:
    header = request.headers.get("Authorization")
    if header:
        return auth.authorization(header)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return auth.session(cookie)
    return None


def _cross_site(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.host


@web.middleware
async def _access(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[CTX]
    target = getattr(handler, "__wrapped__", handler)
    if request.match_info.http_exception is not None:  # 404 / 405: let aiohttp answer
        return await handler(request)
    if getattr(target, "meterlink_public", False):
        principal = _principal(request, ctx.auth)
        if principal is not None:
            request[PRINCIPAL] = principal
        return await handler(request)
    principal = _principal(request, ctx.auth)
    if principal is None:
        if _is_api(request) or request.method not in ("GET", "HEAD"):
            return json_error(
                401, "login required", **{"WWW-Authenticate": 'Bearer realm="meterlink"'}
            )
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    role = getattr(target, "meterlink_role", None)
    if role is None:
        role = READ_ONLY if request.method in ("GET", "HEAD", "OPTIONS") else OPERATOR
    if not principal.may(role):
        log.info("%s %s refused: %s is %s", request.method, request.path, principal.name,
                 principal.role)  # fmt: skip
        return json_error(403, f"role {role} required; {principal.name!r} is {principal.role}")
    if (
        principal.via == "session"
        and request.method not in ("GET", "HEAD")
        and _cross_site(request)
    ):
        return json_error(403, "cross-site request refused")
    request[PRINCIPAL] = principal
    return await handler(request)


# login / logout (the dashboard may supply its own GET /login page) --------------------------

_LOGIN_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>meterlink login</title>
</head><body><h1>meterlink</h1><form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>User <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Log in</button></form>{error}</body></html>"""


def _safe_next(value: str) -> str:
    # only a path on this site: never an absolute URL (an open redirect after login)
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@public
async def login_page(request: web.Request) -> web.Response:
    from html import escape

    nxt = escape(_safe_next(request.query.get("next", "/")))
    error = '<p class="error">Wrong user or password.</p>' if "failed" in request.query else ""
    return web.Response(text=_LOGIN_FORM.format(next=nxt, error=error), content_type="text/html")


@public
async def login(request: web.Request) -> web.StreamResponse:
    """Form (username, password, next) -> session cookie and a redirect to ``next``."""
    ctx = request.app[CTX]
    form = await request.post()
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    nxt = _safe_next(str(form.get("next", "/")))
    principal = ctx.auth.login(name, password)
    if principal is None:
        log.warning("login refused for %r from %s", name, request.remote)
        raise web.HTTPSeeOther(f"/login?failed=1&next={quote(nxt, safe='')}")
    log.info("login: %s (%s) from %s", principal.name, principal.role, request.remote)
    response = web.Response(status=303, headers={"Location": nxt})
    response.set_cookie(
        COOKIE,
        ctx.auth.session_cookie(principal),
        max_age=ctx.auth.session_s,
        httponly=True,
        samesite="Strict",
        path="/",
    )
    return response


@public
async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    return response


@public
async def api_whoami(request: web.Request) -> web.Response:
    principal = request.get(PRINCIPAL)
    if principal is None:
        return json_error(401, "login required", **{"WWW-Authenticate": 'Bearer realm="meterlink"'})
    return web.json_response({"name": principal.name, "role": principal.role, "via": principal.via})


def _has_route(app: web.Application, method: str, path: str) -> bool:
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if route.method == method and info.get("path") == path:
            return True
    return False


def make_app(
    store: Any,
    config: Config,
    *,
    fleet: Any,
    auth: Auth,
    metrics: Any = None,
    keeper: Any = None,
) -> web.Application:
    """The web application; ``start_http`` serves it on ``[http] host:port``."""
    app = web.Application(middlewares=[_access], client_max_size=1 << 20)
    started = time.time_ns() // 1_000_000
    app[CTX] = WebContext(store, config, fleet, auth, started, metrics, keeper)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/api/whoami", api_whoami)
    api = importlib.import_module("collector.web.api")
    api.register(app)
    try:
        pages = importlib.import_module("collector.web.pages")
    except ModuleNotFoundError as exc:
        if exc.name != "collector.web.pages":
            raise
    else:
        pages.register(app)
    if not _has_route(app, "GET", "/login"):
        app.router.add_get("/login", login_page)
    return app


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app``; returns the runner (``await runner.cleanup()`` to stop). The bound
    port is logged as ``http: listening on http://HOST:PORT`` (port 0 picks a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = site._server  # the asyncio Server: the only way to learn a port-0 choice
    if server is not None and getattr(server, "sockets", None):
        bound = server.sockets[0].getsockname()[1]
    log.info("http: listening on http://%s:%d", host, bound)
    return runner
