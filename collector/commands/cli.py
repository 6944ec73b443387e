"""The command and gateway-lifecycle parts of ``meterlink collector``.

    command GATEWAY ACTION [options] --config CONFIG   send a command, wait for its reply
        ping | read-now --meter M | set-clock --meter M
        backfill --meter M --from ISO --to ISO | push-config --file AGENT.toml [--trial 60s]
        rotate-key
        [--timeout 60s] [--no-wait] [--json]
    commands --config CONFIG [--gateway GW] [--limit N] [--json]   sent commands, replies
    gateways --config CONFIG [--json]      enrolled gateways, keys (and retirements), status
    rotate GATEWAY --public-key FILE --config CONFIG [--grace 7d]   out-of-band rotation
    keys init --config CONFIG [--force]    make the head-end command key (mode 0600)

``command`` exit codes: 0 reply ok, 3 reply error / refused / rolled-back, 4 no reply in
time (the command may still run before it expires; ``commands`` shows a later reply).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from protocols.clock import ClockSettingError, format_utc_ms, parse_utc

from ..config import Config, parse_duration_ms
from ..errors import CollectorError, EnrolError
from ..registry import load_public_key
from ..store import open_store
from .client import send_command
from .keys import create_command_key, load_command_key, public_path
from .replies import retire_due

__all__ = ["add_parsers", "run"]

LIFECYCLE = ("command", "commands", "gateways", "rotate", "keys")


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, required=True)
    common.add_argument("--timeout", help="how long to wait for the reply (default [commands])")
    common.add_argument("--no-wait", action="store_true", help="send, do not wait")
    common.add_argument("--json", action="store_true", help="the stored command as JSON")
    common.add_argument("--expiry", help="the command expires after this (default [commands])")
    p = sub.add_parser("command", help="send a signed command to a gateway, wait for its reply")
    p.add_argument("gateway")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("ping", parents=[common], help="is the gateway there")
    for name, text in (("read-now", "read a meter now"), ("set-clock", "set a DLMS clock")):
        a = actions.add_parser(name, parents=[common], help=text)
        a.add_argument("--meter", required=True)
    a = actions.add_parser("backfill", parents=[common], help="a DLMS load profile by range")
    a.add_argument("--meter", required=True)
    a.add_argument("--from", dest="from_", required=True, metavar="ISO")
    a.add_argument("--to", required=True, metavar="ISO")
    a = actions.add_parser("push-config", parents=[common], help="a new agent config")
    a.add_argument("--file", type=Path, required=True, help="the agent config (TOML) to push")
    a.add_argument("--trial", default="60s", help="time the new config has to read every meter")
    actions.add_parser("rotate-key", parents=[common], help="a new gateway signing key")
    p = sub.add_parser("commands", help="commands sent and their replies, newest first")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--gateway")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("gateways", help="enrolled gateways: keys, meters, last status")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("rotate", help="enrol a gateway's new key; the old retires after --grace")
    p.add_argument("gateway")
    p.add_argument("--public-key", type=Path, required=True, help="the new key's PEM file")
    p.add_argument("--grace", help="old key valid this long (default [commands] key_grace)")
    p.add_argument("--config", type=Path, required=True)
    p = sub.add_parser("keys", help="the head-end command key")
    keys = p.add_subparsers(dest="keys_action", required=True)
    k = keys.add_parser("init", help="make the command key (mode 0600) and its .pub")
    k.add_argument("--config", type=Path, required=True)
    k.add_argument("--force", action="store_true", help="replace an existing key")


def _duration_s(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration_ms(text) / 1000
    except ValueError as exc:
        raise CollectorError(f"{what}: {exc}") from None


def _ms(text: str, what: str) -> int:
    try:
        return int(parse_utc(text).timestamp() * 1000)
    except ClockSettingError as exc:
        raise CollectorError(f"{what}: {exc}") from None


async def run(config: Config, args: argparse.Namespace) -> int:
    return await {
        "command": _command,
        "commands": _commands,
        "gateways": _gateways,
        "rotate": _rotate,
        "keys": _keys,
    }[args.command](config, args)


def command_args(args: argparse.Namespace) -> dict[str, Any]:
    action = args.action
    out: dict[str, Any] = {}
    if action in ("read-now", "set-clock", "backfill"):
        out["meter"] = args.meter
    if action == "backfill":
        out["from_ms"], out["to_ms"] = _ms(args.from_, "--from"), _ms(args.to, "--to")
        if out["from_ms"] > out["to_ms"]:
            raise CollectorError("--from must not be after --to")
    if action == "push-config":
        try:
            out["config"] = args.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CollectorError(f"{args.file}: cannot read: {exc}") from None
        out["trial_s"] = _duration_s(args.trial, "--trial")
    return out


async def _command(config: Config, args: argparse.Namespace) -> int:
    key = load_command_key(config.commands.key_path(config.path))
    payload = command_args(args)
    wait = 0.0 if args.no_wait else _duration_s(args.timeout, "--timeout")
    expiry = _duration_s(args.expiry, "--expiry")
    store = await open_store(config.collector.database)
    try:
        row, outcome = await send_command(
            config,
            store,
            key,
            args.gateway,
            args.action,
            payload,
            wait_s=wait,
            expiry_ms=int(expiry * 1000) if expiry else None,
        )
    finally:
        await store.close()
    now = time.time_ns() // 1_000_000
    if args.json:
        print(json.dumps(row.to_json(now), indent=2))
    else:
        print(f"command {row.id}: {row.action} to {row.gateway_id}, expires "
              f"{format_utc_ms(row.expires_ms)}")  # fmt: skip
        if row.reply_status is not None:
            print(f"reply: {row.reply_status}: {row.reply_message}")
            if row.reply_result:
                print(json.dumps(row.reply_result, indent=2))
        elif args.no_wait:
            print("sent (not waiting for the reply)")
        else:
            print("no reply in time (it may still come: meterlink collector commands)")
    if outcome is not None and outcome.why:
        print(f"note: {outcome.why}")
    if row.reply_status is None:
        return 0 if args.no_wait else 4
    return 0 if row.reply_status == "ok" else 3


async def _commands(config: Config, args: argparse.Namespace) -> int:
    store = await open_store(config.collector.database)
    try:
        rows = await store.commands.list(args.gateway, args.limit)
    finally:
        await store.close()
    now = time.time_ns() // 1_000_000
    if args.json:
        print(json.dumps([r.to_json(now) for r in rows], indent=2))
        return 0
    for r in rows:
        reply = f": {r.reply_message}" if r.reply_message else ""
        print(f"{r.id}  {format_utc_ms(r.issued_ms)}  {r.gateway_id:<14} {r.action:<12} "
              f"{r.state(now)}{reply}")  # fmt: skip
    if not rows:
        print("no commands")
    return 0


async def _gateways(config: Config, args: argparse.Namespace) -> int:
    now = time.time_ns() // 1_000_000
    store = await open_store(config.collector.database)
    try:
        await retire_due(store, now)
        keys = await store.gateway_keys()
        bindings = await store.bindings()
        statuses = {s.gateway_id: s for s in await store.gateway_statuses()}
        retiring = {
            (gw, k): ms for gw, k, ms, _n, done in await store.commands.retirements() if not done
        }
    finally:
        await store.close()
    gateways: dict[str, dict[str, Any]] = {}
    for k in keys:
        doc = gateways.setdefault(k.gateway_id, {"gateway": k.gateway_id, "keys": [], "meters": []})
        entry = {"key_id": k.key_id, "status": k.status, "enrolled_ms": k.enrolled_ms}
        if (k.gateway_id, k.key_id) in retiring and k.status == "active":
            entry["status"] = "retiring"
            entry["retires_ms"] = retiring[(k.gateway_id, k.key_id)]
        doc["keys"].append(entry)
    for gw, meter in bindings:
        if gw in gateways:
            gateways[gw]["meters"].append(meter)
    for gw, doc in gateways.items():
        s = statuses.get(gw)
        doc["status"] = None if s is None else {
            "state": s.state, "reason": s.reason, "received_ms": s.received_ms,
            "backlog": s.backlog, "version": s.version,
        }  # fmt: skip
    if args.json:
        print(json.dumps(list(gateways.values()), indent=2))
        return 0
    for gw, doc in sorted(gateways.items()):
        s = doc["status"]
        state = (
            "no status yet"
            if s is None
            else f"{s['state']} (status {format_utc_ms(s['received_ms'])})"
        )
        print(f"{gw}: {state}; {len(doc['meters'])} meters: {', '.join(sorted(doc['meters']))}")
        for k in doc["keys"]:
            extra = f" until {format_utc_ms(k['retires_ms'])}" if "retires_ms" in k else ""
            enrolled = format_utc_ms(k["enrolled_ms"])
            print(f"  key {k['key_id']}  {k['status']}{extra}  enrolled {enrolled}")
    if not gateways:
        print("no gateways enrolled")
    return 0


async def _rotate(config: Config, args: argparse.Namespace) -> int:
    from ..registry import key_id_of
    from ..store.base import GatewayKey

    grace_s = _duration_s(args.grace, "--grace")
    grace_ms = int(grace_s * 1000) if grace_s else config.commands.key_grace_ms
    raw = load_public_key(args.public_key)
    new_id = key_id_of(raw)
    now = time.time_ns() // 1_000_000
    store = await open_store(config.collector.database)
    try:
        old = [
            k for k in await store.gateway_keys()
            if k.gateway_id == args.gateway and k.status == "active" and k.key_id != new_id
        ]  # fmt: skip
        if not old and not any(k.gateway_id == args.gateway for k in await store.gateway_keys()):
            raise EnrolError(f"gateway {args.gateway} is not enrolled (use enrol)")
        meters = [m for gw, m in await store.bindings() if gw == args.gateway]
        key = GatewayKey(args.gateway, new_id, raw, "active", now)
        await store.enrol(args.gateway, key, meters, now)
        for k in old:
            await store.commands.schedule_retirement(args.gateway, k.key_id, now + grace_ms, new_id)
    finally:
        await store.close()
    retired = ", ".join(k.key_id for k in old) or "none"
    print(
        f"gateway {args.gateway}: key {new_id} enrolled; old keys ({retired}) stay valid until "
        f"{format_utc_ms(now + grace_ms)}, then are revoked"
    )
    return 0


async def _keys(config: Config, args: argparse.Namespace) -> int:
    path = config.commands.key_path(config.path)
    key = create_command_key(path, force=args.force)
    print(f"command key {key.key_id} written to {path} (mode 0600)")
    print(f"public key: {public_path(path)}: install it on each gateway as "
          "STATE_DIR/keys/headend-command.pub")  # fmt: skip
    return 0
