"""Capture-to-commit delay (issue 10): how long a reading takes from its meter to the store.

The delay of a record (one meter's capture, all its values) is ``committed_ms - captured_ms``:
the collector's clock just before its ingest transaction's COMMIT (``Ingestor`` stamps it,
schema step 7, ``collector/store/latency_sqlite.py``) minus the capture time the gateway
signed. Both are the fleet's clock (a virtual one in rigs: delays are then in fleet time).
It includes everything on the way: the agent's poll and buffer, its batching, the broker,
the collector's queue (``batch_coalesce``), checks and the transaction itself.

Two views, for two jobs:

* **The API** (``GET /api/latency``, ``GET /api/gateways/{id}/latency``, also under
  ``/api/v1/``): exact nearest-rank p50/p95/p99 and max over a window of commit times,
  computed by the database from the stored times, so several collectors on one PostgreSQL
  database answer the same, and the figures can be checked against the rows.
* **/metrics**: ``LatencyTracker``, fed in memory by this collector's commits, no store
  query at scrape time (see docs/decisions.md, "Capture-to-commit metrics"):

  - ``meterlink_capture_to_commit_seconds``: a histogram of every record this collector
    committed since it started (fixed buckets, ``BOUNDS_MS``; histograms add up, so the
    fleet's is the sum over the collectors);
  - ``meterlink_capture_to_commit_recent_seconds{quantile}``: the fleet's p50/p95/p99 over
    the last 5-10 minutes (the upper bound of the bucket holding the rank);
  - ``meterlink_capture_to_commit_worst_seconds{gateway,quantile}``: the same for the
    ``WORST_N`` gateways with the largest delay in that window, only when ``/metrics``
    needs a login (``[http] metrics_auth = true``): an open ``/metrics`` names no gateway.

Memory of the tracker: per gateway seen in the last two generations, two rows of
``len(BOUNDS_MS) + 1`` = 25 counters (4 bytes each) and two maxima (8 bytes each) in flat
arrays, plus a dict entry and a list slot: about 340 bytes (measured), so about 34 MB at
100,000 gateways, and never more than ``max_gateways`` (200,000) gateways (further ones count
in the fleet figures only). A generation lasts ``generation_s`` (300 s of the wall clock);
the rows of gateways not heard in two generations are reused. Feeding costs about 1 µs a
record; ``worst`` (a scrape with ``metrics_auth``) about 20 ms at 100,000 gateways.
"""

from __future__ import annotations

import heapq
import logging
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .store.latency_sqlite import QUANTILES, LatencyRow, latency_of

__all__ = [
    "BOUNDS_MS",
    "TARGET_P99_MS",
    "LatencyHistogram",
    "LatencyMetrics",
    "LatencyTracker",
    "attach",
    "register",
]

log = logging.getLogger("collector.latency")

#: bucket upper bounds (ms, inclusive); one more bucket above the last (+Inf)
BOUNDS_MS: tuple[int, ...] = (
    50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000,
    30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000,
    21_600_000,
)  # fmt: skip
_B = len(BOUNDS_MS) + 1
#: issue 10's target: p99 capture-to-commit under 2 s with the default batching
TARGET_P99_MS = 2_000
WORST_N = 10
DEFAULT_WINDOW_MS = 15 * 60_000  # the API's default window: the last 15 minutes


def bucket_of(delay_ms: int) -> int:
    """The bucket of a delay: the first whose bound is >= it (``_B - 1``: above them all)."""
    return bisect_left(BOUNDS_MS, delay_ms)


def quantile_of(counts: Sequence[int], p: int, top_ms: int) -> int | None:
    """Nearest-rank ``p`` % quantile from bucket ``counts``: the upper bound of the bucket
    holding the rank (``top_ms``, the largest delay seen, for the last bucket, and never
    more than it). None without samples."""
    total = sum(counts)
    if total == 0:
        return None
    rank = (p * total + 99) // 100
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return min(BOUNDS_MS[i], top_ms) if i < len(BOUNDS_MS) else top_ms
    return top_ms  # pragma: no cover - rank <= total


