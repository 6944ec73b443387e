"""The shared clock setting: one definition of "now" for every process of a run.

A clock setting is a string ``START@ANCHORxSPEED`` (or ``system``):

* ``START``  -- the virtual instant at the anchor, ISO 8601 UTC, e.g. ``2026-10-31T22:00:00Z``;
* ``ANCHOR`` -- the real (system) Unix time in seconds, decimal, at which the clock starts;
* ``SPEED``  -- how many virtual seconds pass per real second (decimal, > 0).

The clock stands at START until ANCHOR and runs at SPEED from then on, so a launcher can
start every process first and have them all begin at the same virtual instant.

Every process given the same setting turns the same real instant into the same virtual
instant, so simulated meters and the agent agree on time without talking to each other.
This module only does the arithmetic; callers read the system clock and pass it in
(sans-IO: no clock is read here). Arithmetic is on integer nanoseconds, so it is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

__all__ = ["ClockSetting", "ClockSettingError", "format_utc_ms", "parse_utc", "utc_ms"]

NS_PER_S = 1_000_000_000
MAX_ANCHOR_S = 10**11  # Unix seconds; about the year 5138
MIN_SPEED = Decimal("0.000001")
MAX_SPEED = Decimal(10**9)


class ClockSettingError(ValueError):
    """A clock setting string that cannot be understood."""


def parse_utc(text: str) -> datetime:
    """Parse an ISO 8601 instant; a missing offset means UTC. Returns an aware datetime."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ClockSettingError(f"not an ISO 8601 instant: {text!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ClockSettingError(f"instant out of range: {text!r}") from None


def format_utc_ms(ms: int) -> str:
    """Format Unix milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    seconds, millis = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


def _datetime_to_ns(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1_000


def utc_ms(value: datetime) -> int:
    """An aware datetime as Unix ms, exactly (floored). ``int(value.timestamp() * 1000)``
    goes through a float and is one millisecond short for about 1.5 % of instants: a
    reading's identity named by an operator or an API call would miss it."""
    return _datetime_to_ns(value) // 1_000_000


@dataclass(frozen=True, slots=True)
class ClockSetting:
    """A virtual clock: ``virtual = start + (real - anchor) * speed``; ``system`` is speed 1."""

    start_ns: int | None = None  # None: the system clock itself
    anchor_ns: int = 0
    speed: Decimal = Decimal(1)

    @classmethod
    def system(cls) -> ClockSetting:
        return cls()

    @classmethod
    def accelerated(cls, start: datetime, anchor_real_ns: int, speed: Decimal) -> ClockSetting:
        if speed <= 0:
            raise ClockSettingError(f"clock speed must be > 0, got {speed}")
        return cls(_datetime_to_ns(start), anchor_real_ns, Decimal(speed))

    @classmethod
    def parse(cls, text: str) -> ClockSetting:
        """Parse ``system`` or ``START@ANCHORxSPEED``."""
        text = text.strip()
        if text in ("", "system"):
            return cls.system()
        try:
            start_text, rest = text.split("@", 1)
            anchor_text, speed_text = rest.split("x", 1)
            anchor = Decimal(anchor_text)
            speed = Decimal(speed_text)
        except (ValueError, InvalidOperation) as exc:
            raise ClockSettingError(
                f"clock setting {text!r} is not 'system' or 'START@ANCHORxSPEED' "
                "(e.g. 2026-10-31T22:00:00Z@1764190000.5x43200)"
            ) from exc
        if not anchor.is_finite() or not speed.is_finite():
            raise ClockSettingError(f"clock setting {text!r}: anchor and speed must be finite")
        # bounded so that the integer arithmetic below stays small (a hostile or mistyped
        # "1e900000" would otherwise build a million-digit integer)
        if not 0 <= anchor <= MAX_ANCHOR_S:
            raise ClockSettingError(
                f"clock setting {text!r}: anchor must be Unix seconds 0..{MAX_ANCHOR_S}"
            )
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ClockSettingError(
                f"clock setting {text!r}: speed must be in {MIN_SPEED}..{MAX_SPEED}"
            )
        return cls.accelerated(parse_utc(start_text), int(anchor * NS_PER_S), speed)

    @property
    def is_system(self) -> bool:
        return self.start_ns is None

    def __str__(self) -> str:
        if self.start_ns is None:
            return "system"
        start = datetime.fromtimestamp(self.start_ns // NS_PER_S, UTC)
        start_text = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        anchor = Decimal(self.anchor_ns) / NS_PER_S
        return f"{start_text}@{anchor}x{self.speed}"

    def virtual_ns(self, real_ns: int) -> int:
        """The virtual instant (Unix ns) at real instant ``real_ns`` (Unix ns)."""
        if self.start_ns is None:
            return real_ns
        if real_ns <= self.anchor_ns:
            return self.start_ns
        return self.start_ns + int((real_ns - self.anchor_ns) * self.speed)

    def real_ns(self, virtual_ns: int) -> int:
        """The real instant (Unix ns) at which the virtual clock reaches ``virtual_ns``
        (for an instant before START: the anchor, when the clock starts running)."""
        if self.start_ns is None:
            return virtual_ns
        if virtual_ns <= self.start_ns:
            return self.anchor_ns
        return self.anchor_ns + int((virtual_ns - self.start_ns) / self.speed)

    def real_seconds(self, virtual_seconds: Decimal | int) -> float:
        """A virtual duration as a real duration in seconds (for sleeping; not for values)."""
        return float(Decimal(virtual_seconds) / self.speed)
