"""The load-profile backfill: a 6-hour agent outage end to end (sim dlms + agent + mosquitto
+ collector), a meter power outage (nothing invented, the first entry after it flagged),
and the cursor (kept in the agent's buffer with the entries: a crash between read and commit
reads again, a re-read of stored entries is a duplicate at the head-end, never a
conflict)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.buffer import Buffer, Capture
from agent.config import DlmsSettings
from agent.drivers.dlms import DlmsMeter, DlmsOutcome, ProfileEntry
from agent.drivers.dlms.profile import ProfileReader, ProfileRows, _chunk_ms
from agent.scheduler import BusScheduler, ScheduledMeter
from collector.ingest import Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from firmware_sim.dlms import DLMS_OBJECTS, register_integer
from firmware_sim.model import MeterModel
from meterlink.procs import Proc, wait_for
from protocols.clock import ClockSetting, format_utc_ms
from protocols.dlms.profile import CaptureObject
from protocols.obis import Obis, quantity_for
from protocols.record import ClockSource, Quality, Value, decode_record
from protocols.units import convert, unit_by_code
from tests.collector._fixtures import message, write_public_key
from tests.support.loopback import loopback, meterlink_proc, query

START = datetime(2026, 11, 1, tzinfo=UTC)
START_MS = int(START.timestamp()) * 1000
ORIGIN = "2026-10-01T00:00:00Z"  # the model's origin: registers well above zero
ORIGIN_NS = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp()) * 10**9
OFFSET_S = 90  # the meter's clock runs 90 s ahead: its entries are never on a read's stamp
PERIOD_MS = 900_000
HOUR_MS = 3_600_000
PROFILE = Obis.parse("1-0:99.1.0")
ENERGY = [Obis.parse(c) for c in ("1-0:1.8.0", "1-0:2.8.0", "1-0:3.8.0", "1-0:4.8.0")]
STANDING = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))


def _sim(meter: str, clock: ClockSetting, tmp_path: Path) -> tuple[Proc, str, int]:
    sim = meterlink_proc(
        "sim", "dlms", "--port", "0", "--meter-id", meter, "--seed", "5", "--origin", ORIGIN,
        "--clock", str(clock), "--clock-offset", str(OFFSET_S), "--deviation", "-60",
        "--profile-period", "15m", name="sim", log_path=tmp_path / "sim.log", stdin_pipe=True,
    )  # fmt: skip
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
    except BaseException:
        sim.stop()
        raise
    host, _, port = line.split()[2].rpartition(":")
    return sim, host, int(port)


def _expected(meter: str, entry_ms: int) -> dict[str, Decimal]:
    """The entry at meter time ``entry_ms``: the registers at the true instant, exact."""
    model = MeterModel(meter, 5, origin_ns=ORIGIN_NS)
    values = model.values_at((entry_ms - OFFSET_S * 1000) * 10**6)
    out = {}
    for obis in ENERGY:
        spec = DLMS_OBJECTS[obis]
        raw = Decimal(register_integer(spec, values[obis])).scaleb(spec.scaler)
        quantity = quantity_for(obis)
        assert quantity is not None
        out[str(obis)] = convert(raw, unit_by_code(spec.unit_code).symbol, quantity.unit)
    return out


@pytest.mark.integration
def test_six_hour_agent_outage_is_backfilled_without_a_gap(tmp_path: Path) -> None:
    """The agent is killed (SIGKILL), 6 virtual hours pass (with a 75-minute power outage of
    the meter in them), the agent starts again: every 15-minute entry of the whole window is
    stored at the collector once, with the meter's timestamp, exactly the meter's values;
    the entries of the meter's outage are missing and the first after it is flagged."""
    speed = 3600
    clock = ClockSetting.accelerated(START, time.time_ns() + 2 * 10**9, Decimal(speed))
    meter = "dl-bf"
    db = tmp_path / "collector" / "collector.sqlite"

    def entries() -> list[tuple]:
        return query(
            db,
            "SELECT captured_ms, obis, value, flags, clock_source FROM readings WHERE "
            f"captured_ms % {PERIOD_MS} = 0 ORDER BY captured_ms, obis",
        )

    with loopback(tmp_path) as lb:
        sim, host, port = _sim(meter, clock, tmp_path)
        lb.procs.append(sim)
        collector_toml = lb.collector_config("c-bf")
        agent_toml = tmp_path / "agent" / "agent.toml"
        agent_toml.parent.mkdir()
        agent_toml.write_text(
            '[gateway]\nid = "gw-bf"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {lb.broker.port}\nbatch_max_records = 50\n\n'
            f'[[meters]]\nid = "{meter}"\ndriver = "dlms"\nhost = "{host}"\nport = {port}\n'
            'objects = ["1-0:1.8.0"]\ninterval = "15m"\ntimeout = "5s"\nretries = 1\n'
            'load_profile = "1-0:99.1.0"\nbackfill_limit = "2h"\nclock_limit = "1h"\n'
        )
        lb.enrol(agent_toml, collector_toml, "gw-bf", [meter])
        lb.start("collector", "collector", "run", str(collector_toml), "--clock", str(clock))
        agent = lb.start("agent", "agent", "run", str(agent_toml), "--clock", str(clock))
        # the first backfill (2 hours) and two more quarter hours at the collector
        wait_for(lambda: len({r[0] for r in entries()}) >= 11, timeout=60, what="11 entries")
        agent.kill()  # SIGKILL: whatever was read and not committed is read again
        killed_ms = clock.virtual_ns(time.time_ns()) // 10**6
        # the meter loses power from 1 h to 2 h 15 after the kill (its own clock)
        sim.send_line("outage +3600 +8100")
        sim.wait_line(lambda text: text.startswith("OK outage"))
        outage = next(
            (int(a), int(b))
            for _ok, _word, a, b in (line.split() for line in sim.lines if "OK outage" in line)
        )
        back_ms = killed_ms + 6 * HOUR_MS
        wait_for(
            lambda: clock.virtual_ns(time.time_ns()) // 10**6 >= back_ms,
            timeout=60,
            what="6 virtual hours of agent outage",
        )
        again = lb.start("agent2", "agent", "run", str(agent_toml), "--clock", str(clock))
        # an hour after the later of (6 h after the kill, the restart): the window's end
        ready_ms = clock.virtual_ns(time.time_ns()) // 10**6
        upto = (max(back_ms, ready_ms) + HOUR_MS) // PERIOD_MS * PERIOD_MS

        def window() -> list[int]:
            return [t for t in sorted({r[0] for r in entries()}) if t <= upto]

        def complete() -> bool:
            times = window()
            return bool(times) and times == [
                t for t in range(times[0], upto + 1, PERIOD_MS) if not outage[0] <= t < outage[1]
            ]

        wait_for(complete, timeout=90, what="every entry up to an hour after the restart")
        assert again.stop() == 0, again.output[-3000:]
    times = window()
    rows = [r for r in entries() if r[0] <= upto]
    assert times[0] < killed_ms < back_ms < times[-1] == upto
    missing = [t for t in range(times[0], upto + 1, PERIOD_MS) if outage[0] <= t < outage[1]]
    assert len(missing) == 5  # 75 minutes without power: 5 quarter hours never captured
    wanted = [t for t in range(times[0], upto + 1, PERIOD_MS) if t not in missing]
    assert times == wanted  # no gap anywhere else, nothing invented in the outage
    assert query(db, "SELECT count(*) FROM conflicts") == [(0,)]
    first_after = min(t for t in times if t >= outage[1])
    by_time: dict[int, dict[str, tuple]] = {}
    for ms, obis, value, flags, source in rows:
        by_time.setdefault(ms, {})[obis] = (Decimal(value), flags, source)
    for ms, values in by_time.items():
        assert {o: v[0] for o, v in values.items()} == _expected(meter, ms), ms
        assert {v[2] for v in values.values()} == {int(ClockSource.METER)}
        flags = {v[1] for v in values.values()}
        assert flags == ({int(Quality.METER_STATUS)} if ms == first_after else {0}), ms
    print(
        f"backfill e2e: {len(times)} entries from {format_utc_ms(times[0])} to "
        f"{format_utc_ms(times[-1])}, agent down {format_utc_ms(killed_ms)} .. "
        f"{format_utc_ms(back_ms)}, meter outage {format_utc_ms(outage[0])} .. "
        f"{format_utc_ms(outage[1])} ({len(missing)} entries missing, first after flagged)"
    )


