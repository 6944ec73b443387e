"""A bill as a printable, self-contained HTML page (no scripts, fonts or images from
elsewhere): per service point an inline SVG heat map of the usage by local day (rows) and hour
(columns), each cell coloured by its TOU period and shaded by how much was used, then the lines
with how each was computed, the corrections, and the total.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import Any

from .bill import Bill
from .document import bill_document

__all__ = ["render_html"]

#: fill colours for TOU periods, in order of first appearance; "" (no TOU) is grey-blue
_PALETTE = ("#d9534f", "#f0ad4e", "#5cb85c", "#5bc0de", "#9b59b6", "#8d6e63", "#3f51b5")
_NO_TOU = "#4a7bb7"
#: the usual period names keep their colour on every bill: peak red, shoulder amber, off-peak
#: green, super off-peak blue
_KNOWN = {
    "peak": "#d9534f",
    "onpeak": "#d9534f",
    "shoulder": "#f0ad4e",
    "midpeak": "#f0ad4e",
    "offpeak": "#5cb85c",
    "superoffpeak": "#5bc0de",
    "night": "#5bc0de",
}

_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; margin: 0.6em 0; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #ddd;
         vertical-align: top; font-size: 0.9em; }
td.num, th.num { text-align: right; white-space: nowrap; }
.how { color: #555; font-size: 0.8em; margin: 0; padding-left: 1.2em; }
.total td { font-weight: bold; border-top: 2px solid #222; }
.legend span { display: inline-block; margin-right: 1em; font-size: 0.85em; }
.legend i { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; }
.meta { color: #444; font-size: 0.9em; }
@media print { body { margin: 0.5cm; } h2 { page-break-after: avoid; } }
"""


def _num(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _heatmap(section: dict[str, Any]) -> str:
    days = list(section["usage_by_hour"])
    if not days:
        return "<p>No usage by hour.</p>"
    values = [v for d in days for v in map(_num, section["usage_by_hour"][d]) if v is not None]
    peak = max(values, default=Decimal(0))
    periods: list[str] = []
    for d in days:
        for name in section["tou_by_hour"].get(d, []):
            if name and name not in periods:
                periods.append(name)
    colour = {name: _KNOWN.get(name.lower().replace("-", "").replace("_", "")) for name in periods}
    spare = [c for c in _PALETTE if c not in colour.values()]
    for i, name in enumerate(n for n in periods if colour[n] is None):
        colour[name] = spare[i % len(spare)] if spare else _PALETTE[i % len(_PALETTE)]
    cell, left, top = 16, 80, 18
    width, height = left + 24 * cell + 4, top + len(days) * cell + 4
    unit = escape(section["unit"])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="usage by day and hour, {unit}">'
    ]
    for hour in range(0, 24, 3):
        x = left + hour * cell + 2
        parts.append(f'<text x="{x}" y="12" font-size="9">{hour:02d}</text>')
    for row, day in enumerate(days):
        y = top + row * cell
        parts.append(f'<text x="0" y="{y + 12}" font-size="9">{escape(day)}</text>')
        usage = section["usage_by_hour"][day]
        tou = section["tou_by_hour"].get(day, [""] * 24)
        for hour in range(24):
            value = _num(usage[hour])
            name = tou[hour] if hour < len(tou) else ""
            fill = colour.get(name, _NO_TOU)
            if value is None:
                opacity, title = "0.06", "no data"
            else:
                share = value / peak if peak > 0 else Decimal(0)
                opacity = str((Decimal("0.12") + Decimal("0.88") * share).quantize(Decimal("0.01")))
                title = f"{value} {section['unit']}"
            label = f"{day} {hour:02d}:00 {name + ': ' if name else ''}{title}"
            parts.append(
                f'<rect x="{left + hour * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                f'fill="{fill}" fill-opacity="{opacity}"><title>{escape(label)}</title></rect>'
            )
    parts.append("</svg>")
    legend = (
        "".join(
            f'<span><i style="background:{c}"></i>{escape(n)}</span>' for n, c in colour.items()
        )
        or f'<span><i style="background:{_NO_TOU}"></i>usage (no TOU periods)</span>'
    )
    scale = f"<span>darker = more (max {peak} {unit} in an hour)</span>"
    return "".join(parts) + f'<p class="legend">{legend}{scale}</p>'


