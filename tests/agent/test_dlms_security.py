"""The dlms driver's security levels against the simulator as a process: public, LLS and
HLS-GMAC; the HLS invocation counter read from the meter, persisted before use and never
going backwards across restarts (new DlmsMeter instances) or when the state file is older
than the meter; the secrets file's mode; wrong password and wrong key as clear per-meter
errors, not retried; GET answers in blocks reassembled; and an end-to-end run with two
HLS meters, one with a wrong key, whose secrets appear in no log line."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agent.config import DlmsSettings
from agent.drivers.dlms import DlmsMeter
from agent.drivers.dlms.secrets import (
    CounterStore,
    SecretsError,
    default_system_title,
    load_meter_secrets,
)
from agent.drivers.dlms.session import OBIS_INVOCATION_COUNTER, DlmsSession
from agent.drivers.dlms.transport import WrapperTransport
from agent.drivers.modbus_tcp import MeterReadError
from firmware_sim.dlms import DlmsMeterState, DlmsSimOptions, DlmsSimServer
from firmware_sim.dlms.objects import DataObject
from firmware_sim.model import MeterModel
from meterlink.procs import wait_for
from protocols.clock import ClockSetting
from protocols.dlms.axdr import Data
from protocols.obis import Obis
from tests.support.loopback import loopback, meterlink_proc, query

EK = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
AK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
WRONG = bytes.fromhex("ffeeddccbbaa99887766554433221100")
PASSWORD = "lls-pass-0815"
METER_TITLE = "4d4c4b5345430001"
OBJECTS = (Obis.parse("1-0:1.8.0"), Obis.parse("1-0:32.7.0"))


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def _meter_keys(directory: Path) -> Path:
    return _private(
        directory / "meter-keys.toml",
        f'authentication_key = "{AK.hex()}"\nencryption_key = "{EK.hex()}"\n'
        f'system_title = "{METER_TITLE}"\n',
    )


def _secrets(directory: Path, ek: bytes = EK, password: str = PASSWORD) -> Path:
    return _private(
        directory / f"secrets-{ek.hex()[:6]}-{password}.toml",
        f'[meters.dl-s]\npassword = "{password}"\n'
        f'authentication_key = "{AK.hex()}"\nencryption_key = "{ek.hex()}"\n',
    )


@pytest.fixture
def secure_sim(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """``sim dlms`` with all three levels: public (16), LLS (17), HLS-GMAC (1)."""
    sim = meterlink_proc(
        "sim", "dlms", "--port", "0", "--meter-id", "dl-s", "--auth", "hls",
        "--password", PASSWORD, "--keys", str(_meter_keys(tmp_path)), name="sim",
    )  # fmt: skip
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        host, _, port = line.split()[2].rpartition(":")
        yield host, int(port)
    finally:
        sim.stop()
    assert EK.hex() not in sim.output and PASSWORD not in sim.output


def _settings(auth: str, secrets: Path | None) -> DlmsSettings:
    client = {"none": 16, "lls": 17, "hls-gmac": 1}[auth]
    return DlmsSettings(auth=auth, secrets=secrets, client_address=client, objects=OBJECTS)


def _read(meter: DlmsMeter) -> object:
    return asyncio.run(meter.read())


def _meter_counter(host: str, port: int) -> int:
    """The meter's invocation counter object, as the public client reads it."""

    async def read() -> int:
        transport = WrapperTransport(host, port, 16, 1, 5)
        session = DlmsSession(transport, DlmsSettings(), "dl-s")
        try:
            await transport.open()
            await session.open()
            return (await session.get(1, OBIS_INVOCATION_COUNTER, 2)).integer
        finally:
            await session.close()

    return asyncio.run(read())


@pytest.mark.integration
def test_each_security_level_reads_the_meter(secure_sim: tuple[str, int], tmp_path: Path) -> None:
    host, port = secure_sim
    secrets = _secrets(tmp_path)
    state = tmp_path / "state"
    for auth in ("none", "lls", "hls-gmac"):
        meter = DlmsMeter(
            "dl-s", _settings(auth, secrets), host, port, timeout=5, retries=0, state_dir=state
        )
        outcome = _read(meter)
        assert [v.obis for v in outcome.values] == list(OBJECTS), auth  # type: ignore[attr-defined]
        assert outcome.errors == [] and meter.associations == 1  # type: ignore[attr-defined]
    assert (state / "dlms" / "dl-s.ic").exists()


