"""``meterlink collector bill``: one account's bill, or a bill run (``--all``) with progress.

Exit codes: 0 done; 2 bad input (config, account, period; with ``--all``: any account that
could not be billed, after billing every other one); 1 database failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import Config
from ..store import open_store
from .html import render_html
from .render import bill_to_json, render_csv, render_text
from .run import bill_account, bill_run, load_billing

__all__ = ["bill_command", "render"]


def render(docs: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        body = bill_to_json(docs[0]) if len(docs) == 1 else json.dumps(docs, indent=2)
        return body + "\n"
    if fmt == "csv":
        return render_csv(docs)
    if fmt == "html":
        return "".join(render_html(d) for d in docs)
    return "\n".join(render_text(d) for d in docs)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


async def bill_command(config: Config, args: argparse.Namespace, as_of_ms: int) -> int:
    assert config.billing is not None
    fmt = "json" if args.json else args.format
    billing = load_billing(config.billing.accounts, config.billing.tariffs)
    store = await open_store(config.collector.database)
    try:
        if not args.all:
            account = billing.account(args.account)
            doc, state = await bill_account(
                store, billing, account, args.period, as_of_ms, args.issue
            )
            _write(render([doc], fmt), args.out)
            if args.issue or args.out is not None:
                print(_said(doc, state, args.out), file=sys.stderr)
            return 0

        def progress(i: int, n: int, account_id: str, what: str) -> None:
            print(f"[{i}/{n}] {account_id}: {what}", file=sys.stderr, flush=True)

        result = await bill_run(store, billing, args.period, as_of_ms, args.issue, progress)
    finally:
        await store.close()
    if fmt == "html" and args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for doc in result.documents:
            name = f"{doc['account_id']}-{doc['period']}.html"
            (args.out / name).write_text(render_html(doc), encoding="utf-8")
    elif result.documents:
        _write(render(result.documents, fmt), args.out)
    print(
        f"bill run {args.period}: {len(result.documents)} bill(s) ({result.issued} issued now,"
        f" {result.stored} issued before, {result.drafts} draft), {len(result.failures)} failed",
        file=sys.stderr,
    )
    for account_id, error in result.failures:
        print(f"error: {account_id}: {error}", file=sys.stderr)
    return 2 if result.failures else 0


def _said(doc: dict[str, Any], state: str, out: Path | None) -> str:
    where = f" -> {out}" if out is not None else ""
    what = {"issued": "issued", "stored": "already issued", "draft": "draft"}[state]
    number = f" {doc['number']}" if doc["number"] else ""
    return f"{doc['account_id']} {doc['period']}: {what}{number}, total {doc['total']}{where}"
