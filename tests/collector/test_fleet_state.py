"""The fleet state: fed by real ingest transactions on a real SQLite store, kept across a
restart, judged online/offline/stale; the users file and the session cookie; [http]/[fleet]."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.config import load_config
from collector.errors import ConfigError
from collector.fleet.metrics import FleetMetrics
from collector.fleet.state import Fleet, GatewayState, MeterState, add_ranges, gaps_of
from collector.fleet.tracking import FleetKeeper, TrackedIngestor
from collector.ingest import Incoming, Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from collector.web.auth import Auth, hash_password, load_auth, new_token
from protocols.record import ClockSource, Quality, Record, Value, sign_record
from protocols.status import GatewayStatus, MeterClockStatus
from protocols.topics import status_topic

from ._fixtures import IMPORT, T0, message, record, write_public_key

GW = "gw-1"
METERS = ["em-1", "em-2"]


def test_seq_ranges_merge_and_gaps_are_the_holes_below_the_highest() -> None:
    ranges = add_ranges([], [(1, 3)])
    ranges = add_ranges(ranges, [(7, 9), (4, 4)])
    assert ranges == [[1, 4], [7, 9]]
    assert gaps_of(ranges) == [(5, 6)]
    assert gaps_of(add_ranges(ranges, [(5, 6)])) == []
    assert gaps_of([[3, 5]]) == [(1, 2)]  # the agent numbers from 1


def test_gateway_goes_offline_by_status_or_by_silence() -> None:
    gw = GatewayState("gw-1")
    assert gw.state_at(1_000, 600_000) == "unknown"
    gw.status, gw.last_seen_ms = "online", 1_000
    assert gw.state_at(601_000, 600_000) == "online"
    assert gw.state_at(601_001, 600_000) == "offline"
    assert "silent" in gw.offline_reason(601_001, 600_000)
    gw.status, gw.reason = "offline", "connection lost"
    assert gw.state_at(1_000, 600_000) == "offline"
    assert gw.offline_reason(1_000, 600_000) == "connection lost"
    gw.backlog, gw.last_seq = 5, 100
    assert gw.oldest_unacked_seq == 96


def test_meter_success_rate_is_an_exact_decimal_string_and_stale_uses_the_wall_clock() -> None:
    meter = MeterState("em-1")
    assert meter.success_rate() is None
    meter.records, meter.good = 3, 2
    assert meter.success_rate() == "0.6666"  # rounded down, never a float
    assert meter.stale_at(10**12, 1000)
    meter.last_good_ms, meter.last_good_at_ms = 5, 10_000  # virtual capture time, its wall time
    assert not meter.stale_at(10_500, 1000)
    assert meter.stale_at(11_001, 1000)


def test_state_documents_round_trip_through_json() -> None:
    gw = GatewayState("gw-1", status="online", rejected={"bad-signature": 2}, seen=[[1, 5]])
    again = GatewayState.from_doc("gw-1", json.loads(json.dumps(gw.to_doc())))
    assert again == gw
    meter = MeterState("em-1", "gw-1", records=4, good=4, last_good={"1-0:1.8.0": ["1.5", "kWh"]})
    assert MeterState.from_doc("em-1", "gw-1", json.loads(json.dumps(meter.to_doc()))) == meter


def _status(**fields: object) -> Incoming:
    status = GatewayStatus(GW, **fields)  # type: ignore[arg-type]
    return Incoming(status_topic(GW), status.to_bytes(), T0 + 5_000)


def _partial(key: Ed25519PrivateKey, meter: str, seq: int, captured_ms: int) -> bytes:
    rec = Record(GW, meter, seq, captured_ms, ClockSource.GATEWAY, Quality.PARTIAL,
                 (Value(IMPORT, __import__("decimal").Decimal("7.5"), "kWh"),))  # fmt: skip
    return sign_record(rec, key).raw


def test_committed_transactions_feed_the_fleet_and_it_survives_a_restart(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    db = tmp_path / "c.sqlite"
    forged = Ed25519PrivateKey.generate()

    async def run() -> tuple[Fleet, FleetMetrics, Fleet]:
        store = await open_store(db)
        try:
            pem = write_public_key(key, tmp_path / "gw.pem")
            await enrol_gateway(store, GW, pem, METERS, T0)
            fleet = Fleet(offline_after_ms=600_000, stale_after_ms=3_600_000)
            keeper = FleetKeeper(store, fleet)
            await keeper.load()
            metrics = FleetMetrics(fleet)
            tracked = TrackedIngestor(Ingestor, store, fleet, lambda ms: ms, metrics)
            raws = [record(key, GW, "em-1", seq, T0 + seq * 900_000).raw for seq in (1, 2, 3)]
            meters = [MeterClockStatus("em-2", drift_ms=-1500, suspect=True, set_error="refused")]
            await tracked.ingest(
                [
                    message(GW, 1, raws, received_ms=T0 + 4_000),
                    _status(state="online", at_ms=T0 + 6_000, backlog=2, last_seq=7,
                            version="9.9", meters=tuple(meters)),
                ]
            )  # fmt: skip
            # seq 4 lost, 5 partial, 6 forged (quarantined), 3 again (a duplicate)
            await tracked.ingest(
                [
                    message(GW, 2, [_partial(key, "em-2", 5, T0 + 5 * 900_000)]),
                    message(GW, 3, [record(forged, GW, "em-1", 6, T0).raw]),
                    message(GW, 4, [raws[2]]),
                ]
            )
            await keeper.stop()  # flushes
            again = Fleet()
            await FleetKeeper(store, again).load()
            return fleet, metrics, again
        finally:
            await store.close()

    fleet, metrics, again = asyncio.run(run())
    gw = fleet.gateways[GW]
    assert gw.status == "online" and gw.version == "9.9" and gw.backlog == 2
    assert gw.oldest_unacked_seq == 6
    assert gw.clock_offset_ms == 1_000  # status at_ms - collector clock at receipt
    assert gw.last_seen_ms == T0 + 5_000
    assert gw.records == 4 and gw.duplicates == 1 and gw.batches == 4
    assert gw.rejected == {"unknown key": 1}  # signed by a key never enrolled
    assert gw.gaps == [(4, 4)]  # 6 was never acked (forged), so it is no gap of the head-end's
    assert sorted(gw.meters) == METERS
    em1, em2 = fleet.meters["em-1"], fleet.meters["em-2"]
    assert (em1.records, em1.good, em1.success_rate()) == (3, 3, "1.0000")
    assert em1.rejected == 1 and em1.last_error.startswith("rejected: unknown key")
    assert em1.last_good_ms == T0 + 3 * 900_000
    assert em1.last_good == {"1-0:1.8.0": ["1003.5", "kWh"], "1-0:1.7.0": ["1234", "W"]}
    assert (em2.records, em2.good, em2.success_rate()) == (1, 0, "0.0000")
    assert em2.last_good_ms is None and "partial" in em2.last_error
    assert (em2.clock_drift_ms, em2.clock_suspect, em2.clock_set_error) == (-1500, True, "refused")
    # what was flushed is what a restarted collector starts with
    assert again.gateways[GW] == gw
    assert again.meters == fleet.meters
    text = metrics.render().decode()
    assert "meterlink_ingest_records_total 4.0" in text
    assert 'meterlink_ingest_duplicates_total{kind="records"} 1.0' in text
    assert 'meterlink_ingest_rejected_total{reason="unknown key"} 1.0' in text


def test_a_database_from_before_the_fleet_tables_is_rebuilt_from_its_rows(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    db = tmp_path / "c.sqlite"

    async def run() -> Fleet:
        store = await open_store(db)
        try:
            pem = write_public_key(key, tmp_path / "gw.pem")
            await enrol_gateway(store, GW, pem, METERS, T0)
            raws = [record(key, GW, "em-1", s, T0 + s * 900_000).raw for s in (1, 2, 5)]
            await Ingestor(store).ingest([message(GW, 1, raws)])  # not tracked
            fleet = Fleet()
            await FleetKeeper(store, fleet).load()
            return fleet
        finally:
            await store.close()

    assert asyncio.run(run()).gateways[GW].gaps == [(3, 4)]


# auth -------------------------------------------------------------------------------------------


def _users(path: Path, body: str, mode: int = 0o600) -> Path:
    path.write_text(body)
    os.chmod(path, mode)
    return path


def test_users_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    users = _users(tmp_path / "u.toml", '[[token]]\nname="t"\nrole="read-only"\n'
                   f'sha256="{"0" * 64}"\n', 0o644)  # fmt: skip
    with pytest.raises(ConfigError, match=r"mode 0644.*chmod 600"):
        load_auth(users)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[user]]\nname="a"\nrole="admin"\npassword="x"\n', "line 3.*role.*read-only, operator"),
        ('[[user]]\nname="a"\nrole="operator"\npassword="secret"\n', "line 4.*password.*hash"),
        ('[[token]]\nname="t"\nrole="operator"\nsha256="abc"\n', "line 4.*sha256.*64 hex"),
        ("", "no \\[\\[user\\]\\] and no \\[\\[token\\]\\]"),
        ('[[user]]\nname="a"\nrole="operator"\npasswd="x"\n', "line 4.*unknown key"),
    ],
)
def test_users_file_errors_name_the_line_and_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_auth(_users(tmp_path / "u.toml", body))


def test_passwords_tokens_and_session_cookies(tmp_path: Path) -> None:
    token, digest = new_token()
    users = _users(
        tmp_path / "u.toml",
        f'[[user]]\nname="alice"\nrole="operator"\npassword="{hash_password("pw")}"\n'
        f'[[token]]\nname="ro"\nrole="read-only"\nsha256="{digest}"\n',
    )
    auth = load_auth(users, session_hours=1)
    alice = auth.login("alice", "pw")
    assert alice is not None and alice.role == "operator" and alice.may("read-only")
    assert auth.login("alice", "PW") is None and auth.login("bob", "pw") is None
    basic = base64.b64encode(b"alice:pw").decode()
    assert auth.authorization(f"Basic {basic}") == alice
    ro = auth.authorization(f"Bearer {token}")
    assert ro is not None and ro.role == "read-only" and not ro.may("operator")
    assert auth.authorization("Bearer nope") is None
    cookie = auth.session_cookie(alice, now_s=1_000)
    assert auth.session(cookie, now_s=1_000 + 3599) is not None
    assert auth.session(cookie, now_s=1_000 + 3601) is None  # expired
    _payload, _, sig = cookie.partition(".")
    tampered = base64.urlsafe_b64encode(
        json.dumps({"u": "alice", "r": "operator", "e": 10**12}).encode()
    ).decode().rstrip("=")  # fmt: skip
    assert auth.session(f"{tampered}.{sig}", now_s=1_000) is None
    # another collector (another key) does not take this one's cookies
    other = Auth([], [], key=b"k" * 32)
    assert other.session(cookie, now_s=1_000) is None
    # no secret in a repr
    assert "pw" not in repr(auth) and digest not in repr(auth._tokens)


# config -----------------------------------------------------------------------------------------


def test_http_and_fleet_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[collector]\ndatabase = "c.sqlite"\n[http]\nport = 8099\nusers = "u.toml"\n'
        '[fleet]\noffline_after = "90s"\n'
    )
    loaded = load_config(config)
    assert loaded.http is not None and loaded.http.host == "127.0.0.1"
    assert loaded.http.port == 8099 and loaded.http.users == tmp_path / "u.toml"
    assert loaded.fleet.offline_after_ms == 90_000 and loaded.fleet.stale_after_ms == 7_200_000
    assert load_config(tmp_path / "c.toml").http is not None
    config.write_text('[collector]\ndatabase = "c.sqlite"\n[http]\nport = 8099\n')
    with pytest.raises(ConfigError, match=r"missing key 'http\.users'"):
        load_config(config)
    config.write_text('[collector]\n[fleet]\noffline_after = "soon"\n')
    with pytest.raises(ConfigError, match=r"line 3.*fleet\.offline_after.*not a duration"):
        load_config(config)


# the agent's [metrics] table ---------------------------------------------------------------------


def test_agent_metrics_table(tmp_path: Path) -> None:
    from agent.config import ConfigError as AgentConfigError
    from agent.metrics import MetricsSettings, load_metrics_settings

    config = tmp_path / "agent.toml"
    config.write_text('[gateway]\nid = "gw-1"\n')
    assert load_metrics_settings(config) is None
    config.write_text('[gateway]\nid = "gw-1"\n\n[metrics]\nport = 9101\n')
    assert load_metrics_settings(config) == MetricsSettings(9101, "127.0.0.1")
    config.write_text('[gateway]\nid = "gw-1"\n\n[metrics]\nport = 70000\n')
    with pytest.raises(AgentConfigError, match=r"agent\.toml:5: metrics\.port: must be"):
        load_metrics_settings(config)
    config.write_text('[gateway]\nid = "gw-1"\n\n[metrics]\nport = 9101\nbind = "x"\n')
    with pytest.raises(AgentConfigError, match=r":6: metrics\.bind: unknown key"):
        load_metrics_settings(config)


def test_messages_naming_a_gateway_never_enrolled_add_no_gateway_to_the_fleet(
    tmp_path: Path,
) -> None:
    """Anyone who can publish can name any gateway id in a topic: such messages are
    quarantined and counted, but the fleet view lists enrolled gateways only."""
    key = Ed25519PrivateKey.generate()
    stranger = "gw-other"

    async def run() -> tuple[Fleet, FleetMetrics]:
        store = await open_store(tmp_path / "c.sqlite")
        try:
            await enrol_gateway(store, GW, write_public_key(key, tmp_path / "gw.pem"), METERS, T0)
            fleet = Fleet()
            keeper = FleetKeeper(store, fleet)
            await keeper.load()
            metrics = FleetMetrics(fleet)
            tracked = TrackedIngestor(Ingestor, store, fleet, lambda ms: ms, metrics)
            status = GatewayStatus("gw-fake", state="online", at_ms=T0)
            await tracked.ingest(
                [
                    message("gw-fake", 1, [record(key, "gw-fake", "em-1", 1, T0).raw]),
                    message(GW, 2, [b"\x00garbage"], topic_gateway=stranger),
                    Incoming(status_topic("gw-fake"), status.to_bytes(), T0 + 5_000),
                ]
            )
            await keeper.stop()
            return fleet, metrics
        finally:
            await store.close()

    fleet, metrics = asyncio.run(run())
    assert sorted(fleet.gateways) == [GW]
    text = metrics.render().decode()
    assert "meterlink_ingest_rejected_total" in text  # still counted
