"""The head-end's command key: Ed25519, made once by ``collector keys init``, mode 0600.

Gateways trust its public key (``{state_dir}/keys/headend-command.pub`` on each gateway) and
run only commands it signed. Like the gateway's key (agent/keys.py) the private file is
created with its mode in the same system call and refused when group or others may read it
(both in protocols/keys.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.keys import (
    KeyFormatError,
    UnsafeFileMode,
    private_key_from_pem,
    read_private_file,
    write_exclusive,
)
from protocols.record import key_id_of

from ..errors import CollectorError

__all__ = ["CommandKey", "CommandKeyError", "create_command_key", "load_command_key"]


class CommandKeyError(CollectorError):
    """A command key file that is missing, unsafe or unreadable (the message names it)."""


@dataclass(frozen=True)
class CommandKey:
    private: Ed25519PrivateKey
    key_id: str
    path: Path

    def __repr__(self) -> str:  # never print key material
        return f"CommandKey(key_id={self.key_id!r}, path={str(self.path)!r})"

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def public_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".key") + ".pub")


def create_command_key(path: Path, force: bool = False) -> CommandKey:
    if path.exists() and not force:
        raise CommandKeyError(
            f"{path}: a command key already exists; refusing to overwrite it (--force replaces "
            "it: every gateway must then trust the new public key)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_exclusive(path, pem, 0o600)
    key = CommandKey(private, key_id_of(private.public_key()).hex(), path)
    public_path(path).write_bytes(key.public_pem)
    return key


def load_command_key(path: Path) -> CommandKey:
    try:
        data = read_private_file(path)
    except FileNotFoundError:
        raise CommandKeyError(
            f"{path}: no command key (create one with: meterlink collector keys init "
            "--config CONFIG)"
        ) from None
    except OSError as exc:
        raise CommandKeyError(f"{path}: cannot open: {exc.strerror}") from None
    except UnsafeFileMode as exc:
        raise CommandKeyError(
            f"{path}: mode {exc.mode:04o} lets group/others read the command key; refusing to "
            f"use it (chmod 600 {path}, and consider the key compromised)"
        ) from None
    try:
        private = private_key_from_pem(data)
    except KeyFormatError as exc:
        raise CommandKeyError(f"{path}: {exc}") from None
    return CommandKey(private, key_id_of(private.public_key()).hex(), path)