def _line_rows(lines: list[dict[str, Any]], cur: str, correction: bool = False) -> list[str]:
    rows = []
    for line in lines:
        how = "".join(f"<li>{escape(t)}</li>" for t in line["explanation"])
        extra = f"<li>{escape(line['reason'])}</li>" if correction else ""
        rows.append(
            "<tr>"
            f'<td>{escape(line["label"])}<ul class="how">{how}{extra}</ul></td>'
            f'<td class="num">{escape(line["quantity"])} {escape(line["unit"])}</td>'
            f'<td class="num">{escape(line["unit_price"])}</td>'
            f'<td class="num">{escape(line["start"][:16])}<br>{escape(line["end"][:16])}</td>'
            f'<td class="num">{line["actual_intervals"]} / {line["estimated_intervals"]}</td>'
            f'<td class="num">{escape(line["amount"])} {escape(cur)}</td>'
            "</tr>"
        )
    return rows


def _registers(section: dict[str, Any]) -> str:
    """The register readings at the section's ends, per meter and quantity (the evidence)."""
    items = []
    for meter in section["meters"]:
        for q in meter["quantities"]:
            for side, b in zip(("start", "end"), q["boundaries"], strict=False):
                cited = ", ".join(
                    f"{r['captured']} = {r['value']} {r['unit']}" for r in b["readings"]
                )
                items.append(
                    f"<li>{escape(meter['meter'])} {escape(q['obis'])} at {side}: "
                    f"{escape(str(b['value']))} {escape(q['unit'])} [{escape(b['method'])}]"
                    f" from {escape(cited)}</li>"
                )
    return f'<ul class="how">{"".join(items)}</ul>' if items else ""


_HEAD = (
    '<tr><th>line and how it was computed</th><th class="num">quantity</th>'
    '<th class="num">unit price</th><th class="num">intervals from / to (UTC)</th>'
    '<th class="num">actual / estimated</th><th class="num">amount</th></tr>'
)


def render_html(bill: Bill | dict[str, Any]) -> str:
    doc = bill_document(bill) if isinstance(bill, Bill) else bill
    cur = doc["currency"]
    number = doc["number"] or "draft (not issued)"
    title = f"Bill {number}: {doc['account_name']}, {doc['period']}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(doc['account_name'])}</h1>",
        f'<p class="meta">Account {escape(doc["account_id"])} &middot; bill {escape(number)}'
        + (f" issued {escape(doc['issued'])}" if doc["issued"] else "")
        + f" &middot; period {escape(doc['period'])}: {escape(doc['start'])} to "
        f"{escape(doc['end'])} ({escape(doc['timezone'])})"
        + (" &middot; <strong>to date</strong>" if doc["to_date"] else "")
        + "</p>",
    ]
    for section in doc["sections"]:
        out.append(
            f"<h2>{escape(section['commodity'].capitalize())} &middot; service point "
            f"{escape(section['service_point'])}</h2>"
        )
        meters = "; ".join(
            f"meter {m['meter']} {m['start_local'][:16]} to {m['end_local'][:16]}: "
            + ", ".join(f"{q['obis']} {q['total']} {q['unit']}" for q in m["quantities"])
            for m in section["meters"]
        )
        tariffs = ", ".join(t["tariff"] for t in section["tariffs"])
        out.append(f'<p class="meta">{escape(meters)} &middot; tariff {escape(tariffs)}</p>')
        out.append(_registers(section))
        out.append(_heatmap(section))
        out.append(f"<table>{_HEAD}")
        out.extend(_line_rows(section["lines"], cur))
        out.append(
            f'<tr class="total"><td colspan="5">Subtotal</td><td class="num">'
            f"{escape(section['subtotal'])} {escape(cur)}</td></tr></table>"
        )
        for note in section["notes"]:
            out.append(f'<p class="meta">Note: {escape(note)}</p>')
    if doc["corrections"]:
        out.append("<h2>Corrections of earlier bills</h2>")
        out.append(f"<table>{_HEAD}")
        out.extend(_line_rows(doc["corrections"], cur, correction=True))
        out.append("</table>")
    out.append(
        f'<table><tr class="total"><td>Total</td><td class="num">{escape(doc["total"])} '
        f"{escape(cur)}</td></tr></table>"
    )
    out.append(
        '<p class="meta">Each line is rounded once to the minor unit; the total is the sum of '
        "the lines.</p>"
    )
    out.extend(f'<p class="meta">Note: {escape(n)}</p>' for n in doc["notes"])
    out.append("</body></html>")
    return "\n".join(out) + "\n"