@pytest.mark.integration
def test_invocation_counter_never_goes_backwards(
    secure_sim: tuple[str, int], tmp_path: Path
) -> None:
    host, port = secure_sim
    settings = _settings("hls-gmac", _secrets(tmp_path))
    state = tmp_path / "state"
    ic_file = state / "dlms" / "dl-s.ic"
    persisted, expected = [], []
    for _restart in range(2):  # two DlmsMeter instances: the agent restarted
        meter = DlmsMeter("dl-s", settings, host, port, timeout=5, retries=0, state_dir=state)
        _read(meter)
        persisted.append(int(ic_file.read_text()))
        expected.append(_meter_counter(host, port))
    # every counter the meter accepted is below the persisted value, which only grows
    assert 0 < expected[0] <= persisted[0] < expected[1] <= persisted[1]
    # a state file older than the meter (restored from a backup): the meter's value wins
    ic_file.write_text("1\n")
    meter = DlmsMeter("dl-s", settings, host, port, timeout=5, retries=0, state_dir=state)
    _read(meter)
    assert expected[1] < _meter_counter(host, port) <= int(ic_file.read_text())
    assert oct(ic_file.stat().st_mode & 0o777) == "0o600"


@pytest.mark.integration
def test_lls_and_hls_over_hdlc(tmp_path: Path) -> None:
    """Over HDLC the public association that reads the counter takes the link in turn:
    the HLS link is closed for it and opened again."""
    sim = meterlink_proc(
        "sim", "dlms", "--port", "0", "--meter-id", "dl-s", "--transport", "hdlc",
        "--auth", "hls", "--password", PASSWORD, "--keys", str(_meter_keys(tmp_path)),
        name="sim",
    )  # fmt: skip
    secrets = _secrets(tmp_path)
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        port = int(line.split()[2].rpartition(":")[2])
        for auth in ("lls", "hls-gmac", "hls-gmac"):
            settings = replace(_settings(auth, secrets), transport="hdlc")
            meter = DlmsMeter("dl-s", settings, "127.0.0.1", port, timeout=5, retries=0,
                              state_dir=tmp_path / "state")  # fmt: skip
            outcome = _read(meter)
            assert [v.obis for v in outcome.values] == list(OBJECTS), auth  # type: ignore[attr-defined]
    finally:
        sim.stop()
    assert int((tmp_path / "state" / "dlms" / "dl-s.ic").read_text()) > 0


def test_counter_store_persists_before_use_and_refuses_a_corrupt_file(tmp_path: Path) -> None:
    store = CounterStore(tmp_path / "dlms" / "m.ic")
    assert store.limit == 0
    store.reserve(1)
    assert int((tmp_path / "dlms" / "m.ic").read_text()) == store.limit > 1
    limit = store.limit
    store.reserve(limit)  # already covered: no write
    assert CounterStore(tmp_path / "dlms" / "m.ic").limit == limit
    store.reserve(limit + 1)
    assert CounterStore(tmp_path / "dlms" / "m.ic").limit > limit
    (tmp_path / "dlms" / "m.ic").write_text("twelve\n")
    with pytest.raises(SecretsError, match="corrupt; refusing to guess"):
        CounterStore(tmp_path / "dlms" / "m.ic")
    assert default_system_title("dl-1") == default_system_title("dl-1")
    assert default_system_title("dl-1")[:3] == b"MLK" and len(default_system_title("dl-2")) == 8


@pytest.mark.integration
def test_secrets_file_readable_by_others_is_refused(
    secure_sim: tuple[str, int], tmp_path: Path
) -> None:
    host, port = secure_sim
    secrets = _secrets(tmp_path)
    os.chmod(secrets, 0o644)
    meter = DlmsMeter("dl-s", _settings("hls-gmac", secrets), host, port, retries=3,
                      state_dir=tmp_path)  # fmt: skip
    with pytest.raises(MeterReadError) as exc:
        _read(meter)
    text = str(exc.value)
    assert f"{secrets}: secrets file has mode 0644" in text and "chmod 600" in text
    assert "meter dl-s" in text and "(1 attempt)" in text
    assert EK.hex() not in text and AK.hex() not in text
    with pytest.raises(SecretsError, match=r"\[meters.dl-x\]: no such table"):
        os.chmod(secrets, 0o600)
        load_meter_secrets(secrets, "dl-x", "lls")
    assert "hidden" in repr(load_meter_secrets(secrets, "dl-s", "lls"))


