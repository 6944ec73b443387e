"""The meter's clock: read every cycle, its drift against the gateway, the limit that
flags readings and the policy that sets the meter's clock.

Drift = meter clock - gateway clock. The gateway's clock (``DlmsMeter.gateway_ms``, the
agent's virtual clock) is read just before the GET of Clock attribute 2 is sent and just
after its answer arrived; the meter took its time somewhere in between, so the midpoint is
compared with it and the measurement is good to +/- half that round trip plus the 10 ms
resolution of a COSEM date-time (``uncertainty_ms``). Under an accelerated virtual clock
the round trip counts in virtual time (1 ms real at x3600 is 3.6 s virtual).

A clock is beyond a limit when |drift| minus that uncertainty is above it: measurement
noise (a slow round trip under a fast virtual clock) neither flags a good clock nor sets it.

Timestamps (docs/dlms.md, "the meter clock"): within ``clock_limit`` a capture carries the
meter's own time (``ClockSource.METER``), flagged only by the clock's status bits. Beyond
the limit the meter's time is not used as the capture's timestamp: the capture keeps the
gateway's (``ClockSource.GATEWAY``) and is flagged ``CLOCK_SUSPECT``, as are the load
profile entries read in that cycle (their stamps are the meter's). A meter whose clock
is years off thus neither writes readings into another billing period nor gets them
refused at the head-end as future-dated; the flag tells VEE that the meter's own
intervals are not to be trusted.

The policy (``clock_set``): when |drift| exceeds it, the meter's Clock attribute 2 is SET
to the gateway's time in the meter's own deviation, and the clock is read again. This is
done at the end of the cycle, after the values are in, so a meter that refuses the SET
(a public client has no write access: read-write-denied) or answers it badly costs only
the correction: a per-meter warning, never the readings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agent.config import DlmsSettings
from protocols.clock import format_utc_ms
from protocols.dlms import DlmsDecodeError, DlmsEncodeError
from protocols.dlms.axdr import Data, encode_data
from protocols.dlms.cosem import CosemDateTime
from protocols.obis import Obis
from protocols.record import Quality

from .session import DlmsSession, ObjectError

__all__ = [
    "CLASS_CLOCK",
    "CLOCK",
    "ClockReading",
    "ClockVerdict",
    "MeterClock",
    "read_clock",
]

log = logging.getLogger("agent.dlms")

CLASS_CLOCK = 8
CLOCK = Obis(0, 0, 1, 0, 0, 255)
RESOLUTION_MS = 10  # a COSEM date-time counts hundredths of a second


@dataclass(frozen=True, slots=True)
class ClockReading:
    meter_ms: int | None  # the meter's clock (Unix ms, UTC); None: unreadable
    flags: Quality = Quality.NONE
    error: str = ""  # why meter_ms is None
    gateway_ms: int | None = None  # the gateway's clock at the midpoint of GET and answer
    uncertainty_ms: int = 0  # +/- on the drift: half the round trip + the resolution
    deviation: int | None = None  # the meter's deviation (minutes), None: not specified

    @property
    def drift_ms(self) -> int | None:
        """Meter clock minus gateway clock."""
        if self.meter_ms is None or self.gateway_ms is None:
            return None
        return self.meter_ms - self.gateway_ms


async def read_clock(
    session: DlmsSession,
    assume_deviation: int = 0,
    gateway_ms: Callable[[], int] | None = None,
) -> ClockReading:
    """Clock attribute 2 as Unix ms, with the clock's quality flags and, with
    ``gateway_ms``, the gateway's time around the request."""
    before = gateway_ms() if gateway_ms is not None else None
    try:
        raw = await session.get(CLASS_CLOCK, CLOCK, 2)
        after = gateway_ms() if gateway_ms is not None else None
        stamp = CosemDateTime.from_data(raw)
        meter_ms = stamp.to_unix_ms(assume_deviation)
    except (ObjectError, DlmsDecodeError) as exc:
        return ClockReading(None, Quality.NONE, str(exc))
    if before is None or after is None:
        return ClockReading(meter_ms, stamp.quality, deviation=stamp.deviation)
    half = (after - before + 1) // 2
    return ClockReading(
        meter_ms,
        stamp.quality,
        gateway_ms=before + (after - before) // 2,
        uncertainty_ms=half + RESOLUTION_MS,
        deviation=stamp.deviation,
    )


