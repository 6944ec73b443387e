"""The dashboard: server-rendered HTML pages (jinja2 templates in ``templates/``, one
stylesheet in ``static/``), registered on the collector's web app by ``register(app)``.

Pages work without JavaScript: the overview and the gateway pages refresh themselves with a
``<meta http-equiv="refresh">`` (``?refresh=N`` seconds, 0 = off), the readings chart is an
SVG drawn here (``collector.web.chart``), forms post to the same server. Logins, roles and the
session cookie are ``collector.web.app``'s (its middleware guards every page below except
``/login`` and ``/static``).

Pages read the in-memory fleet state (``collector.fleet.state.Fleet``) for gateways and meters
and the store for readings, VEE findings, the quarantine and bills; a bill's customer page is
the bill's own HTML (``collector.rating.html.render_html``), exactly as printed.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web
from markupsafe import Markup

from protocols.clock import utc_ms

from .app import CTX, PRINCIPAL, WebContext, public
from .chart import ChartPoint, line_chart

__all__ = ["register"]

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
PAGE_SIZE = 100
LIST_LIMIT = 50  # rows of the overview's offline and stale lists
CHART_ROWS = 20_000  # readings fetched for one meter page at most
DEFAULT_REFRESH = 10  # seconds between refreshes of the live pages
DEFAULT_WINDOW_MS = 48 * 3_600_000  # a meter page shows the 48 h up to its newest reading
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


# formatting ---------------------------------------------------------------------------------


def _utc_text(ms: int | None, seconds: bool = True) -> str:
    if ms is None:
        return "never"
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + "Z"


def _duration(ms: int | None) -> str:
    """``1 d 2 h``, ``3 min 4 s``, ``850 ms``: two units at most."""
    if ms is None:
        return ""
    sign, ms = ("-" if ms < 0 else ""), abs(ms)
    if ms < 1000:
        return f"{sign}{ms} ms"
    parts, seconds = [], ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return sign + " ".join(parts)


def _percent(rate: str | None) -> str:
    """A success rate (``"0.9875"``) as ``98.75 %``, exact (Decimal)."""
    if rate is None:
        return "–"
    try:
        return f"{(Decimal(rate) * 100).normalize():f} %"
    except InvalidOperation:
        return rate


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = _utc_text
    env.filters["duration"] = _duration
    env.filters["percent"] = _percent
    return env


_ENV = _environment()


# request helpers ----------------------------------------------------------------------------


def _now_ms(ctx: WebContext) -> int:
    """The instant the fleet state is judged at (the fleet's own clock when it has one)."""
    clock = getattr(ctx.fleet, "now_ms", None)
    if callable(clock):
        return int(clock())
    return time.time_ns() // 1_000_000


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad_request(request, f"query parameter {name}={raw!r}: not a whole number") from None
    return min(max(value, low), high)


def _bad_request(request: web.Request, message: str) -> web.HTTPException:
    return _error_exc(request, 400, "Bad request", message)


def _not_found(request: web.Request, message: str) -> web.HTTPException:
    return _error_exc(request, 404, "Not found", message)


def _error_exc(request: web.Request, status: int, reason: str, message: str) -> web.HTTPException:
    text = _render(request, "error.html", status=status, reason=reason, message=message)
    exc = web.HTTPException(text=text, content_type="text/html")
    exc.set_status(status, reason)
    return exc


def _render(request: web.Request, template: str, **values: Any) -> str:
    values.setdefault("principal", request.get(PRINCIPAL))
    values.setdefault("section", "")
    values.setdefault("refresh", 0)
    values.setdefault("now_text", "")
    return _ENV.get_template(template).render(**values)


def _page(
    request: web.Request, template: str, *, live: bool = False, **values: Any
) -> web.Response:
    """Render ``template``; a ``live`` page refreshes itself (``?refresh=N``, 0 = off)."""
    refresh = _int_query(request, "refresh", DEFAULT_REFRESH, 0, 3600) if live else 0
    ctx = request.app[CTX]
    values.setdefault("now_text", _utc_text(_now_ms(ctx)))
    html = _render(request, template, refresh=refresh, **values)
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


def _fleet(request: web.Request) -> Any:
    fleet = request.app[CTX].fleet
    if fleet is None:
        raise _error_exc(
            request, 503, "Service unavailable", "the collector runs without fleet state"
        )
    return fleet


def _pages(total: int, page: int) -> dict[str, int]:
    last = max((total - 1) // PAGE_SIZE, 0)
    return {"page": min(page, last), "last": last, "total": total, "size": PAGE_SIZE}


# login and static files (public) ------------------------------------------------------------


@public
async def login_page(request: web.Request) -> web.Response:
    from .app import _safe_next

    if request.get(PRINCIPAL) is not None and "failed" not in request.query:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next", "/")))
    html = _render(
        request,
        "login.html",
        principal=None,
        next=_safe_next(request.query.get("next", "/")),
        failed="failed" in request.query,
    )
    return web.Response(text=html, content_type="text/html")


@public
async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    # only the files shipped in static/, by plain name (no paths, no dot files)
    if "/" in name or name.startswith(".") or not path.is_file():
        raise web.HTTPNotFound()
    kind = _STATIC_TYPES.get(path.suffix, "application/octet-stream")
    return web.Response(
        body=path.read_bytes(),
        content_type=kind,
        charset="utf-8" if kind.startswith("text/") else None,
        headers={"Cache-Control": "max-age=300"},
    )


# fleet pages --------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    fleet = _fleet(request)
    now = _now_ms(ctx)
    summary = fleet.summary(now)
    offline, unknown = [], []
    for gateway_id in fleet.gateway_ids():
        gw = fleet.gateways[gateway_id]
        state = gw.state_at(now, fleet.offline_after_ms)
        if state == "offline" and len(offline) < LIST_LIMIT:
            offline.append(gw.view(now, fleet.offline_after_ms))
        elif state == "unknown" and len(unknown) < LIST_LIMIT:
            unknown.append(gw.view(now, fleet.offline_after_ms))
    stale = []
    for meter_id in fleet.meter_ids():
        meter = fleet.meters[meter_id]
        if meter.stale_at(now, fleet.stale_after_ms):
            stale.append(meter.view(now, fleet.stale_after_ms))
            if len(stale) >= LIST_LIMIT:
                break
    first = [
        fleet.gateways[g].view(now, fleet.offline_after_ms)
        for g in fleet.gateway_ids()[:LIST_LIMIT]
    ]
    quarantined = sum(n for _kind, n in await ctx.store.quarantine_by_reason())
    return _page(
        request,
        "overview.html",
        live=True,
        section="overview",
        summary=summary,
        offline=offline,
        unknown=unknown,
        stale=stale,
        gateways=first,
        quarantined=quarantined,
        now=now,
        offline_after_ms=fleet.offline_after_ms,
        stale_after_ms=fleet.stale_after_ms,
        list_limit=LIST_LIMIT,
    )


async def gateways(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    fleet = _fleet(request)
    now = _now_ms(ctx)
    wanted = request.query.get("state", "")
    if wanted not in ("", "online", "offline", "unknown"):
        raise _bad_request(request, f"state={wanted!r}: expected online, offline or unknown")
    ids = fleet.gateway_ids()
    if wanted:
        ids = [g for g in ids if fleet.gateways[g].state_at(now, fleet.offline_after_ms) == wanted]
    pages = _pages(len(ids), _int_query(request, "page", 0, 0, 10**9))
    start = pages["page"] * PAGE_SIZE
    rows = [
        fleet.gateways[g].view(now, fleet.offline_after_ms) for g in ids[start : start + PAGE_SIZE]
    ]
    return _page(
        request, "gateways.html", live=True, section="gateways", rows=rows, pages=pages,
        wanted=wanted, now=now,
    )  # fmt: skip


async def gateway(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    fleet = _fleet(request)
    gateway_id = request.match_info["gateway"]
    gw = fleet.gateways.get(gateway_id)
    if gw is None:
        raise _not_found(request, f"no gateway {gateway_id!r} is enrolled or has been heard from")
    now = _now_ms(ctx)
    meters = [
        fleet.meters[m].view(now, fleet.stale_after_ms) for m in gw.meters if m in fleet.meters
    ]
    flag_counts = await ctx.store.fleet.flag_counts([m["meter_id"] for m in meters])
    commands = await _commands_of(ctx, gateway_id, now)
    return _page(
        request,
        "gateway.html",
        live=True,
        section="gateways",
        gw=gw.view(now, fleet.offline_after_ms),
        meters=meters,
        flag_counts=flag_counts,
        now=now,
        commands=commands,
        command_kinds=_command_kinds(ctx),
        sent=request.query.get("sent", ""),
    )


async def meters(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    fleet = _fleet(request)
    now = _now_ms(ctx)
    ids = fleet.meter_ids()
    only_stale = request.query.get("stale", "") in ("1", "yes", "true")
    if only_stale:
        ids = [m for m in ids if fleet.meters[m].stale_at(now, fleet.stale_after_ms)]
    pages = _pages(len(ids), _int_query(request, "page", 0, 0, 10**9))
    start = pages["page"] * PAGE_SIZE
    rows = [fleet.meters[m].view(now, fleet.stale_after_ms) for m in ids[start : start + PAGE_SIZE]]
    return _page(
        request, "meters.html", section="meters", rows=rows, pages=pages,
        only_stale=only_stale, now=now,
    )  # fmt: skip


def _parse_instant(request: web.Request, name: str) -> int | None:
    """``from`` / ``to`` query values: ``YYYY-MM-DDTHH:MM`` (UTC, as a datetime-local input
    sends it) or a date."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.removesuffix("Z"))
    except ValueError:
        raise _bad_request(
            request, f"{name}={raw!r}: expected a UTC time like 2026-11-01T06:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_ms(moment)


def _obis_key(obis: str) -> tuple[int, ...]:
    """``1-0:2.8.0`` before ``1-0:14.7.0``: OBIS codes in numeric order."""
    return tuple(int(n) for n in re.findall(r"\d+", obis))


def _input_value(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M")


async def meter(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    fleet = _fleet(request)
    meter_id = request.match_info["meter"]
    state = fleet.meters.get(meter_id)
    if state is None:
        raise _not_found(request, f"no meter {meter_id!r} is enrolled or has been heard from")
    now = _now_ms(ctx)
    start, end = _parse_instant(request, "from"), _parse_instant(request, "to")
    if end is None:
        if start is not None:
            end = start + DEFAULT_WINDOW_MS
        elif state.last_captured_ms is not None:
            end = state.last_captured_ms + 1  # the newest reading and the window before it
        else:
            end = now + 1
    if start is None:
        start = end - DEFAULT_WINDOW_MS
    if start >= end:
        raise _bad_request(
            request, f"from ({_utc_text(start)}) must be before to ({_utc_text(end)})"
        )
    rows = await ctx.store.fleet.readings(meter_id, start, end, None, None, CHART_ROWS)
    series: dict[str, list[ChartPoint]] = {}
    units: dict[str, str] = {}
    for captured_ms, obis, value, unit, flags, _source, _gw, _seq in rows:
        series.setdefault(obis, []).append(ChartPoint(captured_ms, Decimal(value), bool(flags)))
        units[obis] = unit
    charts = [
        {
            "obis": obis,
            "unit": units[obis],
            "points": len(points),
            "first": points[0].value,
            "last": points[-1].value,
            "svg": Markup(
                line_chart(points, label=f"{meter_id} {obis}", unit=units[obis], width=1100)
            ),
        }
        for obis, points in sorted(series.items(), key=lambda item: _obis_key(item[0]))
    ]
    view = state.view(now, fleet.stale_after_ms)
    view["last_good"].sort(key=lambda v: _obis_key(v["obis"]))
    findings = await ctx.store.fleet.flags(meter_id, ["error", "warn"], 0, 50)
    counts = (await ctx.store.fleet.flag_counts([meter_id])).get(meter_id, {})
    return _page(
        request,
        "meter.html",
        section="meters",
        m=view,
        charts=charts,
        truncated=len(rows) >= CHART_ROWS,
        start=start,
        end=end,
        start_input=_input_value(start),
        end_input=_input_value(end),
        findings=findings,
        flag_counts=counts,
        now=now,
    )


# quarantine ---------------------------------------------------------------------------------


async def quarantine(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    limit = _int_query(request, "limit", 200, 1, 5000)
    by_reason = await ctx.store.quarantine_by_reason()
    entries = [
        {
            "id": entry_id,
            "received_ms": row.received_ms,
            "topic": row.topic,
            "gateway_id": row.gateway_id,
            "seq": row.seq,
            "meter_id": row.meter_id,
            "kind": row.kind or "other",
            "reason": row.reason,
            "size": len(row.raw),
            "head": row.raw[:24].hex(" "),
        }
        for entry_id, row in await ctx.store.quarantine_entries(limit)
    ]
    return _page(
        request, "quarantine.html", live=True, section="quarantine", by_reason=by_reason,
        entries=entries, total=sum(n for _k, n in by_reason), limit=limit,
    )  # fmt: skip


# bills --------------------------------------------------------------------------------------


_BILL_FIELDS = (
    "seq", "number", "account_id", "period", "start_ms", "end_ms", "currency", "total", "issued_ms",
)  # fmt: skip
_BILLING_KEY = web.AppKey("meterlink_dashboard_billing", dict)


def _billing(request: web.Request) -> Any:
    """The accounts and tariffs of ``[billing]`` (loaded once, on first use), or None."""
    ctx = request.app[CTX]
    if ctx.config.billing is None:
        return None
    cache = request.app[_BILLING_KEY]
    if "billing" not in cache:
        from collector.rating.run import load_billing

        cache["billing"] = load_billing(ctx.config.billing.accounts, ctx.config.billing.tariffs)
    return cache["billing"]


def _collector_now_ms(ctx: WebContext) -> int:
    """The collector's clock (the fleet's virtual clock in a demo): bills are drawn as at it."""
    from collector.service import clock_ms_of

    return clock_ms_of(ctx.config)()


async def bills(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    from collector.errors import CollectorError

    try:
        billing = _billing(request)
    except CollectorError as exc:
        raise _error_exc(request, 500, "Billing configuration", str(exc)) from None
    after = _int_query(request, "after", 0, 0, 2**62)
    rows = await ctx.store.fleet.bills(None, after, PAGE_SIZE + 1)
    issued = [dict(zip(_BILL_FIELDS, row, strict=True)) for row in rows]
    more = len(issued) > PAGE_SIZE
    issued = issued[:PAGE_SIZE]
    accounts = []
    if billing is not None:
        from collector.rating.accounts import period_containing

        now = _collector_now_ms(ctx)
        for account_id in sorted(billing.accounts):
            account = billing.accounts[account_id]
            current = period_containing(now, account)
            accounts.append(
                {
                    "id": account.id,
                    "name": account.name,
                    "meters": ", ".join(account.meters),
                    "current": current.label,
                    "previous": current.preceding(account).label,
                }
            )
    names = {a["id"]: a["name"] for a in accounts}
    return _page(
        request,
        "bills.html",
        section="bills",
        issued=issued,
        more=more,
        next_after=issued[-1]["seq"] if issued else after,
        accounts=accounts,
        names=names,
        billing=billing is not None,
    )


def _customer_page(doc: dict[str, Any], note: str) -> web.Response:
    """The bill's own printable HTML, with one line on top back to the dashboard (not
    printed)."""
    from collector.rating.html import render_html

    html = render_html(doc)
    bar = (
        '<p class="dashboard-bar" style="font-size:0.85em">'
        '<a href="/bills">&larr; all bills</a> &middot; '
        f"{escape(note)}</p>"
        "<style>@media print { .dashboard-bar { display: none; } }</style>"
    )
    html = html.replace("<body>", "<body>" + bar, 1)
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def bill(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    number = request.match_info["number"]
    issued = await ctx.store.bills.by_number(number)
    if issued is None:
        raise _not_found(request, f"no issued bill {number!r}")
    return _customer_page(json.loads(issued.document), f"issued bill {number}")


async def draft_bill(request: web.Request) -> web.Response:
    """A bill of (account, period) as it would be now: the issued one if there is one."""
    from collector.errors import CollectorError
    from collector.rating.run import bill_account

    ctx = request.app[CTX]
    billing = _billing(request)
    if billing is None:
        raise _not_found(request, "this collector has no [billing] accounts and tariffs")
    account_id = request.match_info.get("account") or request.query.get("account", "")
    period = request.query.get("period", "").strip()
    try:
        account = billing.account(account_id)
        if not period:
            from collector.rating.accounts import period_containing

            period = period_containing(_collector_now_ms(ctx), account).label
        doc, state = await bill_account(
            ctx.store, billing, account, period, _collector_now_ms(ctx), issue=False
        )
    except CollectorError as exc:
        raise _error_exc(request, 422, "Cannot bill", str(exc)) from None
    note = (
        f"issued bill {doc['number']}"
        if state == "stored"
        else f"draft for {period}, as at {_utc_text(_collector_now_ms(ctx))}: not issued"
    )
    return _customer_page(doc, note)


async def advice(request: web.Request) -> web.Response:
    """Best-tariff advice for an account (``collector.rating.advise``), as at the collector's
    clock: ``?months=N`` (default 12), ``?to=YYYY-MM`` (the window's last period)."""
    from collector.errors import CollectorError
    from collector.rating.advise import advice_document, advise_account

    ctx = request.app[CTX]
    billing = _billing(request)
    if billing is None:
        raise _not_found(request, "this collector has no [billing] accounts and tariffs")
    account_id = request.match_info.get("account") or request.query.get("account", "")
    months = _int_query(request, "months", 12, 1, 120)
    to = request.query.get("to", "").strip() or None
    try:
        result = await advise_account(
            ctx.store, billing.account(account_id), billing.tariffs, billing.accounts,
            _collector_now_ms(ctx), months, to,
        )  # fmt: skip
    except CollectorError as exc:
        raise _error_exc(request, 422, "Cannot advise", str(exc)) from None
    return _page(request, "advice.html", section="bills", doc=advice_document(result), to=to or "")


# commands -----------------------------------------------------------------------------------

#: what the dashboard can send (the others take files or ranges: the CLI and the API)
DASHBOARD_ACTIONS = ("ping", "read-now", "set-clock")
_NEEDS_METER = ("read-now", "set-clock")
COMMANDS_SHOWN = 20


def _command_key_path(ctx: WebContext) -> Path:
    return ctx.config.commands.key_path(ctx.config.path)


def _command_kinds(ctx: WebContext) -> list[str]:
    """The actions offered on a gateway page: none without a head-end command key."""
    return list(DASHBOARD_ACTIONS) if _command_key_path(ctx).exists() else []


async def _commands_of(ctx: WebContext, gateway_id: str, now: int) -> list[dict[str, Any]]:
    rows = await ctx.store.commands.list(gateway_id, limit=COMMANDS_SHOWN)
    out = []
    for row in rows:
        reply = ""
        if row.reply_status is not None:
            reply = row.reply_message or ""
            if row.reply_result:
                reply += (" " if reply else "") + json.dumps(row.reply_result, sort_keys=True)
        out.append(
            {
                "id": row.id,
                "action": row.action,
                "meter": row.args.get("meter", ""),
                "issued_ms": row.issued_ms,
                "issued_by": row.issued_by,
                "state": row.state(now),
                "reply": reply,
                "reply_received_ms": row.reply_received_ms,
            }
        )
    return out


async def send_command_form(request: web.Request) -> web.StreamResponse:
    """POST from a gateway page (operator role: the app's middleware checks it): sign and
    publish the command without waiting; the page (refreshing itself) shows the reply when
    the running collector has stored it."""
    from collector.commands.client import send_command
    from collector.commands.keys import load_command_key
    from collector.errors import CollectorError

    ctx = request.app[CTX]
    gateway_id = request.match_info["gateway"]
    form = await request.post()
    action, meter_id = str(form.get("action", "")), str(form.get("meter", "")).strip()
    if action not in DASHBOARD_ACTIONS:
        raise _bad_request(request, f"action {action!r}: one of {', '.join(DASHBOARD_ACTIONS)}")
    args: dict[str, Any] = {}
    if action in _NEEDS_METER:
        if not meter_id:
            raise _bad_request(request, f"{action} needs a meter")
        args["meter"] = meter_id
    try:
        key = load_command_key(_command_key_path(ctx))
        row, _ = await send_command(
            ctx.config, ctx.store, key, gateway_id, action, args,
            issued_by=request[PRINCIPAL].name, wait_s=0,
        )  # fmt: skip
    except CollectorError as exc:
        raise _error_exc(request, 409, "Command not sent", str(exc)) from None
    # back to the gateway page, refreshing as it did (no #fragment: a page refreshing itself
    # to a URL with one only scrolls, it does not reload)
    refresh = str(form.get("refresh", ""))
    again = f"&refresh={int(refresh)}" if refresh.isdigit() else ""
    raise web.HTTPSeeOther(f"/gateways/{quote(gateway_id, safe='')}?sent={row.id}{again}")


# registration -------------------------------------------------------------------------------


def register(app: web.Application) -> None:
    """Add the dashboard's routes to ``app`` (called by ``collector.web.app.make_app``)."""
    app[_BILLING_KEY] = {}
    app.router.add_get("/login", login_page)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/", overview)
    app.router.add_get("/gateways", gateways)
    app.router.add_get("/gateways/{gateway}", gateway)
    app.router.add_post("/gateways/{gateway}/commands", send_command_form)
    app.router.add_get("/meters", meters)
    app.router.add_get("/meters/{meter}", meter)
    app.router.add_get("/quarantine", quarantine)
    app.router.add_get("/bills", bills)
    app.router.add_get("/bills/draft", draft_bill)  # the form: ?account=...&period=...
    app.router.add_get("/bills/draft/{account}", draft_bill)
    app.router.add_get("/bills/advice", advice)  # ?account=...&months=...&to=...
    app.router.add_get("/bills/advice/{account}", advice)
    app.router.add_get("/bills/{number}", bill)
    from collector.insight.web import register_pages as register_usage  # /usage/{account}

    register_usage(app)
