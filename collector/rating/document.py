"""A bill as one JSON-able document: what is stored when a bill is issued, and what every
output (text, CSV, HTML, JSON) is rendered from, so an issued bill prints the same forever.

Decimals are strings (exact); instants are UTC ISO 8601 (``...Z``) plus the local form where a
person reads them. ``lines`` (top level) lists every line of every section and then the
correction lines, each with the register readings behind it (``readings``: the boundaries of
the section's meters, for ``meterlink verify --bill``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from protocols.clock import format_utc_ms, utc_ms

from .bill import Bill, Section, line_key
from .model import ChargeLine

__all__ = ["FORMAT", "bill_document", "document_json", "stored_lines"]

FORMAT = "meterlink-bill/1"


def _iso(moment: datetime) -> str:
    return format_utc_ms(utc_ms(moment))


def _local(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).isoformat()


def _line(line: ChargeLine, readings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "component": line.component,
        "label": line.label,
        "description": line.label,
        "quantity": str(line.quantity),
        "unit": line.unit,
        "unit_price": str(line.unit_price),
        "amount": str(line.amount),
        "currency": line.currency,
        "start": _iso(line.start),
        "end": _iso(line.end),
        "actual_intervals": line.actual_intervals,
        "estimated_intervals": line.estimated_intervals,
        "explanation": list(line.explanation),
        "tou_period": line.period,
        "tier": line.tier,
        "tariff": line.tariff_id,
        "tariff_version": line.tariff_version,
        "key": line_key(line),
        "readings": readings or [],
    }


def _evidence(section: Section, line: ChargeLine) -> list[dict[str, Any]]:
    """The register boundaries behind a usage line: import (or export for an export line)."""
    if line.unit != section.unit or line.component in ("tax", "standing", "minimum"):
        return []
    role = "export" if "export" in line.component or "export" in line.label.lower() else "import"
    return [
        b.evidence()
        for meter in section.meters
        for q in meter.quantities
        if q.role == role
        for b in q.boundaries
    ]


def _section(section: Section, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "service_point": section.service_point,
        "commodity": section.commodity,
        "unit": section.unit,
        "start": format_utc_ms(section.start_ms),
        "end": format_utc_ms(section.end_ms),
        "start_local": _local(section.start_ms, zone),
        "end_local": _local(section.end_ms, zone),
        "tariffs": [
            {"tariff": t, "start": format_utc_ms(a), "end": format_utc_ms(b)}
            for t, a, b in section.tariffs
        ],
        "meters": [
            {
                "meter": m.meter_id,
                "start": format_utc_ms(m.start_ms),
                "end": format_utc_ms(m.end_ms),
                "start_local": _local(m.start_ms, zone),
                "end_local": _local(m.end_ms, zone),
                "quantities": [
                    {
                        "obis": q.obis,
                        "role": q.role,
                        "unit": q.unit,
                        "total": str(q.total),
                        "intervals": dict(sorted(q.counts.items())),
                        "source": q.source,
                        "note": q.note,
                        "boundaries": [b.evidence() for b in q.boundaries],
                    }
                    for q in m.quantities
                ],
            }
            for m in section.meters
        ],
        "lines": [_line(line, _evidence(section, line)) for line in section.lines],
        "subtotal": str(section.subtotal),
        "usage_by_hour": {
            day: [None if v is None else str(v) for v in row] for day, row in section.hourly.items()
        },
        "tou_by_hour": {day: list(row) for day, row in section.tou.items()},
        "notes": list(section.notes),
    }


def bill_document(bill: Bill) -> dict[str, Any]:
    zone = ZoneInfo(bill.timezone)
    sections = [_section(s, zone) for s in bill.sections]
    corrections = []
    for c in bill.corrections:
        doc = _line(c.line)
        doc.update(
            service_point=c.service_point,
            corrects_period=c.corrects_period,
            corrects_bill=c.corrects_number,
            corrects_key=c.key,
            billed_quantity=str(c.billed_quantity),
            billed_amount=str(c.billed_amount),
            reason=c.reason,
        )
        corrections.append(doc)
    flat = [dict(line, service_point=s["service_point"]) for s in sections for line in s["lines"]]
    return {
        "format": FORMAT,
        "number": bill.number,
        "status": "issued" if bill.number else ("draft, to date" if bill.to_date else "draft"),
        "issued": None if bill.issued_ms is None else format_utc_ms(bill.issued_ms),
        "account_id": bill.account_id,
        "account_name": bill.account_name,
        "period": bill.period,
        "timezone": bill.timezone,
        "start": _local(bill.start_ms, zone),
        "end": _local(bill.end_ms, zone),
        "start_utc": format_utc_ms(bill.start_ms),
        "end_utc": format_utc_ms(bill.end_ms),
        "as_of": format_utc_ms(bill.as_of_ms),
        "to_date": bill.to_date,
        "currency": bill.currency,
        "sections": sections,
        "corrections": corrections,
        "lines": flat + corrections,
        "total": str(bill.total),
        "rounding": "each line rounded once to the minor unit; total = sum of the lines",
        "notes": list(bill.notes),
    }


def document_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


def stored_lines(doc: dict[str, Any]) -> list[tuple]:
    """The rows of ``bill_lines`` for an issued document (without number and line no.)."""
    rows = []
    for section in doc["sections"]:
        for line in section["lines"]:
            rows.append(
                (
                    section["service_point"],
                    line["key"],
                    line["component"],
                    line["label"],
                    line["quantity"],
                    line["unit"],
                    line["unit_price"],
                    line["amount"],
                    None,
                    None,
                )
            )
    for c in doc["corrections"]:
        rows.append(
            (
                c["service_point"],
                c["corrects_key"],
                "correction",
                c["label"],
                c["quantity"],
                c["unit"],
                c["unit_price"],
                c["amount"],
                c["corrects_period"],
                c["corrects_bill"],
            )
        )
    return rows


def total_of(doc: dict[str, Any]) -> Decimal:
    return Decimal(doc["total"])
