"""``meterlink demo --serve`` as a new user runs it: the month, then the fleet stays live, the
dashboard's address and a login are printed (the password also in a 0600 file), the login
works in a real browser and shows the demo gateway online, and Ctrl-C stops every process."""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from meterlink.procs import Proc, wait_for
from tests.integration.test_demo import REPO, alive, children_of

from .browser import start_browser, wait_dom

pytestmark = pytest.mark.integration


def test_demo_serve_prints_a_working_login_and_keeps_the_fleet_live(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = Proc(
        [sys.executable, "-m", "meterlink", "demo", "--serve", "--http-port", "0",
         "--out", str(out), "--duration", "10", "--interval", "1h", "--setup-seconds", "4"],
        "demo", cwd=tmp_path,
    )  # fmt: skip
    driver = None
    try:
        demo.wait_line(lambda line: "press Ctrl-C" in line, timeout=180)
        text = demo.output
        url = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+/)$", text, re.M)
        login = re.search(r"log in as: (\S+) / (\S+)\s", text)
        assert url and login, text[-2000:]
        user, password = login.groups()
        saved = out / "dashboard-login.txt"
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert f"password = {password}" in saved.read_text()
        assert stat.S_IMODE((out / "collector" / "users.toml").stat().st_mode) == 0o600
        assert password not in (out / "collector" / "users.toml").read_text()  # a hash only

        driver = start_browser()
        driver.get(url.group(1) + "?refresh=1")
        driver.find_element("id", "username").send_keys(user)
        driver.find_element("id", "password").send_keys(password)
        driver.find_element("id", "login").click()

        def demo_gateway_online(d) -> bool:
            cells = d.find_elements(
                "css selector", '#gateways tr[data-gateway="gw-demo-01"] .state'
            )
            return bool(cells) and cells[0].text == "online"

        # the month's agent has stopped; the live one reconnects and the page refreshes
        wait_dom(driver, demo_gateway_online, timeout=30, what="gw-demo-01 online after the month")
        assert int(driver.find_element("id", "n-meters").text) >= 9
        # the month's bills were issued: listed, and each opens as the customer's bill
        accounts = tomllib.loads((REPO / "config/accounts/demo.toml").read_text())["account"]
        driver.get(url.group(1) + "bills")
        issued = driver.find_elements("css selector", "#issued tr[data-bill]")
        assert len(issued) == len(accounts)
        assert all("2026-11" in row.text for row in issued)
        issued[0].find_element("tag name", "a").click()
        wait_dom(driver, lambda d: "issued bill" in d.find_element("tag name", "body").text,
                 what="an issued bill's page")  # fmt: skip
        assert "Total" in driver.find_element("tag name", "body").text

        children = children_of(demo.popen.pid)
        assert len(children) >= 4  # mosquitto, simulators, collector, the live agent
        os.kill(demo.popen.pid, signal.SIGINT)  # Ctrl-C
        assert demo.popen.wait(timeout=60) == 0  # the month's report added up
        assert "stopping every process the demo started" in demo.output
        wait_for(lambda: not any(alive(pid) for pid in children), 10, "children to exit")
    finally:
        if driver is not None:
            driver.quit()
        demo.stop()