class LatencyHistogram:
    """Fixed-bucket counts of delays (ms): mergeable (``merge`` adds another's)."""

    __slots__ = ("count", "counts", "max_ms", "sum_ms")

    def __init__(self) -> None:
        self.counts = array("Q", bytes(8 * _B))
        self.count = 0
        self.sum_ms = 0
        self.max_ms = 0

    def add(self, delay_ms: int, n: int = 1) -> None:
        self.counts[bucket_of(delay_ms)] += n
        self.count += n
        self.sum_ms += delay_ms * n
        if self.count == n or delay_ms > self.max_ms:
            self.max_ms = delay_ms

    def merge(self, other: LatencyHistogram) -> None:
        if not other.count:
            return
        for i in range(_B):
            self.counts[i] += other.counts[i]
        self.max_ms = other.max_ms if self.count == 0 else max(self.max_ms, other.max_ms)
        self.count += other.count
        self.sum_ms += other.sum_ms

    def quantile(self, p: int) -> int | None:
        return quantile_of(self.counts, p, self.max_ms)


class LatencyTracker:
    """This collector's recent delays, per gateway and for the fleet (see the module doc)."""

    def __init__(
        self,
        generation_s: float = 300.0,
        max_gateways: int = 200_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generation_s = generation_s
        self.max_gateways = max_gateways
        self._monotonic = monotonic
        self.total = LatencyHistogram()  # since start: the Prometheus histogram
        self._slot: dict[str, int] = {}  # gateway -> row in the arrays below
        self._names: list[str] = []  # row -> gateway
        self._free: list[int] = []
        # [current, previous] generation: counts (row * _B + bucket) and max delay per row
        self._counts = [array("I"), array("I")]
        self._max = [array("q"), array("q")]
        self._fleet = [LatencyHistogram(), LatencyHistogram()]
        self._seen: list[set[int]] = [set(), set()]  # rows with samples, per generation
        self._started = monotonic()
        self._full_logged = False

    # -- feeding --------------------------------------------------------------------------

    def observe(self, records: Iterable[Sequence[Any]], committed_ms: int) -> None:
        """One committed transaction: ``records`` are RecordRow-shaped (gateway_id first,
        captured_ms fourth). Never raises: the transaction is committed, its acks are due."""
        try:
            self._rotate()
            for record in records:
                self._add(record[0], committed_ms - record[3])
        except Exception:  # a metrics fault must not stop ingest
            log.exception("capture-to-commit delays of a transaction not counted")

    def _add(self, gateway_id: str, delay_ms: int) -> None:
        b = bucket_of(delay_ms)
        self.total.counts[b] += 1
        self.total.count += 1
        self.total.sum_ms += delay_ms
        if self.total.count == 1 or delay_ms > self.total.max_ms:
            self.total.max_ms = delay_ms
        self._fleet[0].add(delay_ms)
        row = self._slot.get(gateway_id)
        if row is None:
            row = self._new_row(gateway_id)
            if row is None:
                return
        counts, top, seen = self._counts[0], self._max[0], self._seen[0]
        counts[row * _B + b] += 1
        if row not in seen:
            seen.add(row)
            top[row] = delay_ms
        elif delay_ms > top[row]:
            top[row] = delay_ms

    def _new_row(self, gateway_id: str) -> int | None:
        if self._free:
            row = self._free.pop()
            self._names[row] = gateway_id
        elif len(self._slot) < self.max_gateways:
            row = len(self._names)
            self._names.append(gateway_id)
            for gen in (0, 1):
                self._counts[gen].extend(array("I", bytes(4 * _B)))
                self._max[gen].append(0)
        else:
            if not self._full_logged:
                log.warning(
                    "capture-to-commit: tracking %d gateways, the most it keeps; further "
                    "gateways count in the fleet figures only",
                    self.max_gateways,
                )
                self._full_logged = True
            return None
        self._slot[gateway_id] = row
        return row

    def _rotate(self) -> None:
        now = self._monotonic()
        elapsed = now - self._started
        if elapsed < self.generation_s:
            return
        # two generations or more went by: both are old
        steps = 2 if elapsed >= 2 * self.generation_s else 1
        for _ in range(steps):
            old_seen = self._seen[1]
            counts, top = self._counts[1], self._max[1]
            for row in old_seen:
                base = row * _B
                counts[base : base + _B] = array("I", bytes(4 * _B))
                top[row] = 0
            # rows heard in neither generation go back to the free list
            idle = old_seen - self._seen[0]
            for row in idle:
                del self._slot[self._names[row]]
            self._free.extend(idle)
            self._counts.reverse()
            self._max.reverse()
            self._seen = [set(), self._seen[0]]
            self._fleet = [LatencyHistogram(), self._fleet[0]]
        self._started = now

    # -- reading --------------------------------------------------------------------------

    def recent_fleet(self) -> LatencyHistogram:
        """The fleet's delays of the last one or two generations."""
        self._rotate()
        out = LatencyHistogram()
        out.merge(self._fleet[1])
        out.merge(self._fleet[0])
        return out

    def recent_gateway(self, gateway_id: str) -> LatencyHistogram:
        self._rotate()
        out = LatencyHistogram()
        row = self._slot.get(gateway_id)
        if row is None:
            return out
        for gen in (1, 0):
            if row in self._seen[gen]:
                part = LatencyHistogram()
                base = row * _B
                part.counts = array("Q", self._counts[gen][base : base + _B])
                part.count = sum(part.counts)
                part.max_ms = self._max[gen][row]
                out.merge(part)
        return out

    def worst(self, n: int = WORST_N) -> list[tuple[str, LatencyHistogram]]:
        """The ``n`` gateways with the largest recent delay, largest first."""
        self._rotate()
        # the n largest of max(gen 0, gen 1) are among the n largest of each generation
        candidates: set[int] = set()
        for gen in (0, 1):
            candidates.update(heapq.nlargest(n, self._seen[gen], key=self._max[gen].__getitem__))
        top = {
            row: max(self._max[gen][row] for gen in (0, 1) if row in self._seen[gen])
            for row in candidates
        }
        names = self._names
        rows = heapq.nlargest(n, top, key=lambda r: (top[r], names[r]))
        return [(names[r], self.recent_gateway(names[r])) for r in rows]


class LatencyMetrics(Collector):
    """The tracker's figures for prometheus-client (registered in ``FleetMetrics``)."""

    def __init__(self, tracker: LatencyTracker, worst_n: int = 0) -> None:
        self.tracker = tracker
        self.worst_n = worst_n

    def collect(self) -> Iterator[Metric]:
        total = self.tracker.total
        cumulative = 0
        buckets = []
        for i, bound in enumerate((*BOUNDS_MS, None)):
            cumulative += total.counts[i]
            buckets.append(("+Inf" if bound is None else _seconds_text(bound), cumulative))
        hist = HistogramMetricFamily(
            "meterlink_capture_to_commit_seconds",
            "Delay from a record's capture (meter/gateway clock) to its ingest COMMIT, "
            "records committed by this collector since it started",
        )
        hist.add_metric([], buckets, sum_value=total.sum_ms / 1000)
        yield hist
        recent = GaugeMetricFamily(
            "meterlink_capture_to_commit_recent_seconds",
            "Capture-to-commit delay of the last 5-10 minutes of this collector's commits, "
            "by quantile (upper bound of the histogram bucket holding it)",
            labels=["quantile"],
        )
        fleet = self.tracker.recent_fleet()
        for p in QUANTILES:
            value = fleet.quantile(p)
            if value is not None:
                recent.add_metric([_quantile_label(p)], value / 1000)
        yield recent
        if self.worst_n:
            worst = GaugeMetricFamily(
                "meterlink_capture_to_commit_worst_seconds",
                f"Capture-to-commit delay of the {self.worst_n} gateways with the largest "
                "recent delay, by quantile (bucket upper bound; exact: the API)",
                labels=["gateway", "quantile"],
            )
            for gateway_id, hist_gw in self.tracker.worst(self.worst_n):
                for p in QUANTILES:
                    value = hist_gw.quantile(p)
                    if value is not None:
                        worst.add_metric([gateway_id, _quantile_label(p)], value / 1000)
            yield worst


def _seconds_text(ms: int) -> str:
    return repr(ms / 1000)


def _quantile_label(p: int) -> str:
    return repr(p / 100)


def attach(ingestor: Any, metrics: Any, config: Any) -> LatencyTracker:
    """Feed a new tracker from ``ingestor``'s commits and show it on ``metrics``' registry
    (per-gateway series only when ``/metrics`` needs a login)."""
    tracker = LatencyTracker()
    ingestor.latency = tracker
    if metrics is not None:
        private = bool(config.http is not None and config.http.metrics_auth)
        metrics.registry.register(LatencyMetrics(tracker, WORST_N if private else 0))
    return tracker


# -- the API ----------------------------------------------------------------------------------


def _figures(row: LatencyRow) -> dict[str, Any]:
    doc: dict[str, Any] = {"records": row.count}
    if row.count:
        doc.update(p50_ms=row.p50_ms, p95_ms=row.p95_ms, p99_ms=row.p99_ms, max_ms=row.max_ms)
    else:
        doc.update(p50_ms=None, p95_ms=None, p99_ms=None, max_ms=None)
    return doc


def _window(request: web.Request) -> tuple[int, int]:
    from .web.api import BadQuery, _time

    end = _time(request, "to", _now_ms(request) + 1)
    start = _time(request, "from", end - DEFAULT_WINDOW_MS)
    if start >= end:
        raise BadQuery(f"from={start} must be before to={end}")
    return start, end


def _now_ms(request: web.Request) -> int:
    from .web.app import CTX

    clock = request.app[CTX].config.collector.clock
    return clock.virtual_ns(time.time_ns()) // 1_000_000


async def fleet_latency(request: web.Request) -> web.Response:
    """Fleet-wide and per-gateway capture-to-commit delays of the records committed in
    [from, to) (collector clock; default: the last 15 minutes); gateways worst p99 first."""
    from .web.api import BadQuery, _dumps, _limit
    from .web.app import CTX

    start, end = _window(request)
    limit = _limit(request)
    after = None
    raw = request.query.get("after")
    if raw:
        p99, sep, gateway_id = raw.partition("~")
        if not sep or not p99.lstrip("-").isdigit():
            raise BadQuery(f"after={raw!r}: not a cursor from a previous page's 'next'")
        after = (int(p99), gateway_id)
    reads = latency_of(request.app[CTX].store)
    fleet = await reads.fleet(start, end)
    rows = await reads.gateways(start, end, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{"gateway_id": r.gateway_id, **_figures(r)} for r in rows]
    return web.json_response(
        {
            "from_ms": start,
            "to_ms": end,
            "target_p99_ms": TARGET_P99_MS,
            "fleet": _figures(fleet),
            "items": items,
            "next": f"{rows[-1].p99_ms}~{rows[-1].gateway_id}" if more and rows else None,
        },
        dumps=_dumps,
    )


async def gateway_latency(request: web.Request) -> web.Response:
    """One gateway's capture-to-commit delays of the records committed in [from, to)."""
    from .web.api import _dumps
    from .web.app import CTX, json_error

    ctx = request.app[CTX]
    gateway_id = request.match_info["gateway_id"]
    if ctx.fleet is not None and gateway_id not in ctx.fleet.gateways:
        return json_error(404, f"no gateway {gateway_id!r}")
    start, end = _window(request)
    rows = await latency_of(ctx.store).gateways(start, end, gateway_id=gateway_id)
    row = rows[0] if rows else LatencyRow(gateway_id, 0, 0, 0, 0, 0)
    return web.json_response(
        {
            "gateway_id": gateway_id,
            "from_ms": start,
            "to_ms": end,
            "target_p99_ms": TARGET_P99_MS,
            **_figures(row),
        },
        dumps=_dumps,
    )


def register(app: web.Application) -> None:
    """The latency routes on the collector's web app (``collector.web.api.register``)."""
    from .web.api import _handler

    for prefix in ("/api", "/api/v1"):
        app.router.add_get(f"{prefix}/latency", _handler(fleet_latency))
        app.router.add_get(f"{prefix}/gateways/{{gateway_id}}/latency", _handler(gateway_latency))


# -- OpenAPI (merged by collector/web/openapi.py) ---------------------------------------------


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}  # fmt: skip


