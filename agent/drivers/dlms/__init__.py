"""The DLMS/COSEM driver (issue 4): I/O around ``protocols.dlms`` and dlms-cosem.

* ``transport``: how APDUs travel (TCP wrapper here; HDLC over TCP or a serial port in
  ``hdlc``), each one ``request(apdu) -> answer``;
* ``session``: one association on a transport (AARQ/AARE, security, GET/SET/ACTION);
* ``meter``: one read cycle of one meter (clock, registers, load profile);
* ``clock``: the meter clock, its drift against the gateway and the set-clock policy;
* ``profile``: the load-profile backfill.
"""

from .meter import DlmsMeter, DlmsOutcome, ProfileEntry

__all__ = ["DlmsMeter", "DlmsOutcome", "ProfileEntry"]
