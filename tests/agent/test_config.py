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

    assert main(["check", str(write(tmp_path, GOOD)), "--no-read"]) == 0
    out = capsys.readouterr().out
    assert "connection 127.0.0.1:5020: 2 meter(s)" in out
    assert "m1: unit 1 profile eastron_sdm630" in out and "read input 0x0000+" in out


def _issues(tmp_path: Path, text: str) -> dict[str, object]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    for issue in info.value.issues:
        assert issue.path == tmp_path / "agent.toml" and issue.line is not None, issue
    return {issue.key: issue for issue in info.value.issues}


def _line_of(text: str, needle: str, nth: int = 0) -> int:
    return [n for n, line in enumerate(text.splitlines(), 1) if line == needle][nth]


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("port = 5020\nunit = 1", 'port = "5020"\nunit = 1', "meters[0].port"),
        ("unit = 2", "unit = 2.0", "meters[1].unit"),
        ("timeout = 0.5", "timeout = true", "meters[0].timeout"),
        ('when_full = "stop-capture"', "when_full = 1", "buffer.when_full"),
        ('id = "gw-t-01"', "id = 7", "gateway.id"),
    ],
)
def test_wrong_type_names_file_line_and_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    text = GOOD.replace(old, new, 1)
    issues = _issues(tmp_path, text)
    assert list(issues) == [key]
    issue = issues[key]
    assert "expected" in issue.message or "duration" in issue.message, issue
    assert text.splitlines()[issue.line - 1] == new.split("\n")[0]


@pytest.mark.parametrize("missing", ["host", "port", "unit"])
def test_a_meter_without_its_full_address_is_an_error(tmp_path: Path, missing: str) -> None:
    lines = GOOD.splitlines()
    first = lines.index('id = "m1"')
    drop = next(n for n in range(first, len(lines)) if lines[n].startswith(f"{missing} ="))
    text = "\n".join(lines[:drop] + lines[drop + 1 :]) + "\n"
    issues = _issues(tmp_path, text)
    issue = issues[f"meters[0].{missing}"]
    assert issue.message == "missing (required)"
    assert issue.line == _line_of(text, "[[meters]]")  # the meter's table


def test_unknown_key_and_unknown_table(tmp_path: Path) -> None:
    text = GOOD.replace("[mqtt]\n", "[mqtt]\nprot = 1883\n") + "\n[logging]\nlevel = 1\n"
    issues = _issues(tmp_path, text)
    assert issues["mqtt.prot"].message == "unknown key"
    assert issues["mqtt.prot"].line == _line_of(text, "prot = 1883")
    assert issues["logging"].message == "unknown table"
    assert issues["logging"].line == _line_of(text, "[logging]")


def test_duplicate_meter_id_and_duplicate_address(tmp_path: Path) -> None:
    text = GOOD.replace('id = "m2"', 'id = "m1"').replace("unit = 2", "unit = 1")
    issues = _issues(tmp_path, text)
    assert "duplicate meter id 'm1'" in issues["meters[1].id"].message
    assert issues["meters[1].id"].line == _line_of(text, 'id = "m1"', 1)
    unit = issues["meters[1].unit"]
    assert unit.message == (
        "duplicate address: unit 1 at 127.0.0.1:5020 is also meter 'm1' (meters[0])"
    )
    assert unit.line == _line_of(text, "unit = 1", 1)
    # the same Modbus server on another port is another address
    load_config(
        write(
            tmp_path,
            GOOD.replace("unit = 2", "unit = 1").replace(
                'port = 5020\nunit = 1\nprofile = "eastron_sdm630"\ninterval = 30',
                'port = 5021\nunit = 1\nprofile = "eastron_sdm630"\ninterval = 30',
            ),
        )
    )


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("port = 5020\nunit = 1", "port = 0\nunit = 1", "meters[0].port", "must be >= 1"),
        ("port = 5020\nunit = 1", "port = 65536\nunit = 1", "meters[0].port", "must be <= 65535"),
        ("port = 1884", "port = 70000", "mqtt.port", "must be <= 65535"),
        ("unit = 2", "unit = 0", "meters[1].unit", "must be >= 1"),
        ("unit = 2", "unit = 250", "meters[1].unit", "must be 1..247"),
        ("timeout = 0.5", 'timeout = "90s"', "meters[0].timeout", "at most 60s"),
        ('interval = "15m"', 'interval = "500ms"', "meters[0].interval", "at least 1s"),
        ("interval = 30", "interval = 30\nretries = 50", "meters[1].retries", "must be <= 10"),
        ("max_records = 10", "max_records = 0", "buffer.max_records", "must be >= 1"),
    ],
)
def test_values_out_of_range(tmp_path: Path, old: str, new: str, key: str, message: str) -> None:
    text = GOOD.replace(old, new, 1)
    issues = _issues(tmp_path, text)
    assert list(issues) == [key]
    assert message in issues[key].message, issues[key]
    changed = next(line for line in new.splitlines() if line not in old.splitlines())
    assert text.splitlines()[issues[key].line - 1] == changed


def test_run_refuses_a_config_with_mistakes_and_opens_nothing(tmp_path: Path, capsys) -> None:
    from agent.cli import main

    text = GOOD.replace('profile = "eastron_sdm630"\ninterval = 30', 'profile = "nope"\n')
    text = text.replace("port = 1884", "port = 0").replace("unit = 1", "unit = 0")
    path = write(tmp_path, text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    for key in ("mqtt.port", "meters[0].unit", "meters[1].profile"):
        assert f"{path}:" in err and key in err
    assert "3 error(s)" in err and "not started" in err
    assert not (tmp_path / "st").exists()  # no key, no buffer, nothing polled


def test_run_refuses_a_broken_profile_file_before_opening_anything(tmp_path, capsys) -> None:
    from agent.cli import main

    (tmp_path / "broken.toml").write_text("[profile]\nname = 3\n")
    text = GOOD.replace('profile = "eastron_sdm630"\ninterval = 30', 'profile = "broken.toml"')
    path = write(tmp_path, text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}:{_line_of(text, '[[meters]]', 1)}: meter m2:" in err
    assert "not started" in err
    assert not (tmp_path / "st").exists()
    assert main(["check", str(path)]) == 1


def test_a_number_out_of_decimal_range_is_a_config_error(tmp_path) -> None:
    from agent.config import ConfigError, load_config

    path = tmp_path / "agent.toml"
    path.write_text('[gateway]\nid = "gw-1"\nx = 0E0488888888888888888888\n')
    with pytest.raises(ConfigError, match="out of range"):
        load_config(path)
