"""Child processes for the demo and the tests: free ports, readiness, clean stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "Proc",
    "free_port",
    "wait_for",
    "wait_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], object], timeout: float = 30.0, what: str = "condition"
) -> object:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout.

    This waits on an observable event (a row in a database, a port accepting), not a guess
    at how long something takes: the interval only bounds the polling cost.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(accepts, timeout, f"{host}:{port} to accept connections")


class Proc:
    """A child process whose output is collected (and searchable) while it runs."""

    def __init__(
        self,
        args: list[str],
        name: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        stdin_pipe: bool = False,
        user: str | None = None,
    ) -> None:
        """``user``: run the child as this account (root only; PostgreSQL refuses root)."""
        self.name = name
        self._log = log_path.open("a", encoding="utf-8") if log_path else None
        self.args = args
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            user=user,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def python(cls, module: str, *args: str, name: str | None = None, **kw) -> Proc:
        return cls([sys.executable, "-m", module, *args], name or module, **kw)

    def send_line(self, line: str) -> None:
        """Write one line to the child's stdin (a Proc made with ``stdin_pipe=True``)."""
        assert self.popen.stdin is not None, f"{self.name}: made without stdin_pipe"
        self.popen.stdin.write(line.rstrip("\n") + "\n")
        self.popen.stdin.flush()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        if self._log is not None:
            self._log.close()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        """Wait for an output line satisfying ``predicate``; lines already seen count too."""
        return self.wait_lines(predicate, 1, timeout)[0]

    def wait_lines(
        self, predicate: Callable[[str], bool], count: int, timeout: float = 30.0
    ) -> list[str]:
        """Wait until ``count`` output lines satisfy ``predicate``; return the first ``count``."""
        deadline = time.monotonic() + timeout
        index = 0
        found: list[str] = []
        with self._cond:
            while True:
                while index < len(self.lines):
                    line = self.lines[index]
                    index += 1
                    if predicate(line):
                        found.append(line)
                        if len(found) == count:
                            return found
                if self.popen.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(
                        f"{self.name} exited with {self.popen.returncode} before the expected "
                        f"line; output:\n{self.output_unlocked()[-4000:]}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self.name}: expected line not seen in {timeout}s; output:\n"
                        f"{self.output_unlocked()[-4000:]}"
                    )
                self._cond.wait(min(remaining, 0.5))

    def output_unlocked(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the process group and wait for it to end; returns the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
        return self.popen.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL if it does not end within ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._reader.join(timeout=5)
        return self.popen.returncode
