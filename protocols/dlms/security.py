"""DLMS/COSEM security suite 0 (Green Book 9.2.3.3, 9.2.7): AES-128-GCM with a 12-byte
authentication tag, for both ends of an association.

* IV (12 bytes) = the sender's system title (8) || its invocation counter (4, big-endian);
* the security control byte (SC): bits 0-3 the suite, bit 4 authentication, bit 5
  encryption (0x30: authenticated and encrypted, 0x10: authenticated only);
* authenticated and encrypted: AAD = SC || AK, the ciphertext || tag is sent;
* authenticated only: AAD = SC || AK || plaintext, plaintext || tag is sent;
* HLS-GMAC (mechanism 5): f(challenge) = SC || IC || GMAC(SC || AK || challenge), the
  GMAC being the tag of a GCM over that AAD with an empty plaintext (SC 0x10).

``cryptography``'s ``AESGCM`` cannot verify a tag shorter than 16 bytes, so the
``Cipher``/``modes.GCM`` interface of the same library is used, with
``min_tag_length=12``. Keys never appear in exceptions or reprs.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import DlmsDecodeError, DlmsEncodeError

__all__ = [
    "SC_AUTHENTICATED",
    "SC_AUTHENTICATED_ENCRYPTED",
    "TAG_SIZE",
    "DlmsAuthenticationError",
    "SecurityContext",
    "decrypt",
    "encrypt",
    "gmac",
    "hls_gmac_response",
    "verify_hls_gmac_response",
]

TAG_SIZE = 12
KEY_SIZE = 16  # suite 0: AES-128
TITLE_SIZE = 8
SC_AUTHENTICATED = 0x10
SC_ENCRYPTED = 0x20
SC_AUTHENTICATED_ENCRYPTED = 0x30
SUITE_MASK = 0x0F


class DlmsAuthenticationError(DlmsDecodeError):
    """A ciphered APDU or an HLS response whose authentication tag does not check out:
    a wrong key, a wrong invocation counter or system title, or tampering."""


def _check(system_title: bytes, invocation_counter: int, key: bytes, auth_key: bytes) -> bytes:
    if len(system_title) != TITLE_SIZE:
        raise DlmsEncodeError(f"system title must be {TITLE_SIZE} bytes, got {len(system_title)}")
    if not 0 <= invocation_counter <= 0xFFFFFFFF:
        raise DlmsEncodeError(f"invocation counter must be 32 bits, got {invocation_counter}")
    for name, value in (("encryption key", key), ("authentication key", auth_key)):
        if len(value) != KEY_SIZE:
            raise DlmsEncodeError(f"suite 0 {name} must be {KEY_SIZE} bytes, got {len(value)}")
    return system_title + invocation_counter.to_bytes(4, "big")


def _suite0(security_control: int) -> None:
    if security_control & SUITE_MASK != 0:
        raise DlmsDecodeError(
            f"security control 0x{security_control:02X}: suite "
            f"{security_control & SUITE_MASK}, only suite 0 is supported"
        )
    if not security_control & SC_AUTHENTICATED:
        raise DlmsDecodeError(
            f"security control 0x{security_control:02X}: not authenticated "
            "(unauthenticated ciphering is refused)"
        )


def encrypt(
    security_control: int,
    system_title: bytes,
    invocation_counter: int,
    key: bytes,
    auth_key: bytes,
    plaintext: bytes,
) -> bytes:
    """The payload of a ciphered APDU: ciphertext || tag (SC 0x30) or plaintext || tag
    (SC 0x10)."""
    _suite0(security_control)
    iv = _check(system_title, invocation_counter, key, auth_key)
    encrypted = bool(security_control & SC_ENCRYPTED)
    aad = bytes((security_control,)) + auth_key + (b"" if encrypted else plaintext)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    encryptor.authenticate_additional_data(aad)
    body = encryptor.update(plaintext) if encrypted else b""
    encryptor.finalize()
    return (body if encrypted else plaintext) + encryptor.tag[:TAG_SIZE]


def decrypt(
    security_control: int,
    system_title: bytes,
    invocation_counter: int,
    key: bytes,
    auth_key: bytes,
    payload: bytes,
) -> bytes:
    """The plaintext of a ciphered APDU's payload; :class:`DlmsAuthenticationError` when
    the tag does not check out."""
    _suite0(security_control)
    if len(system_title) != TITLE_SIZE:
        raise DlmsDecodeError(f"sender system title of {len(system_title)} bytes, 8 expected")
    iv = _check(system_title, invocation_counter, key, auth_key)
    if len(payload) < TAG_SIZE:
        raise DlmsDecodeError(
            f"ciphered payload of {len(payload)} bytes is shorter than its {TAG_SIZE}-byte tag"
        )
    body, tag = payload[:-TAG_SIZE], payload[-TAG_SIZE:]
    if not security_control & SC_ENCRYPTED:
        expected = encrypt(security_control, system_title, invocation_counter, key, auth_key, body)
        if not hmac.compare_digest(expected[-TAG_SIZE:], tag):
            raise DlmsAuthenticationError(
                "authentication tag does not check out (wrong authentication key?)"
            )
        return body
    decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=TAG_SIZE)).decryptor()
    decryptor.authenticate_additional_data(bytes((security_control,)) + auth_key)
    try:
        return decryptor.update(body) + decryptor.finalize()
    except InvalidTag:
        raise DlmsAuthenticationError(
            "authentication tag does not check out (wrong key, system title or "
            "invocation counter, or the APDU was altered)"
        ) from None


def gmac(
    system_title: bytes,
    invocation_counter: int,
    key: bytes,
    auth_key: bytes,
    challenge: bytes,
    security_control: int = SC_AUTHENTICATED,
) -> bytes:
    """GMAC(SC || AK || challenge): the 12-byte tag of a GCM with all of it as AAD."""
    if security_control & SC_ENCRYPTED:
        raise DlmsEncodeError("GMAC: the security control must not ask for encryption")
    return encrypt(security_control, system_title, invocation_counter, key, auth_key, challenge)[
        len(challenge) :
    ]


def hls_gmac_response(
    system_title: bytes, invocation_counter: int, key: bytes, auth_key: bytes, challenge: bytes
) -> bytes:
    """f(challenge) of HLS mechanism 5: SC (0x10) || IC || GMAC(SC || AK || challenge),
    computed by the party whose ``system_title`` and ``invocation_counter`` are given."""
    tag = gmac(system_title, invocation_counter, key, auth_key, challenge)
    return bytes((SC_AUTHENTICATED,)) + invocation_counter.to_bytes(4, "big") + tag


def verify_hls_gmac_response(
    response: bytes, system_title: bytes, key: bytes, auth_key: bytes, challenge: bytes
) -> int:
    """Check f(challenge) sent by the party with ``system_title``; its invocation counter,
    or :class:`DlmsAuthenticationError`."""
    if len(response) != 5 + TAG_SIZE:
        raise DlmsDecodeError(
            f"HLS-GMAC response: {len(response)} bytes, {5 + TAG_SIZE} expected "
            "(SC, IC, 12-byte GMAC)"
        )
    security_control = response[0]
    if security_control & SC_ENCRYPTED or not security_control & SC_AUTHENTICATED:
        raise DlmsDecodeError(
            f"HLS-GMAC response: security control 0x{security_control:02X}, 0x10 expected"
        )
    _suite0(security_control)
    counter = int.from_bytes(response[1:5], "big")
    expected = gmac(system_title, counter, key, auth_key, challenge, security_control)
    if not hmac.compare_digest(expected, response[5:]):
        raise DlmsAuthenticationError("HLS-GMAC response does not check out (wrong key?)")
    return counter


class SecurityContext:
    """One party's keys and system title (suite 0); the keys are kept out of its repr."""

    __slots__ = ("authentication_key", "encryption_key", "system_title")

    def __init__(self, system_title: bytes, encryption_key: bytes, authentication_key: bytes):
        _check(system_title, 0, encryption_key, authentication_key)
        self.system_title = system_title
        self.encryption_key = encryption_key
        self.authentication_key = authentication_key

    def __repr__(self) -> str:
        return f"SecurityContext(system_title={self.system_title.hex()}, keys=<hidden>)"

    def encrypt(self, invocation_counter: int, plaintext: bytes, sc: int = 0x30) -> bytes:
        """Cipher ``plaintext`` as sent by this party (its own system title)."""
        return encrypt(
            sc,
            self.system_title,
            invocation_counter,
            self.encryption_key,
            self.authentication_key,
            plaintext,
        )

    def decrypt(
        self, peer_title: bytes, invocation_counter: int, payload: bytes, sc: int = 0x30
    ) -> bytes:
        """Decipher a payload sent by the peer with system title ``peer_title``."""
        keys = (self.encryption_key, self.authentication_key)
        return decrypt(sc, peer_title, invocation_counter, *keys, payload)
