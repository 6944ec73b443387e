"""Usage insight on the collector's web server: the JSON API and the customer page.

API (docs/api.md, "Usage insight and alerts"; registered by ``collector/web/api.py``; every
path also under ``/api/v1/``):

* ``GET /api/accounts/{account}/usage?period=YYYY-MM | from=YYYY-MM-DD&to=YYYY-MM-DD
  [&by=day|hour]`` — the usage document (``collector.insight.document``); without a range,
  the current billing period (to date) at the collector's clock;
* ``GET /api/accounts/{account}/alerts?after=&limit=`` — alerts raised, oldest first (pages);
* ``GET /api/accounts/{account}/alert-rules`` — the live rules; ``POST`` (JSON body, role
  operator) adds one (201), ``DELETE .../alert-rules/{rule}`` (operator) ends one.

Page (registered by ``collector/web/pages.py``): ``/usage/{account}`` (``?period=``,
``?from=&to=``), tables per service point, a bar chart per day, the top hours, alerts and
rules; linked from each account on ``/bills``.

Errors: 400 names the parameter or the rule's field; 404 an unknown account or rule.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from aiohttp import web

from protocols.clock import format_utc_ms

from ..errors import CollectorError
from ..store.insight_sqlite import AlertRow, insight_of
from .document import parse_range, usage_document
from .rules import RuleError, parse_rule, rule_from_row

__all__ = ["register_api", "register_pages"]

_BILLING = web.AppKey("meterlink_insight_billing", dict)
MAX_LIMIT = 1000
#: the API's routes are served under both (the other endpoints are under /api/; issue 10
#: names /api/v1/, as /api/sla does)
PREFIXES = ("/api", "/api/v1")


class _Bad(Exception):
    pass


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _billing(app: web.Application) -> Any:
    from collector.rating.run import load_billing
    from collector.web.app import CTX

    ctx = app[CTX]
    if ctx.config.billing is None:
        return None
    cache = app[_BILLING]
    if "billing" not in cache:
        cache["billing"] = load_billing(ctx.config.billing.accounts, ctx.config.billing.tariffs)
    return cache["billing"]


def _now_ms(app: web.Application) -> int:
    from collector.service import clock_ms_of
    from collector.web.app import CTX

    return clock_ms_of(app[CTX].config)()


def _account(request: web.Request) -> tuple[Any, Any]:
    """(billing, account) or an HTTP error (404: no [billing] / no such account)."""
    try:
        billing = _billing(request.app)
    except CollectorError as exc:
        raise web.HTTPInternalServerError(
            text=json.dumps({"error": f"billing configuration: {exc}"}),
            content_type="application/json",
        ) from None
    name = request.match_info["account"]
    if billing is None or name not in billing.accounts:
        why = "this collector has no [billing] accounts" if billing is None else "no account"
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"{why} {name!r}" if billing else why}),
            content_type="application/json",
        )
    return billing, billing.accounts[name]


def _range(request: web.Request, account: Any) -> tuple[date, date, str]:
    from collector.rating.accounts import period_containing

    q = request.query
    period, start, end = q.get("period"), q.get("from"), q.get("to")
    if not period and not start and not end:
        period = period_containing(_now_ms(request.app), account).label
    return parse_range(account, period, start, end)


# API ----------------------------------------------------------------------------------------


async def usage(request: web.Request) -> web.Response:
    from collector.web.app import CTX

    billing, account = _account(request)
    by = request.query.get("by", "day")
    top = request.query.get("top", "5")
    try:
        if not top.isdigit() or not 1 <= int(top) <= 100:
            raise CollectorError(f"top={top!r}: a whole number 1..100")
        first, end, label = _range(request, account)
        doc = await usage_document(
            request.app[CTX].store, account, billing.tariffs, first, end, label, by, int(top)
        )
    except CollectorError as exc:
        return _json_error(400, str(exc))
    return web.json_response(doc)


def _alert_doc(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "rule": row.rule_id,
        "service_point": row.service_point,
        "kind": row.kind,
        "day": row.day,
        "value": row.value,
        "unit": row.unit,
        "message": row.message,
        "raised_ms": row.raised_ms,
        "raised": format_utc_ms(row.raised_ms),
    }


async def alerts(request: web.Request) -> web.Response:
    from collector.web.app import CTX

    account = _account(request)[1]
    raw_after, raw_limit = request.query.get("after", "0"), request.query.get("limit", "100")
    if not raw_after.isdigit():
        return _json_error(400, f"after={raw_after!r}: not a cursor from a previous page's 'next'")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        return _json_error(400, f"limit={raw_limit!r}: must be 1..{MAX_LIMIT}")
    limit = int(raw_limit)
    rows = await insight_of(request.app[CTX].store).alerts(account.id, int(raw_after), limit + 1)
    items = [_alert_doc(r) for r in rows[:limit]]
    more = len(rows) > limit
    return web.json_response({"items": items, "next": str(items[-1]["id"]) if more else None})


async def rules(request: web.Request) -> web.Response:
    from collector.web.app import CTX

    account = _account(request)[1]
    out = []
    for row in await insight_of(request.app[CTX].store).rules(account.id):
        try:
            out.append(rule_from_row(account, row).document())
        except RuleError as exc:  # the accounts file changed under a rule
            out.append({"id": row.id, "kind": row.kind, "service_point": row.service_point,
                        "error": str(exc)})  # fmt: skip
    return web.json_response({"items": out, "next": None})


async def add_rule(request: web.Request) -> web.Response:
    from collector.web.app import CTX

    account = _account(request)[1]
    try:
        data = await request.json(loads=lambda text: json.loads(text, parse_float=Decimal))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _json_error(400, f"the body is not JSON: {exc}")
    try:
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, Decimal):
                    raise RuleError(f'{key}: write decimals as strings ("{value}"), not numbers')
        rule = parse_rule(account, data)
    except RuleError as exc:
        return _json_error(400, str(exc))
    params = json.dumps(rule.params(), sort_keys=True)
    row = await insight_of(request.app[CTX].store).add_rule(
        account.id, rule.kind, rule.service_point, params, _now_ms(request.app)
    )
    return web.json_response(rule_from_row(account, row).document(), status=201)


async def delete_rule(request: web.Request) -> web.Response:
    from collector.web.app import CTX

    account = _account(request)[1]
    raw = request.match_info["rule"]
    if not raw.isdigit():
        return _json_error(400, f"rule {raw!r}: a rule id (a whole number)")
    ended = await insight_of(request.app[CTX].store).end_rule(
        account.id, int(raw), _now_ms(request.app)
    )
    if not ended:
        return _json_error(404, f"account {account.id} has no rule {raw}")
    return web.json_response({"deleted": int(raw)})


def register_api(app: web.Application) -> None:
    if _BILLING not in app:
        app[_BILLING] = {}
    r = app.router
    for prefix in PREFIXES:
        r.add_get(f"{prefix}/accounts/{{account}}/usage", usage)
        r.add_get(f"{prefix}/accounts/{{account}}/alerts", alerts)
        r.add_get(f"{prefix}/accounts/{{account}}/alert-rules", rules)
        r.add_post(f"{prefix}/accounts/{{account}}/alert-rules", add_rule)
        r.add_delete(f"{prefix}/accounts/{{account}}/alert-rules/{{rule}}", delete_rule)


# the customer page ---------------------------------------------------------------------------


def _bars(days: list[dict[str, Any]], unit: str) -> str:
    """An inline SVG bar chart of daily totals, stacked by TOU period (no script)."""
    from html import escape

    if not days:
        return ""
    peak = max((Decimal(d["total"]) for d in days), default=Decimal(0)) or Decimal(1)
    names = sorted({k for d in days for k in d["by_tou"]})
    colours = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#718096"]
    width, height, bar = 24 * len(days) + 40, 180, 20
    out = [f'<svg class="usage-bars" width="{width}" height="{height + 30}" role="img" '
           f'aria-label="usage per day ({escape(unit)})">']  # fmt: skip
    for i, d in enumerate(days):
        x, y = 30 + i * 24, Decimal(height)
        for j, name in enumerate(names):
            value = Decimal(d["by_tou"].get(name, "0"))
            h = (value * (height - 10) / peak).quantize(Decimal("0.1"))
            if h <= 0:
                continue
            y -= h
            out.append(
                f'<rect x="{x}" y="{y}" width="{bar}" height="{h}" '
                f'fill="{colours[j % len(colours)]}"><title>{escape(d["day"])} '
                f"{escape(name)}: {escape(str(value))} {escape(unit)}</title></rect>"
            )
        if i % 7 == 0:
            label = escape(d["day"][5:])
            out.append(f'<text x="{x}" y="{height + 14}" font-size="9">{label}</text>')
    legend = " ".join(
        f'<tspan fill="{colours[j % len(colours)]}">■ {escape(n)}</tspan>'
        for j, n in enumerate(names)
    )
    out.append(f'<text x="30" y="{height + 28}" font-size="10">{legend}</text></svg>')
    return "".join(out)


async def usage_page(request: web.Request) -> web.Response:
    from markupsafe import Markup

    from collector.web.app import CTX
    from collector.web.pages import _error_exc, _page

    try:
        billing = _billing(request.app)
    except CollectorError as exc:
        raise _error_exc(request, 500, "Billing configuration", str(exc)) from None
    name = request.match_info["account"]
    if billing is None or name not in billing.accounts:
        raise _error_exc(request, 404, "Not found", f"no account {name!r}")
    account = billing.accounts[name]
    store = request.app[CTX].store
    try:
        first, end, label = _range(request, account)
        doc = await usage_document(store, account, billing.tariffs, first, end, label, "day")
    except CollectorError as exc:
        raise _error_exc(request, 400, "Bad request", str(exc)) from None
    insight = insight_of(store)
    raised = [_alert_doc(r) for r in await insight.alerts(account.id, 0, 1000)][-50:]
    live = []
    for row in await insight.rules(account.id):
        try:
            live.append(rule_from_row(account, row).document())
        except RuleError as exc:
            live.append({"id": row.id, "kind": row.kind, "service_point": row.service_point,
                         "error": str(exc)})  # fmt: skip
    charts = {
        s["service_point"]: Markup(_bars(s["days"], s["unit"])) for s in doc["service_points"]
    }
    return _page(
        request, "usage.html", section="bills", doc=doc, charts=charts, alerts=raised, rules=live,
        period=request.query.get("period", ""),
    )  # fmt: skip


def register_pages(app: web.Application) -> None:
    if _BILLING not in app:
        app[_BILLING] = {}
    app.router.add_get("/usage/{account}", usage_page)
