"""One DLMS/COSEM meter (one logical device): a read cycle.

One read cycle is one association: open the transport, AARQ/AARE, read the Clock
(0.0.1.0.0.255, attribute 2), then each configured object (Register, Extended Register or
Data: ``registers``), the load profile (``profile``), RLRQ/RLRE, close. The capture's
timestamp is the meter's clock (``ClockSource.METER``); the clock's status bits or an
unspecified deviation flag it ``CLOCK_SUSPECT``. Values are exact
(``protocols.dlms.cosem``).

Errors are per meter: a refused connection, a timeout, a refused association are a
``MeterReadError`` (the scheduler counts it and goes on with the next meter); an object
the meter does not have makes the capture partial. A connection is never reused after an
error: the next cycle starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import DlmsSettings
from protocols.obis import Obis
from protocols.record import Quality, Value

from ..modbus_tcp import BACKOFF_MAX, BACKOFF_START, MeterReadError
from .clock import MeterClock
from .profile import CommittedCursors, ProfileReader
from .registers import ObjectReader
from .session import AssociationRefused, DlmsSession
from .transport import ApduTransport, WrapperTransport

__all__ = ["DlmsMeter", "DlmsOutcome", "ProfileEntry", "make_transport"]

log = logging.getLogger("agent.dlms")


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """One load-profile row: its own (meter) time, values and status flags."""

    captured_ms: int
    values: tuple[Value, ...]
    flags: Quality = Quality.NONE


@dataclass(slots=True)
class DlmsOutcome:
    values: tuple[Value, ...]
    errors: list[str] = field(default_factory=list)
    meter_ms: int | None = None  # the meter's clock at the start of the read (Unix ms)
    clock_flags: Quality = Quality.NONE
    drift_ms: int | None = None  # meter clock minus gateway clock, when measured
    profile: list[ProfileEntry] = field(default_factory=list)
    profile_obis: Obis | None = None  # the Profile Generic the entries come from

    @property
    def partial(self) -> bool:
        return bool(self.errors)


def make_transport(settings: DlmsSettings, host: str, port: int, timeout: float) -> ApduTransport:
    """The transport a meter's settings ask for."""
    if settings.transport == "wrapper":
        return WrapperTransport(
            host, port, settings.client_address, settings.server_address, timeout
        )
    if settings.transport == "hdlc":
        from .hdlc import HdlcTransport  # here: only make_transport is edited for hdlc

        return HdlcTransport(settings, host, port, timeout)
    raise ConnectionError(f"transport {settings.transport!r} is not available")


class DlmsMeter:
    """One DLMS meter (one logical device) behind host:port or on a serial port."""

    def __init__(
        self,
        meter_id: str,
        settings: DlmsSettings,
        host: str = "",
        port: int = 0,
        *,
        timeout: float = 3.0,
        retries: int = 2,
        assume_deviation: int = 0,
        gateway_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        cursors: CommittedCursors | None = None,
        state_dir: Path | None = None,  # hls-gmac: where the invocation counter is kept
    ) -> None:
        self.meter_id = meter_id
        self.settings = settings
        self.state_dir = state_dir
        self.host = host
        self.port = port
        self.objects: tuple[Obis, ...] = settings.objects
        self.registers = ObjectReader(meter_id, settings.objects)
        self.timeout = timeout
        self.retries = retries
        self.assume_deviation = assume_deviation  # for a clock without a deviation
        self.gateway_ms = gateway_ms  # the gateway's (virtual) clock, Unix ms
        self.associations = 0
        self.failures = 0
        self.clock = MeterClock(meter_id, settings)  # drift, limit and set-clock policy
        self.profile: ProfileReader | None = None  # the load-profile backfill
        if settings.load_profile is not None:
            self.profile = ProfileReader(meter_id, settings, cursors, gateway_ms)
        self.description = make_transport(settings, host, port, timeout).description

    async def read(self) -> DlmsOutcome:
        reasons: list[str] = []
        delay = BACKOFF_START
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            transport = make_transport(self.settings, self.host, self.port, self.timeout)
            session = DlmsSession(transport, self.settings, self.meter_id, state_dir=self.state_dir)
            try:
                await transport.open()
                await session.open()
                self.associations += 1
                outcome = await self._read_objects(session)
            except MeterReadError:
                await session.close()
                self.failures += 1
                raise
            except AssociationRefused as exc:
                reasons.append(str(exc))
                await session.close()
                break
            except (TimeoutError, OSError) as exc:
                if str(exc) not in reasons:
                    reasons.append(str(exc))
                await session.close()
                continue
            except BaseException:
                # cancelled (the agent stopping, a pushed config taking over) or a bug: the
                # port or connection is closed all the same (a serial port stays locked
                # otherwise), without the release: the stream may be mid-answer
                session.broken = True
                await session.close()
                raise
            await session.close()
            return outcome
        self.failures += 1
        attempts = attempt + 1
        raise MeterReadError(
            f"meter {self.meter_id}: dlms at {self.description}: {'; then '.join(reasons)} "
            f"({attempts} attempt{'s' if attempts > 1 else ''})"
        )

    async def _read_objects(self, session: DlmsSession) -> DlmsOutcome:
        clock = await self.clock.read(session, self.gateway_ms, self.assume_deviation)
        errors: list[str] = list(clock.errors)
        values, object_errors = await self.registers.read(session)
        errors += object_errors
        if not values:
            raise _NoValues("; ".join(errors) or f"meter {self.meter_id}: nothing to read")
        entries: list[ProfileEntry] = []
        if self.profile is not None:  # the load-profile backfill (``profile``)
            rows = await self.profile.read(session, self.assume_deviation)
            errors += rows.errors
            entries = [ProfileEntry(ms, vals, flags) for ms, vals, flags in rows.entries]
        entries = clock.mark(entries)  # stamped by a clock beyond its limit: flagged
        await self.clock.correct(session, self.gateway_ms, self.assume_deviation)
        outcome = DlmsOutcome(tuple(values), errors, clock.stamp_ms, clock.flags, clock.drift_ms)
        if self.profile is not None:
            outcome.profile, outcome.profile_obis = entries, self.profile.obis
            self.profile.handed(rows)
        return outcome


class _NoValues(MeterReadError):
    """The meter answered, but with none of the configured objects."""
