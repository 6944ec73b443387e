"""DLMS/COSEM (IEC 62056), sans-IO: what ``dlms-cosem`` 21.3.2 lacks for a server and for
exact values.

* :mod:`.wrapper` -- the TCP/UDP wrapper frame of IEC 62056-47 with a bounded reassembly
  buffer;
* :mod:`.axdr` -- A-XDR encoding and decoding of the COSEM data types we use (exact integers);
* :mod:`.cosem` -- COSEM date-time <-> Unix ms, clock status, scaler_unit -> exact Decimal;
* :mod:`.apdu` -- the server side of the no-security LN association: AARQ parsing, AARE,
  GET-request-normal parsing, GET-response-normal, RLRQ/RLRE, exception-response.

Every decoder raises only :class:`DlmsDecodeError` (a ``protocols.errors.DecodeError``).
"""

from __future__ import annotations

from ..errors import DecodeError, EncodeError

__all__ = ["DlmsDecodeError", "DlmsEncodeError"]


class DlmsDecodeError(DecodeError):
    """DLMS bytes from a peer that do not parse; the message says what and where."""


class DlmsEncodeError(EncodeError):
    """A value that cannot be put on the wire as DLMS data."""
