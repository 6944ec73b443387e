"""The JSON API under ``/api/`` (docs/api.md; OpenAPI at ``/api/openapi.json``) and /metrics.

Lists are paginated by key, not by offset: a page is ``{"items": [...], "next": CURSOR}``
and the next page is the same request with ``after=CURSOR`` (``next`` is null on the last
page). ``limit`` is 1..1000 (default 100). Gateways and meters come from the in-memory fleet
state; readings, VEE findings and bills from the store. Times are Unix milliseconds (UTC);
query parameters ``from`` / ``to`` also take ISO 8601 (``2026-11-01T00:00:00Z``). Meter
values are exact decimal strings, never JSON numbers.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from protocols.clock import parse_utc

from .app import CTX, WebContext, json_error, public

__all__ = ["register"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
VEE_OUTCOMES = ("error", "warn", "info")
GATEWAY_STATES = ("online", "offline", "unknown")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadQuery(Exception):
    """A query parameter that cannot be used; answered 400 naming the parameter."""


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"limit={raw!r}: not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadQuery(f"limit={value}: must be 1..{MAX_LIMIT}")
    return value


def _time(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        return (parse_utc(raw) - _EPOCH) // timedelta(milliseconds=1)  # exact, no float
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadQuery(f"{name}={raw!r}: neither Unix ms nor ISO 8601 UTC ({exc})") from None


def _int_cursor(request: web.Request) -> int:
    raw = request.query.get("after", "0")
    if not raw.isdigit():
        raise BadQuery(f"after={raw!r}: not a cursor from a previous page's 'next'")
    return int(raw)


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise BadQuery(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
    return raw


def _flag(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in ("true", "false"):
        raise BadQuery(f"{name}={raw!r}: must be true or false")
    return raw == "true"


def _ctx(request: web.Request) -> WebContext:
    return request.app[CTX]


def _fleet(request: web.Request) -> Any:
    fleet = _ctx(request).fleet
    if fleet is None:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": "no fleet state in this server"}),
            content_type="application/json",
        )
    return fleet


def _page(items: list[Any], limit: int, cursor: Callable[[Any], str]) -> web.Response:
    """``items`` holds up to limit + 1 rows: the extra one only says there is a next page."""
    more = len(items) > limit
    items = items[:limit]
    return web.json_response(
        {"items": items, "next": cursor(items[-1]) if more and items else None},
        dumps=_dumps,
    )


def _dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _handler(func: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
    """Turn ``BadQuery`` into a 400 that names the parameter."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await func(request)
        except BadQuery as exc:
            return json_error(400, str(exc))

    wrapped.__name__ = func.__name__
    wrapped.__doc__ = func.__doc__
    wrapped.__wrapped__ = func  # type: ignore[attr-defined]
    for mark in ("meterlink_public", "meterlink_role"):
        if hasattr(func, mark):
            setattr(wrapped, mark, getattr(func, mark))
    return wrapped


# fleet ----------------------------------------------------------------------------------------


async def fleet_overview(request: web.Request) -> web.Response:
    """Counts, the offline gateways and the stale meters (the first ``limit`` of each)."""
    fleet = _fleet(request)
    limit = _limit(request)
    now = fleet.now_ms()
    offline = []
    for gateway_id in fleet.gateway_ids():
        gw = fleet.gateways[gateway_id]
        if gw.state_at(now, fleet.offline_after_ms) == "offline":
            offline.append(gw)
            if len(offline) == limit:
                break
    stale = []
    for meter_id in fleet.meter_ids():
        meter = fleet.meters[meter_id]
        if meter.stale_at(now, fleet.stale_after_ms):
            stale.append(meter)
            if len(stale) == limit:
                break
    return web.json_response(
        {
            "now_ms": now,
            "offline_after_ms": fleet.offline_after_ms,
            "stale_after_ms": fleet.stale_after_ms,
            **fleet.summary(now),
            "offline": [g.view(now, fleet.offline_after_ms) for g in offline],
            "stale": [m.view(now, fleet.stale_after_ms) for m in stale],
        },
        dumps=_dumps,
    )


