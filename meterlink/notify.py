"""Receive systemd-style readiness notifications (``READY=1``) from child processes.

The agent and the collector are ``Type=notify`` services: they tell systemd through the
datagram socket named in ``NOTIFY_SOCKET`` when they are ready. The demo and the tests play
systemd's part with this class, so they wait for real readiness, not for a guessed delay,
and the services' notify path is exercised on every run.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

__all__ = ["NotifySocket"]


class NotifySocket:
    """One socket per child process: ``env`` goes into the child's environment."""

    def __init__(self, directory: Path | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="ml-notify-", dir=directory)
        self.path = os.path.join(self._dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict[str, str]] = []

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path}

    def _receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(
            line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line
        )
        self.messages.append(fields)
        return fields

    def wait_for(self, key: str, value: str = "1", timeout: float = 30.0, alive=None) -> None:
        """Wait for a message carrying ``key=value`` (e.g. READY=1). ``alive`` is a callable
        that says whether the child still runs, so a crash fails fast instead of timing out."""
        if any(m.get(key) == value for m in self.messages):
            return
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {key}={value} notification within {timeout}s")
            message = self._receive(min(remaining, 0.5))
            if message is not None and message.get(key) == value:
                return
            if alive is not None and not alive():
                raise RuntimeError(f"process exited before sending {key}={value}")

    def close(self) -> None:
        self.sock.close()
        for path in (self.path,):
            if os.path.exists(path):
                os.unlink(path)
        os.rmdir(self._dir)
