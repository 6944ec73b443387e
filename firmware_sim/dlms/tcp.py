"""The TCP listener both simulated DLMS TCP transports share (the wrapper and HDLC on a TCP
port): each connection gets its own handler, fed what arrives and answering with what to
send; a connection idle for ``idle_timeout`` or broken closes alone; ``stop`` closes the
listener and every open connection and waits for them (a stopped meter leaves no task)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ..modbus_server import ListenError, check_bindable

__all__ = ["ChunkHandler", "TcpListener"]

#: fed the bytes a connection received: the bytes to send back, or None to close it
ChunkHandler = Callable[[bytes], list[bytes] | None]


class TcpListener:
    def __init__(
        self, host: str, port: int, idle_timeout: float, handler: Callable[[], ChunkHandler]
    ) -> None:
        self.host = host
        self._port = port
        self.idle_timeout = idle_timeout
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        check_bindable(self.host, self._port)
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self._port)
        except OSError as exc:
            raise ListenError(
                exc.errno, f"cannot listen on {self.host}:{self._port}: {exc.strerror}"
            ) from None

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # the connection's read ends (EOF), its task returns
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        handle = self._handler()
        try:
            while True:
                async with asyncio.timeout(self.idle_timeout):
                    chunk = await reader.read(4096)
                if not chunk:
                    return
                replies = handle(chunk)
                if replies is None:
                    return
                for reply in replies:
                    writer.write(reply)
                await writer.drain()
        except (TimeoutError, OSError):
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
