"""A serial port for asyncio drivers (pyserial 3.5 underneath).

pyserial opens the device non-blocking; reads come through ``loop.add_reader`` on its file
descriptor into a buffer, writes go out with ``os.write`` (waiting with ``add_writer``
while the driver's buffer is full), so nothing blocks the event loop except ``drain``,
which waits in a worker thread until the last byte has left the UART (``tcdrain``): that
is what a baud-rate switch after a message must wait for.

Open with baud rate, byte size, parity and stop bits; change them while open
(:meth:`configure`, e.g. 300 7E1 -> 9600 8N1 after an IEC 62056-21 option select); read
with a time-out; write; close (twice is fine). Errors are ``ConnectionError`` (cannot
open, the device went away) and ``TimeoutError`` (nothing within the time-out), with the
device in the text. A port is opened exclusively (``flock``): two drivers on one device
would mix their frames.

A pseudo-terminal (``/dev/pts/N``, the simulators' lines) does not enforce a line setting,
and some kernels refuse 7-bit or parity settings on it (``EINVAL``): on a pty such a
setting is then kept as wanted (``setting``) while the pty stays 8N1 (``pty_fallback``);
on a real port the error is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import warnings

import serial

__all__ = ["PARITIES", "SerialPort"]

PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}
MAX_BUFFER = 64 * 1024  # unread input kept at most (a babbling line cannot grow memory)


class SerialPort:
    def __init__(
        self,
        device: str,
        baud: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        self.device = device
        self.baud = baud
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._buffer = bytearray()
        self._data = asyncio.Event()
        self._error: str | None = None
        self.overflowed = 0  # bytes dropped because nobody read them
        self.pty_fallback = False  # a pty refused the setting: it runs 8N1 instead
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        state = "open" if self._serial is not None else "closed"
        return f"<SerialPort {self.device} {self.setting} {state}>"

    @property
    def setting(self) -> str:
        """``9600 8N1``."""
        return f"{self.baud} {self.bytesize}{self.parity}{self.stopbits}"

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    async def open(self) -> None:
        if self._serial is not None:
            return
        _check_setting(self.bytesize, self.parity, self.stopbits)
        try:
            try:
                port = self._open(self.bytesize, self.parity)
            except termios.error:
                if not _is_pty(self.device):
                    raise
                port = self._open(8, "N")
                self.pty_fallback = True
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            raise ConnectionError(
                f"cannot open serial port {self.device}: {_reason(exc)}"
            ) from None
        self._serial = port
        self._fd = port.fileno()
        self._loop = asyncio.get_running_loop()
        self._error = None
        self._buffer.clear()
        self._data = asyncio.Event()
        self._loop.add_reader(self._fd, self._readable)

    def _open(self, bytesize: int, parity: str) -> serial.Serial:
        return serial.Serial(
            self.device,
            baudrate=self.baud,
            bytesize=bytesize,
            parity=PARITIES[parity],
            stopbits=self.stopbits,
            timeout=0,
            write_timeout=0,
            exclusive=True,
        )

    def configure(
        self,
        baud: int | None = None,
        bytesize: int | None = None,
        parity: str | None = None,
        stopbits: int | None = None,
    ) -> None:
        """Change the line setting while open (takes effect for the next byte)."""
        new_bytesize = self.bytesize if bytesize is None else bytesize
        new_parity = self.parity if parity is None else parity
        new_stopbits = self.stopbits if stopbits is None else stopbits
        _check_setting(new_bytesize, new_parity, new_stopbits)
        self.baud = self.baud if baud is None else baud
        self.bytesize, self.parity, self.stopbits = new_bytesize, new_parity, new_stopbits
        if self._serial is None:
            return
        wanted = {
            "baudrate": self.baud,
            "bytesize": self.bytesize,
            "parity": PARITIES[self.parity],
            "stopbits": self.stopbits,
        }
        try:
            try:
                self._serial.apply_settings(wanted)
                self.pty_fallback = False
            except termios.error:
                if not _is_pty(self.device):
                    raise
                self._serial.apply_settings({**wanted, "bytesize": 8, "parity": "N"})
                self.pty_fallback = (self.bytesize, self.parity) != (8, "N")
        except (serial.SerialException, OSError, ValueError, termios.error) as exc:
            raise ConnectionError(
                f"serial port {self.device}: cannot set {self.setting}: {_reason(exc)}"
            ) from None

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"read error: {exc.strerror or exc}")
            return
        if not chunk:  # the device went away (USB adapter unplugged)
            self._fail("device closed")
            return
        self._buffer += chunk
        if len(self._buffer) > MAX_BUFFER:
            extra = len(self._buffer) - MAX_BUFFER
            del self._buffer[:extra]
            self.overflowed += extra
        self._data.set()

    def _fail(self, reason: str) -> None:
        self._error = reason
        if self._loop is not None and self._fd >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._data.set()

    def _check_open(self) -> None:
        if self._serial is None:
            raise ConnectionError(f"serial port {self.device}: not open")
        if self._error is not None:
            raise ConnectionError(f"serial port {self.device}: {self._error}")

    async def write(self, data: bytes) -> None:
        """Hand all of ``data`` to the driver (use :meth:`drain` to wait until sent)."""
        self._check_open()
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(self._fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(self._fd)
                continue
            except OSError as exc:
                raise ConnectionError(
                    f"serial port {self.device}: write error: {exc.strerror or exc}"
                ) from None
            view = view[sent:]

    async def drain(self) -> None:
        """Wait until every written byte has left the port (before a baud switch)."""
        self._check_open()
        assert self._serial is not None
        port = self._serial
        try:
            await asyncio.to_thread(port.flush)
        except (serial.SerialException, OSError, termios.error) as exc:
            raise ConnectionError(f"serial port {self.device}: {_reason(exc)}") from None

    async def read(self, timeout: float, limit: int = 4096) -> bytes:
        """At least one byte, at most ``limit``; ``TimeoutError`` if none came in time."""
        async with asyncio.timeout(timeout):
            while not self._buffer:
                self._check_open()
                self._data.clear()
                await self._data.wait()
        chunk = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return chunk

    async def read_until(self, terminator: bytes, timeout: float, limit: int = 256) -> bytes:
        """Bytes up to and including ``terminator`` (within ``timeout`` overall); more than
        ``limit`` bytes without it is a ``ConnectionError``."""
        async with asyncio.timeout(timeout):
            while True:
                end = self._buffer.find(terminator)
                if end >= 0:
                    line = bytes(self._buffer[: end + len(terminator)])
                    del self._buffer[: end + len(terminator)]
                    return line
                if len(self._buffer) > limit:
                    head = bytes(self._buffer[:40])
                    raise ConnectionError(
                        f"serial port {self.device}: {len(self._buffer)} bytes without "
                        f"{terminator!r}: {head!r}"
                    )
                self._check_open()
                self._data.clear()
                await self._data.wait()

    def discard_input(self) -> None:
        """Forget bytes received and not yet read."""
        self._buffer.clear()
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.reset_input_buffer()

    async def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None and self._error is None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
        self._fd = -1
        with contextlib.suppress(Exception):
            port.close()

    def __del__(self) -> None:
        if self._serial is not None:
            warnings.warn(f"{self!r} was never closed", ResourceWarning, stacklevel=1)
            with contextlib.suppress(Exception):
                self._serial.close()


def _check_setting(bytesize: int, parity: str, stopbits: int) -> None:
    if bytesize not in (5, 6, 7, 8):
        raise ValueError(f"serial byte size {bytesize}: one of 5, 6, 7, 8")
    if parity not in PARITIES:
        raise ValueError(f"serial parity {parity!r}: one of N, E, O")
    if stopbits not in (1, 2):
        raise ValueError(f"serial stop bits {stopbits}: 1 or 2")


def _is_pty(device: str) -> bool:
    return os.path.realpath(device).startswith("/dev/pts/")


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.replace("\n", " ")
