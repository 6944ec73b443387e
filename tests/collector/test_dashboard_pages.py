"""The dashboard's pages over HTTP without a browser: the collector's real web app on a
loopback port, a real SQLite store, and the real fleet state filled in by hand (no MQTT: these
tests are about what the pages answer, roles and bad input)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer

from collector.commands.keys import create_command_key
from collector.config import load_config
from collector.fleet.state import Fleet
from collector.store import open_store
from collector.web.app import make_app
from collector.web.auth import Auth, _Token, _User, hash_password

OPERATOR, VIEWER, PASSWORD = "op", "viewer", "pw-for-tests"
HOSTILE = '<script>alert("x")</script>'
NO_SLASH = "<img src=x onerror=alert(1)>"  # markup that fits in one path segment


class Site:
    def __init__(self, server: TestServer, fleet: Fleet) -> None:
        self.server = server
        self.fleet = fleet

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def session(self, user: str) -> ClientSession:
        # unsafe=True: keep cookies of an IP address host (the server is 127.0.0.1)
        http = ClientSession(cookie_jar=CookieJar(unsafe=True))
        async with http.post(
            self.url("/login"),
            data={"username": user, "password": PASSWORD, "next": "/"},
            allow_redirects=False,
        ) as response:
            assert response.status == 303, await response.text()
        return http


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@asynccontextmanager
async def _site(tmp_path: Path, gateways: int = 3) -> AsyncIterator[Site]:
    config_path = tmp_path / "collector.toml"
    config_path.write_text(
        '[collector]\ndatabase = "c.sqlite"\nid = "c-pages"\n\n[mqtt]\nport = 1\n'
    )
    create_command_key(tmp_path / "command.key")
    config = load_config(config_path)
    store = await open_store(tmp_path / "c.sqlite")
    fleet = Fleet(offline_after_ms=60_000)
    now = fleet.now_ms()
    fleet.bind([(f"gw-{i:03d}", f"m-{i:03d}") for i in range(gateways)])
    for i in range(gateways):
        gw = fleet.gateway(f"gw-{i:03d}")
        gw.status, gw.last_seen_ms = "online", now - 1000
    fleet.gateway("gw-000").last_seen_ms = now - 120_000  # silent: offline
    meter = fleet.meter("m-001", "gw-001")
    meter.records, meter.good, meter.last_error = 4, 3, HOSTILE
    users = [
        _User(OPERATOR, "operator", hash_password(PASSWORD)),
        _User(VIEWER, "read-only", hash_password(PASSWORD)),
    ]
    app = make_app(store, config, fleet=fleet, auth=Auth(users, list[_Token]()))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Site(server, fleet)
    finally:
        await server.close()
        await store.close()


def run(loop: asyncio.AbstractEventLoop, tmp_path: Path, body, gateways: int = 3) -> None:
    async def main() -> None:
        async with _site(tmp_path, gateways) as site:
            await asyncio.wait_for(body(site), 60)

    loop.run_until_complete(main())


def test_a_page_without_login_sends_to_the_login_page_and_back(loop, tmp_path) -> None:
    async def body(site: Site) -> None:
        async with ClientSession() as http:
            async with http.get(site.url("/meters?stale=1"), allow_redirects=False) as r:
                assert r.status == 303
                where = urlsplit(r.headers["Location"])
                assert where.path == "/login"
                assert parse_qs(where.query)["next"] == ["/meters?stale=1"]
            async with http.get(site.url("/login?next=//elsewhere.example/x")) as r:
                text = await r.text()
                assert 'name="next" value="/"' in text  # never off-site after the login
            async with http.get(site.url("/static/dashboard.css")) as r:
                assert r.status == 200 and r.content_type == "text/css"  # public

    run(loop, tmp_path, body)


def test_the_overview_counts_and_lists_the_offline_gateway(loop, tmp_path) -> None:
    async def body(site: Site) -> None:
        http = await site.session(VIEWER)
        async with http, http.get(site.url("/")) as r:
            text = await r.text()
        assert r.status == 200
        assert re.search(r'id="n-gateways">3<', text)
        assert re.search(r'id="n-offline">1<', text)
        offline = text[text.index('id="offline"') : text.index("Stale meters")]
        assert 'data-gateway="gw-000"' in offline and "gw-001" not in offline

    run(loop, tmp_path, body)


def test_error_text_from_the_field_is_escaped(loop, tmp_path) -> None:
    async def body(site: Site) -> None:
        http = await site.session(VIEWER)
        async with http:
            async with http.get(site.url("/gateways/gw-001")) as r:
                text = await r.text()
            assert HOSTILE not in text and "&lt;script&gt;" in text
            async with http.get(site.url("/gateways/" + quote(NO_SLASH))) as r:
                assert r.status == 404
                text = await r.text()
            assert NO_SLASH not in text and "no gateway" in text

    run(loop, tmp_path, body)


def test_a_read_only_user_gets_no_command_form_and_cannot_post_one(loop, tmp_path) -> None:
    async def body(site: Site) -> None:
        http = await site.session(VIEWER)
        async with http:
            async with http.get(site.url("/gateways/gw-001")) as r:
                text = await r.text()
            assert 'id="command-form"' not in text and "needs the operator role" in text
            async with http.post(
                site.url("/gateways/gw-001/commands"), data={"action": "ping"}
            ) as r:
                assert r.status == 403
        operator = await site.session(OPERATOR)
        async with operator, operator.get(site.url("/gateways/gw-001")) as r:
            assert 'id="command-form"' in await r.text()

    run(loop, tmp_path, body)


def test_an_operator_command_with_bad_fields_is_refused_naming_them(loop, tmp_path) -> None:
    async def body(site: Site) -> None:
        http = await site.session(OPERATOR)
        async with http:
            async with http.post(
                site.url("/gateways/gw-001/commands"), data={"action": "rm -rf"}
            ) as r:
                assert r.status == 400
                assert "action" in await r.text()
            async with http.post(
                site.url("/gateways/gw-001/commands"), data={"action": "read-now"}
            ) as r:
                assert r.status == 400
                assert "needs a meter" in await r.text()

    run(loop, tmp_path, body)


def test_bad_query_values_are_refused_naming_them(loop, tmp_path) -> None:
    async def body(site: Site) -> None:
        http = await site.session(VIEWER)
        async with http:
            for path, words in (
                ("/meters/m-001?from=yesterday", "from='yesterday'"),
                ("/meters/m-001?from=2026-11-02T00:00&to=2026-11-01T00:00", "must be before"),
                ("/?refresh=soon", "refresh='soon'"),
                ("/gateways?state=sleepy", "state='sleepy'"),
            ):
                async with http.get(site.url(path)) as r:
                    text = await r.text()
                assert r.status == 400, path
                assert words.replace("'", "&#39;") in text, (path, text)
            async with http.get(site.url("/meters/nope")) as r:
                assert r.status == 404
            async with http.get(site.url("/static/..%2Fpages.py")) as r:
                assert r.status == 404  # only the shipped files, by plain name

    run(loop, tmp_path, body)


def test_the_gateway_list_pages_through_a_large_fleet(loop, tmp_path) -> None:
    async def body(site: Site) -> None:
        http = await site.session(VIEWER)
        async with http:
            started = time.monotonic()
            async with http.get(site.url("/")) as r:
                assert r.status == 200
            overview_s = time.monotonic() - started
            async with http.get(site.url("/gateways?page=2")) as r:
                text = await r.text()
        assert text.count("data-gateway=") == 50  # 250 gateways, 100 a page: the third
        assert "page 3 of 3 (250 in all)" in text
        print(f"overview of 250 gateways: {overview_s * 1000:.0f} ms")

    run(loop, tmp_path, body, gateways=250)
