"""Group commit: pollers hand captures to one writer task, which commits all that wait.

Pollers never wait for the disk: they ``put`` a Capture (or a ReadError) and go on. The
writer takes everything queued at that moment and stores it in one transaction (one
fsync), so the commit rate adapts to the load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .buffer import Buffer, Capture, ReadError

__all__ = ["CaptureWriter"]

log = logging.getLogger("agent.writer")

_STOP = object()


class CaptureWriter:
    def __init__(
        self, buffer: Buffer, max_group: int = 10_000, on_commit: Callable[[], None] | None = None
    ) -> None:
        self.buffer = buffer
        self.max_group = max_group
        self.on_commit = on_commit
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.records = 0
        self.readings = 0
        self.errors = 0
        self.commits = 0
        self._task: asyncio.Task[None] | None = None

    def put(self, item: Capture | ReadError) -> None:
        self.queue.put_nowait(item)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="capture-writer")

    async def stop(self) -> None:
        """Store everything already queued, then end."""
        if self._task is None:
            return
        self.queue.put_nowait(_STOP)
        await self._task
        self._task = None

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            item = await self.queue.get()
            group = [item]
            while len(group) < self.max_group and not self.queue.empty():
                group.append(self.queue.get_nowait())
            if _STOP in group:
                stopping = True
                group = [i for i in group if i is not _STOP]
            captures = [i for i in group if isinstance(i, Capture)]
            errors = [i for i in group if isinstance(i, ReadError)]
            if not group:
                continue
            try:
                result = await self.buffer.append(captures, errors, now_ms=time.time_ns() // 10**6)
            except Exception:
                # Nothing was committed (the transaction rolled back): keep the group and
                # retry, the readings are not lost while the process lives.
                log.exception("buffer write of %d captures failed; retrying", len(captures))
                for i in group:
                    self.queue.put_nowait(i)
                if stopping:
                    self.queue.put_nowait(_STOP)
                    stopping = False
                await asyncio.sleep(1)
                continue
            stored = len(result.seqs)
            self.records += stored
            self.readings += sum(len(c.values) for c in captures[:stored])
            self.errors += sum(1 for e in errors if e.text) + result.refused
            self.commits += 1
            if self.on_commit is not None and stored:
                self.on_commit()
