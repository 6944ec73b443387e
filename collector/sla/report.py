"""The SLA report as text (``--format table``); JSON is ``SlaReport.to_json()``."""

from __future__ import annotations

from decimal import Decimal

from protocols.clock import format_utc_ms

from .evaluate import SlaReport

__all__ = ["format_table"]


def _ratio_pct(value: str | None) -> str:
    """'0.995000' -> '99.50%'."""
    if value is None:
        return "-"
    return f"{(Decimal(value) * 100).quantize(Decimal('0.01'))}%"


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _causes(causes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in causes.items()) or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [
        fmt.format(*r) for r in rows
    ]


def format_table(report: SlaReport, limit: int = 500) -> str:
    out = [
        f"SLA {report.period} ({report.timezone} days, "
        f"{format_utc_ms(report.from_ms)} .. {format_utc_ms(report.to_ms)}), "
        f"as of {format_utc_ms(report.now_ms)}",
        "",
        "Classes",
    ]
    out += _table(
        ["class", "target actual", "target on time", "deadline", "meters", "decided",
         "actual", "on time", "pending", "meter-days in breach"],
        [
            [c.sla_class.name, f"{c.sla_class.actual_pct}%", f"{c.sla_class.on_time_pct}%",
             _duration(c.sla_class.deadline_ms), str(len(c.meters)), str(c.tally.decided),
             _ratio_pct(j["actual_ratio"]), _ratio_pct(j["on_time_ratio"]),
             str(c.tally.pending), str(c.meter_days_in_breach)]
            for c in report.classes
            for j in [c.tally.figures()]
        ],
    )  # fmt: skip
    out += ["", "Gateways per day"]
    out += _table(
        ["day", "gateway", "meters", "decided", "actual", "on time", "in breach", "causes"],
        [
            [g.day.isoformat(), g.gateway_id, str(g.meters), str(g.tally.decided),
             _ratio_pct(j["actual_ratio"]), _ratio_pct(j["on_time_ratio"]),
             str(g.meters_in_breach), _causes(j["causes"])]
            for g in report.gateway_days
            for j in [g.tally.figures()]
        ],
    )  # fmt: skip
    out += ["", f"Breaches ({len(report.breaches)})"]
    if report.breaches:
        out += _table(
            ["day", "gateway", "meter", "class", "kind", "ratio", "target", "intervals",
             "cause", "causes"],
            [
                [j["day"], j["gateway"], j["meter"], j["class"], j["kind"],
                 _ratio_pct(j["ratio"]), f"{j['target_pct']}%", str(j["intervals"]),
                 j["cause"], _causes(j["causes"])]
                for b in report.breaches[:limit]
                for j in [b.to_json()]
            ],
        )  # fmt: skip
        if len(report.breaches) > limit:
            out.append(f"... {len(report.breaches) - limit} more (--format json for all)")
    else:
        out.append("none")
    if report.unclassified:
        out += ["", f"Meters in no SLA class (not evaluated): {', '.join(report.unclassified)}"]
    return "\n".join(out) + "\n"