@pytest.mark.integration
def test_wrong_password_and_wrong_key_are_clear_errors_not_retried(
    secure_sim: tuple[str, int], tmp_path: Path
) -> None:
    host, port = secure_sim
    errors = {}
    for auth, secrets in (
        ("lls", _secrets(tmp_path, password="not-it")),
        ("hls-gmac", _secrets(tmp_path, ek=WRONG)),
    ):
        meter = DlmsMeter("dl-s", _settings(auth, secrets), host, port, retries=3,
                          state_dir=tmp_path)  # fmt: skip
        with pytest.raises(MeterReadError) as exc:
            _read(meter)
        errors[auth] = str(exc.value)
    assert "LLS password refused" in errors["lls"] and "(1 attempt)" in errors["lls"]
    assert "HLS authentication failed" in errors["hls-gmac"]
    assert "wrong encryption or authentication key" in errors["hls-gmac"]
    assert "(1 attempt)" in errors["hls-gmac"]
    for text in errors.values():
        assert "meter dl-s: dlms at" in text
        assert "not-it" not in text and WRONG.hex() not in text and AK.hex() not in text


def test_get_answers_in_blocks_are_reassembled(tmp_path: Path) -> None:
    """A client max receive PDU of 128 bytes: the meter answers a 3 KiB value in blocks,
    plain and ciphered; ``get`` returns it whole."""
    big = Obis(0, 0, 96, 99, 0, 255)
    value = bytes(range(256)) * 12
    model = MeterModel("dl-s", 1, origin_ns=time.time_ns() - 3600 * 10**9)
    meter = DlmsMeterState(model, ClockSetting.system())
    meter.objects[big] = DataObject(big, Data.octet_string(value))
    options = DlmsSimOptions(auth="hls", keys=_meter_keys(tmp_path))
    secrets = _secrets(tmp_path)

    async def main() -> list[Data]:
        got = []
        async with DlmsSimServer(meter, options=options) as server:
            for auth in ("none", "hls-gmac"):
                settings = replace(_settings(auth, secrets))
                transport = WrapperTransport(
                    "127.0.0.1", server.port, settings.client_address, 1, 5, max_apdu=128
                )
                session = DlmsSession(transport, settings, "dl-s", state_dir=tmp_path)
                try:
                    await transport.open()
                    await session.open()
                    got.append(await session.get(1, big, 2))
                finally:
                    await session.close()
        return got

    assert asyncio.run(main()) == [Data.octet_string(value)] * 2


