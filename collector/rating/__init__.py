"""Rating and convergent billing.

Tariffs (``model``, ``engine``, ``components``, the tariff loader) rate one service point's
usage over a period; accounts (``accounts``) say who has which service points, meters and
tariffs over time; the bill (``bill``) joins them per account and period with VEE's derived
intervals, corrections of earlier issued bills, and outputs (``document``, ``render``,
``html``); ``run`` bills an account or every account and issues (numbers and stores) bills.
"""

from .accounts import COMMODITIES, Account, ServicePoint, load_accounts, parse_period
from .bill import Bill, Correction, Section, build_bill
from .document import bill_document
from .html import render_html
from .render import bill_to_json, render_csv, render_text
from .tariff import load_tariffs

__all__ = [
    "COMMODITIES",
    "Account",
    "Bill",
    "Correction",
    "Section",
    "ServicePoint",
    "bill_document",
    "bill_to_json",
    "build_bill",
    "load_accounts",
    "load_tariffs",
    "parse_period",
    "render_csv",
    "render_html",
    "render_text",
]
