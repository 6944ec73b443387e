"""Several collectors, one fleet state: each collector's flush merges into the stored state
(counters add, times and statuses take the newest, seq ranges their union) and takes the
others' changes back. Two ``FleetKeeper``s on two stores of one real PostgreSQL database,
fed by real ingest transactions, as two collector processes would be."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.fleet import tracking
from collector.fleet.state import (
    STATUS_REORDER_MS,
    Fleet,
    GatewayState,
    merge_gateway,
    status_is_older,
)
from collector.fleet.tracking import FleetKeeper, TrackedIngestor
from collector.ingest import Incoming, Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from protocols.status import GatewayStatus
from protocols.topics import status_topic

from ._fixtures import T0, message, record, write_public_key

GW = "gw-merge"
METERS = ["em-a", "em-b"]


@dataclass
class Member:
    """One collector's share: its store connection, fleet, keeper and tracked ingestor."""

    store: Any
    fleet: Fleet
    keeper: FleetKeeper
    ingest: TrackedIngestor


async def _member(url: str | Path) -> Member:
    store = await open_store(url)
    fleet = Fleet()
    keeper = FleetKeeper(store, fleet)
    await keeper.load()
    return Member(store, fleet, keeper, TrackedIngestor(Ingestor, store, fleet, lambda ms: ms))


def _batch(key: Ed25519PrivateKey, batch_id: int, seqs: range, received_ms: int) -> Incoming:
    raws = [record(key, GW, METERS[s % 2], s, T0 + s * 60_000).raw for s in seqs]
    return message(GW, batch_id, raws, received_ms=received_ms)


def _status(received_ms: int, **fields: Any) -> Incoming:
    return Incoming(status_topic(GW), GatewayStatus(GW, **fields).to_bytes(), received_ms)


def _run(pg_url: str | Path, tmp_path: Path, body) -> Any:  # type: ignore[no-untyped-def]
    key = Ed25519PrivateKey.generate()

    async def main() -> Any:
        first = await open_store(pg_url)
        try:
            await enrol_gateway(first, GW, write_public_key(key, tmp_path / "gw.pem"), METERS, T0)
        finally:
            await first.close()
        a, b = await _member(pg_url), await _member(pg_url)
        try:
            return await body(key, a, b)
        finally:
            await a.store.close()
            await b.store.close()

    return asyncio.run(main())