@dataclass(frozen=True, slots=True)
class ClockVerdict:
    """What one cycle's clock reading means for its capture."""

    stamp_ms: int | None  # the capture's timestamp from the meter; None: the gateway's
    flags: Quality  # for the capture (and the profile entries read in the cycle)
    drift_ms: int | None
    errors: tuple[str, ...] = ()  # an unreadable clock (the capture is partial)
    reading: ClockReading | None = None
    beyond: bool = False  # |drift| > clock_limit

    def mark(self, entries: list[Any]) -> list[Any]:
        """The load-profile entries read in this cycle, flagged CLOCK_SUSPECT when the
        meter's clock (which stamped them) is beyond the limit."""
        if not self.beyond:
            return entries
        return [replace(e, flags=e.flags | Quality.CLOCK_SUSPECT) for e in entries]


@dataclass(slots=True)
class MeterClock:
    """One meter's clock across cycles: the last drift measured, whether it is beyond the
    limit, and what the set-clock policy did. Shown in the agent's status."""

    meter_id: str
    settings: DlmsSettings
    drift_ms: int | None = None
    measured_ms: int | None = None  # gateway time of the last measurement
    uncertainty_ms: int = 0
    suspect: bool = False  # |drift| > clock_limit at the last measurement
    error: str = ""  # why the last reading has no drift
    sets: int = 0  # SETs the meter accepted
    set_failures: int = 0
    last_set_ms: int | None = None  # gateway time of the last accepted SET
    set_error: str = ""  # the last refusal or failure ("" after a success)
    _pending: ClockReading | None = field(default=None, repr=False)
    _warned: str = field(default="", repr=False)  # the refusal last logged at WARNING

    @property
    def limit_ms(self) -> int:
        return self.settings.clock_limit_ns // 1_000_000

    async def read(
        self, session: DlmsSession, gateway_ms: Callable[[], int], assume_deviation: int = 0
    ) -> ClockVerdict:
        """Read the meter's clock, measure its drift, decide the capture's timestamp."""
        reading = await read_clock(session, assume_deviation, gateway_ms)
        self._pending = None
        if reading.meter_ms is None:
            self.error = reading.error
            return ClockVerdict(
                None,
                Quality.NONE,
                None,
                (f"meter {self.meter_id}: clock unreadable, gateway time used: {reading.error}",),
                reading,
            )
        drift = reading.drift_ms
        assert drift is not None and reading.gateway_ms is not None
        self.drift_ms, self.measured_ms = drift, reading.gateway_ms
        self.uncertainty_ms, self.error = reading.uncertainty_ms, ""
        # beyond only when the measurement says so for certain (its error aside): at a
        # high virtual speed a slow round trip alone must not flag a good clock
        certain = abs(drift) - reading.uncertainty_ms
        beyond = self.limit_ms > 0 and certain > self.limit_ms  # 0: clock_limit = "off"
        if beyond and not self.suspect:
            log.warning(
                "meter %s: clock off by %s (meter %s, gateway %s), beyond clock_limit %s: "
                "captures flagged CLOCK_SUSPECT and stamped with the gateway's clock",
                self.meter_id,
                _seconds(drift, reading.uncertainty_ms),
                format_utc_ms(reading.meter_ms),
                format_utc_ms(reading.gateway_ms),
                _seconds(self.limit_ms, signed=False),
            )
        elif self.suspect and not beyond:
            log.info(
                "meter %s: clock back within clock_limit %s (drift %s)",
                self.meter_id,
                _seconds(self.limit_ms, signed=False),
                _seconds(drift, reading.uncertainty_ms),
            )
        self.suspect = beyond
        set_ms = self.settings.clock_set_ns
        if set_ms is not None and certain > set_ms // 1_000_000:
            self._pending = reading  # corrected in ``correct`` once the values are in
        if beyond:
            flags = reading.flags | Quality.CLOCK_SUSPECT
            return ClockVerdict(None, flags, drift, (), reading, beyond=True)
        return ClockVerdict(reading.meter_ms, reading.flags, drift, (), reading)

    async def correct(
        self, session: DlmsSession, gateway_ms: Callable[[], int], assume_deviation: int = 0
    ) -> None:
        """The set-clock policy, when this cycle's reading asked for it: SET Clock
        attribute 2 to the gateway's time, read the clock again, log the result. Every
        failure is a warning (the cycle's values are already read)."""
        reading, self._pending = self._pending, None
        if reading is None:
            return
        deviation = reading.deviation if reading.deviation is not None else assume_deviation
        before = self.drift_ms
        try:
            # the request reaches the meter about half a round trip after it is built
            now = gateway_ms() + max(reading.uncertainty_ms - RESOLUTION_MS, 0)
            # status "not specified": the meter keeps (and updates) its own status bits
            stamp = replace(CosemDateTime.from_unix_ms(now, deviation), status=None)
            raw = encode_data(Data.octet_string(stamp.to_bytes()))
            await session.set(CLASS_CLOCK, CLOCK, 2, raw)
        except ObjectError as exc:
            self._set_failed(f"refused: {exc}", refused=True)
            return
        except (DlmsEncodeError, ConnectionError, TimeoutError) as exc:
            self._set_failed(f"failed: {exc}")
            return
        self.sets += 1
        self.last_set_ms = now
        self.set_error = self._warned = ""
        try:
            after = await self.read(session, gateway_ms, assume_deviation)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("meter %s: clock set, but not read back: %s", self.meter_id, exc)
            return
        self._pending = None  # never a second SET in one cycle
        log.info(
            "meter %s: clock set to the gateway's time: drift was %s, now %s",
            self.meter_id,
            _seconds(before),
            _seconds(after.drift_ms, self.uncertainty_ms)
            if after.drift_ms is not None
            else f"unreadable ({self.error})",
        )

    def _set_failed(self, why: str, refused: bool = False) -> None:
        self.set_failures += 1
        hint = (
            " (a public client may only read: set-clock needs an association with write "
            'access, e.g. auth = "lls" with its client_address)'
            if refused and self.settings.auth == "none"
            else ""
        )
        limit = _seconds((self.settings.clock_set_ns or 0) // 1_000_000, signed=False)
        text = f"clock not set ({_seconds(self.drift_ms)} off, clock_set {limit}): SET {why}{hint}"
        # the same refusal every cycle is logged once (the drift in the text changes)
        level = logging.DEBUG if why == self._warned else logging.WARNING
        log.log(level, "meter %s: %s", self.meter_id, text)
        self._warned = why
        self.set_error = text

    def status(self) -> dict[str, object]:
        """The per-meter clock figures of the agent's status (JSON-ready)."""
        doc: dict[str, object] = {
            "drift_ms": self.drift_ms,
            "measured_ms": self.measured_ms,
            "uncertainty_ms": self.uncertainty_ms,
            "clock_suspect": self.suspect,
            "clock_sets": self.sets,
            "clock_set_failures": self.set_failures,
        }
        if self.last_set_ms is not None:
            doc["last_set_ms"] = self.last_set_ms
        if self.error:
            doc["clock_error"] = self.error
        if self.set_error:
            doc["clock_set_error"] = self.set_error
        return doc


def _seconds(ms: int | None, plus_minus: int | None = None, signed: bool = True) -> str:
    """``+300s``, ``-0.120s (+/-0.015s)``, ``30s``."""
    if ms is None:
        return "?"
    sign = "+" if signed else ""
    text = (
        f"{ms / 1000:{sign}.3f}s"
        if plus_minus is not None or ms % 1000
        else f"{ms // 1000:{sign}d}s"
    )
    if abs(ms) >= 86_400_000:
        text += f" (~{ms / 86_400_000:+.1f} days)"
    if plus_minus is not None:
        text += f" (+/-{plus_minus / 1000:.3f}s)"
    return text