@pytest.mark.integration
def test_end_to_end_one_meter_with_a_wrong_key_others_stored_no_secret_logged(
    tmp_path: Path,
) -> None:
    speed = 3600
    start = time.time_ns()
    clock = ClockSetting.accelerated(
        datetime(2026, 11, 1, tzinfo=UTC), start + 2 * 10**9, Decimal(speed)
    )
    keys = _meter_keys(tmp_path)
    scenario = tmp_path / "dlms.toml"
    scenario.write_text(
        f'[[dlms]]\nmeter = "dl-good"\nauth = "hls"\nkeys = "{keys.name}"\n'
        f'[[dlms]]\nmeter = "dl-bad"\nauth = "hls"\nkeys = "{keys.name}"\n'
    )
    with loopback(tmp_path) as lb:
        sim = lb.spawn("sim", "run", str(scenario), "--clock", str(clock), name="sim",
                       log_path=tmp_path / "sim.log")  # fmt: skip
        ports = {}
        for line in sim.wait_lines(lambda t: t.startswith("READY dlms"), 2):
            words = line.split()
            ports[words[-1].removeprefix("meters=")] = words[2].rpartition(":")[2]
        collector_toml = lb.collector_config("c-sec")
        agent_dir = tmp_path / "agent"
        agent_dir.mkdir()
        _private(
            agent_dir / "secrets.toml",
            f'[meters.dl-good]\nauthentication_key = "{AK.hex()}"\n'
            f'encryption_key = "{EK.hex()}"\n'
            f'[meters.dl-bad]\nauthentication_key = "{AK.hex()}"\n'
            f'encryption_key = "{WRONG.hex()}"\n',
        )
        meters = "".join(
            f'[[meters]]\nid = "{mid}"\ndriver = "dlms"\nhost = "127.0.0.1"\n'
            f"port = {ports[mid]}\n"
            'auth = "hls-gmac"\nsecrets = "secrets.toml"\nclient_address = 1\n'
            'objects = ["1-0:1.8.0", "1-0:32.7.0"]\n'
            'interval = "15m"\ntimeout = "2s"\nretries = 1\nclock_limit = "10m"\n\n'
            for mid in ("dl-good", "dl-bad")
        )
        agent_toml = agent_dir / "agent.toml"
        agent_toml.write_text(
            '[gateway]\nid = "gw-sec"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {lb.broker.port}\nbatch_max_records = 5\n\n'
            + meters
        )
        lb.enrol(agent_toml, collector_toml, "gw-sec", ["dl-good", "dl-bad"])
        lb.start("collector", "collector", "run", str(collector_toml), "--clock", str(clock))
        agent = lb.start("agent", "agent", "run", str(agent_toml), "--clock", str(clock),
                         "--log-level", "debug")  # fmt: skip

        def stored() -> list[tuple]:
            return query(lb.collector_db, "SELECT meter_id, captured_ms FROM readings")

        wait_for(lambda: len({r[1] for r in stored()}) >= 2, timeout=60, what="2 captures")
        wait_for(
            lambda: "HLS authentication failed" in agent.output, timeout=30, what="dl-bad error"
        )
    assert {meter_id for meter_id, _ms in stored()} == {"dl-good"}
    log = agent.output + (tmp_path / "agent.log").read_text(errors="replace")
    failures = [line for line in log.splitlines() if "HLS authentication failed" in line]
    assert failures and all("dl-bad" in line for line in failures)
    assert "HLS client invocation counter from" in log  # debug lines were logged
    for secret in (EK.hex(), AK.hex(), WRONG.hex(), EK.hex().upper(), AK.hex().upper()):
        assert secret not in log
    assert int((agent_dir / "state" / "dlms" / "dl-good.ic").read_text()) > 0


@pytest.mark.parametrize("fault", ["f_stoc_refused", "f_ctos_wrong"])
def test_hls_reply_failures_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The HLS steps after the AARE: a meter that refuses f(StoC), and one whose f(CtoS)
    does not check out. No real meter holding the right keys does either, so the
    simulator's GMAC step is replaced (monkeypatch) in this test only."""
    import firmware_sim.dlms.session as sim_session
    from protocols.dlms.security import DlmsAuthenticationError

    if fault == "f_stoc_refused":

        def refuse(*_args: object) -> int:
            raise DlmsAuthenticationError("HLS-GMAC response does not check out")

        monkeypatch.setattr(sim_session, "verify_hls_gmac_response", refuse)
    else:
        monkeypatch.setattr(sim_session, "hls_gmac_response", lambda *_a: bytes(17))
    model = MeterModel("dl-s", 1, origin_ns=time.time_ns() - 3600 * 10**9)
    meter = DlmsMeterState(model, ClockSetting.system())
    options = DlmsSimOptions(auth="hls", keys=_meter_keys(tmp_path))
    settings = _settings("hls-gmac", _secrets(tmp_path))

    async def main() -> str:
        async with DlmsSimServer(meter, options=options) as server:
            agent = DlmsMeter("dl-s", settings, "127.0.0.1", server.port, timeout=5,
                              retries=2, state_dir=tmp_path / "state")  # fmt: skip
            with pytest.raises(MeterReadError) as exc:
                await agent.read()
            return str(exc.value)

    text = asyncio.run(main())
    assert text.startswith("meter dl-s: dlms at 127.0.0.1:") and text.endswith("(1 attempt)")
    if fault == "f_stoc_refused":
        assert "HLS authentication failed: the meter did not accept f(StoC)" in text
        assert "wrong authentication key?" in text
        assert (meter.associations, meter.rejected) == (1, 1)  # the public one only
    else:
        assert "HLS authentication failed: the meter's f(CtoS) does not check out" in text
        assert (meter.associations, meter.rejected) == (2, 0)  # the meter was content
