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

from .buffer import Buffer, Capture, DiskFullError, ReadError

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
        self._disk_full_logged = False
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
            except DiskFullError as exc:
                # SQLITE_FULL: apply the buffer policy instead of retrying forever.
                await self._disk_full(captures, errors, exc)
                continue
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
            if self._disk_full_logged:
                self._disk_full_logged = False
                log.info("buffer writes succeed again after disk full")
            stored = len(result.seqs)
            self.records += stored
            self.readings += sum(len(c.values) for c in captures[:stored])
            self.errors += sum(1 for e in errors if e.text) + result.refused
            self.commits += 1
            if self.on_commit is not None and stored:
                self.on_commit()

    async def _disk_full(
        self, captures: list[Capture], errors: list[ReadError], exc: DiskFullError
    ) -> None:
        """The disk is full: drop-oldest makes room (losses recorded) and retries once per
        step; stop-capture (or no room to make) refuses the captures, counted as read errors.
        Never a retry loop: the next group comes with the next slot."""
        buffer = self.buffer
        now_ms = time.time_ns() // 10**6
        if buffer.when_full == "drop-oldest":
            want = max(len(captures), 1)
            for _attempt in range(4):
                try:
                    if not await buffer.drop_oldest(want, "disk full: drop-oldest", now_ms):
                        break
                    result = await buffer.append(captures, errors, now_ms=now_ms)
                except DiskFullError:
                    want *= 4
                    continue
                self.records += len(result.seqs)
                self.readings += sum(len(c.values) for c in captures[: len(result.seqs)])
                self.errors += sum(1 for e in errors if e.text) + result.refused
                self.commits += 1
                if self.on_commit is not None and result.seqs:
                    self.on_commit()
                return
        if not self._disk_full_logged:
            log.error(
                "%s; when_full=%s: refusing %d captures (counted as read errors 'disk full')",
                exc,
                buffer.when_full,
                len(captures),
            )
            self._disk_full_logged = True
        self.errors += len(captures) + sum(1 for e in errors if e.text)
        await buffer.note_refused(captures, "disk full")
