"""The dashboard in a real headless browser (Debian's chromium, driven by selenium) against a
running collector fed by a simulated fleet: ``meterlink sim`` (Modbus meters), ``agent run``,
mosquitto and ``collector run`` with ``[http]``, all real processes on loopback.

One fleet and one browser serve the whole module (a fleet takes seconds to start); each test
states one behaviour a person would check, and waits on the page's DOM (polling with a
timeout), never a fixed sleep. The test that kills the agent runs last.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from collector.web.auth import hash_password
from meterlink.procs import Proc
from protocols.topics import PREFIX, readings_topic
from tests.support.fleet import REPO, Fleet, meterlink

from .browser import start_browser, wait_dom

pytestmark = pytest.mark.integration

OPERATOR, PASSWORD = "op-alice", "correct horse battery staple"
OFFLINE_AFTER_S = 10  # [fleet] offline_after: silence longer than this is offline
METER = "em-sdm-01"  # in config/scenarios/demo.toml and config/accounts/demo.toml (acc-1001)
MARKUP = "<img src=x onerror=alert(1)>"  # no slash: one topic level
ACCOUNT, ACCOUNT_NAME = "acc-1001", "De Vries, Prinsengracht 12 (PV)"


class DashboardFleet(Fleet):
    """The integration fleet, its collector also serving the dashboard on a free port and
    holding a head-end command key that the gateway trusts."""

    def add_gateway(self, gateway: str, config: Path, extra_meters: tuple[str, ...] = ()) -> Path:
        path = super().add_gateway(gateway, config, extra_meters)
        meterlink("collector", "keys", "init", "--config", str(self.collector_config),
                  cwd=self.root)  # fmt: skip
        # the operator installs the head-end's public command key on the gateway
        shutil.copy(
            self.collector_config.parent / "command.pub",
            config.parent / "state" / "keys" / "headend-command.pub",
        )
        return path

    def _write_collector_config(self) -> None:
        super()._write_collector_config()
        users = self.collector_config.parent / "users.toml"
        users.write_text(
            f'[[user]]\nname = "{OPERATOR}"\nrole = "operator"\n'
            f'password = "{hash_password(PASSWORD)}"\n'
        )
        users.chmod(0o600)
        with self.collector_config.open("a") as out:
            out.write(
                "\n[http]\n"
                'host = "127.0.0.1"\n'
                "port = 0\n"  # the collector picks a free port and logs it
                'users = "users.toml"\n'
                "\n[fleet]\n"
                f'offline_after = "{OFFLINE_AFTER_S}s"\n'
                'flush_interval = "1s"\n'
                "\n[billing]\n"
                f'accounts = "{REPO / "config/accounts/demo.toml"}"\n'
                f'tariffs = "{REPO / "config/tariffs"}"\n'
            )


@dataclass
class Site:
    fleet: DashboardFleet
    url: str


def _http_url(collector: Proc) -> str:
    line = collector.wait_line(lambda t: "http: listening on http://" in t, timeout=30)
    return line[line.index("http://") :].split()[0].rstrip("/")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    fleet = DashboardFleet(tmp_path_factory.mktemp("dashboard"))
    try:
        fleet.setup()
        collector = fleet.start_collector()
        url = _http_url(collector)
        fleet.start_agent()
        yield Site(fleet, url)
    finally:
        fleet.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    browser = start_browser()
    try:
        yield browser
    finally:
        browser.quit()


def _css(driver, selector: str) -> list:
    return driver.find_elements("css selector", selector)


def _log_in(driver, site: Site, path: str = "/") -> None:
    """Open ``path``; log in on the login page if the dashboard sends us there."""
    driver.get(site.url + path)
    if "/login" in driver.current_url:
        driver.find_element("id", "username").send_keys(OPERATOR)
        driver.find_element("id", "password").send_keys(PASSWORD)
        driver.find_element("id", "login").click()
        wait_dom(driver, lambda d: "/login" not in d.current_url, what="the login to go through")


def _gateway_state(driver, gateway: str) -> str | None:
    cells = _css(driver, f'#gateways tr[data-gateway="{gateway}"] .state')
    return cells[0].text if cells else None


def test_login_then_the_overview_lists_the_gateway_online(driver, site: Site, tmp_path) -> None:
    driver.get(site.url + "/")
    assert "/login" in driver.current_url  # no page without a login
    driver.find_element("id", "username").send_keys(OPERATOR)
    driver.find_element("id", "password").send_keys("wrong")
    driver.find_element("id", "login").click()
    wait_dom(driver, lambda d: _css(d, "#login-error"), what="the wrong-password message")

    _log_in(driver, site, "/?refresh=1")
    assert OPERATOR in driver.find_element("id", "who").text
    gateway = site.fleet.gateway
    wait_dom(
        driver,
        lambda d: _gateway_state(d, gateway) == "online",
        what=f"{gateway} online on the overview",
    )
    wait_dom(driver, lambda d: d.find_element("id", "n-online").text == "1", what="1 online")
    assert driver.find_element("id", "n-offline").text == "0"
    assert _css(driver, "#offline-none")  # the offline list says no gateway is offline
    # one look at the overview as a person sees it (kept out of git: pytest's tmp folder)
    shot = tmp_path / "overview.png"
    driver.save_screenshot(str(shot))
    print(f"overview screenshot: {shot}")

    driver.find_element("id", "logout").click()
    wait_dom(driver, lambda d: _css(d, "#username"), what="the login page after logging out")
    driver.get(site.url + "/gateways")
    assert "/login" in driver.current_url  # the session is gone


def test_pages_work_and_refresh_themselves_without_javascript(site: Site) -> None:
    plain = start_browser(javascript=False)
    try:
        _log_in(plain, site, "/?refresh=1")
        gateway = site.fleet.gateway
        wait_dom(plain, lambda d: _gateway_state(d, gateway) == "online", what="the overview")
        # scripts are off: the <noscript> content is part of the page (it is text otherwise)
        assert plain.execute_script('return document.querySelectorAll("noscript meta").length')
        first = plain.find_element("id", "as-of").text
        # the <noscript> refresh reloads the page: its "as of" time moves on by itself
        wait_dom(
            plain,
            lambda d: d.find_element("id", "as-of").text != first,
            what="the page to refresh itself without JavaScript",
        )
        _log_in(plain, site, f"/meters/{METER}")
        wait_dom(plain, lambda d: _css(d, "svg.chart circle.pt"), what="the chart", reload=True)
    finally:
        plain.quit()


def test_a_meter_page_draws_its_readings_as_points_over_time(driver, site: Site) -> None:
    _log_in(driver, site, f"/meters/{METER}")
    points = wait_dom(
        driver,
        lambda d: len(_css(d, "svg.chart circle.pt")) >= 4 and _css(d, "svg.chart circle.pt"),
        what=f"a chart with points on {METER}'s page",
        reload=True,
    )
    # every point has its time and value as a tooltip, and the line goes through them
    assert "UTC:" in points[0].find_element("tag name", "title").get_attribute("textContent")
    assert _css(driver, "svg.chart polyline.line")
    assert driver.find_element("id", "meter-id").text == METER


def test_the_quarantine_page_lists_a_hostile_message(driver, site: Site) -> None:
    assert site.fleet.broker is not None
    gateway = site.fleet.gateway
    hostile = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-test")
    hostile.connect("127.0.0.1", site.fleet.broker.port)
    hostile.loop_start()
    try:
        hostile.publish(readings_topic(gateway), b"\x00\x01 this is not a batch", qos=1)
        hostile.publish(readings_topic(gateway), b"", qos=1).wait_for_publish(10)
        # markup in a topic (the gateway id level) is shown as text, never run as HTML
        hostile.publish(f"{PREFIX}/{MARKUP}/readings", b"x", qos=1).wait_for_publish(10)
    finally:
        hostile.loop_stop()
        hostile.disconnect()

    def listed(d) -> list:
        return [
            row
            for row in _css(d, "#quarantine tr[data-kind]")
            if readings_topic(gateway) in row.text and "unparseable batch" in row.text
        ]

    _log_in(driver, site, "/quarantine?refresh=1")
    rows = wait_dom(driver, listed, what="the hostile message in the quarantine")
    assert gateway in rows[0].text
    shown = wait_dom(
        driver,
        lambda d: [r for r in _css(d, "#quarantine tr[data-kind]") if MARKUP in r.text],
        what="the message with markup in its topic",
    )
    assert f"{PREFIX}/{MARKUP}/readings" in shown[0].text
    assert not _css(driver, "#quarantine img")  # the markup stayed text
    assert int(driver.find_element("css selector", ".card .n").text) >= 1


def test_a_bill_page_renders_the_customers_bill(driver, site: Site) -> None:
    _log_in(driver, site, "/bills")
    link = driver.find_element("css selector", f'tr[data-account="{ACCOUNT}"] a.draft-current')
    link.click()
    wait_dom(driver, lambda d: d.find_element("tag name", "h1").text == ACCOUNT_NAME,
             what="the bill's customer page")  # fmt: skip
    body = driver.find_element("tag name", "body").text
    assert f"Account {ACCOUNT}" in body
    assert "Total" in body and "EUR" in body
    assert METER in body
    # the bill's own usage heat map is there (the printable bill, reused as it is)
    assert _css(driver, "svg rect")
    driver.find_element("link text", "← all bills").click()
    wait_dom(driver, lambda d: d.current_url.endswith("/bills"), what="back to the bill list")


def test_a_command_sent_from_the_gateway_page_shows_its_reply(driver, site: Site) -> None:
    gateway = site.fleet.gateway
    # no auto-refresh while the form is filled in here (the test polls with reloads below)
    _log_in(driver, site, f"/gateways/{gateway}?refresh=0")
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "command-action")).select_by_value("read-now")
    Select(driver.find_element("id", "command-meter")).select_by_value(METER)
    driver.find_element("id", "command-send").click()
    sent = wait_dom(driver, lambda d: _css(d, "#command-sent .mono"), what="the command sent")
    command_id = sent[0].text
    row = f'#command-list tr[data-command="{command_id}"]'

    def replied(d) -> str | None:
        cells = _css(d, f"{row} .command-state .state")
        return cells[0].text if cells and cells[0].text not in ("waiting", "") else None

    # the gateway runs it and replies over MQTT; the running collector stores the reply
    state = wait_dom(
        driver, replied, timeout=30, what=f"the reply to command {command_id}", reload=True
    )
    assert state == "ok", driver.find_element("css selector", row).text
    assert driver.find_element("css selector", f"{row} .command-reply").text
    assert OPERATOR in driver.find_element("css selector", row).text  # who sent it


def test_a_killed_agent_shows_its_gateway_offline_within_the_configured_time(
    driver, site: Site
) -> None:
    gateway = site.fleet.gateway
    _log_in(driver, site, "/?refresh=1")
    wait_dom(driver, lambda d: _gateway_state(d, gateway) == "online", what="online first")
    assert site.fleet.agent is not None
    site.fleet.agent.kill()  # SIGKILL: no clean offline status, only the broker's last will
    killed = time.monotonic()
    # the page refreshes itself every second: wait on its DOM, no reloads from here
    wait_dom(
        driver,
        lambda d: _gateway_state(d, gateway) == "offline",
        timeout=OFFLINE_AFTER_S + 15,  # the configured time, plus refresh and ingest slack
        what=f"{gateway} offline on the overview",
    )
    took = time.monotonic() - killed
    print(f"gateway shown offline {took:.1f} s after SIGKILL (offline_after {OFFLINE_AFTER_S} s)")
    assert driver.find_element("id", "n-offline").text == "1"
    assert _css(driver, f'#offline tr[data-gateway="{gateway}"]')
    driver.find_element("link text", gateway).click()
    wait_dom(driver, lambda d: d.find_element("id", "gateway-state").text == "offline",
             what="the gateway page saying offline")  # fmt: skip
