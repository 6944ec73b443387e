"""Agent config: values, durations, and errors that name file, line and key (all of them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_duration

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
[gateway]
id = "gw-t-01"
state_dir = "st"

[mqtt]
port = 1884
ack_timeout = "2s"

[buffer]
max_records = 10
when_full = "stop-capture"

[[meters]]
id = "m1"
host = "127.0.0.1"
port = 5020
unit = 1
profile = "eastron_sdm630"
interval = "15m"
timeout = 0.5

[[meters]]
id = "m2"
host = "127.0.0.1"
port = 5020
unit = 2
profile = "eastron_sdm630"
interval = 30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_durations_accept_units_and_integer_seconds() -> None:
    assert parse_duration("15m") == 900 * 10**9
    assert parse_duration("30s") == 30 * 10**9
    assert parse_duration("1h") == 3600 * 10**9
    assert parse_duration("250ms") == 250 * 10**6
    assert parse_duration(7) == 7 * 10**9
    for bad in ("15 minutes", "-1s", 0, True, "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_good_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.gateway.id == "gw-t-01"
    assert config.gateway.state_dir == tmp_path / "st"
    assert config.buffer_path == tmp_path / "st" / "buffer.sqlite"
    assert config.mqtt.port == 1884 and config.mqtt.ack_timeout == 2.0
    assert config.buffer.when_full == "stop-capture"
    m1, m2 = config.meters
    assert m1.interval_ns == 900 * 10**9 and m1.timeout == 0.5
    assert m2.interval_ns == 30 * 10**9
    assert m1.connection == m2.connection
    assert m1.profile_path == REPO / "config" / "profiles" / "eastron_sdm630.toml"


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config" / "agent.example.toml")
    assert [m.id for m in config.meters] == ["em-sdm-01", "em-sdm-02", "em-cg-01"]


def test_every_semantic_error_names_file_line_and_key(tmp_path: Path) -> None:
    text = GOOD.replace('when_full = "stop-capture"', 'when_full = "overwrite"')
    text = text.replace("port = 1884", "port = 70000")
    text = text.replace('interval = "15m"', 'interval = "15 minutes"')
    text = text.replace('id = "m2"', 'id = "m1"')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    issues = {issue.key: issue for issue in info.value.issues}
    lines = text.splitlines()
    assert set(issues) == {"mqtt.port", "buffer.when_full", "meters[0].interval", "meters[1].id"}
    for issue in issues.values():
        assert issue.path == path
        assert issue.line is not None
        key = issue.key.rsplit(".", 1)[1]
        assert lines[issue.line - 1].lstrip().startswith(key), (issue, lines[issue.line - 1])
    # the second [[meters]]'s id line, not the first one's
    second_id = [n for n, line in enumerate(lines, 1) if line == 'id = "m1"'][1]
    assert issues["meters[1].id"].line == second_id
    message = str(info.value)
    assert f"{path}:{issues['buffer.when_full'].line}: buffer.when_full: must be one of" in message


def test_missing_required_key_and_unknown_key_are_reported(tmp_path: Path) -> None:
    text = GOOD.replace(
        'host = "127.0.0.1"\nport = 5020\nunit = 1', "port = 5020\nunit = 1\ncolour = 3"
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    keys = {i.key: i for i in info.value.issues}
    assert "missing" in keys["meters[0].host"].message
    assert keys["meters[0].colour"].message == "unknown key"
    assert keys["meters[0].colour"].line == text.splitlines().index("colour = 3") + 1


def test_unknown_profile_is_an_error_on_the_profile_line(tmp_path: Path) -> None:
    text = GOOD.replace(
        'profile = "eastron_sdm630"\ninterval = 30', 'profile = "nope"\ninterval = 30'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    (issue,) = info.value.issues
    assert issue.key == "meters[1].profile" and "nope" in issue.message
    assert issue.line == text.splitlines().index('profile = "nope"') + 1


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('id = "gw-t-01"', 'id = "gw-t-01'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.issues[0].line == 2
    assert str(path) in str(info.value)


def test_clock_override_is_validated(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_config(path, "2026-06-01T00:00:00Z@1700000000x60")
    assert not config.gateway.clock.is_system
    with pytest.raises(ConfigError) as info:
        load_config(path, "tomorrow")
    assert info.value.issues[0].key == "--clock"


def test_check_command_lists_every_error_and_exits_non_zero(tmp_path, capsys) -> None:
    from agent.cli import main

    text = GOOD.replace("port = 1884", "port = 0").replace("interval = 30", 'interval = "x"')
    assert main(["check", str(write(tmp_path, text))]) == 1
    err = capsys.readouterr().err
    assert "mqtt.port" in err and "meters[1].interval" in err and "2 error(s)" in err


def test_check_command_prints_the_polling_plan(tmp_path, capsys) -> None:
    from agent.cli import main

    assert main(["check", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr().out
    assert "connection 127.0.0.1:5020: 2 meter(s)" in out
    assert "m1: unit 1 profile eastron_sdm630" in out and "read input 0x0000+" in out
