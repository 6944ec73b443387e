"""A gateway that falls silent (frozen: no offline status, its TCP connection still open, so
the broker's last will is not yet due) shows as offline after [fleet] offline_after, in the
API and in /metrics, and comes back online when it wakes up. A killed gateway shows offline
at once (the broker publishes its last will when the connection drops). Real mosquitto,
agent, simulated meters and collector processes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from meterlink.procs import free_port, wait_for
from tests.support.fleet import Fleet

from .test_api_fleet import READ_TOKEN, Http, prometheus_values, write_users

pytestmark = pytest.mark.integration

OFFLINE_AFTER_S = 2


@pytest.fixture
def system(tmp_path) -> Iterator[tuple[Fleet, Http]]:  # type: ignore[no-untyped-def]
    fleet = Fleet(tmp_path).setup()
    try:
        port = free_port()
        users = write_users(tmp_path / "collector" / "users.toml")
        with fleet.collector_config.open("a") as f:
            f.write(
                f'\n[http]\nport = {port}\nusers = "{users.name}"\n\n'
                f'[fleet]\noffline_after = "{OFFLINE_AFTER_S}s"\n'
            )
        fleet.start_collector()
        yield fleet, Http(port)
    finally:
        fleet.close()


def state(http: Http, gateway: str) -> dict:
    return http.json(f"/api/gateways/{gateway}", token=READ_TOKEN)


def test_a_silent_gateway_goes_offline_after_the_timeout_and_comes_back(
    system: tuple[Fleet, Http],
) -> None:
    fleet, http = system
    # enrolled, never heard from
    assert state(http, fleet.gateway)["state"] == "unknown"
    agent = fleet.start_agent()
    wait_for(lambda: state(http, fleet.gateway)["state"] == "online", 30, "gateway online")
    os.killpg(agent.popen.pid, signal.SIGSTOP)  # silent, connection open (keepalive 30 s)
    try:
        wait_for(
            lambda: state(http, fleet.gateway)["state"] == "offline",
            OFFLINE_AFTER_S + 30,
            "gateway offline by silence",
        )
        gw = state(http, fleet.gateway)
        assert gw["status"] == "online"  # its last status still says online: silence decided
        assert gw["offline_reason"] == f"silent for more than {OFFLINE_AFTER_S}s"
        overview = http.json("/api/fleet", token=READ_TOKEN)
        assert [g["gateway_id"] for g in overview["offline"]] == [fleet.gateway]
        _status, _h, body = http.call("/metrics")
        values = prometheus_values(body.decode())
        assert values['meterlink_gateways{state="offline"}'] == "1.0"
        assert values['meterlink_gateways{state="online"}'] == "0.0"
    finally:
        os.killpg(agent.popen.pid, signal.SIGCONT)
    wait_for(lambda: state(http, fleet.gateway)["state"] == "online", 30, "gateway back online")
    # killed: the broker's last will ("connection lost") marks it offline without waiting
    agent.kill(signal.SIGKILL)
    wait_for(lambda: state(http, fleet.gateway)["status"] == "offline", 30, "last will")
    gw = state(http, fleet.gateway)
    assert gw["state"] == "offline" and gw["offline_reason"] == "connection lost"
