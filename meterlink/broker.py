"""A private mosquitto broker on a loopback port, for the demo and the tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .procs import Proc, free_port, wait_port

__all__ = ["Mosquitto", "mosquitto_binary"]


def mosquitto_binary() -> str:
    """The mosquitto executable (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )
    if found is None:
        raise FileNotFoundError(
            "mosquitto is not installed: run  sudo apt-get install mosquitto  (or `make demo`, "
            "which installs it when run as root)"
        )
    return found


class Mosquitto:
    """A private mosquitto on 127.0.0.1 with persistence, as the architecture prescribes."""

    def __init__(self, workdir: Path, port: int | None = None, acl: str | None = None) -> None:
        """``acl``: the text of a mosquitto ACL file (``topic read|write|readwrite PATTERN``
        lines) to enforce for anonymous clients; None lets everyone do everything."""
        self.workdir = workdir
        self.port = port or free_port()
        self.data = workdir / "mosquitto-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.data}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
        ]
        if acl is not None:
            acl_path = workdir / "mosquitto.acl"
            acl_path.write_text(acl)
            lines.append(f"acl_file {acl_path}")
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: Proc | None = None

    def start(self) -> Mosquitto:
        self.proc = Proc([mosquitto_binary(), "-c", str(self.conf)], "mosquitto")
        try:
            wait_port(self.port)
        except TimeoutError:
            self.proc.kill()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