def _meter(port: int, host: str, cursors: Buffer | None, limit_h: int = 6) -> DlmsMeter:
    settings = DlmsSettings(
        objects=(Obis.parse("1-0:1.8.0"),),
        load_profile=PROFILE,
        backfill_limit_ns=limit_h * HOUR_MS * 10**6,
    )
    return DlmsMeter(
        "dl-c", settings, host, port, timeout=5, retries=0, cursors=cursors,
        gateway_ms=lambda: START_MS + OFFSET_S * 1000,
    )  # fmt: skip


def _captures(outcome: DlmsOutcome) -> list[Capture]:
    """What the scheduler hands the buffer for one read (its own code path)."""
    got: list[object] = []

    class Driver:
        meter_id = "dl-c"

        async def read(self) -> DlmsOutcome:
            return outcome

    scheduled = ScheduledMeter("dl-c", 900 * 10**9, Driver())
    asyncio.run(BusScheduler("t", [scheduled], ClockSetting.system(), got.append)._poll(scheduled))
    return [g for g in got if isinstance(g, Capture)]


@pytest.mark.integration
def test_meter_outage_entries_are_not_invented_and_the_first_after_is_flagged(
    tmp_path: Path,
) -> None:
    sim, host, port = _sim("dl-c", STANDING, tmp_path)
    try:
        sim.send_line("outage -10890 -7200")  # the meter's 21:00:00 .. 22:01:30
        sim.wait_line(lambda text: text.startswith("OK outage"))
        outcome = asyncio.run(_meter(port, host, None).read())
    finally:
        sim.stop()
    meter_now = START_MS + OFFSET_S * 1000
    times = [e.captured_ms for e in outcome.profile]
    first = (meter_now - 6 * HOUR_MS) // PERIOD_MS * PERIOD_MS + PERIOD_MS
    hole = range(meter_now - 10_890_000, meter_now - 7_200_000)
    assert times == [t for t in range(first, meter_now, PERIOD_MS) if t not in hole]
    assert len([t for t in range(first, meter_now, PERIOD_MS) if t in hole]) == 5
    flagged = [e.captured_ms for e in outcome.profile if e.flags & Quality.METER_STATUS]
    assert flagged == [min(t for t in times if t >= hole.stop)]
    captures = _captures(outcome)
    profile = [c for c in captures if c.profile == PROFILE]
    assert [c.captured_ms for c in profile] == times  # one capture per entry, in time order
    assert all(c.clock_source is ClockSource.METER for c in profile)
    assert [c.flags for c in profile] == [e.flags for e in outcome.profile]
    (register,) = [c for c in captures if c.profile is None]
    assert register.captured_ms == meter_now and Quality.RESTARTED in register.flags


