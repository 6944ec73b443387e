"""The private key file helpers the gateway key and the head-end command key share."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocols.keys import (
    KeyFormatError,
    UnsafeFileMode,
    private_key_from_pem,
    read_private_file,
    write_exclusive,
)


def test_write_exclusive_creates_the_file_with_its_mode_and_never_over_another(
    tmp_path: Path,
) -> None:
    path = tmp_path / "k.key"
    old = os.umask(0)
    try:
        write_exclusive(path, b"secret" * 1000)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"secret" * 1000
    with pytest.raises(FileExistsError):
        write_exclusive(path, b"other")
    assert path.read_bytes() == b"secret" * 1000


def test_read_private_file_refuses_group_or_other_access_naming_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_exclusive(path, b"x")
    assert read_private_file(path) == b"x"
    os.chmod(path, 0o640)
    with pytest.raises(UnsafeFileMode) as exc:
        read_private_file(path)
    assert exc.value.mode == 0o640 and str(exc.value) == "mode 0640"
    with pytest.raises(FileNotFoundError):
        read_private_file(tmp_path / "missing.key")


def test_private_key_from_pem_takes_ed25519_pkcs8_only() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert private_key_from_pem(pem).public_key() == key.public_key()
    with pytest.raises(KeyFormatError, match=r"^not a PEM PKCS8 private key$"):
        private_key_from_pem(b"garbage")
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match=r"^not a PEM PKCS8 private key$"):
        private_key_from_pem(public_pem)
    other = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFormatError, match=r"^not an Ed25519 key$"):
        private_key_from_pem(other)
