"""Gateway public keys as files carry them (PEM, SubjectPublicKeyInfo): bytes in, key out."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["KeyFormatError", "public_key_from_pem"]


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
