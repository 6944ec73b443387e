"""`agent check` reads every meter by default and never writes to one: a DLMS meter whose
clock is 5 minutes fast, with the set-clock policy on and an association allowed to set it,
is reported beyond its limit, and its clock is left as it was."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config
from agent.drivers.dlms import DlmsMeter
from meterlink.procs import Proc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_check_reads_by_default_and_does_not_set_the_meter_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = Proc(
        [sys.executable, "-m", "meterlink", "sim", "dlms", "--port", "0", "--meter-id", "dl-c",
         "--auth", "lls", "--password", "s3cret-pw", "--clock-offset", "300"],
        "sim", cwd=REPO,
    )  # fmt: skip
    try:
        port = int(sim.wait_line(lambda t: t.startswith("READY dlms")).split()[2].split(":")[1])
        secrets = tmp_path / "secrets.toml"
        fd = os.open(secrets, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b'[meters.dl-c]\npassword = "s3cret-pw"\n')
        os.close(fd)
        config = tmp_path / "agent.toml"
        config.write_text(
            '[gateway]\nid = "gw-check"\n\n'
            f'[[meters]]\nid = "dl-c"\ndriver = "dlms"\nhost = "127.0.0.1"\nport = {port}\n'
            'client_address = 17\nauth = "lls"\nsecrets = "secrets.toml"\n'
            'objects = ["1-0:1.8.0"]\nclock_set = "1m"\ntimeout = "5s"\n'
        )
        assert main(["check", str(config)]) == 0
        out = capsys.readouterr().out
        assert "read dl-c: ok: 1-0:1.8.0=" in out
        assert "(beyond clock_limit 30s)" in out
        assert "s3cret-pw" not in out

        # the meter's clock is still 5 minutes fast: a read without a limit measures it
        (meter,) = load_config(config).meters
        assert meter.dlms is not None
        settings = replace(meter.dlms, clock_limit_ns=0, clock_set_ns=None)
        reader = DlmsMeter("dl-c", settings, "127.0.0.1", port, timeout=5, retries=0)
        outcome = asyncio.run(reader.read())
        assert outcome.drift_ms is not None and 290_000 < outcome.drift_ms < 310_000
    finally:
        sim.stop()
