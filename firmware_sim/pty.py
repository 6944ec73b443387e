"""A serial line for a simulated meter: a pseudo-terminal pair.

The simulator keeps the master end; the slave end is a real device node (``/dev/pts/N``)
that a client opens with pyserial like any serial port, and a symlink at a chosen path
names it (``--pty-link``). Both ends are in raw mode (no echo, no line editing, 8 bits).
Baud rate, parity and stop bits are not enforced on a pty: what the client sets is
accepted and ignored, and bytes pass at memory speed.

The simulator holds the slave open too, so that the master does not see a hang-up
(``EIO``) when a client closes its end and opens it again: the line survives clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tty
from collections.abc import Callable
from pathlib import Path

__all__ = ["PtyError", "PtyLine"]


class PtyError(OSError):
    """The pty or its symlink cannot be made."""


class PtyLine:
    """One pty pair with a symlink at ``link`` to its slave device; asyncio I/O on the
    master. ``open`` makes it, ``close`` removes the link (if it is still ours) and closes
    both ends; ``close`` may be called twice."""

    def __init__(self, link: Path) -> None:
        self.link = Path(link)
        self.master: int | None = None
        self._slave: int | None = None
        self.device = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        if self.link.is_symlink():
            self.link.unlink()  # a stale link from an earlier run
        elif self.link.exists():
            raise PtyError(errno.EEXIST, f"cannot make the pty link {self.link}: a file is there")
        master, slave = os.openpty()
        try:
            tty.setraw(master)
            tty.setraw(slave)
            os.set_blocking(master, False)
            self.device = os.ttyname(slave)
            os.symlink(self.device, self.link)
        except OSError as exc:
            os.close(master)
            os.close(slave)
            raise PtyError(
                exc.errno or errno.EIO, f"cannot make the pty link {self.link}: {exc.strerror}"
            ) from None
        self.master, self._slave = master, slave

    def start_reading(self, on_data: Callable[[bytes], None]) -> None:
        """Call ``on_data(chunk)`` from the running loop whenever the client wrote."""
        if self.master is None:
            raise PtyError(errno.EBADF, "pty not open")
        self._loop = asyncio.get_running_loop()
        master = self.master

        def readable() -> None:
            try:
                chunk = os.read(master, 4096)
            except BlockingIOError:
                return
            except OSError:  # EIO: no slave open (cannot happen while we hold it)
                return
            if chunk:
                on_data(chunk)

        self._loop.add_reader(master, readable)

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` to the client (waits while the pty buffer is full)."""
        if self.master is None:
            return
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self.master, view)
            except BlockingIOError:
                await self._writable()
                continue
            view = view[sent:]

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        assert self.master is not None
        loop.add_writer(self.master, ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_writer(self.master)

    def discard_input(self) -> None:
        """Drop what the client wrote and nobody read yet (a line reset)."""
        if self.master is None:
            return
        with contextlib.suppress(OSError):
            while os.read(self.master, 4096):
                pass

    def close(self) -> None:
        if self.master is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.master)
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == self.device:
                self.link.unlink()
        for fd in (self.master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = None

    def __enter__(self) -> PtyLine:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
