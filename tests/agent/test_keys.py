"""Gateway keys: 0600 from creation, no silent overwrite, refusal of a readable key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from agent.cli import main
from agent.keys import KeyFileError, create_key, key_id, load_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_a_0600_private_key_and_a_public_key(tmp_path: Path) -> None:
    key = create_key(tmp_path / "keys")
    priv, pub = tmp_path / "keys" / "gateway.key", tmp_path / "keys" / "gateway.pub"
    assert mode(priv) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    public = serialization.load_pem_public_key(pub.read_bytes())
    assert key_id(public) == key.key_id and len(key.key_id) == 16  # type: ignore[arg-type]
    assert load_key(tmp_path / "keys").key_id == key.key_id


def test_private_key_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        create_key(tmp_path / "keys")
    finally:
        os.umask(old)
    assert mode(tmp_path / "keys" / "gateway.key") == 0o600


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    first = create_key(tmp_path)
    with pytest.raises(KeyFileError, match="already exists"):
        create_key(tmp_path)
    assert load_key(tmp_path).key_id == first.key_id
    second = create_key(tmp_path, force=True)
    assert second.key_id != first.key_id
    assert mode(tmp_path / "gateway.key") == 0o600


def test_loading_refuses_a_0644_private_key(tmp_path: Path) -> None:
    create_key(tmp_path)
    os.chmod(tmp_path / "gateway.key", 0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644 .*chmod 600"):
        load_key(tmp_path)


def test_repr_never_shows_key_material(tmp_path: Path) -> None:
    key = create_key(tmp_path)
    pem = (tmp_path / "gateway.key").read_text()
    body = "".join(pem.splitlines()[1:-1])
    assert body not in repr(key) and key.key_id in repr(key)


def test_cli_keys_init_prints_path_and_id(tmp_path: Path, capsys) -> None:
    assert main(["keys", "init", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "keys" / "gateway.pub") in out
    assert load_key(tmp_path / "keys").key_id in out
    assert main(["keys", "init", "--state-dir", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
