"""The command tables of the SQLite store (schema version 6) and their queries.

``commands``: one row per command sent, with its reply once one arrives (the first reply
wins: a replayed command's "refused" reply never overwrites the answer to the original).
``key_retirements``: a gateway key rotated out, and when its grace period ends (then it is
revoked like ``collector revoke`` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import aiosqlite

__all__ = ["MIGRATION", "CommandRow", "SqliteCommands"]

MIGRATION = [
    """CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        gateway_id TEXT NOT NULL,
        action TEXT NOT NULL,
        args TEXT NOT NULL,
        issued_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        issued_by TEXT NOT NULL,
        key_id TEXT NOT NULL,
        reply_status TEXT,
        reply_message TEXT,
        reply_result TEXT,
        reply_at_ms INTEGER,
        reply_received_ms INTEGER,
        reply_key_id TEXT,
        reply_raw BLOB)""",
    "CREATE INDEX commands_by_gateway ON commands (gateway_id, issued_ms)",
    """CREATE TABLE key_retirements (
        gateway_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        retire_ms INTEGER NOT NULL,
        replaced_by TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (gateway_id, key_id))""",
]


class CommandRow(NamedTuple):
    id: str
    gateway_id: str
    action: str
    args: dict[str, Any]
    issued_ms: int
    expires_ms: int
    issued_by: str
    key_id: str
    reply_status: str | None
    reply_message: str | None
    reply_result: dict[str, Any] | None
    reply_at_ms: int | None
    reply_received_ms: int | None

    def state(self, now_ms: int) -> str:
        """``replied:<status>``, ``waiting`` or ``expired`` (no reply before the expiry)."""
        if self.reply_status is not None:
            return self.reply_status
        return "expired" if now_ms > self.expires_ms else "waiting"

    def to_json(self, now_ms: int) -> dict[str, Any]:
        args = dict(self.args)
        if "config" in args:  # a pushed config: its size, not its text
            args["config"] = f"<{len(args['config'])} chars>"
        return {
            "id": self.id,
            "gateway": self.gateway_id,
            "action": self.action,
            "args": args,
            "issued_ms": self.issued_ms,
            "expires_ms": self.expires_ms,
            "issued_by": self.issued_by,
            "state": self.state(now_ms),
            "reply": None
            if self.reply_status is None
            else {
                "status": self.reply_status,
                "message": self.reply_message,
                "result": self.reply_result,
                "at_ms": self.reply_at_ms,
                "received_ms": self.reply_received_ms,
            },
        }


_COLUMNS = (
    "id, gateway_id, action, args, issued_ms, expires_ms, issued_by, key_id, reply_status,"
    " reply_message, reply_result, reply_at_ms, reply_received_ms"
)


def _row(r: tuple) -> CommandRow:
    return CommandRow(
        r[0], r[1], r[2], json.loads(r[3]), *r[4:10], json.loads(r[10]) if r[10] else None,
        r[11], r[12],
    )  # fmt: skip


class SqliteCommands:
    def __init__(self, db: aiosqlite.Connection, write: Callable[[], Any]) -> None:
        self._db = db
        self._write = write

    async def add(self, row: CommandRow) -> None:
        async with self._write() as db:
            await db.execute(
                f"INSERT INTO commands ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,NULL,NULL,NULL,NULL,"
                "NULL)",
                (
                    row.id, row.gateway_id, row.action, json.dumps(row.args), row.issued_ms,
                    row.expires_ms, row.issued_by, row.key_id,
                ),
            )  # fmt: skip

    async def set_reply(
        self,
        command_id: str,
        gateway_id: str,
        status: str,
        message: str,
        result: dict[str, Any],
        at_ms: int,
        received_ms: int,
        key_id: str,
        raw: bytes,
    ) -> str:
        """Store a reply: ``stored``, ``duplicate`` (the command has one already) or
        ``unknown`` (no such command to this gateway)."""
        async with self._write() as db:
            async with db.execute(
                "SELECT reply_status FROM commands WHERE id = ? AND gateway_id = ?",
                (command_id, gateway_id),
            ) as cur:
                found = await cur.fetchone()
            if found is None:
                return "unknown"
            if found[0] is not None:
                return "duplicate"
            await db.execute(
                "UPDATE commands SET reply_status = ?, reply_message = ?, reply_result = ?,"
                " reply_at_ms = ?, reply_received_ms = ?, reply_key_id = ?, reply_raw = ?"
                " WHERE id = ?",
                (
                    status, message, json.dumps(result), at_ms, received_ms, key_id, raw,
                    command_id,
                ),
            )  # fmt: skip
        return "stored"

    async def get(self, command_id: str) -> CommandRow | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM commands WHERE id = ?", (command_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _row(row)

    async def list(
        self,
        gateway_id: str | None = None,
        limit: int = 100,
        before: tuple[int, str] | None = None,
    ) -> list[CommandRow]:
        """Newest first; ``before``: (issued_ms, id) of the last row of the previous page."""
        where: list[str] = []
        params: list[Any] = []
        if gateway_id is not None:
            where.append("gateway_id = ?")
            params.append(gateway_id)
        if before is not None:
            where.append("(issued_ms, id) < (?, ?)")
            params += list(before)
        sql = f"SELECT {_COLUMNS} FROM commands"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY issued_ms DESC, id DESC LIMIT ?"
        async with self._db.execute(sql, (*params, limit)) as cur:
            return [_row(r) for r in await cur.fetchall()]

    async def schedule_retirement(
        self, gateway_id: str, key_id: str, retire_ms: int, replaced_by: str
    ) -> None:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO key_retirements (gateway_id, key_id, retire_ms, replaced_by)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (gateway_id, key_id) DO NOTHING",
                (gateway_id, key_id, retire_ms, replaced_by),
            )

    async def retirements(self) -> list[tuple[str, str, int, str, bool]]:
        async with self._db.execute(
            "SELECT gateway_id, key_id, retire_ms, replaced_by, done FROM key_retirements"
            " ORDER BY retire_ms"
        ) as cur:
            return [(r[0], r[1], r[2], r[3], bool(r[4])) for r in await cur.fetchall()]

    async def mark_retired(self, gateway_id: str, key_id: str) -> None:
        async with self._write() as db:
            await db.execute(
                "UPDATE key_retirements SET done = 1 WHERE gateway_id = ? AND key_id = ?",
                (gateway_id, key_id),
            )
