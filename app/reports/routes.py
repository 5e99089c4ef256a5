"""HTTP endpoints for royalty reports, the usage history, statements and invoices."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from app.catalogues.models import Preference
from app.db import SessionDep
from app.errors import EVERY_ROUTE, Unprocessable, error_responses
from app.ledger.routes import MonthPath, month_param
from app.orgs.auth import Principal, require
from app.orgs.models import OrgKind
from app.pagination import CursorQuery, LimitQuery, Page, paginate
from app.reports import render, statements
from app.reports import service as reports
from app.reports.schemas import GroupBy, Invoice, RoyaltyReport, RoyaltyRowRead, Statement, UseRead
from app.state import SessionsDep, SettingsDep
from app.validation import Instant, ordered_period

router = APIRouter(prefix="/v1", tags=["reports"], responses=error_responses(*EVERY_ROUTE))

RoyaltyReaderDep = Annotated[
    Principal, Depends(require(OrgKind.LABEL, OrgKind.AUDITOR, OrgKind.OPERATOR))
]
UseReaderDep = Annotated[
    Principal,
    Depends(require(OrgKind.LABEL, OrgKind.AI_COMPANY, OrgKind.AUDITOR, OrgKind.OPERATOR)),
]
FromQuery = Annotated[Instant | None, Query(alias="from", description="Inclusive.")]
ToQuery = Annotated[Instant | None, Query(alias="to", description="Exclusive.")]


class Format(enum.StrEnum):
    JSON = "json"
    CSV = "csv"


class DocumentFormat(enum.StrEnum):
    JSON = "json"
    CSV = "csv"
    HTML = "html"  # printable


InvoiceReaderDep = Annotated[
    Principal, Depends(require(OrgKind.AI_COMPANY, OrgKind.AUDITOR, OrgKind.OPERATOR))
]
CurrencyQuery = Annotated[
    str | None,
    Query(pattern=r"^[A-Z]{3}$", description="Default: the deployment's settlement currency."),
]
DOCUMENT_RESPONSES = error_responses(404, 409, 422) | {
    200: {"content": {"text/csv": {}, "text/html": {}}}
}


def _csv(lines: Iterator[str], filename: str) -> StreamingResponse:
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _own_or_named(
    principal: Principal, named: uuid.UUID | None, kind: OrgKind, field: str
) -> uuid.UUID:
    """The caller's own organisation, or (auditors, operators) the one named by `field`."""
    if principal.kind == kind:
        if named not in (None, principal.org_id):
            raise Unprocessable(
                f"you read your own documents; omit {field}",
                details=[{"field": f"query.{field}", "message": "not your organisation"}],
            )
        return principal.org_id
    if named is None:
        raise Unprocessable(
            f"{field} is required for auditors and operators",
            details=[{"field": f"query.{field}", "message": "required"}],
        )
    return named


@router.get(
    "/royalties",
    response_model=RoyaltyReport,
    responses=error_responses(422) | {200: {"content": {"text/csv": {}}}},
    summary="A label's royalties over a period, grouped (label: its own; auditors: any label)",
)
def royalties(
    session: SessionDep,
    principal: RoyaltyReaderDep,
    settings: SettingsDep,
    group_by: GroupBy = GroupBy.MONTH,
    start: FromQuery = None,
    end: ToQuery = None,
    label_id: uuid.UUID | None = None,
    format: Format = Format.JSON,
) -> RoyaltyReport | StreamingResponse:
    """Totals are computed from the ledger postings on the label's account, net of
    reversals, so they reconcile exactly with `/v1/accounts/me`."""
    ordered_period(start, end)
    if principal.kind == OrgKind.LABEL:
        if label_id not in (None, principal.org_id):
            raise Unprocessable(
                "labels read their own royalties; omit label_id",
                details=[{"field": "query.label_id", "message": "not your organisation"}],
            )
        label_id = principal.org_id
    elif label_id is None:
        raise Unprocessable(
            "label_id is required for auditors and operators",
            details=[{"field": "query.label_id", "message": "required"}],
        )
    rows = reports.royalties(
        session,
        label_id=label_id,
        currency=settings.currency,
        start=start,
        end=end,
        group_by=group_by,
    )
    if format is Format.CSV:
        fields = ["group", "name", "uses", "reversals", "amount_micros"]
        lines = reports.csv_lines(fields, ([getattr(r, f) for f in fields] for r in rows))
        return _csv(lines, f"royalties-{label_id}-{group_by.value}.csv")
    return RoyaltyReport(
        label_id=label_id,
        currency=settings.currency,
        start=start,
        end=end,
        group_by=group_by,
        rows=[RoyaltyRowRead.model_validate(r, from_attributes=True) for r in rows],
        total_micros=sum(r.amount_micros for r in rows),
        uses=sum(r.uses for r in rows),
    )