async def gateways(request: web.Request) -> web.Response:
    fleet = _fleet(request)
    limit = _limit(request)
    state = _choice(request, "state", GATEWAY_STATES)
    after = request.query.get("after", "")
    now = fleet.now_ms()
    ids = fleet.gateway_ids()
    start = _bisect_after(ids, after)
    items = []
    for gateway_id in ids[start:]:
        gw = fleet.gateways[gateway_id]
        if state is not None and gw.state_at(now, fleet.offline_after_ms) != state:
            continue
        items.append(gw.view(now, fleet.offline_after_ms))
        if len(items) > limit:
            break
    return _page(items, limit, lambda g: g["gateway_id"])


async def gateway(request: web.Request) -> web.Response:
    fleet = _fleet(request)
    gateway_id = request.match_info["gateway_id"]
    gw = fleet.gateways.get(gateway_id)
    if gw is None:
        return json_error(404, f"no gateway {gateway_id!r}")
    now = fleet.now_ms()
    doc = gw.view(now, fleet.offline_after_ms)
    doc["gap_ranges"] = [list(g) for g in gw.gaps[:200]]
    doc["meter_ids"] = list(gw.meters)
    return web.json_response(doc, dumps=_dumps)


async def meters(request: web.Request) -> web.Response:
    fleet = _fleet(request)
    ctx = _ctx(request)
    limit = _limit(request)
    stale = _flag(request, "stale")
    gateway_id = request.query.get("gateway") or None
    after = request.query.get("after", "")
    now = fleet.now_ms()
    if gateway_id is not None:
        gw = fleet.gateways.get(gateway_id)
        if gw is None:
            return json_error(404, f"no gateway {gateway_id!r}")
        ids = sorted(set(gw.meters) | {m for m, s in fleet.meters.items()
                                       if s.gateway_id == gateway_id})  # fmt: skip
    else:
        ids = fleet.meter_ids()
    picked = []
    for meter_id in ids[_bisect_after(ids, after) :]:
        meter = fleet.meters.get(meter_id)
        if meter is None:
            continue
        if stale is not None and meter.stale_at(now, fleet.stale_after_ms) != stale:
            continue
        picked.append(meter)
        if len(picked) > limit:
            break
    counts = await ctx.store.fleet.flag_counts([m.meter_id for m in picked[:limit]])
    items = []
    for meter in picked:
        view = meter.view(now, fleet.stale_after_ms)
        view["vee_flags"] = counts.get(meter.meter_id, {})
        items.append(view)
    return _page(items, limit, lambda m: m["meter_id"])


async def meter(request: web.Request) -> web.Response:
    fleet = _fleet(request)
    ctx = _ctx(request)
    meter_id = request.match_info["meter_id"]
    state = fleet.meters.get(meter_id)
    if state is None:
        return json_error(404, f"no meter {meter_id!r}")
    doc = state.view(fleet.now_ms(), fleet.stale_after_ms)
    doc["vee_flags"] = (await ctx.store.fleet.flag_counts([meter_id])).get(meter_id, {})
    return web.json_response(doc, dumps=_dumps)


async def readings(request: web.Request) -> web.Response:
    """Readings of one meter captured in [from, to), oldest first (default: all)."""
    ctx = _ctx(request)
    meter_id = request.match_info["meter_id"]
    fleet = ctx.fleet
    if fleet is not None and meter_id not in fleet.meters:
        return json_error(404, f"no meter {meter_id!r}")
    limit = _limit(request)
    start = _time(request, "from", 0)
    end = _time(request, "to", 2**62)
    if start >= end:
        raise BadQuery(f"from={start} must be before to={end}")
    obis = request.query.get("obis") or None
    after = None
    raw = request.query.get("after")
    if raw:
        ms, sep, after_obis = raw.partition("~")
        if not sep or not ms.isdigit():
            raise BadQuery(f"after={raw!r}: not a cursor from a previous page's 'next'")
        after = (int(ms), after_obis)
    rows = await ctx.store.fleet.readings(meter_id, start, end, obis, after, limit + 1)
    items = [
        {
            "captured_ms": ms,
            "obis": ob,
            "value": value,
            "unit": unit,
            "flags": flags,
            "clock_source": "meter" if source == 1 else "gateway",
            "gateway_id": gw,
            "seq": seq,
        }
        for ms, ob, value, unit, flags, source, gw, seq in rows
    ]
    return _page(items, limit, lambda r: f"{r['captured_ms']}~{r['obis']}")


