"""The command endpoints of the JSON API (registered by ``collector.web.api``).

    GET  /api/commands[?gateway=GW&limit=N&after=CURSOR]   sent commands, newest first
    GET  /api/commands/{id}                                 one command and its reply
    POST /api/gateways/{gateway_id}/commands                send one (role operator)
         {"action": "read-now", "args": {"meter": "M"}, "wait_s": 10}

A POST signs the command with the head-end command key (``[commands] key``), stores it,
publishes it and waits up to ``wait_s`` (0..60, default 0) for the reply: 200 with the reply
when it came, 202 with ``state: waiting`` otherwise (GET the command later). The arguments
are those of ``collector command`` (docs/wire-format.md, "Commands"): ``meter``; ``from`` /
``to`` (Unix ms or ISO 8601) for ``backfill``; ``config`` (the TOML text) and ``trial_s``
for ``push-config``. A pushed config's text is never echoed back (its size is).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from collector.commands.client import CommandError, send_command
from collector.commands.keys import CommandKeyError, load_command_key
from protocols.clock import ClockSettingError, parse_utc, utc_ms
from protocols.commands import ACTIONS
from protocols.errors import EncodeError
from protocols.record import check_id

from .app import CTX, PRINCIPAL, json_error

__all__ = ["register"]

MAX_WAIT_S = 60.0
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class BadRequest(Exception):
    """Answered 400 with the message (names the field)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _instant(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return utc_ms(parse_utc(value))
        except ClockSettingError as exc:
            raise BadRequest(f"args.{name}: {exc}") from None
    raise BadRequest(f"args.{name}: Unix ms or ISO 8601 expected, got {value!r}")


def command_args(action: str, args: Any) -> dict[str, Any]:
    """Check and normalise the arguments of ``action`` (as the CLI builds them)."""
    if action not in ACTIONS:
        raise BadRequest(f"action {action!r}: must be one of {', '.join(ACTIONS)}")
    if not isinstance(args, dict):
        raise BadRequest("args: must be an object")
    out: dict[str, Any] = {}
    if action in ("read-now", "set-clock", "backfill"):
        meter = args.get("meter")
        if not isinstance(meter, str):
            raise BadRequest(f"args.meter: required for {action}")
        try:
            out["meter"] = check_id("meter", meter)
        except EncodeError as exc:
            raise BadRequest(f"args.meter: {exc}") from None
    if action == "backfill":
        out["from_ms"] = _instant(args.get("from"), "from")
        out["to_ms"] = _instant(args.get("to"), "to")
        if out["from_ms"] > out["to_ms"]:
            raise BadRequest("args.from must not be after args.to")
    if action == "push-config":
        text = args.get("config")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("args.config: the agent config's TOML text is required")
        out["config"] = text
        trial = args.get("trial_s", 60)
        if isinstance(trial, bool) or not isinstance(trial, int | float) or not 0 < trial <= 3600:
            raise BadRequest("args.trial_s: seconds in (0, 3600]")
        out["trial_s"] = trial
    return out


async def list_commands(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    query = request.query
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return json_error(400, f"limit={query.get('limit')!r}: not a whole number")
    if not 1 <= limit <= MAX_LIMIT:
        return json_error(400, f"limit={limit}: must be 1..{MAX_LIMIT}")
    before = None
    if "after" in query:
        ms, _, cid = query["after"].partition(":")
        if not ms.isdigit() or not cid:
            return json_error(400, f"after={query['after']!r}: not a cursor from 'next'")
        before = (int(ms), cid)
    rows = await ctx.store.commands.list(query.get("gateway"), limit + 1, before)
    now = _now_ms()
    page = rows[:limit]
    nxt = f"{page[-1].issued_ms}:{page[-1].id}" if len(rows) > limit else None
    return web.json_response({"items": [r.to_json(now) for r in page], "next": nxt})


async def get_command(request: web.Request) -> web.Response:
    row = await request.app[CTX].store.commands.get(request.match_info["command_id"])
    if row is None:
        return json_error(404, f"no command {request.match_info['command_id']!r}")
    return web.json_response(row.to_json(_now_ms()))


async def post_command(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    gateway_id = request.match_info["gateway_id"]
    try:
        body = await request.json()
    except ValueError:
        return json_error(400, "body: not JSON")
    if not isinstance(body, dict):
        return json_error(400, "body: must be an object")
    try:
        action = body.get("action")
        if not isinstance(action, str):
            raise BadRequest("action: required")
        args = command_args(action, body.get("args", {}))
        wait = body.get("wait_s", 0)
        if isinstance(wait, bool) or not isinstance(wait, int | float):
            raise BadRequest("wait_s: seconds expected")
        if not 0 <= wait <= MAX_WAIT_S:
            raise BadRequest(f"wait_s: 0..{MAX_WAIT_S:g}")
    except BadRequest as exc:
        return json_error(400, str(exc))
    config = ctx.config
    try:
        key = load_command_key(config.commands.key_path(config.path))
    except CommandKeyError as exc:
        return json_error(503, f"commands unavailable: {exc}")
    principal = request.get(PRINCIPAL)
    try:
        row, _outcome = await send_command(
            config,
            ctx.store,
            key,
            gateway_id,
            action,
            args,
            issued_by=f"api:{principal.name}" if principal is not None else "api",
            wait_s=float(wait),
        )
    except CommandError as exc:
        status = 404 if "not enrolled" in str(exc) else 502
        return json_error(status, str(exc))
    doc = row.to_json(_now_ms())
    return web.json_response(doc, status=200 if row.reply_status is not None else 202)


def register(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/commands", list_commands)
    r.add_get("/api/commands/{command_id}", get_command)
    r.add_post("/api/gateways/{gateway_id}/commands", post_command)
