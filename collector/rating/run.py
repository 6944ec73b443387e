"""Billing one account (draft or issued) and bill runs over every account.

``bill_account`` returns the bill's document: an already issued bill of (account, period) is
read back from the store exactly as issued (never rebuilt); otherwise a draft is built, and
with ``issue`` it is numbered and stored in one transaction. A period not over yet (as at
``now``) can be shown to date but not issued.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import CollectorError, RatingError
from .accounts import Account, load_accounts
from .bill import build_bill
from .document import bill_document, stored_lines
from .model import TariffHistory

__all__ = ["Billing", "RunResult", "bill_account", "bill_run", "load_billing"]


@dataclass(frozen=True)
class Billing:
    accounts: dict[str, Account]
    tariffs: Mapping[str, TariffHistory]
    accounts_path: Path

    def account(self, account_id: str) -> Account:
        found = self.accounts.get(account_id)
        if found is None:
            known = ", ".join(sorted(self.accounts)) or "none"
            raise RatingError(f"{self.accounts_path}: no account {account_id!r} (known: {known})")
        return found


def load_billing(accounts: Path, tariffs: Path) -> Billing:
    from .tariff import load_tariffs

    histories = load_tariffs(tariffs)
    return Billing(load_accounts(accounts, histories), histories, accounts)


async def bill_account(
    store: Any,
    billing: Billing,
    account: Account,
    period: str,
    now_ms: int,
    issue: bool = False,
) -> tuple[dict[str, Any], str]:
    """(document, state): state is ``issued`` (just now), ``stored`` (issued before) or
    ``draft``."""
    from .accounts import parse_period

    label = parse_period(period, account).label
    stored = await store.bills.issued(account.id, label)
    if stored is not None:
        return json.loads(stored.document), "stored"
    bill = await build_bill(store, account, label, now_ms, billing.tariffs)
    if not issue:
        return bill_document(bill), "draft"
    if bill.to_date:
        raise RatingError(
            f"account {account.id}: period {label} is not over yet (as at the bill's instant);"
            " a bill is issued only for a whole period"
        )

    def make(number: str) -> tuple[str, str, list[tuple]]:
        doc = bill_document(replace(bill, number=number, issued_ms=now_ms))
        return doc["total"], json.dumps(doc, ensure_ascii=False), stored_lines(doc)

    issued = await store.bills.issue(
        account.id, label, bill.start_ms, bill.end_ms, bill.currency, now_ms, make
    )
    return json.loads(issued.document), "issued" if issued.issued_ms == now_ms else "stored"


@dataclass
class RunResult:
    documents: list[dict[str, Any]]
    failures: list[tuple[str, str]]  # (account, error)
    issued: int = 0
    stored: int = 0
    drafts: int = 0


async def bill_run(
    store: Any,
    billing: Billing,
    period: str,
    now_ms: int,
    issue: bool,
    progress: Callable[[int, int, str, str], None] | None = None,
) -> RunResult:
    """Bill every account; one account's error is reported and the run goes on."""
    result = RunResult([], [])
    ids = sorted(billing.accounts)
    for i, account_id in enumerate(ids, start=1):
        account = billing.accounts[account_id]
        try:
            doc, state = await bill_account(store, billing, account, period, now_ms, issue)
        except CollectorError as exc:  # bad data or config of this account: go on
            result.failures.append((account_id, str(exc)))
            if progress:
                progress(i, len(ids), account_id, f"FAILED: {exc}")
            continue
        result.documents.append(doc)
        if state == "issued":
            result.issued += 1
        elif state == "stored":
            result.stored += 1
        else:
            result.drafts += 1
        if progress:
            what = f"{state} {doc['number'] or ''}".strip()
            progress(i, len(ids), account_id, f"{what}, total {doc['total']} {doc['currency']}")
    return result
