"""A bill as text for a person and as JSON for programs (Decimals as strings)."""

from __future__ import annotations

import json
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from .bill import Bill

__all__ = ["bill_to_json", "render_text"]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def bill_to_json(bill: Bill) -> str:
    doc = asdict(bill)
    for line, src in zip(doc["lines"], bill.lines, strict=True):
        line["readings"] = [b.evidence() for b in src.readings]
    return json.dumps(_plain(doc), indent=2)


def render_text(bill: Bill) -> str:
    cur = bill.currency
    out = [
        f"Bill for account {bill.account_id} ({bill.account_name})",
        f"Period {bill.period}: {bill.start} to {bill.end} ({bill.timezone})"
        + ("  [TO DATE]" if bill.to_date else ""),
        f"Tariff {bill.tariff_id}, amounts in {cur}",
        "",
    ]
    width = 44
    for line in bill.lines:
        head = f"{line.description:<{width}} {line.amount:>12} {cur}"
        out.append(head)
        detail = f"    {line.quantity} {line.unit} x {line.rate} {line.rate_unit}"
        if line.note:
            detail += f"  ({line.note})"
        out.append(detail)
        for label, boundary in zip(("start", "end"), line.readings, strict=False):
            value = "-" if boundary.value is None else f"{boundary.value} kWh"
            out.append(f"    register at {label}: {value} [{boundary.method}]")
            for reading in boundary.evidence()["readings"]:
                out.append(
                    f"        reading {reading['captured']}: {reading['value']} {reading['unit']}"
                )
            if boundary.method == "interpolated":
                out.append(f"        {boundary.explain}")
    out.append("")
    out.append(f"{'Total':<{width}} {bill.total:>12} {cur}")
    out.append("Each line is rounded once to the minor unit (half-up); total = sum of lines.")
    return "\n".join(out) + "\n"