_WINDOW_PARAMS = [
    _query("from", "commit times from (Unix ms or ISO 8601 UTC; default: `to` - 15 minutes)"),
    _query("to", "commit times before (default: now on the collector's clock)"),
]
_ERR = {"$ref": "#/components/schemas/Error"}
_MS = {"type": ["integer", "null"], "description": "ms; null when no records"}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "LatencyFigures": {
        "type": "object",
        "description": "Capture-to-commit delays (committed_ms - captured_ms) of the records "
        "committed in the window: exact nearest-rank percentiles from the store",
        "properties": {
            "records": {"type": "integer"},
            "p50_ms": _MS,
            "p95_ms": _MS,
            "p99_ms": _MS,
            "max_ms": _MS,
        },
    },
    "GatewayLatency": {
        "allOf": [
            {"$ref": "#/components/schemas/LatencyFigures"},
            {"type": "object", "properties": {"gateway_id": {"type": "string"}}},
        ]
    },
}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _errors(not_found: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "400": {"$ref": "#/components/responses/BadRequest"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
        "403": {"$ref": "#/components/responses/Forbidden"},
    }
    if not_found:
        out["404"] = {"description": "no such gateway", "content": {"application/json": {
            "schema": _ERR}}}  # fmt: skip
    return out


_FLEET_DOC = {
    "get": {
        "summary": "Capture-to-commit delay: the fleet's and each gateway's p50/p95/p99/max over"
        " a window of commit times (gateways worst p99 first, paginated)",
        "parameters": [
            *_WINDOW_PARAMS,
            _query(
                "limit",
                "gateways per page, 1..1000 (default 100)",
                type="integer",
                minimum=1,
                maximum=1000,
            ),
            _query("after", "the `next` cursor of the previous page"),
        ],
        "responses": {
            "200": _ok(
                {
                    "type": "object",
                    "properties": {
                        "from_ms": {"type": "integer"},
                        "to_ms": {"type": "integer"},
                        "target_p99_ms": {"type": "integer"},
                        "fleet": {"$ref": "#/components/schemas/LatencyFigures"},
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/GatewayLatency"},
                        },
                        "next": {"type": ["string", "null"]},
                    },
                }
            ),
            **_errors(),
        },
    }
}
_GATEWAY_DOC = {
    "get": {
        "summary": "One gateway's capture-to-commit delay over a window of commit times",
        "parameters": [
            {
                "name": "gateway_id",
                "in": "path",
                "required": True,
                "description": "gateway id",
                "schema": {"type": "string"},
            },
            *_WINDOW_PARAMS,
        ],
        "responses": {
            "200": _ok(
                {
                    "allOf": [
                        {"$ref": "#/components/schemas/GatewayLatency"},
                        {
                            "type": "object",
                            "properties": {
                                "from_ms": {"type": "integer"},
                                "to_ms": {"type": "integer"},
                                "target_p99_ms": {"type": "integer"},
                            },
                        },
                    ]
                }
            ),
            **_errors(not_found=True),
        },
    }
}
OPENAPI_PATHS: dict[str, Any] = {
    f"{prefix}{path}": doc
    for prefix in ("/api", "/api/v1")
    for path, doc in (("/latency", _FLEET_DOC), ("/gateways/{gateway_id}/latency", _GATEWAY_DOC))
}
