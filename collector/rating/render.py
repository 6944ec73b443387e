"""A bill as text for a person, as JSON for programs and as CSV lines, all from its document
(``document.bill_document``; an issued bill's stored document renders the same way)."""

from __future__ import annotations

import csv
import io
from typing import Any

from .bill import Bill
from .document import bill_document, document_json

__all__ = ["CSV_COLUMNS", "bill_to_json", "render_csv", "render_text"]


def _doc(bill: Bill | dict[str, Any]) -> dict[str, Any]:
    return bill_document(bill) if isinstance(bill, Bill) else bill


def bill_to_json(bill: Bill | dict[str, Any]) -> str:
    return document_json(_doc(bill))


def _counts(line: dict[str, Any]) -> str:
    return f"{line['actual_intervals']} actual, {line['estimated_intervals']} estimated intervals"


def render_text(bill: Bill | dict[str, Any], explain: bool = True) -> str:
    doc = _doc(bill)
    cur = doc["currency"]
    number = doc["number"] or "(draft, not issued)"
    out = [
        f"Bill for account {doc['account_id']} ({doc['account_name']})",
        f"Bill number {number}" + (f", issued {doc['issued']}" if doc["issued"] else ""),
        f"Period {doc['period']}: {doc['start']} to {doc['end']} ({doc['timezone']})"
        + ("  [TO DATE]" if doc["to_date"] else ""),
        f"Amounts in {cur}",
    ]
    width = 52
    for section in doc["sections"]:
        out.append("")
        out.append(
            f"== {section['commodity'].capitalize()}, service point {section['service_point']}"
            f" ({section['start_local']} to {section['end_local']})"
        )
        tariffs = ", ".join(t["tariff"] for t in section["tariffs"])
        out.append(f"   tariff: {tariffs}")
        for meter in section["meters"]:
            out.append(f"   meter {meter['meter']}: {meter['start_local']} to {meter['end_local']}")
            for q in meter["quantities"]:
                counts = ", ".join(f"{n} {k}" for k, n in q["intervals"].items()) or "none"
                note = f"; {q['note']}" if q["note"] else ""
                out.append(
                    f"     {q['obis']} ({q['role']}): {q['total']} {q['unit']}"
                    f" from {q['source']} (intervals: {counts}){note}"
                )
                for side, boundary in zip(("start", "end"), q["boundaries"], strict=False):
                    if not explain:
                        break
                    out.append(
                        f"       register at {side} {boundary['value']} [{boundary['method']}]"
                    )
                    if boundary["method"] == "interpolated":
                        out.append(f"         {boundary['explain']}")
                    out.extend(
                        f"         reading {r['meter']} {r['captured']}: {r['value']} {r['unit']}"
                        for r in boundary["readings"]
                    )
        for line in section["lines"]:
            out.append(f"{line['label']:<{width}} {line['amount']:>12} {cur}")
            out.append(
                f"    {line['quantity']} {line['unit']} x {line['unit_price']}"
                f"  [{line['start']} .. {line['end']}; {_counts(line)}]"
            )
            if explain:
                out.extend(f"      {text}" for text in line["explanation"])
        out.append(f"{'  subtotal':<{width}} {section['subtotal']:>12} {cur}")
        out.extend(f"   note: {note}" for note in section["notes"])
    if doc["corrections"]:
        out.append("")
        out.append("== Corrections of earlier bills")
        for line in doc["corrections"]:
            out.append(f"{line['label']:<{width}} {line['amount']:>12} {cur}")
            out.append(f"    {line['quantity']} {line['unit']}; {line['reason']}")
            if explain:
                out.extend(f"      {text}" for text in line["explanation"])
    out.append("")
    out.append(f"{'Total':<{width}} {doc['total']:>12} {cur}")
    out.append("Each line is rounded once to the minor unit; total = sum of the lines.")
    out.extend(f"Note: {note}" for note in doc["notes"])
    return "\n".join(out) + "\n"


CSV_COLUMNS = (
    "bill",
    "account",
    "period",
    "service_point",
    "commodity",
    "component",
    "label",
    "quantity",
    "unit",
    "unit_price",
    "amount",
    "currency",
    "start",
    "end",
    "actual_intervals",
    "estimated_intervals",
    "tou_period",
    "tier",
    "tariff",
    "tariff_version",
    "corrects_period",
    "corrects_bill",
)


def render_csv(bills: list[Bill | dict[str, Any]], header: bool = True) -> str:
    """One CSV row per bill line (sections' lines, then corrections), a total row per bill."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for item in bills:
        doc = _doc(item)
        head = [doc["number"] or "", doc["account_id"], doc["period"]]
        for section in doc["sections"]:
            for line in section["lines"]:
                writer.writerow(
                    [*head, section["service_point"], section["commodity"], *_row(line), "", ""]
                )
        for line in doc["corrections"]:
            writer.writerow(
                [
                    *head,
                    line["service_point"],
                    "",
                    *_row(line),
                    line["corrects_period"],
                    line["corrects_bill"],
                ]
            )
        writer.writerow(
            [*head, "", "", "total", "Total", "", "", "", doc["total"], doc["currency"]]
            + [""] * (len(CSV_COLUMNS) - 12)
        )
    return buf.getvalue()


def _row(line: dict[str, Any]) -> list[Any]:
    return [
        line["component"],
        line["label"],
        line["quantity"],
        line["unit"],
        line["unit_price"],
        line["amount"],
        line["currency"],
        line["start"],
        line["end"],
        line["actual_intervals"],
        line["estimated_intervals"],
        line["tou_period"],
        "" if line["tier"] is None else line["tier"],
        line["tariff"],
        line["tariff_version"],
    ]
