"""Ed25519 keys as files carry them (PEM): bytes in, key out; and the two file operations the
gateway's key (agent/keys.py) and the head-end's command key (collector/commands/keys.py)
share, here because agent and collector may not import each other.

A private key file is created with ``O_CREAT | O_EXCL`` and its mode in the same system call,
so there is no moment where it exists with looser permissions (a ``write`` followed by
``chmod`` would leave one); it is read only when group and others have no access, checked on
the open descriptor (no window between the check and the read)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "KeyFormatError",
    "UnsafeFileMode",
    "private_key_from_pem",
    "public_key_from_pem",
    "read_private_file",
    "write_exclusive",
]


class KeyFormatError(ValueError):
    """Bytes that are not an Ed25519 public key in PEM form; the message says which."""


def public_key_from_pem(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError(f"not an Ed25519 public key ({type(key).__name__})")
    return key


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """An unencrypted PKCS8 PEM Ed25519 private key; the error message never holds the bytes."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFormatError("not a PEM PKCS8 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError("not an Ed25519 key")
    return key


class UnsafeFileMode(Exception):
    """A private file that group or others may access; ``mode`` holds its permission bits (the
    caller names the file and the fix)."""

    def __init__(self, mode: int) -> None:
        super().__init__(f"mode {mode:04o}")
        self.mode = mode


def write_exclusive(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (never over an existing file: ``FileExistsError``) with ``mode`` in the
    same system call, write all of ``data`` and sync it to disk."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private_file(path: Path) -> bytes:
    """The bytes of ``path``; ``UnsafeFileMode`` when group or others have any access to it,
    ``OSError`` (``FileNotFoundError`` among them) as opening it raises it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            raise UnsafeFileMode(mode)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)