@router.get(
    "/uses",
    response_model=Page[UseRead],
    responses=error_responses(422) | {200: {"content": {"text/csv": {}}}},
    summary="Usage history, newest first; `format=csv` exports every matching row",
)
def list_uses(
    session: SessionDep,
    principal: UseReaderDep,
    sessions: SessionsDep,
    start: FromQuery = None,
    end: ToQuery = None,
    ai_company_id: uuid.UUID | None = None,
    label_id: uuid.UUID | None = None,
    catalogue_id: uuid.UUID | None = None,
    track_id: uuid.UUID | None = None,
    check_id: uuid.UUID | None = None,
    preference: Annotated[
        Preference | None,
        Query(description="Only uses whose track had this preference, e.g. `notAllowed`."),
    ] = None,
    format: Format = Format.JSON,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[UseRead] | StreamingResponse:
    """AI companies see their own uses, labels the uses of their tracks, auditors and
    operators all. Each row links the check, track, terms version, share, amount and the
    ledger transaction that paid it."""
    ordered_period(start, end)
    wanted = reports.visible_to(
        principal,
        reports.UseFilter(
            start=start,
            end=end,
            ai_company_id=ai_company_id,
            label_id=label_id,
            catalogue_id=catalogue_id,
            track_id=track_id,
            check_id=check_id,
            preference=preference,
        ),
    )
    if format is Format.CSV:
        return _csv(reports.export_uses(sessions, wanted), "uses.csv")
    rows, next_cursor = paginate(
        session, reports.uses_query(wanted), order_by=reports.USE_ORDER, cursor=cursor, limit=limit
    )
    return Page(items=reports.use_reads(session, rows), next_cursor=next_cursor)


@router.get(
    "/statements/{month}",
    response_model=Statement,
    responses=DOCUMENT_RESPONSES,
    summary="A label's statement for a closed month (label: its own; auditors: any label)",
)
def read_statement(
    month: MonthPath,
    session: SessionDep,
    principal: RoyaltyReaderDep,
    settings: SettingsDep,
    label_id: uuid.UUID | None = None,
    currency: CurrencyQuery = None,
    format: DocumentFormat = DocumentFormat.JSON,
) -> Statement | StreamingResponse | HTMLResponse:
    """Opening balance, earned, held, released, upheld, reversed, adjustments, fees and the
    closing balance, for the label's balance and for the money on hold for its disputes; lines
    per track and AI company; the adjustments (corrections of closed months, each naming the
    original charge) and the disputes as they stood at the month's end. `format=html` is a
    printable page. 409 while the month is open."""
    doc = statements.statement(
        session,
        label_id=_own_or_named(principal, label_id, OrgKind.LABEL, "label_id"),
        month=month_param(month),
        currency=currency or settings.currency,
    )
    if format is DocumentFormat.CSV:
        return _csv(statements.statement_csv(doc), f"statement-{doc.month}-{doc.label_id}.csv")
    if format is DocumentFormat.HTML:
        return HTMLResponse(render.statement_html(doc))
    return doc


@router.get(
    "/invoices/{month}",
    response_model=Invoice,
    responses=DOCUMENT_RESPONSES,
    summary="An AI company's invoice for a closed month (its own; auditors: any company)",
)
def read_invoice(
    month: MonthPath,
    session: SessionDep,
    principal: InvoiceReaderDep,
    settings: SettingsDep,
    ai_company_id: uuid.UUID | None = None,
    currency: CurrencyQuery = None,
    format: DocumentFormat = DocumentFormat.JSON,
) -> Invoice | StreamingResponse | HTMLResponse:
    """Uses and amounts per catalogue, the platform fee, refunds (released disputes,
    reversals), adjustments, and the disputes open or resolved as they stood at the month's
    end. `format=html` is a printable page. 409 while the month is open."""
    doc = statements.invoice(
        session,
        ai_company_id=_own_or_named(principal, ai_company_id, OrgKind.AI_COMPANY, "ai_company_id"),
        month=month_param(month),
        currency=currency or settings.currency,
    )
    if format is DocumentFormat.CSV:
        return _csv(statements.invoice_csv(doc), f"invoice-{doc.month}-{doc.ai_company_id}.csv")
    if format is DocumentFormat.HTML:
        return HTMLResponse(render.invoice_html(doc))
    return doc
