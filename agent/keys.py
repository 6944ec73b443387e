"""The gateway's Ed25519 signing key: made once at install, mode 0600, never logged.

The private key file is created with its mode in the same system call and loading refuses a
key that group or others may read (both in protocols/keys.py, shared with the head-end's
command key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.keys import (
    KeyFormatError,
    UnsafeFileMode,
    private_key_from_pem,
    read_private_file,
    write_exclusive,
)

__all__ = [
    "GatewayKey",
    "KeyFileError",
    "create_key",
    "key_id",
    "load_key",
    "private_key_path",
    "public_key_path",
]

PRIVATE_NAME = "gateway.key"
PUBLIC_NAME = "gateway.pub"


class KeyFileError(Exception):
    """A key file that is missing, unsafe or unreadable; the message names the file."""


def private_key_path(keys_dir: Path) -> Path:
    return keys_dir / PRIVATE_NAME


def public_key_path(keys_dir: Path) -> Path:
    return keys_dir / PUBLIC_NAME


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes (hex) of the SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class GatewayKey:
    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    key_id: str
    path: Path

    def __repr__(self) -> str:  # never print key material
        return f"GatewayKey(key_id={self.key_id!r}, path={str(self.path)!r})"


def create_key(keys_dir: Path, force: bool = False) -> GatewayKey:
    """Make a new key pair in ``keys_dir``; refuses to replace one unless ``force``."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv_path, pub_path = private_key_path(keys_dir), public_key_path(keys_dir)
    if priv_path.exists() or pub_path.exists():
        if not force:
            raise KeyFileError(
                f"{priv_path}: a gateway key already exists; refusing to overwrite it "
                "(use --force to replace it: the head-end must then enrol the new public key)"
            )
        for old in (priv_path, pub_path):
            old.unlink(missing_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key()
    pub_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_exclusive(priv_path, pem, 0o600)
    write_exclusive(pub_path, pub_pem, 0o644)
    return GatewayKey(private, public, key_id(public), priv_path)


def load_key(keys_dir: Path) -> GatewayKey:
    """Load the private key; refuses a file that group or others can access."""
    priv_path = private_key_path(keys_dir)
    try:
        data = read_private_file(priv_path)
    except FileNotFoundError:
        raise KeyFileError(
            f"{priv_path}: no gateway key (create one with: meterlink agent keys init)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{priv_path}: cannot open: {exc.strerror}") from None
    except UnsafeFileMode as exc:
        raise KeyFileError(
            f"{priv_path}: mode {exc.mode:04o} lets group/others access the private key; "
            f"refusing to use it (fix with: chmod 600 {priv_path}, and consider the key "
            "compromised if others could read it)"
        ) from None
    try:
        private = private_key_from_pem(data)
    except KeyFormatError as exc:
        raise KeyFileError(f"{priv_path}: {exc}") from None
    public = private.public_key()
    return GatewayKey(private, public, key_id(public), priv_path)
