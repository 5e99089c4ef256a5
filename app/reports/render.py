"""Printable statements and invoices: HTML pages styled for paper (print them, or save them as
PDF from the browser). Templates live in `templates/`; every value is escaped."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from app.reports.schemas import Invoice, Statement

TEMPLATES = Path(__file__).parent / "templates"


def money(micros: int | None, currency: str = "") -> str:
    """Integer micro-units as a decimal amount: 1234567 -> '1.234567' (exact, no float)."""
    if micros is None:
        return ""
    whole, part = divmod(abs(micros), 1_000_000)
    text = f"{'-' if micros < 0 else ''}{whole:,}.{part:06d}"
    return f"{text} {currency}".rstrip()


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = money
    return environment


def statement_html(doc: Statement) -> str:
    return _environment().get_template("statement.html").render(doc=doc)


def invoice_html(doc: Invoice) -> str:
    return _environment().get_template("invoice.html").render(doc=doc)