@pytest.mark.parametrize("chunk", [1000, 1], ids=["one-transaction", "one-state-a-chunk"])
def test_two_collectors_counts_add_up_in_the_store_and_in_both_views(
    pg_url: str, tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one state per chunk a flush is several transactions, with ingest committing
    between them: the sums must come out the same."""
    monkeypatch.setattr(tracking, "FLUSH_CHUNK", chunk)

    async def body(key: Ed25519PrivateKey, a: Member, b: Member) -> tuple[Member, Member, Fleet]:
        # the broker splits the batches: 1, 3, 5 to A; 2, 4, 6 to B; B also gets 1 again
        for n in range(1, 7):
            who = a if n % 2 else b
            await who.ingest.ingest([_batch(key, n, range(n * 4 - 3, n * 4 + 1), T0 + n)])
            if n == 3:  # flushes interleave with ingest
                await a.keeper.flush()
                await b.keeper.flush()
        await b.ingest.ingest([_batch(key, 7, range(1, 5), T0 + 7)])  # a duplicate batch
        # ingest committing while the flush's transaction runs
        await asyncio.gather(
            a.keeper.flush(), a.ingest.ingest([_batch(key, 8, range(25, 29), T0 + 8)])
        )
        for who in (a, b, a, b):  # each flush takes the others' changes
            await who.keeper.flush()
        reloaded = Fleet()
        await FleetKeeper(b.store, reloaded).load()
        return a, b, reloaded

    a, b, reloaded = _run(pg_url, tmp_path, body)
    for fleet in (a.fleet, b.fleet, reloaded):
        gw = fleet.gateways[GW]
        assert (gw.records, gw.batches, gw.duplicates) == (28, 8, 4)
        assert gw.seen == [[1, 28]] and gw.missing == 0
        assert gw.last_seen_ms == T0 + 8
        em_a, em_b = fleet.meters["em-a"], fleet.meters["em-b"]
        assert (em_a.records, em_a.good, em_b.records, em_b.good) == (14, 14, 14, 14)
        assert em_a.last_captured_ms == T0 + 28 * 60_000
        assert em_b.last_good_ms == T0 + 27 * 60_000
        assert em_b.last_good["1-0:1.8.0"] == ["1027.5", "kWh"]
    assert not a.fleet.dirty_gateways and not a.fleet.basis_gateways


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_an_older_status_copy_never_replaces_a_newer_one(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """(On SQLite too: the same upsert; two connections to one file stand for two
    collectors, which the SQLite store does not otherwise serve.)"""
    target = request.getfixturevalue("pg_url") if store == "postgresql" else tmp_path / "c.db"

    async def body(key: Ed25519PrivateKey, a: Member, b: Member) -> list[tuple]:
        old = _status(T0 + 1_000, state="online", at_ms=T0 + 1_000, backlog=9, last_seq=9)
        new = _status(T0 + 2_000, state="online", at_ms=T0 + 2_000, backlog=0, last_seq=12)
        await a.ingest.ingest([old])
        await a.ingest.ingest([new])
        await a.keeper.flush()
        # B is behind with its queue: the older copy reaches it after A stored the newer
        late = _status(T0 + 3_000, state="online", at_ms=T0 + 1_000, backlog=9, last_seq=9)
        await b.ingest.ingest([late])
        await b.keeper.flush()
        await a.keeper.flush()
        views = [(m.fleet.gateways[GW].backlog, m.fleet.gateways[GW].status_at_ms) for m in (a, b)]
        rows = [(s.backlog, s.at_ms) for s in await a.store.gateway_statuses()]
        # the broker's last will has no time of its own: it always applies
        await b.ingest.ingest([_status(T0 + 4_000, state="offline", reason="connection lost")])
        await b.keeper.flush()
        await a.keeper.flush()
        will = [(m.fleet.gateways[GW].status, m.fleet.gateways[GW].reason) for m in (a, b)]
        stored = [(s.state, s.reason) for s in await a.store.gateway_statuses()]
        return [*views, *rows, *will, *stored]

    assert _run(target, tmp_path, body) == [
        (0, T0 + 2_000), (0, T0 + 2_000),  # both views
        (0, T0 + 2_000),  # gateway_status
        ("offline", "connection lost"), ("offline", "connection lost"),
        ("offline", "connection lost"),
    ]  # fmt: skip


def test_merge_adds_deltas_and_a_status_much_later_wins_even_with_an_older_clock() -> None:
    stored = GatewayState(GW, records=10, batches=2, rejected={"bad signature": 1},
                          seen=[[1, 10]], last_seen_ms=500)  # fmt: skip
    basis = GatewayState(GW, records=4, rejected={"bad signature": 1}, seen=[[1, 4]])
    mine = GatewayState(GW, records=7, batches=1, rejected={"bad signature": 1, "other": 2},
                        seen=[[1, 4], [11, 13]], last_seen_ms=400)  # fmt: skip
    merged = merge_gateway(stored, mine, basis)
    assert (merged.records, merged.batches, merged.rejected) == (
        13, 3, {"bad signature": 1, "other": 2}
    )  # fmt: skip
    assert merged.seen == [[1, 13]] and merged.last_seen_ms == 500
    assert merge_gateway(stored, mine, None) == replace_meters(stored, mine)  # nothing learnt
    newer = GatewayState(GW, status="online", status_at_ms=2_000, status_received_ms=2_000,
                         last_seq=5)  # fmt: skip
    older = GatewayState(GW, status="offline", status_at_ms=1_000, status_received_ms=3_000,
                         last_seq=5)  # fmt: skip
    assert status_is_older(older, newer) and not status_is_older(newer, older)
    older.status_received_ms = 2_000 + STATUS_REORDER_MS + 1  # the gateway's clock went back
    assert not status_is_older(older, newer)
    more_captures = GatewayState(GW, status_at_ms=1_000, last_seq=6)  # clock back, seq moved on
    assert not status_is_older(more_captures, newer)
    reinstalled = GatewayState(GW, status_at_ms=2_500, last_seq=1)  # seqs from 1 again
    assert not status_is_older(reinstalled, newer)


def replace_meters(stored: GatewayState, mine: GatewayState) -> GatewayState:
    out = stored.copy()
    out.meters = mine.meters
    return out
