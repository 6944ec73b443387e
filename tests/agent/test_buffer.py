"""The buffer: signed, gap-free seqs (also across SIGKILL), bounded with counted policies."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from agent.buffer import Buffer, BufferError
from agent.keys import GatewayKey, create_key
from protocols.record import decode_record
from tests.agent._helpers import capture
from tests.support.procs import Proc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def key(tmp_path: Path) -> GatewayKey:
    return create_key(tmp_path / "keys")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_records_are_signed_and_seqs_gap_free_across_restarts(tmp_path: Path, key) -> None:
    path = tmp_path / "buffer.sqlite"

    async def scenario() -> list[tuple[int, bytes]]:
        buf = await Buffer.open(path, "gw-1", key.private)
        first = await buf.append([capture("m1", 1000 + i) for i in range(5)])
        await buf.close()
        buf = await Buffer.open(path, "gw-1", key.private)
        assert buf.next_seq == 6 and buf.count == 5
        second = await buf.append([capture("m2", 2000 + i) for i in range(3)])
        assert first.seqs == [1, 2, 3, 4, 5] and second.seqs == [6, 7, 8]
        rows = await buf.oldest(100)
        await buf.close()
        return rows

    rows = run(scenario())
    assert [seq for seq, _ in rows] == list(range(1, 9))
    for seq, raw in rows:
        signed = decode_record(raw)
        assert signed.record.seq == seq and signed.record.gateway_id == "gw-1"
        assert signed.verify(key.public)


def test_buffer_of_another_gateway_is_refused(tmp_path: Path, key) -> None:
    async def scenario() -> None:
        buf = await Buffer.open(tmp_path / "b.sqlite", "gw-1", key.private)
        await buf.close()
        with pytest.raises(BufferError, match="belongs to gateway 'gw-1'"):
            await Buffer.open(tmp_path / "b.sqlite", "gw-2", key.private)

    run(scenario())


def _write_until_killed(path: Path, keys: Path, past_seq: int) -> int:
    """Run the writer process until it committed past ``past_seq``, SIGKILL it, return the
    last seq it reported committed."""
    proc = Proc.python(
        "tests.agent._buffer_writer", str(path), str(keys), cwd=REPO, name="buffer-writer"
    )
    try:
        proc.wait_line(lambda line: line.startswith("COMMITTED") and int(line[10:]) > past_seq)
    finally:
        assert proc.kill(signal.SIGKILL) == -signal.SIGKILL
    return max(int(line[10:]) for line in proc.lines if line.startswith("COMMITTED"))


async def _check_after_kill(path: Path, key: GatewayKey, committed: int) -> None:
    buf = await Buffer.open(path, "gw-kill", key.private)
    seqs = await buf.seqs()
    # every reported commit is there, and the held seqs are exactly 1..next_seq-1
    assert seqs == list(range(1, buf.next_seq))
    assert buf.next_seq - 1 >= committed
    after = await buf.append([capture("m9", 1)])
    assert after.seqs == [seqs[-1] + 1]
    await buf.close()


def test_sigkill_during_writes_loses_no_committed_record_and_leaves_no_gap(
    tmp_path: Path, key
) -> None:
    path = tmp_path / "buffer.sqlite"
    for round_ in (1, 2):
        committed = _write_until_killed(path, tmp_path / "keys", 2000 * round_)
        run(_check_after_kill(path, key, committed))


def test_drop_oldest_drops_counts_and_records_the_loss(tmp_path: Path, key, caplog) -> None:
    path = tmp_path / "b.sqlite"

    async def scenario() -> dict:
        buf = await Buffer.open(path, "gw-1", key.private, max_records=10, when_full="drop-oldest")
        await buf.append([capture("m1", i) for i in range(8)])
        result = await buf.append([capture("m1", 100 + i) for i in range(7)], now_ms=123)
        assert result.dropped == 5 and result.seqs == list(range(9, 16))
        assert await buf.seqs() == list(range(6, 16))
        await buf.close()
        buf = await Buffer.open(path, "gw-1", key.private, max_records=10)
        assert buf.dropped_total == 5 and buf.count == 10
        summary = await buf.summary()
        await buf.close()
        return summary

    summary = run(scenario())
    assert summary["losses"] == [
        {
            "first_seq": 1,
            "last_seq": 5,
            "count": 5,
            "reason": "buffer full: drop-oldest",
            "at_ms": 123,
        }
    ]
    assert summary["dropped_total"] == 5
    assert "dropped 5 oldest" in caplog.text


def test_stop_capture_refuses_and_counts_as_read_errors(tmp_path: Path, key, caplog) -> None:
    async def scenario() -> dict:
        buf = await Buffer.open(
            tmp_path / "b.sqlite", "gw-1", key.private, max_records=10, when_full="stop-capture"
        )
        result = await buf.append([capture("m1", i) for i in range(12)])
        assert result.seqs == list(range(1, 11)) and result.refused == 2
        again = await buf.append([capture("m2", 50)])
        assert again.refused == 1 and again.seqs == []
        await buf.delete_acked([(1, 3)])
        resumed = await buf.append([capture("m2", 60)])
        assert resumed.seqs == [11]  # no gap: refused captures never got a seq
        summary = await buf.summary()
        await buf.close()
        return summary

    summary = run(scenario())
    stats = {m["meter_id"]: m for m in summary["meters"]}
    assert stats["m1"]["read_errors"] == 2 and stats["m1"]["last_error"] == "buffer full"
    assert stats["m1"]["records"] == 10
    assert stats["m2"]["read_errors"] == 1 and stats["m2"]["records"] == 1
    assert summary["refused_total"] == 3 and summary["losses"] == []
    assert "buffer full" in caplog.text and "stop-capture" in caplog.text


def test_oldest_newest_exclude_and_delete_acked(tmp_path: Path, key) -> None:
    async def scenario() -> None:
        buf = await Buffer.open(tmp_path / "b.sqlite", "gw-1", key.private)
        await buf.append([capture("m1", i) for i in range(20)])
        assert [s for s, _ in await buf.oldest(3)] == [1, 2, 3]
        assert [s for s, _ in await buf.oldest(3, {1, 2, 4})] == [3, 5, 6]
        assert [s for s, _ in await buf.newest_unsent(3, {20})] == [17, 18, 19]
        assert await buf.delete_acked([(1, 5), (10, 10)]) == 6
        assert await buf.backlog() == 14
        assert [s for s, _ in await buf.oldest(2)] == [6, 7]
        first = await buf.start_batch([6, 7])
        second = await buf.start_batch([8])
        assert second == first + 1
        await buf.close()
        buf = await Buffer.open(tmp_path / "b.sqlite", "gw-1", key.private)
        assert await buf.start_batch([9]) > second  # durable: never reused (new block)
        summary = await buf.summary()
        assert summary["sent_not_acked"] == 4 and summary["oldest_unsent_seq"] == 11
        await buf.close()

    run(scenario())


def test_status_reads_a_buffer_that_is_open_for_writing(tmp_path: Path, key, capsys) -> None:
    from agent.cli import main

    cfg = tmp_path / "agent.toml"
    cfg.write_text('[gateway]\nid = "gw-1"\nstate_dir = "."\n')

    async def scenario() -> None:
        buf = await Buffer.open(tmp_path / "buffer.sqlite", "gw-1", key.private)
        await buf.append([capture("m1", 1_700_000_000_000)])
        # the writer stays open while status reads
        code = await asyncio.to_thread(main, ["status", str(cfg), "--json"])
        assert code == 0
        await buf.close()

    run(scenario())
    out = capsys.readouterr().out
    assert '"backlog": 1' in out and '"meter_id": "m1"' in out


def test_status_reader_sees_one_snapshot_while_the_agent_commits(
    tmp_path: Path, key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agent status` opens the buffer read-only while the agent writes: a commit that
    lands between two of its reads must not make the file look altered (the reads are one
    transaction). The agent's commit is made, for real, right after the reader's first
    query."""
    import aiosqlite

    path = tmp_path / "b.sqlite"

    async def main() -> dict:
        writer = await Buffer.open(path, "gw-1", key.private)
        await writer.append([capture("m1", 1000)])
        real_connect = aiosqlite.connect
        committed: list[int] = []

        def connect(*args, **kwargs):  # type: ignore[no-untyped-def]
            db = real_connect(*args, **kwargs)
            fetch = db.execute_fetchall

            async def execute_fetchall(sql, *rest):  # type: ignore[no-untyped-def]
                rows = await fetch(sql, *rest)
                if "FROM meta" in sql and not committed:  # the agent commits now
                    committed.extend((await writer.append([capture("m1", 2000)])).seqs)
                return rows

            db.execute_fetchall = execute_fetchall  # type: ignore[method-assign]
            return db

        monkeypatch.setattr(aiosqlite, "connect", connect)
        reader = await Buffer.open_readonly(path)
        try:
            return await reader.summary()
        finally:
            await reader.close()
            await writer.close()

    summary = run(main())
    assert summary["last_seq"] == 2 and summary["backlog"] == 2
