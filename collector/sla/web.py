"""The SLA on the collector's web server: ``GET /api/sla`` (also ``/api/v1/sla``),
``GET /api/sla/breaches``, the dashboard page ``/sla`` and the Prometheus gauges.

Evaluating a month of a large fleet reads every meter's intervals, so a result is kept for
``[sla] metrics_every`` (wall clock) per (period, gateway, meter): a dashboard that refreshes
or a client paging through the breaches costs one evaluation, not one per request.

Gauges (``/metrics``; per SLA class and cause, never per meter or gateway), over the
intervals of the last 24 h of the collector's clock that are decided (actual, or past their
deadline):

* ``meterlink_sla_actual_ratio{class}``, ``meterlink_sla_on_time_ratio{class}``;
* ``meterlink_sla_breach_intervals{class,cause}``: intervals not actual or late, by cause;
* ``meterlink_sla_meters_in_breach{class}``: meters whose last 24 h miss a target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.web.api import BadQuery, _limit
from collector.web.app import CTX, WebContext, json_error

from .evaluate import CAUSES, SlaReport, evaluate, evaluate_window
from .period import PeriodError, parse_period

__all__ = ["SlaGauges", "refresh_metrics", "register"]

_WINDOW_MS = 86_400_000
_CACHE = web.AppKey("meterlink_sla_cache", dict)
_GAUGES = web.AppKey("meterlink_sla_gauges", object)


class _NotFound(Exception):
    """An unknown gateway or meter (404)."""


def _now_ms(ctx: WebContext) -> int:
    return ctx.config.collector.clock.virtual_ns(time.time_ns()) // 1_000_000


async def _report(request: web.Request) -> SlaReport:
    ctx = request.app[CTX]
    raw = request.query.get("period", "")
    if not raw:
        raise BadQuery("period: required (2026-11, 2026-11-05 or 2026-11-01..2026-11-07)")
    try:
        period = parse_period(raw)
    except PeriodError as exc:
        raise BadQuery(f"period={exc}") from None
    gateway = request.query.get("gateway") or None
    meter = request.query.get("meter") or None
    if gateway is not None or meter is not None:
        known = await ctx.store.bindings()
        if gateway is not None and gateway not in {gw for gw, _m in known}:
            raise _NotFound(f"no gateway {gateway!r}")
        if meter is not None and meter not in {m for _gw, m in known}:
            raise _NotFound(f"no meter {meter!r}")
    cache = request.app[_CACHE]
    key = (period.text, gateway, meter)
    wall = time.monotonic()
    hit = cache.get(key)
    if hit is not None and wall - hit[0] < ctx.config.sla.metrics_every_ms / 1000:
        return hit[1]
    report = await evaluate(ctx.store, ctx.config, period, _now_ms(ctx), gateway=gateway,
                            meter=meter)  # fmt: skip
    if len(cache) > 64:
        cache.clear()
    cache[key] = (wall, report)
    return report


def _breach_page(request: web.Request, report: SlaReport) -> dict[str, Any]:
    limit = _limit(request)
    after = request.query.get("after", "")
    cause = request.query.get("cause") or None
    if cause is not None and cause not in CAUSES:
        raise BadQuery(f"cause={cause!r}: must be one of {', '.join(CAUSES)}")
    items = [b for b in report.breaches if b.key > after and (cause is None or b.cause == cause)]
    page = items[:limit]
    return {
        "items": [b.to_json() for b in page],
        "next": page[-1].key if len(items) > limit else None,
    }


def _handler(func):  # type: ignore[no-untyped-def]
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await func(request)
        except BadQuery as exc:
            return json_error(400, str(exc))
        except _NotFound as exc:
            return json_error(404, str(exc))

    wrapped.__name__ = func.__name__
    wrapped.__doc__ = func.__doc__
    return wrapped


async def sla_summary(request: web.Request) -> web.Response:
    """The SLA of ``period``: classes, gateways per day, and the first page of breaches."""
    report = await _report(request)
    return web.json_response({**report.summary_json(), "breaches": _breach_page(request, report)})


async def sla_breaches(request: web.Request) -> web.Response:
    """The breaches of ``period`` (meter-days missing a target), paginated by key."""
    report = await _report(request)
    return web.json_response(_breach_page(request, report))


async def sla_page(request: web.Request) -> web.Response:
    from collector.web import pages  # the dashboard's rendering (optional module)

    ctx = request.app[CTX]
    raw = request.query.get("period") or ""
    if not raw:
        from .evaluate import settings_day

        raw = settings_day(_now_ms(ctx), ctx.config.sla).isoformat()[:7]  # this month
        query = request.rel_url.with_query({**request.query, "period": raw})
        request = request.clone(rel_url=query)
    try:
        report = await _report(request)
    except BadQuery as exc:
        raise pages._bad_request(request, str(exc)) from None
    except _NotFound as exc:
        raise pages._not_found(request, str(exc)) from None
    limit = pages._int_query(request, "limit", 200, 1, 5000)
    return pages._page(
        request,
        "sla.html",
        section="sla",
        report=report,
        period=raw,
        gateway=request.query.get("gateway", ""),
        meter=request.query.get("meter", ""),
        classes=[c.to_json() for c in report.classes],
        gateway_days=[g.to_json() for g in report.gateway_days],
        breaches=[b.to_json() for b in report.breaches[:limit]],
        breach_total=len(report.breaches),
    )


class SlaGauges(Collector):
    """The SLA gauges; ``refresh`` (before a scrape) evaluates the last 24 h at most once
    per ``[sla] metrics_every``."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.report: SlaReport | None = None
        self._at = 0.0

    async def refresh(self, store: Any, now_ms: int) -> None:
        wall = time.monotonic()
        if self.report is not None and wall - self._at < self.config.sla.metrics_every_ms / 1000:
            return
        self.report = await evaluate_window(store, self.config, now_ms - _WINDOW_MS, now_ms, now_ms)
        self._at = wall

    def collect(self) -> Iterator[Metric]:
        actual = GaugeMetricFamily(
            "meterlink_sla_actual_ratio",
            "Share of decided intervals that are actual, last 24 h, per SLA class",
            labels=["class"],
        )
        on_time = GaugeMetricFamily(
            "meterlink_sla_on_time_ratio",
            "Share of decided intervals at the head-end within the class deadline, last 24 h",
            labels=["class"],
        )
        by_cause = GaugeMetricFamily(
            "meterlink_sla_breach_intervals",
            "Intervals not actual or late in the last 24 h, by SLA class and cause",
            labels=["class", "cause"],
        )
        meters = GaugeMetricFamily(
            "meterlink_sla_meters_in_breach",
            "Meters whose last 24 h miss an SLA target, per class",
            labels=["class"],
        )
        if self.report is not None:
            for summary in self.report.classes:
                name, t = summary.sla_class.name, summary.tally
                if t.decided:
                    actual.add_metric([name], float(Decimal(t.actual) / t.decided))
                    on_time.add_metric([name], float(Decimal(t.on_time) / t.decided))
                for cause in CAUSES:
                    by_cause.add_metric([name, cause], t.causes[cause])
                meters.add_metric([name], summary.meter_days_in_breach)
        yield actual
        yield on_time
        yield by_cause
        yield meters


async def refresh_metrics(ctx: WebContext) -> None:
    """Before a /metrics scrape (collector/web/api.py): bring the SLA gauges up to date."""
    gauges = getattr(ctx.metrics, "sla_gauges", None)
    if gauges is not None:
        await gauges.refresh(ctx.store, _now_ms(ctx))


def register(app: web.Application) -> None:
    """The SLA routes (API and page) and gauges on the collector's web app."""
    app[_CACHE] = {}
    for path in ("/api/sla", "/api/v1/sla"):
        app.router.add_get(path, _handler(sla_summary))
        app.router.add_get(f"{path}/breaches", _handler(sla_breaches))
    app.router.add_get("/sla", sla_page)
    ctx = app[CTX]
    if ctx.metrics is not None and getattr(ctx.metrics, "sla_gauges", None) is None:
        gauges = SlaGauges(ctx.config)
        ctx.metrics.registry.register(gauges)
        ctx.metrics.sla_gauges = gauges
