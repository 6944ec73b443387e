"""The [mqtt] TLS keys of the agent and collector configs (cafile, certfile, keyfile): paths
relative to the config file, missing files and half-given pairs named with their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from collector.config import load_config as load_collector_config


def _agent(tmp_path: Path, mqtt: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[gateway]\nid = "gw-1"\n\n[mqtt]\nhost = "broker"\n{mqtt}')
    return path


def test_agent_tls_files_are_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    for name in ("ca.crt", "gw-1.crt", "gw-1.key"):
        (tmp_path / "tls" / name).write_text("x")
    mqtt = load_config(
        _agent(
            tmp_path, 'cafile = "tls/ca.crt"\ncertfile = "tls/gw-1.crt"\nkeyfile = "tls/gw-1.key"\n'
        )
    ).mqtt
    assert mqtt.cafile == tmp_path / "tls" / "ca.crt"
    assert (mqtt.certfile, mqtt.keyfile) == (tmp_path / "tls/gw-1.crt", tmp_path / "tls/gw-1.key")
    assert load_config(_agent(tmp_path, "")).mqtt.cafile is None  # plain TCP as before


def test_agent_tls_problems_name_the_key_and_line(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    with pytest.raises(ConfigError) as exc:
        load_config(_agent(tmp_path, 'cafile = "ca.crt"\ncertfile = "nope.crt"\n'))
    text = str(exc.value)
    assert "mqtt.certfile" in text and "file not found" in text and ":7" in text
    assert "certfile and keyfile go together" in text
    with pytest.raises(ConfigError, match="a client certificate needs cafile"):
        (tmp_path / "c.crt").write_text("x")
        (tmp_path / "c.key").write_text("x")
        load_config(_agent(tmp_path, 'certfile = "c.crt"\nkeyfile = "c.key"\n'))


def test_collector_tls_files_are_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(
        '[collector]\ndatabase = "c.sqlite"\n\n[mqtt]\ncafile = "tls/ca.crt"\n'
        'certfile = "tls/collector.crt"\nkeyfile = "tls/collector.key"\n'
    )
    mqtt = load_collector_config(path).mqtt
    assert mqtt.cafile == tmp_path / "tls" / "ca.crt"
    assert mqtt.keyfile == tmp_path / "tls" / "collector.key"