@pytest.mark.integration
def test_cursor_crash_between_read_and_commit_reads_again_and_rereads_are_duplicates(
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "buffer.sqlite"
    sim, host, port = _sim("dl-c", STANDING, tmp_path)

    async def main() -> tuple[list[list[int]], list[bytes]]:
        seen: list[list[int]] = []
        # 1. read, then "crash" before the commit: nothing stored, the cursor did not move
        buffer = await Buffer.open(path, "gw-c", key)
        lost = await _meter(port, host, buffer).read()
        seen.append([e.captured_ms for e in lost.profile])
        await buffer.close()
        buffer = await Buffer.open(path, "gw-c", key)
        assert buffer.profile_cursor("dl-c", PROFILE) is None
        # 2. after the restart the same entries are read again, with the same values
        meter = _meter(port, host, buffer)
        read = await meter.read()
        assert [(e.captured_ms, e.values) for e in read.profile] == [
            (e.captured_ms, e.values) for e in lost.profile
        ]
        result = await buffer.append(await asyncio.to_thread(_captures, read))
        assert len(result.seqs) == len(read.profile) + 1  # + the register capture
        assert buffer.profile_cursor("dl-c", PROFILE) == read.profile[-1].captured_ms
        # 3. the cursor is on disk with the records: a new process reads nothing new
        await buffer.close()
        buffer = await Buffer.open(path, "gw-c", key)
        assert buffer.profile_cursor("dl-c", PROFILE) == read.profile[-1].captured_ms
        seen.append([e.captured_ms for e in (await _meter(port, host, buffer).read()).profile])
        # 4. an entry stored twice (a cursor that lagged): a duplicate at the head-end
        lagging = await _meter(port, host, None).read()
        await buffer.append(await asyncio.to_thread(_captures, lagging))
        raws = [raw for _seq, raw in await buffer.oldest(10_000)]
        await buffer.close()
        return seen, raws

    try:
        (first, after_restart), raws = asyncio.run(main())
    finally:
        sim.stop()
    assert len(first) == 24 and after_restart == []
    entry_records = [r for r in map(decode_record, raws) if r.record.captured_ms % PERIOD_MS == 0]
    assert len(entry_records) == 48

    async def ingest() -> tuple[int, int, int]:
        store = await open_store(tmp_path / "collector.sqlite")
        try:
            pem = write_public_key(key, tmp_path / "gw.pem")
            await enrol_gateway(store, "gw-c", pem, ["dl-c"], START_MS)
            await Ingestor(store).ingest([message("gw-c", 1, raws)])
        finally:
            await store.close()
        con = sqlite3.connect(tmp_path / "collector.sqlite")
        try:
            ((stored, duplicates, conflicts),) = con.execute(
                "SELECT readings_stored, duplicate_readings, conflicts FROM counters"
            ).fetchall()
        finally:
            con.close()
        return stored, duplicates, conflicts

    stored, duplicates, conflicts = asyncio.run(ingest())
    # 24 entries x 4 registers once, the second read of each a duplicate; the register
    # capture twice at the same meter instant with the same value: a duplicate too
    assert (stored, duplicates, conflicts) == (24 * 4 + 1, 24 * 4 + 1, 0)


def test_a_register_value_on_an_entrys_identity_is_left_to_the_entry() -> None:
    """A meter clock that reads exactly on a capture instant: the register capture of that
    instant would share (meter, OBIS, time) with the entry, so its value is left out."""
    energy, power = Obis.parse("1-0:1.8.0"), Obis.parse("1-0:16.7.0")
    entry = ProfileEntry(START_MS, (Value(energy, Decimal("10.001"), "kWh"),), Quality.NONE)
    outcome = DlmsOutcome(
        (Value(energy, Decimal("10.002"), "kWh"), Value(power, Decimal("5"), "W")),
        [],
        START_MS,
        profile=[entry],
        profile_obis=PROFILE,
    )
    first, second = _captures(outcome)
    assert (first.profile, first.captured_ms, first.values) == (PROFILE, START_MS, entry.values)
    assert second.profile is None and [v.obis for v in second.values] == [power]


def test_the_reader_starts_after_the_cursor_and_rewinds_when_captures_were_refused() -> None:
    class Cursors:
        refused_total = 0
        committed: int | None = None

        def profile_cursor(self, meter_id: str, obis: Obis) -> int | None:
            assert (meter_id, obis) == ("dl-c", PROFILE)
            return self.committed

    cursors = Cursors()
    settings = DlmsSettings(load_profile=PROFILE, backfill_limit_ns=2 * HOUR_MS * 10**6)
    reader = ProfileReader("dl-c", settings, cursors)
    now = START_MS
    assert reader.start_ms(now) == (now - 2 * HOUR_MS, True)  # first read: the limit
    reader.handed(ProfileRows([(now - PERIOD_MS, (), Quality.NONE)]))
    assert reader.start_ms(now) == (now - PERIOD_MS, False)  # not read twice before commit
    cursors.committed = now - 3 * PERIOD_MS  # the commit lags behind what was handed out
    assert reader.start_ms(now) == (now - PERIOD_MS, False)
    cursors.refused_total = 1  # the buffer refused captures: back to what is committed
    assert reader.start_ms(now) == (now - 3 * PERIOD_MS, False)
    cursors.committed = now - 30 * 24 * HOUR_MS  # an old cursor is followed, not the limit
    reader.handed_ms = None
    assert reader.start_ms(now) == (now - 30 * 24 * HOUR_MS, False)


def test_buffer_advances_the_cursor_only_with_the_captures_it_stores(tmp_path: Path) -> None:
    def entry(ms: int) -> Capture:
        value = Value(Obis.parse("1-0:1.8.0"), Decimal(ms // PERIOD_MS), "kWh")
        return Capture("dl-c", ms, (value,), Quality.NONE, ClockSource.METER, profile=PROFILE)

    async def main() -> tuple[int | None, int | None, list[int]]:
        key = Ed25519PrivateKey.generate()
        path = tmp_path / "b.sqlite"
        buffer = await Buffer.open(path, "gw-c", key, max_records=3, when_full="stop-capture")
        # an older entry after a newer register capture is not "the clock went back"
        later = Capture("dl-c", START_MS + 10 * PERIOD_MS, (), Quality.NONE, ClockSource.METER)
        await buffer.append([later])
        result = await buffer.append([entry(START_MS + i * PERIOD_MS) for i in range(4)])
        assert result.refused == 2  # room for 2 of the 4: the cursor covers those two
        kept = buffer.profile_cursor("dl-c", PROFILE)
        await buffer.close()
        buffer = await Buffer.open(path, "gw-c", key)
        reopened = buffer.profile_cursor("dl-c", PROFILE)
        flags = [decode_record(raw).record.flags for _seq, raw in await buffer.oldest(10)]
        await buffer.close()
        return kept, reopened, flags

    kept, reopened, flags = asyncio.run(main())
    assert kept == reopened == START_MS + PERIOD_MS
    assert flags == [Quality.NONE] * 3


def test_a_range_get_is_a_day_or_what_fits_in_one_apdu() -> None:
    columns = tuple(
        CaptureObject(c, o, 2)
        for c, o in ((8, Obis(0, 0, 1, 0, 0, 255)), (1, Obis(0, 0, 96, 10, 1, 255)))
    ) + tuple(CaptureObject(3, o, 2) for o in ENERGY)

    class Session:
        def __init__(self, max_apdu: int) -> None:
            self.transport = type("T", (), {"max_apdu": max_apdu})()

    assert _chunk_ms(Session(0xFFFF), columns, 900) == 86_400_000  # type: ignore[arg-type]
    # 512 bytes: (512 - 32) // (18 + 5 x 9) = 7 entries of 15 minutes per GET
    assert _chunk_ms(Session(512), columns, 900) == 7 * PERIOD_MS  # type: ignore[arg-type]
    assert _chunk_ms(Session(10), columns, 900) == PERIOD_MS  # type: ignore[arg-type]


@pytest.mark.integration
def test_entries_stamped_beyond_the_gateways_clock_and_limit_are_not_read(
    tmp_path: Path,
) -> None:
    """A meter clock 2 hours ahead of the gateway's (limit 30 s): the backfill stops at the
    gateway's now + 30 s, so the cursor never runs into the meter's future."""
    sim, host, port = _sim("dl-c", STANDING, tmp_path)
    settings = DlmsSettings(
        objects=(Obis.parse("1-0:1.8.0"),), load_profile=PROFILE,
        backfill_limit_ns=6 * HOUR_MS * 10**6, clock_limit_ns=30 * 10**9,
    )  # fmt: skip
    gateway_now = START_MS - 2 * HOUR_MS
    meter = DlmsMeter(
        "dl-c", settings, host, port, timeout=5, retries=0, gateway_ms=lambda: gateway_now
    )
    try:
        outcome = asyncio.run(meter.read())
    finally:
        sim.stop()
    times = [e.captured_ms for e in outcome.profile]
    assert times[-1] == gateway_now  # 22:00: 22:15 .. 00:00 on the meter's clock not read
    assert times[0] == gateway_now - 6 * HOUR_MS + PERIOD_MS  # from (22:00:30 - 6 h)
