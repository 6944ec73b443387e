"""A simulated DLMS/COSEM meter (issue 4) that third-party clients can read.

* ``objects``: the COSEM objects (registers, data, clock, ...) and the meter's state;
* ``session``: one client's association and the APDUs it answers;
* ``server``: the TCP wrapper listener; ``hdlc``: HDLC on TCP or a serial pty;
* ``options``: what a meter is set up with (transport, addresses, security).
"""

from .objects import DLMS_OBJECTS, DlmsMeterState, RegisterObject, register_integer
from .options import DlmsSimOptions
from .server import DlmsSimServer

__all__ = [
    "DLMS_OBJECTS",
    "DlmsMeterState",
    "DlmsSimOptions",
    "DlmsSimServer",
    "RegisterObject",
    "register_integer",
]
