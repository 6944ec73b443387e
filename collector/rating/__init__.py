"""Rating, first version: flat tariffs with a daily standing charge, import price and optional
export credit, over accounts of electricity meters. The full tariff engine comes later."""

from .accounts import Account, load_accounts
from .bill import Bill, BillLine, build_bill, parse_period
from .render import bill_to_json, render_text
from .tariff import Tariff, load_tariffs

__all__ = [
    "Account",
    "Bill",
    "BillLine",
    "Tariff",
    "bill_to_json",
    "build_bill",
    "load_accounts",
    "load_tariffs",
    "parse_period",
    "render_text",
]
