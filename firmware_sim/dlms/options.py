"""What one simulated DLMS meter is set up with (``sim dlms`` flags, ``[[dlms]]`` keys)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AUTH_LEVELS", "TRANSPORTS", "DlmsSimOptions"]

TRANSPORTS = ("wrapper", "hdlc")
AUTH_LEVELS = ("none", "lls", "hls")


@dataclass(frozen=True, slots=True)
class DlmsSimOptions:
    transport: str = "wrapper"  # "wrapper" (IEC 62056-47) | "hdlc" (IEC 62056-46)
    pty_link: Path | None = None  # hdlc on a serial pty, symlinked here (instead of TCP)
    mode_e: bool = False  # pty: answer the IEC 62056-21 mode E start at 300 baud first
    server_address: int = 1  # logical device: wPort, or the HDLC upper address
    physical_address: int = 17  # hdlc: the lower (physical) address
    auth: str = "none"  # "none" | "lls" | "hls" (HLS-GMAC, security suite 0)
    password: bytes = b""  # lls: the secret of the LLS client (client address 17)
    keys: Path | None = None  # hls: a TOML file with the keys and the meter's system title
