"""The root of meterlink's protocol errors, split by what the caller should do.

``DecodeError`` is bytes from the outside that do not parse: skip that unit (one record, one
batch, one frame) and go on. ``EncodeError`` is a local mistake: a value that cannot be put on
the wire as it is (the caller's bug or bad configuration).
"""

from __future__ import annotations

__all__ = ["DecodeError", "EncodeError", "ProtocolError"]


class ProtocolError(Exception):
    """Root of the errors raised by ``protocols/``; not raised itself."""

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise DecodeError or EncodeError, not ProtocolError")
        super().__init__(message)


class DecodeError(ProtocolError):
    """Bytes from a peer that do not parse; the message says where."""


class EncodeError(ProtocolError):
    """A value that cannot be encoded as given."""
