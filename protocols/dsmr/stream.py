"""A P1 port's byte stream -> telegrams and errors, sans-IO.

P1 sends a telegram every 1 s (DSMR 5) or 10 s (older); a reader that starts mid-telegram, a
noisy cable or a loose plug give partial or damaged telegrams. The reader takes chunks of any
size, yields each telegram that checks out and reports every other thing as an event, and
always resynchronises at the next ``/`` (the only byte that starts a telegram):

* bytes before a ``/`` -> :class:`Skipped` (``garbage``: the tail of a telegram we joined
  late, line noise);
* a ``/`` .. ``!`` .. CR LF that does not parse -> :class:`BadTelegram` (``crc`` for a CRC
  mismatch, ``invalid`` for anything else), then resync after its ``/``;
* a new ``/`` before the ``!`` of the current telegram -> :class:`BadTelegram`
  (``truncated``); the new ``/`` starts the next telegram;
* more than ``max_size`` bytes without an end -> :class:`BadTelegram` (``too long``).

The buffer never holds more than ``max_size`` bytes plus one chunk.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .telegram import DsmrCrcError, DsmrError, Telegram, parse_telegram

__all__ = ["NEED_DATA", "BadTelegram", "Skipped", "TelegramReader", "TelegramReceived"]

MAX_TELEGRAM = 16_384  # the largest DSMR 5 telegrams with 4 M-Bus devices are ~1.5 KiB
#: after ``!`` at most 4 CRC digits, CR, LF
_MAX_TAIL = 6


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class TelegramReceived:
    telegram: Telegram


@dataclass(frozen=True, slots=True)
class BadTelegram:
    reason: str  # "crc", "invalid", "truncated", "too long"
    message: str
    offset: int  # stream offset of the telegram's '/'
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Skipped:
    offset: int  # stream offset of the first skipped byte
    size: int


Event = TelegramReceived | BadTelegram | Skipped


class TelegramReader:
    """Feed with ``receive_data``, drain with ``next_event`` until ``NEED_DATA``.

    ``counts`` tallies events by kind (``telegrams``, ``crc``, ``invalid``, ``truncated``,
    ``too long``, ``garbage bytes``) for the driver's metrics."""

    def __init__(self, max_size: int = MAX_TELEGRAM) -> None:
        self.max_size = max_size
        self.counts: Counter[str] = Counter()
        self._buffer = bytearray()
        self._offset = 0  # stream offset of _buffer[0]

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def _take(self, size: int) -> bytes:
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._offset += size
        return out

    def next_event(self) -> Event | _NeedData:
        buf = self._buffer
        start = buf.find(b"/")
        if start != 0:
            size = len(buf) if start < 0 else start
            if size == 0:
                return NEED_DATA
            at = self._offset
            self._take(size)
            self.counts["garbage bytes"] += size
            return Skipped(at, size)
        # a telegram starts at 0
        at = self._offset
        bang = buf.find(b"!", 1)
        restart = buf.find(b"/", 1)
        if restart >= 0 and (bang < 0 or restart < bang):
            return self._bad("truncated", f"telegram at offset {at} cut off by a new '/'", restart)
        if bang < 0:
            if len(buf) > self.max_size:
                return self._too_long(at)
            return NEED_DATA
        end = buf.find(b"\n", bang)
        if end < 0 or end > bang + _MAX_TAIL:
            if len(buf) > bang + _MAX_TAIL:
                return self._bad(
                    "invalid", f"telegram at offset {at}: no CR LF within the CRC after '!'",
                    bang + 1,
                )  # fmt: skip
            return NEED_DATA
        if end + 1 > self.max_size:
            return self._too_long(at)
        raw = self._take(end + 1)
        try:
            telegram = parse_telegram(raw)
        except DsmrCrcError as exc:
            self.counts["crc"] += 1
            return BadTelegram("crc", f"stream offset {at}: {exc}", at, raw)
        except DsmrError as exc:
            self.counts["invalid"] += 1
            return BadTelegram("invalid", f"stream offset {at}: {exc}", at, raw)
        self.counts["telegrams"] += 1
        return TelegramReceived(telegram)

    def _bad(self, reason: str, message: str, size: int) -> BadTelegram:
        at = self._offset
        raw = self._take(size)
        self.counts[reason] += 1
        return BadTelegram(reason, message, at, raw)

    def _too_long(self, at: int) -> BadTelegram:
        # drop up to the next '/' (or everything): resync there
        nxt = self._buffer.find(b"/", 1)
        size = nxt if nxt > 0 else len(self._buffer)
        return self._bad("too long", f"telegram at offset {at}: over {self.max_size} bytes", size)