async def vee_flags(request: web.Request) -> web.Response:
    """VEE findings (validations), oldest first; ``outcome`` filters (default error, warn)."""
    ctx = _ctx(request)
    limit = _limit(request)
    outcome = _choice(request, "outcome", VEE_OUTCOMES)
    outcomes = [outcome] if outcome else ["error", "warn"]
    meter_id = request.query.get("meter") or None
    rows = await ctx.store.fleet.flags(meter_id, outcomes, _int_cursor(request), limit + 1)
    items = [
        {
            "id": fid,
            "meter_id": m,
            "obis": obis,
            "captured_ms": ms,
            "rule": rule,
            "outcome": out,
            "detail": detail,
            "detected_ms": detected,
        }
        for fid, m, obis, ms, rule, out, detail, detected in rows
    ]
    return _page(items, limit, lambda f: str(f["id"]))


async def bills(request: web.Request) -> web.Response:
    """Issued bills, in issuing order; ``account`` filters."""
    ctx = _ctx(request)
    limit = _limit(request)
    account = request.query.get("account") or None
    rows = await ctx.store.fleet.bills(account, _int_cursor(request), limit + 1)
    items = [
        {
            "seq": seq,
            "number": number,
            "account_id": acc,
            "period": period,
            "start_ms": start,
            "end_ms": end,
            "currency": currency,
            "total": total,
            "issued_ms": issued,
        }
        for seq, number, acc, period, start, end, currency, total, issued in rows
    ]
    return _page(items, limit, lambda b: str(b["seq"]))


async def bill(request: web.Request) -> web.Response:
    """One issued bill: its complete document, as issued."""
    ctx = _ctx(request)
    number = request.match_info["number"]
    issued = await ctx.store.bills.by_number(number)
    if issued is None:
        return json_error(404, f"no bill {number!r}")
    return web.Response(text=issued.document, content_type="application/json")


async def flush_fleet(request: web.Request) -> web.Response:
    """Write the fleet state to the store now (operator): e.g. before a backup."""
    keeper = _ctx(request).keeper
    if keeper is None:
        return json_error(404, "no fleet state in this server")
    await keeper.flush()
    return web.json_response({"flushed": True})


@public
async def openapi(request: web.Request) -> web.Response:
    from .openapi import OPENAPI

    return web.json_response(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    if ctx.metrics is None:
        return json_error(404, "no metrics in this server")
    await ctx.metrics.refresh(ctx.store)
    from collector.sla.web import refresh_metrics as refresh_sla  # the SLA gauges

    await refresh_sla(ctx)
    from collector.fleet.metrics import CONTENT_TYPE

    return web.Response(body=ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


@public
async def public_metrics(request: web.Request) -> web.Response:
    """/metrics without a login (the default: it holds aggregates, no gateway or meter id)."""
    return await metrics(request)


def _bisect_after(ids: list[str], after: str) -> int:
    import bisect

    return bisect.bisect_right(ids, after) if after else 0


def register(app: web.Application) -> None:
    """Add the API routes to ``app`` (called by ``collector.web.app.make_app``)."""
    r = app.router
    r.add_get("/api/openapi.json", openapi)
    r.add_get("/api/fleet", _handler(fleet_overview))
    r.add_get("/api/gateways", _handler(gateways))
    r.add_get("/api/gateways/{gateway_id}", _handler(gateway))
    r.add_get("/api/meters", _handler(meters))
    r.add_get("/api/meters/{meter_id}", _handler(meter))
    r.add_get("/api/meters/{meter_id}/readings", _handler(readings))
    r.add_get("/api/vee/flags", _handler(vee_flags))
    r.add_get("/api/bills", _handler(bills))
    r.add_get("/api/bills/{number}", _handler(bill))
    r.add_post("/api/fleet/flush", flush_fleet)
    config = app[CTX].config
    metrics_handler = metrics if config.http and config.http.metrics_auth else public_metrics
    r.add_get("/metrics", metrics_handler)
    from collector.sla import web as sla_web  # /api/sla, /sla and the SLA gauges

    sla_web.register(app)
    from collector.latency import register as register_latency  # capture-to-commit delay

    register_latency(app)
    # remote commands (the "commands" part of issue 8) register their own routes
    try:
        commands = importlib.import_module("collector.web.api_commands")
    except ModuleNotFoundError as exc:
        if exc.name != "collector.web.api_commands":
            raise
    else:
        commands.register(app)
    # usage insight and alerts (collector/insight/web.py)
    from collector.insight.web import register_api as register_insight

    register_insight(app)
