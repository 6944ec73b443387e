"""The agent's own Prometheus metrics on a local port (``[metrics]`` in the agent config).

::

    [metrics]
    port = 9101            # required: the table's presence turns the endpoint on
    host = "127.0.0.1"     # default; the figures are for the gateway's own monitoring

Served by prometheus-client's small HTTP server in a thread of its own (``/metrics``): the
values are read from the running agent when scraped (reads and failures per meter, buffer
depth, records published and acked) and publish/ack latency is a histogram fed by the uplink.
A port that cannot be bound is logged and the agent goes on reading meters without it.

``[metrics]`` is parsed here (the agent's config loader only accepts the table) so that this
part of the config lives with the code that uses it; its errors name file, line and key.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import ConfigError, ConfigIssue

__all__ = ["AgentMetrics", "MetricsSettings", "load_metrics_settings", "start_metrics"]

log = logging.getLogger("agent.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    port: int
    host: str = "127.0.0.1"


def _line_of(text: str, key: str | None) -> int | None:
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            if in_table and key is not None:
                return None
            in_table = stripped.replace(" ", "").startswith("[metrics]")
            if in_table and key is None:
                return number
        elif in_table and key is not None and stripped.split("=")[0].strip() == key:
            return number
    return None


def load_metrics_settings(path: Path) -> MetricsSettings | None:
    """The ``[metrics]`` table of the agent config at ``path`` (None when absent)."""
    text = path.read_text(encoding="utf-8")
    doc = tomllib.loads(text)  # the config loader has already parsed the same text
    table = doc.get("metrics")
    if table is None:
        return None

    def fail(key: str | None, message: str) -> ConfigError:
        name = f"metrics.{key}" if key else "metrics"
        return ConfigError([ConfigIssue(path, _line_of(text, key), name, message)])

    if not isinstance(table, dict):
        raise fail(None, "[metrics] must be a table")
    unknown = sorted(set(table) - {"port", "host"})
    if unknown:
        raise fail(unknown[0], "unknown key (known: host, port)")
    port = table.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise fail("port", f"must be an integer 1..65535, got {port!r}")
    host = table.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise fail("host", f"must be a non-empty string, got {host!r}")
    return MetricsSettings(port, host)


class _AgentCollector(Collector):
    """Reads the running agent's counters at scrape time."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        if service.writer is None or service.uplink is None or service.buffer is None:
            return
        c = service.counters()
        reads = CounterMetricFamily(
            "meterlink_agent_reads", "Meter reads that gave a capture", labels=["meter"]
        )
        failures = CounterMetricFamily(
            "meterlink_agent_read_failures",
            "Meter reads that failed or were partial",
            labels=["meter"],
        )
        for sched in list(service.schedulers):
            for meter in sched.meters:
                reads.add_metric([meter.meter_id], meter.captures)
                failures.add_metric([meter.meter_id], meter.errors)
        yield reads
        yield failures
        for name, key, text in (
            ("meterlink_agent_captured_records", "captured_records", "Records captured"),
            ("meterlink_agent_published_records", "published_records", "Records published"),
            ("meterlink_agent_acked_records", "acked_records", "Records acked by the head-end"),
            ("meterlink_agent_resent_batches", "resent_batches", "Batches sent again"),
            ("meterlink_agent_dropped_records", "dropped", "Records dropped by the buffer"),
        ):
            yield CounterMetricFamily(name, text, value=int(c[key]))  # type: ignore[arg-type]
        yield GaugeMetricFamily(
            "meterlink_agent_buffer_records",
            "Records in the buffer not yet acked (buffer depth)",
            value=int(c["backlog"]),  # type: ignore[arg-type]
        )
        yield GaugeMetricFamily(
            "meterlink_agent_inflight_batches",
            "Batches published and not yet acked",
            value=int(c["inflight_batches"]),  # type: ignore[arg-type]
        )
        yield GaugeMetricFamily(
            "meterlink_agent_connected",
            "1 when connected to the broker",
            value=1 if c["connected"] else 0,
        )


class AgentMetrics:
    """The registry, the latency histogram and (once started) the HTTP server."""

    def __init__(self, service: Any) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "meterlink_agent_latency_seconds",
            "Batch publish -> broker PUBACK (kind=publish) and -> head-end ack (kind=ack)",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_AgentCollector(service))
        self._server: Any = None
        self._thread: Any = None

    def observe_latency(self, kind: str, seconds: float) -> None:
        self.latency.labels(kind).observe(max(seconds, 0.0))

    def serve(self, settings: MetricsSettings) -> bool:
        try:
            self._server, self._thread = start_http_server(
                settings.port, addr=settings.host, registry=self.registry
            )
        except OSError as exc:
            log.error(
                "metrics: cannot listen on %s:%d (%s); the agent runs on without metrics",
                settings.host,
                settings.port,
                exc.strerror or exc,
            )
            return False
        log.info("metrics: http://%s:%d/metrics", settings.host, settings.port)
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start_metrics(service: Any, settings: MetricsSettings | None) -> AgentMetrics | None:
    """Start the metrics endpoint of ``service`` (an ``AgentService``) if configured."""
    if settings is None:
        return None
    metrics = AgentMetrics(service)
    if service.uplink is not None:
        service.uplink.observe_latency = metrics.observe_latency
    metrics.serve(settings)
    return metrics
