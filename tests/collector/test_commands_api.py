"""The command endpoints of the collector's HTTP API against a running fleet (agent, DLMS
simulator, mosquitto, the collector serving [http]): a command sent with an operator token
comes back with the gateway's reply, read-only tokens and anonymous callers cannot send,
bad input is a 400 naming the field, and sent commands are listed with their replies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ._commands_rig import GATEWAY, METER, OP_TOKEN, READ_TOKEN, Rig, start_rig, stop_rig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    fleet = start_rig(tmp_path_factory.mktemp("commands-api"), http=True)
    try:
        yield fleet
    finally:
        stop_rig(fleet)


def call(rig: Rig, path: str, body: Any = None, token: str | None = OP_TOKEN[0]) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{rig.http_port}{path}", data=data, method="POST" if data else "GET"
    )
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_an_operator_sends_read_now_and_gets_the_reply(rig: Rig) -> None:
    status, doc = call(
        rig,
        f"/api/gateways/{GATEWAY}/commands",
        {"action": "read-now", "args": {"meter": METER}, "wait_s": 30},
    )
    assert status == 200, doc
    assert doc["state"] == "ok" and doc["issued_by"] == "api:ops"
    assert doc["reply"]["result"]["captures"]
    status, one = call(rig, f"/api/commands/{doc['id']}")
    assert status == 200 and one["reply"]["status"] == "ok"


def test_without_waiting_the_command_is_accepted_and_its_reply_recorded_later(rig: Rig) -> None:
    status, doc = call(rig, f"/api/gateways/{GATEWAY}/commands", {"action": "ping"})
    assert status == 202 and doc["state"] == "waiting"
    from meterlink.procs import wait_for

    # the running collector stores the reply (its shared subscription on every reply topic)
    wait_for(
        lambda: call(rig, f"/api/commands/{doc['id']}")[1]["state"] == "ok",
        timeout=30,
        what="the reply stored by the collector",
    )


def test_read_only_and_anonymous_callers_cannot_send(rig: Rig) -> None:
    body = {"action": "ping"}
    status, _ = call(rig, f"/api/gateways/{GATEWAY}/commands", body, token=READ_TOKEN[0])
    assert status == 403
    status, _ = call(rig, f"/api/gateways/{GATEWAY}/commands", body, token=None)
    assert status == 401
    status, doc = call(rig, "/api/commands", token=READ_TOKEN[0])
    assert status == 200 and doc["items"]  # reading the list is fine


def test_bad_input_is_a_400_naming_the_field(rig: Rig) -> None:
    url = f"/api/gateways/{GATEWAY}/commands"
    status, doc = call(rig, url, {"action": "reboot"})
    assert status == 400 and "action" in doc["error"]
    status, doc = call(rig, url, {"action": "read-now", "args": {}})
    assert status == 400 and "args.meter" in doc["error"]
    status, doc = call(rig, url, {"action": "backfill", "args": {"meter": METER, "from": "x"}})
    assert status == 400 and "args.from" in doc["error"]
    status, doc = call(rig, url, {"action": "ping", "wait_s": 3600})
    assert status == 400 and "wait_s" in doc["error"]
    status, doc = call(rig, "/api/gateways/gw-nobody/commands", {"action": "ping"})
    assert status == 404 and "not enrolled" in doc["error"]


def test_the_list_is_paginated_newest_first_and_hides_pushed_config_text(rig: Rig) -> None:
    text = rig.agent_toml.read_text()
    status, doc = call(
        rig,
        f"/api/gateways/{GATEWAY}/commands",
        {"action": "push-config", "args": {"config": text, "trial_s": 20}, "wait_s": 60},
    )
    assert status == 200 and doc["state"] == "ok", doc
    assert doc["args"]["config"] == f"<{len(text)} chars>"
    status, page = call(rig, "/api/commands?limit=1")
    assert status == 200 and len(page["items"]) == 1 and page["next"]
    assert page["items"][0]["id"] == doc["id"]
    seen = [page["items"][0]["id"]]
    while page["next"]:
        status, page = call(rig, f"/api/commands?limit=1&after={page['next']}")
        seen += [item["id"] for item in page["items"]]
    assert len(seen) == len(set(seen)) >= 3
    status, page = call(rig, f"/api/commands?gateway={GATEWAY}&limit=1000")
    assert [i["id"] for i in page["items"]] == seen
