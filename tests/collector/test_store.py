"""The store on both backends (a SQLite file, a PostgreSQL database): schema, reopen, one
transaction per write, and every read and write the collector makes through it (registry,
ingest, VEE, bills, fleet, commands), checked against the tables themselves."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.commands.store import CommandRow
from collector.store import (
    ConflictRow,
    GatewayKey,
    IngestWrite,
    QuarantineRow,
    ReadingRow,
    RecordRow,
    StatusRow,
    StoreConflict,
)
from collector.store.sqlite import SCHEMA_VERSION
from collector.store.vee_sqlite import ValidationRow, VeeWrite

from ._stores import BACKENDS, Backend, make_backend


def run(coro):
    return asyncio.run(coro)


IMPORT = ("em-sdm-01", "1-0:1.8.0")
CONFLICT = ConflictRow(*IMPORT, 2000, "12", "kWh", "gw-1", 2, "13", "kWh", "gw-2", 7, 50)


def reading(seq: int, ms: int, value: str = "1.5", obis: str = "1-0:1.8.0") -> ReadingRow:
    return ReadingRow("em-sdm-01", obis, ms, value, "kWh", 0, 1, "gw-1", seq)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request, tmp_path)


async def with_store(backend: Backend, work: Callable[[Any], Any]) -> Any:
    store = await backend.open()
    try:
        return await work(store)
    finally:
        await store.close()


async def write(store: Any, rows: IngestWrite) -> None:
    async with store.ingest_transaction() as tx:
        await tx.write(rows)


# schema and transactions ------------------------------------------------------------------


def test_new_file_gets_wal_schema_version_and_full_sync(tmp_path: Path) -> None:
    async def go():
        store = await Backend("sqlite", tmp_path / "c.sqlite").open()
        try:
            async with store._db.execute("PRAGMA synchronous") as cur:
                return (await cur.fetchone())[0]
        finally:
            await store.close()

    assert run(go()) == 2  # FULL
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_records_found_by_seq_after_reopen(backend: Backend) -> None:
    async def put(store):
        await write(
            store,
            IngestWrite(
                records=[RecordRow("gw-1", 4, "em-sdm-01", 1000, b"raw4", 1)],
                readings=[reading(4, 1000)],
            ),
        )

    async def look(store):  # a restart: nothing cached
        async with store.ingest_transaction() as tx:
            found = await tx.existing_records({"gw-1": [3, 4, 5]})
            known = await tx.existing_readings({"em-sdm-01": [1000, 2000]})
        return found, known

    run(with_store(backend, put))
    found, known = run(with_store(backend, look))
    assert found == {("gw-1", 4): b"raw4"}
    assert list(known) == [("em-sdm-01", "1-0:1.8.0", 1000)]
    assert known[("em-sdm-01", "1-0:1.8.0", 1000)].value == "1.5"


def test_a_failure_mid_write_leaves_nothing_half_written(backend: Backend) -> None:
    async def go(store):
        rows = IngestWrite(
            records=[RecordRow("gw-1", 1, "em-sdm-01", 1000, b"r", 1)],
            # the same identity twice: the readings insert fails after the records insert
            readings=[reading(1, 1000), reading(1, 1000, "2")],
            quarantine=[QuarantineRow(1, "t", "gw-1", None, None, "x", b"")],
        )
        rows.count("gw-1", "em-sdm-01").records_stored += 1
        # SQLite: the constraint; PostgreSQL: the primary key, as a lost race (run it again)
        with pytest.raises((sqlite3.IntegrityError, StoreConflict)):
            await write(store, rows)
        await write(store, IngestWrite(readings=[reading(1, 1000)]))  # usable afterwards

    run(with_store(backend, go))
    for table in ("records", "quarantine", "counters"):
        assert backend.rows(f"SELECT COUNT(*) FROM {table}") == [(0,)], table
    assert backend.rows("SELECT COUNT(*) FROM readings") == [(1,)]


def test_counters_add_up_across_transactions(backend: Backend) -> None:
    async def go(store):
        for _ in range(3):
            rows = IngestWrite()
            rows.count("gw-1", "em-sdm-01").duplicate_records += 2
            rows.count("gw-1", "em-sdm-01").rejected += 1
            await write(store, rows)
        return await store.counters()

    [(gw, meter, delta)] = run(with_store(backend, go))
    assert (gw, meter, delta.duplicate_records, delta.rejected) == ("gw-1", "em-sdm-01", 6, 3)


def test_a_newer_schema_is_refused(backend: Backend) -> None:
    run(with_store(backend, lambda store: asyncio.sleep(0)))  # made at this version
    if backend.is_pg:
        backend.rows(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'")
    else:
        with sqlite3.connect(backend.target) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        run(backend.open())


# registry and the reads of stats, quarantine and rating -------------------------------------


def test_enrol_adds_a_key_once_binds_meters_and_revoking_bumps_the_version(
    backend: Backend,
) -> None:
    key = GatewayKey("gw-1", "00112233aabbccdd", bytes(range(32)), "active", 5)

    async def go(store):
        v0 = await store.registry_version()
        first = await store.enrol("gw-1", key, ["em-1", "em-2"], 5)
        again = await store.enrol("gw-1", key, ["em-2", "em-3"], 6)
        v1 = await store.registry_version()
        before = await store.revoke_key("gw-1", key.key_id, 7)
        twice = await store.revoke_key("gw-1", key.key_id, 8)
        missing = await store.revoke_key("gw-1", "ffffffffffffffff", 8)
        return (v0, first, again, v1, before, twice, missing, await store.registry_version(),
                await store.gateway_keys(), sorted(await store.bindings()))  # fmt: skip

    v0, first, again, v1, before, twice, missing, v2, keys, bindings = run(with_store(backend, go))
    assert (v0, first, again, v1) == (0, True, False, 2)
    assert (before, twice, missing, v2) == ("active", "revoked", None, 3)
    assert keys == [GatewayKey("gw-1", key.key_id, key.public_key, "revoked", 5)]
    assert bindings == [("gw-1", "em-1"), ("gw-1", "em-2"), ("gw-1", "em-3")]
    assert backend.rows("SELECT revoked_ms FROM gateway_keys") == [(7,)]


def test_stats_quarantine_status_and_rating_reads(backend: Backend) -> None:
    async def go(store):
        rows = IngestWrite(
            readings=[reading(1, 1000, "10"), reading(2, 2000, "12"), reading(3, 3000, "15")],
            quarantine=[
                QuarantineRow(
                    9, "t/1", "gw-1", 4, "em", "bad signature (3)", b"\x00", "bad signature"
                ),
                QuarantineRow(10, "t/2", "gw-1", None, None, "unparseable batch", b"xy"),
                QuarantineRow(
                    11, "t/3", "gw-2", 5, None, "bad signature (9)", b"z", "bad signature"
                ),
            ],
            conflicts=[CONFLICT],
            statuses=[
                StatusRow("gw-2", "online", "", None, 0, 0, 1, "1.0", 40),
                StatusRow("gw-1", "online", "", 30, 3, 0, 9, "1.0", 41),
            ],
        )
        rows.count("gw-1", "em-sdm-01").readings_stored += 3
        rows.count("gw-1", "").rejected += 2
        await write(store, rows)
        # a newer status replaces the gateway's row
        await write(store, IngestWrite(statuses=[
            StatusRow("gw-1", "offline", "lost", 60, 1, 2, 10, "1.1", 61)]))  # fmt: skip
        return (
            await store.counters(),
            await store.quarantine_by_reason(),
            await store.quarantine_entries(2),
            await store.gateway_statuses(),
            [
                await store.reading_at_or_before("em-sdm-01", "1-0:1.8.0", 2500),
                await store.reading_at_or_after("em-sdm-01", "1-0:1.8.0", 2500),
                await store.reading_at_or_before("em-sdm-01", "1-0:1.8.0", 999),
            ],
            await store.conflict_count("em-sdm-01", 2000, 2000),
            await store.conflict_count("em-sdm-01", 2001, 9000),
        )

    counters, reasons, entries, statuses, points, n_in, n_out = run(with_store(backend, go))
    assert [(gw, m, d.readings_stored, d.rejected) for gw, m, d in counters] == [
        ("gw-1", "", 0, 2),
        ("gw-1", "em-sdm-01", 3, 0),
    ]
    assert reasons == [("bad signature", 2), ("unparseable batch", 1)]
    assert [(i, row.raw, row.kind) for i, row in entries] == [
        (3, b"z", "bad signature"),
        (2, b"xy", ""),
    ]
    assert statuses == [
        StatusRow("gw-1", "offline", "lost", 60, 1, 2, 10, "1.1", 61),
        StatusRow("gw-2", "online", "", None, 0, 0, 1, "1.0", 40),
    ]
    assert [tuple(p) if p else None for p in points] == [(2000, "12", "kWh"),
                                                        (3000, "15", "kWh"), None]  # fmt: skip
    assert (n_in, n_out) == (1, 0)


# VEE -------------------------------------------------------------------------------------


def test_vee_writes_return_their_ids_and_the_reads_find_them(backend: Backend) -> None:
    async def go(store):
        await write(
            store,
            IngestWrite(
                readings=[reading(1, 1000, "10"), reading(2, 2000, "9")],
                records=[RecordRow("gw-1", s, "em-sdm-01", 1000, b"r", 1) for s in (1, 2, 5, 9)],
                quarantine=[QuarantineRow(1, "t", "gw-1", 3, None, "x", b"")],
            ),
        )
        async with store.ingest_transaction() as tx:
            vee = tx.vee()
            await vee.write(
                VeeWrite(
                    validations=[
                        ValidationRow("em-sdm-01", "1-0:1.8.0", 2000, "monotonic", "error", "d", 5),
                        ValidationRow("em-sdm-01", "1-0:1.8.0", 1000, "range", "warn", "w", 5),
                    ],
                    counters={("em-sdm-01", "monotonic", "error"): 1, ("em-sdm-01", "", ""): 2},
                    intervals=[
                        (*IMPORT, 0, 1000, "1", "kWh", "actual", "delta", 5, "vee", "read"),
                        (*IMPORT, 1000, 2000, None, "kWh", "gap", "none", 5, "vee", "decrease"),
                    ],
                )
            )
            await vee.write(VeeWrite(counters={("em-sdm-01", "monotonic", "error"): 2}))
            points = await vee.points_between("em-sdm-01", "1-0:1.8.0", 0, 5000)
        async with store.vee_transaction() as op:
            undecided = await op.undecided_decreases("em-sdm-01", 0)
            flag = await op.flag(undecided[0][2])
            first = await op.audit("em-sdm-01", "1-0:1.8.0", 2000, "accept", None, undecided[0][2],
                                   "checked", "ann", 10)  # fmt: skip
            second = await op.audit("em-sdm-01", "1-0:1.8.0", 2000, "reject", None, None, "no",
                                    "bob", 11)  # fmt: skip
            swap = await op.add_swap("em-sdm-01", 1500, None, None, "job 1", "ann", 12)
            after = await op.undecided_decreases("em-sdm-01", 0)
        reads = store.vee
        return (points, undecided, flag, first, second, swap, after,
                await reads.flags("em-sdm-01", None, 10, ["error", "warn"]),
                await reads.estimates(None, None, 10), await reads.counters("em-sdm-01"),
                await reads.audit(None, 10), await reads.swaps(None),
                await reads.sequence_gaps(),
                await reads.intervals("em-sdm-01", "1-0:1.8.0", 0, 5000))  # fmt: skip

    (points, undecided, flag, first, second, swap, after, flags, estimates, counters, audit,
     swaps, gaps, intervals) = run(with_store(backend, go))  # fmt: skip
    assert [(p.captured_ms, p.value, p.has_error) for p in points] == [
        (1000, "10", False),
        (2000, "9", True),
    ]
    assert [(o, ms) for o, ms, _id in undecided] == [("1-0:1.8.0", 2000)]
    assert flag[3:5] == ("monotonic", "error")
    assert (first, second, swap) == (1, 2, 1)  # ids as the table numbered them
    assert after == []
    assert [(f.rule, f.decision) for f in flags] == [("range", None), ("monotonic", "reject")]
    assert [(e.start_ms, e.quality, e.value) for e in estimates] == [(1000, "gap", None)]
    assert counters == [("em-sdm-01", "", "", 2), ("em-sdm-01", "monotonic", "error", 3)]
    assert [(a.id, a.action, a.who) for a in audit] == [(2, "reject", "bob"), (1, "accept", "ann")]
    assert [(s.id, s.at_ms, s.old_final) for s in swaps] == [(1, 1500, None)]
    assert gaps == [("gw-1", 3, 4, 1), ("gw-1", 6, 8, 0)]  # seq 3 is in quarantine
    assert [(i.start_ms, i.quality) for i in intervals] == [(0, "actual"), (1000, "gap")]


# bills ------------------------------------------------------------------------------------


def _make(total: str, points: tuple[str, ...] = ("sp-1",)) -> Callable[[str], tuple]:
    def make(number: str) -> tuple[str, str, list[tuple]]:
        lines = [
            (sp, f"{sp}|demand", "demand", "Peak", "7.5", "kW", "2", total, None, None)
            for sp in points
        ]
        return total, json.dumps({"number": number, "total": total}), lines

    return make


def test_bills_are_numbered_in_order_and_an_issued_period_comes_back_unchanged(
    backend: Backend,
) -> None:
    async def go(store):
        bills = store.bills
        a = await bills.issue("acc-1", "2026-10", 0, 100, "EUR", 500, _make("10.00"))
        b = await bills.issue("acc-2", "2026-10", 0, 100, "EUR", 501, _make("20.00", ("sp-2",)))
        c = await bills.issue("acc-1", "2026-11", 100, 200, "EUR", 502, _make("30.00"))
        again = await bills.issue("acc-1", "2026-10", 0, 100, "EUR", 900, _make("99.99"))
        fleet = store.fleet
        return (a, b, c, again, await bills.of_account("acc-1"), await bills.by_number(b.number),
                await bills.lines([a.number, c.number]), await bills.demand_peaks("sp-1", 200),
                await fleet.bills(None, 1, 10), await fleet.bills("acc-1", 0, 1))  # fmt: skip

    a, b, c, again, of_acc1, by_number, lines, peaks, page, first = run(with_store(backend, go))
    assert (a.number, b.number, c.number) == ("B0000001", "B0000002", "B0000003")
    assert again == a and json.loads(again.document)["total"] == "10.00"
    assert [x.number for x in of_acc1] == ["B0000001", "B0000003"]
    assert by_number == b
    assert [(li.number, li.line, li.amount) for li in lines] == [
        ("B0000001", 1, "10.00"),
        ("B0000003", 1, "30.00"),
    ]
    assert peaks == ["7.5", "7.5"]
    assert [row[1] for row in page] == ["B0000002", "B0000003"]  # keyset: after seq 1
    assert [row[1] for row in first] == ["B0000001"]


def test_an_issued_bill_is_never_updated_or_deleted(backend: Backend) -> None:
    run(with_store(backend, lambda s: s.bills.issue("acc-1", "2026-10", 0, 1, "EUR", 2,
                                                     _make("1.00"))))  # fmt: skip
    for sql in (
        "UPDATE bills SET total = '0.00'",
        "DELETE FROM bills",
        "UPDATE bill_lines SET amount = '0.00'",
        "DELETE FROM bill_lines",
    ):
        with pytest.raises(backend.integrity_error(), match="never"):
            backend.rows(sql)
    assert backend.rows("SELECT total FROM bills") == [("1.00",)]
    assert backend.rows("SELECT amount FROM bill_lines") == [("1.00",)]


def test_two_bill_runs_at_once_never_hand_out_one_number_twice(backend: Backend) -> None:
    async def go():
        one, two = await backend.open(), await backend.open()
        try:

            async def issue_all(store, accounts):
                return [await store.bills.issue(acc, "2026-10", 0, 1, "EUR", 2, _make("1.00"))
                        for acc in accounts]  # fmt: skip

            return await asyncio.gather(
                issue_all(one, [f"a{i}" for i in range(8)]),
                issue_all(two, [f"b{i}" for i in range(8)] + ["a0"]),
            )
        finally:
            await one.close()
            await two.close()

    first, second = run(go())
    numbers = [b.number for b in first + second[:-1]]
    assert sorted(numbers) == [f"B{n:07d}" for n in range(1, 17)]
    assert second[-1] == first[0]  # the same account and period: the bill already issued


# fleet ------------------------------------------------------------------------------------


def test_fleet_state_round_trips_in_keyset_chunks(backend: Backend) -> None:
    async def go(store):
        fleet = store.fleet
        await fleet.save([(f"gw-{i}", {"n": i}) for i in range(5)],
                         [("em-1", "gw-1", {"m": 1})], 10)  # fmt: skip
        await fleet.save([("gw-0", {"n": 99})], [("em-1", "gw-2", {"m": 2})], 11)  # upserts
        chunks = [rows async for rows in fleet._chunks("gateway_id, doc", "fleet_gateways",
                                                       "gateway_id", size=2)]  # fmt: skip
        gateways = [chunk async for chunk in fleet.load_gateways()]
        meters = [chunk async for chunk in fleet.load_meters()]
        return chunks, gateways, meters

    chunks, gateways, meters = run(with_store(backend, go))
    assert [[gw for gw, _doc in chunk] for chunk in chunks] == [
        ["gw-0", "gw-1"],
        ["gw-2", "gw-3"],
        ["gw-4"],
    ]
    assert gateways == [[("gw-0", {"n": 99})] + [(f"gw-{i}", {"n": i}) for i in range(1, 5)]]
    assert meters == [[("em-1", "gw-2", {"m": 2})]]


def test_fleet_api_reads_page_by_key_and_count_findings(backend: Backend) -> None:
    async def go(store):
        rows = IngestWrite(
            readings=[reading(t, t * 1000, str(t), obis) for t in range(1, 6)
                      for obis in ("1-0:1.8.0", "1-0:2.8.0")],
            records=[RecordRow("gw-1", s, "em-sdm-01", 1, b"r", 1) for s in (1, 2, 3, 7)],
            quarantine=[QuarantineRow(1, "t", "gw-1", 8, None, "x", b"", "bad signature"),
                        QuarantineRow(1, "t", "gw-1", None, None, "y", b"")],
        )  # fmt: skip
        await write(store, rows)
        async with store.ingest_transaction() as tx:
            await tx.vee().write(
                VeeWrite(
                    validations=[ValidationRow("em-sdm-01", "1-0:1.8.0", t * 1000, "spike",
                                               "warn" if t % 2 else "error", "", 1)
                                 for t in range(1, 6)],
                    counters={("em-sdm-01", "spike", "warn"): 3,
                              ("em-sdm-01", "spike", "error"): 2, ("em-sdm-01", "", ""): 10},
                )
            )  # fmt: skip
        fleet = store.fleet
        pages, after = [], None
        while page := await fleet.readings("em-sdm-01", 2000, 5000, None, after, 4):
            pages.append([(ms, obis) for ms, obis, *_ in page])
            after = (page[-1][0], page[-1][1])
        flag_pages, after_id = [], 0
        while page := await fleet.flags("em-sdm-01", ["warn", "error"], after_id, 2):
            flag_pages.append([row[0] for row in page])
            after_id = page[-1][0]
        return (pages, await fleet.readings("em-sdm-01", 0, 9000, "1-0:2.8.0", (3000, "x"), 9),
                flag_pages, await fleet.flags(None, ["error"], 0, 9),
                await fleet.flag_counts(["em-sdm-01", "em-x"]), await fleet.flag_totals(),
                await fleet.seq_ranges(["gw-1", "gw-9"]), await fleet.rejections())  # fmt: skip

    pages, only_export, flag_pages, errors, counts, totals, ranges, rejections = run(
        with_store(backend, go)
    )
    walked = [key for page in pages for key in page]
    assert walked == [(ms, o) for ms in (2000, 3000, 4000) for o in ("1-0:1.8.0", "1-0:2.8.0")]
    assert [len(p) for p in pages] == [4, 2]
    assert [(row[0], row[1]) for row in only_export] == [(4000, "1-0:2.8.0"), (5000, "1-0:2.8.0")]
    assert flag_pages == [[1, 2], [3, 4], [5]]
    assert [row[0] for row in errors] == [2, 4]
    assert counts == {"em-sdm-01": {"warn": 3, "error": 2}}
    assert sorted(totals) == [("spike", "error", 2), ("spike", "warn", 3)]
    assert ranges == {"gw-1": [[1, 3], [7, 8]]}
    assert rejections == {"gw-1": {"bad signature": 1, "other": 1}}


# commands ---------------------------------------------------------------------------------


def _command(n: int, gateway: str = "gw-1", issued_ms: int = 1000) -> CommandRow:
    return CommandRow(f"c{n}", gateway, "read_now", {"meter": "em-1"}, issued_ms,
                      issued_ms + 60_000, "ann", "k1", None, None, None, None, None)  # fmt: skip


def test_commands_replies_pages_and_key_retirements(backend: Backend) -> None:
    async def go(store):
        cmds = store.commands
        for n, ms in ((1, 1000), (2, 2000), (3, 2000), (4, 3000)):
            await cmds.add(_command(n, issued_ms=ms))
        await cmds.add(_command(5, gateway="gw-2"))
        replies = [
            await cmds.set_reply("c2", "gw-1", "ok", "done", {"n": 1}, 5, 6, "k1", b"raw"),
            await cmds.set_reply("c2", "gw-1", "refused", "replay", {}, 7, 8, "k1", b"raw2"),
            await cmds.set_reply("c5", "gw-1", "ok", "", {}, 7, 8, "k1", b""),  # other gateway
        ]
        pages, before = [], None
        while page := await cmds.list("gw-1", limit=3, before=before):
            pages.append([c.id for c in page])
            before = (page[-1].issued_ms, page[-1].id)
        await cmds.schedule_retirement("gw-1", "k0", 500, "k1")
        await cmds.schedule_retirement("gw-1", "k0", 999, "k9")  # already scheduled: kept
        await cmds.schedule_retirement("gw-2", "k7", 400, "k8")
        await cmds.mark_retired("gw-2", "k7")
        return (
            replies,
            await cmds.get("c2"),
            await cmds.get("nope"),
            pages,
            await cmds.retirements(),
        )

    replies, c2, nope, pages, retirements = run(with_store(backend, go))
    assert replies == ["stored", "duplicate", "unknown"]
    assert (c2.reply_status, c2.reply_result, c2.args) == ("ok", {"n": 1}, {"meter": "em-1"})
    assert c2.state(0) == "ok" and nope is None
    assert pages == [["c4", "c3", "c2"], ["c1"]]  # newest first, ties by id
    assert retirements == [("gw-2", "k7", 400, "k8", True), ("gw-1", "k0", 500, "k1", False)]
    assert backend.rows("SELECT reply_raw FROM commands WHERE id = 'c2'") == [(b"raw",)]
