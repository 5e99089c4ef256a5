"""Monthly statements for labels and invoices for AI companies, from the ledger's postings.

Everything here is a sum of postings of transactions dated in a closed month, grouped by the
transaction's kind and by use; the opening and closing balances are the ledger's own sums at
the month's bounds. Since a closed month takes no new transaction, a document about it never
changes, and it reconciles with the ledger and the royalties report because all three read
the same postings. Which summary row a transaction lands in depends only on its own (hashed)
fields: its kind, and whether it corrects a closed month (`adjusts_period`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from app.catalogues.models import Catalogue, Track
from app.checks.models import Use
from app.conflicts import service as conflicts
from app.disputes import service as disputes
from app.errors import Conflict, NotFound
from app.ledger import periods
from app.ledger import service as ledger
from app.ledger.models import (
    AccountKind,
    LedgerAccount,
    LedgerPeriod,
    LedgerPosting,
    LedgerTransaction,
    TransactionKind,
)
from app.orgs.models import Organisation, OrgKind
from app.reports.schemas import (
    AdjustmentRow,
    CatalogueRow,
    ConflictHoldRow,
    DisputeRow,
    Invoice,
    InvoiceLine,
    InvoiceSummaryRow,
    Statement,
    StatementLine,
    StatementSummaryRow,
    StatementTrackRow,
)
from app.reports.service import csv_lines

_KIND_LINE = {
    TransactionKind.CHARGE.value: StatementLine.EARNED,
    TransactionKind.HOLD.value: StatementLine.HELD,
    TransactionKind.RELEASE.value: StatementLine.RELEASED,
    TransactionKind.UPHOLD.value: StatementLine.UPHELD,
    TransactionKind.REVERSAL.value: StatementLine.REVERSED,
}
# Outcomes about a closed month are adjustment lines; a hold is not an outcome (it only sets
# money aside), so it stays on the held line whatever month its use was in.
_OUTCOMES = {TransactionKind.RELEASE.value, TransactionKind.UPHOLD.value,
             TransactionKind.REVERSAL.value}  # fmt: skip


def line_of(kind: str, adjusts_period: dt.date | None) -> StatementLine:
    """The summary row a transaction's postings land in."""
    if adjusts_period is not None and kind in _OUTCOMES:
        return StatementLine.ADJUSTMENTS
    return _KIND_LINE.get(kind, StatementLine.ADJUSTMENTS)


@dataclass(frozen=True, slots=True)
class Period:
    month: dt.date
    start: dt.datetime
    end: dt.datetime
    closed_at: dt.datetime


def closed_period(session: Session, month: dt.date) -> Period:
    """The month's bounds, or Conflict while it is open (documents are issued once closed)."""
    if not periods.is_closed(session, month):
        raise Conflict(
            f"{periods.month_name(month)} is not closed; statements and invoices are issued "
            "for closed months",
            details={"month": periods.month_name(month)},
        )
    record = periods.get(session, month)
    start, end = periods.bounds(month)
    # A month before the first one closed is closed too (months close in order), with no row.
    closed_at = record.closed_at if record is not None else _first_closed(session).closed_at
    return Period(month, start, end, closed_at)


def _first_closed(session: Session) -> LedgerPeriod:
    first = session.scalars(sa.select(LedgerPeriod).order_by(LedgerPeriod.month)).first()
    assert first is not None  # the month is closed, so some month is
    return first


def _org(session: Session, org_id: uuid.UUID, kind: OrgKind) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None or org.kind != kind:
        raise NotFound(kind.value.replace("_", " "), org_id)
    return org


def _sum_before(session: Session, account: uuid.UUID | None, when: dt.datetime) -> int:
    return 0 if account is None else ledger.account_sum(session, account, before=when)


def _movements(
    session: Session, accounts: Sequence[uuid.UUID], period: Period
) -> list[tuple[uuid.UUID, str, dt.date | None, int]]:
    """(account, kind, adjusts_period, sum) of the accounts' postings dated in the period."""
    if not accounts:
        return []
    tx = LedgerTransaction
    rows = session.execute(
        sa.select(
            LedgerPosting.account_id,
            tx.kind,
            tx.adjusts_period,
            sa.func.sum(LedgerPosting.amount_micros),
        )
        .join(tx, tx.id == LedgerPosting.transaction_id)
        .where(
            LedgerPosting.account_id.in_(accounts),
            tx.created_at >= period.start,
            tx.created_at < period.end,
        )
        .group_by(LedgerPosting.account_id, tx.kind, tx.adjusts_period)
    )
    return [(a, k, p, int(n)) for a, k, p, n in rows]


# Label statements -------------------------------------------------------------------------


def statement(session: Session, *, label_id: uuid.UUID, month: dt.date, currency: str) -> Statement:
    """The label's statement for a closed month."""
    label = _org(session, label_id, OrgKind.LABEL)
    period = closed_period(session, month)
    available = ledger.find_account(session, label_id, currency)
    held = ledger.find_account(session, label_id, currency, held=True)
    totals = {line: [0, 0] for line in StatementLine}
    for account, kind, adjusts, amount in _movements(
        session, [a for a in (available, held) if a is not None], period
    ):
        totals[line_of(kind, adjusts)][0 if account == available else 1] += amount
    totals[StatementLine.OPENING_BALANCE] = [
        _sum_before(session, available, period.start),
        _sum_before(session, held, period.start),
    ]
    totals[StatementLine.CLOSING_BALANCE] = [
        _sum_before(session, available, period.end),
        _sum_before(session, held, period.end),
    ]
    return Statement(
        label_id=label.id,
        label=label.name,
        month=periods.month_name(month),
        currency=currency,
        period_start=period.start,
        period_end=period.end,
        closed_at=period.closed_at,
        summary=[
            StatementSummaryRow(line=line, available_micros=a, on_hold_micros=h)
            for line, (a, h) in totals.items()
        ],
        tracks=_track_rows(session, available, held, period),
        adjustments=_adjustment_rows(session, available, held, period),
        disputes=_dispute_rows(session, period, label_id=label_id),
        conflicts=_conflict_rows(session, period, label_id=label_id, currency=currency),
    )


def _conflict_rows(
    session: Session, period: Period, *, label_id: uuid.UUID, currency: str
) -> list[ConflictHoldRow]:
    return [
        ConflictHoldRow(
            conflict_id=h.conflict.id,
            use_id=h.hold.use_id,
            track_id=h.hold.track_id,
            label_id=h.hold.label_id,
            other_label_id=(
                h.conflict.label_id
                if h.hold.label_id == h.conflict.original_label_id
                else h.conflict.original_label_id
            ),
            amount_micros=h.hold.amount_micros,
            status=h.state,
            held_at=h.hold.created_at,
            at=h.at,
        )
        for h in conflicts.holds_as_of(
            session, label_id=label_id, start=period.start, end=period.end
        )
        if h.hold.currency == currency
    ]


def _accounts(*accounts: uuid.UUID | None) -> list[uuid.UUID]:
    return [a for a in accounts if a is not None]


def _track_rows(
    session: Session, available: uuid.UUID | None, held: uuid.UUID | None, period: Period
) -> list[StatementTrackRow]:
    """The month's postings on the label's accounts per track and AI company."""
    accounts = _accounts(available, held)
    if not accounts:
        return []
    tx, amount = LedgerTransaction, LedgerPosting.amount_micros
    on_available = LedgerPosting.account_id == available
    is_charge = sa.and_(on_available, tx.kind == TransactionKind.CHARGE.value)
    company = aliased(Organisation)
    rows = session.execute(
        sa.select(
            Track.id,
            Track.isrc,
            Track.title,
            company.id,
            company.name,
            sa.func.count().filter(is_charge),
            sa.func.coalesce(sa.func.sum(amount).filter(is_charge), 0),
            sa.func.coalesce(sa.func.sum(amount).filter(on_available), 0),
            sa.func.coalesce(sa.func.sum(amount).filter(sa.not_(on_available)), 0),
        )
        .select_from(LedgerPosting)
        .join(tx, tx.id == LedgerPosting.transaction_id)
        .outerjoin(Use, Use.id == LedgerPosting.use_id)
        .outerjoin(Track, Track.id == Use.track_id)
        .outerjoin(company, company.id == Use.ai_company_id)
        .where(
            LedgerPosting.account_id.in_(accounts),
            tx.created_at >= period.start,
            tx.created_at < period.end,
        )
        .group_by(Track.id, Track.isrc, Track.title, company.id, company.name)
        .order_by(Track.title, Track.id, company.name, company.id)
    )
    return [
        StatementTrackRow(
            track_id=track_id,
            isrc=isrc,
            title=title,
            ai_company_id=company_id,
            ai_company=company_name,
            uses=int(uses),
            earned_micros=int(earned),
            amount_micros=int(net),
            on_hold_micros=int(on_hold),
        )
        for track_id, isrc, title, company_id, company_name, uses, earned, net, on_hold in rows
    ]


def _adjustment_rows(
    session: Session, available: uuid.UUID | None, held: uuid.UUID | None, period: Period
) -> list[AdjustmentRow]:
    """Transactions of the month that correct a closed month, per use, naming the charge
    (amounts on the organisation's account, and on its held account)."""
    accounts = _accounts(available, held)
    if not accounts:
        return []
    tx, amount = LedgerTransaction, LedgerPosting.amount_micros
    on_first = LedgerPosting.account_id == available
    rows = session.execute(
        sa.select(
            tx.id,
            tx.kind,
            tx.created_at,
            tx.adjusts_period,
            tx.reverses_id,
            tx.reason,
            LedgerPosting.use_id,
            Use.ledger_transaction_id,
            Track.id,
            Track.title,
            sa.func.coalesce(sa.func.sum(amount).filter(on_first), 0),
            sa.func.coalesce(sa.func.sum(amount).filter(sa.not_(on_first)), 0),
        )
        .join(tx, tx.id == LedgerPosting.transaction_id)
        .outerjoin(Use, Use.id == LedgerPosting.use_id)
        .outerjoin(Track, Track.id == Use.track_id)
        .where(
            LedgerPosting.account_id.in_(accounts),
            tx.created_at >= period.start,
            tx.created_at < period.end,
            tx.adjusts_period.is_not(None),
            tx.kind.in_(_OUTCOMES | {TransactionKind.ADJUSTMENT.value}),
        )
        .group_by(tx.id, LedgerPosting.use_id, Use.ledger_transaction_id, Track.id)
        .order_by(tx.id, LedgerPosting.use_id)
    )
    return [
        AdjustmentRow(
            transaction_id=tx_id,
            kind=kind,
            created_at=created_at,
            adjusts_period=periods.month_name(adjusts) if adjusts else "",
            original_transaction_id=reverses or charge,
            use_id=use_id,
            track_id=track_id,
            title=title,
            amount_micros=int(first_amount),
            on_hold_micros=int(other),
            reason=reason,
        )
        for (
            tx_id,
            kind,
            created_at,
            adjusts,
            reverses,
            reason,
            use_id,
            charge,
            track_id,
            title,
            first_amount,
            other,
        ) in rows
    ]


def _dispute_rows(
    session: Session,
    period: Period,
    *,
    label_id: uuid.UUID | None = None,
    ai_company_id: uuid.UUID | None = None,
) -> list[DisputeRow]:
    found = disputes.as_of(
        session, start=period.start, end=period.end, label_id=label_id, ai_company_id=ai_company_id
    )
    titles = _titles(session, (d.dispute.track_id for d in found))
    return [
        DisputeRow(
            dispute_id=d.dispute.id,
            use_id=d.dispute.use_id,
            track_id=d.dispute.track_id,
            title=titles.get(d.dispute.track_id, ""),
            label_id=d.dispute.label_id,
            ai_company_id=d.dispute.ai_company_id,
            reason=d.dispute.reason,
            opened_at=d.dispute.opened_at,
            amount_micros=d.dispute.amount_micros,
            status=d.status.value,
            last_step=d.last_step.value,
            last_step_at=d.last_step_at,
        )
        for d in found
    ]


def _titles(session: Session, track_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    ids = list(set(track_ids))
    if not ids:
        return {}
    return dict(session.execute(sa.select(Track.id, Track.title).where(Track.id.in_(ids))).all())


# AI company invoices ----------------------------------------------------------------------

_INVOICE_LINE = {
    StatementLine.RELEASED: InvoiceLine.RELEASED,
    StatementLine.REVERSED: InvoiceLine.REVERSED,
    StatementLine.ADJUSTMENTS: InvoiceLine.ADJUSTMENTS,
}


def invoice(
    session: Session, *, ai_company_id: uuid.UUID, month: dt.date, currency: str
) -> Invoice:
    """The AI company's invoice for a closed month."""
    company = _org(session, ai_company_id, OrgKind.AI_COMPANY)
    period = closed_period(session, month)
    account = ledger.find_account(session, ai_company_id, currency)
    totals = dict.fromkeys(InvoiceLine, 0)
    fees = _fees(session, account, period)
    for _, kind, adjusts, amount in _movements(session, [account] if account else [], period):
        line = line_of(kind, adjusts)
        if line is StatementLine.EARNED:
            # A charge debits uses and fee together; the fee is the platform's part of it.
            totals[InvoiceLine.USES] += amount + fees
            totals[InvoiceLine.FEES] -= fees
        else:
            totals[_INVOICE_LINE.get(line, InvoiceLine.ADJUSTMENTS)] += amount
    totals[InvoiceLine.OPENING_BALANCE] = _sum_before(session, account, period.start)
    totals[InvoiceLine.CLOSING_BALANCE] = _sum_before(session, account, period.end)
    catalogues = _catalogue_rows(session, account, period)
    net = totals[InvoiceLine.CLOSING_BALANCE] - totals[InvoiceLine.OPENING_BALANCE]
    return Invoice(
        ai_company_id=company.id,
        ai_company=company.name,
        month=periods.month_name(month),
        currency=currency,
        period_start=period.start,
        period_end=period.end,
        closed_at=period.closed_at,
        summary=[InvoiceSummaryRow(line=line, amount_micros=n) for line, n in totals.items()],
        uses=sum(c.uses for c in catalogues),
        due_micros=-net,
        catalogues=catalogues,
        adjustments=_adjustment_rows(session, account, None, period),
        disputes=_dispute_rows(session, period, ai_company_id=ai_company_id),
    )


def _charges_paid_by(account: uuid.UUID, period: Period) -> sa.Select[Any]:
    """Ids of the charges in the period that debited `account`."""
    tx = LedgerTransaction
    return (
        sa.select(tx.id)
        .join(LedgerPosting, LedgerPosting.transaction_id == tx.id)
        .where(
            LedgerPosting.account_id == account,
            tx.kind == TransactionKind.CHARGE.value,
            tx.created_at >= period.start,
            tx.created_at < period.end,
        )
    )


def _fees(session: Session, account: uuid.UUID | None, period: Period) -> int:
    """The platform's part of the charges the account paid in the period."""
    if account is None:
        return 0
    total = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(LedgerPosting.amount_micros), 0))
        .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
        .where(
            LedgerPosting.transaction_id.in_(_charges_paid_by(account, period)),
            LedgerAccount.kind == AccountKind.PLATFORM.value,
        )
    )
    return int(total or 0)


def _catalogue_rows(
    session: Session, account: uuid.UUID | None, period: Period
) -> list[CatalogueRow]:
    """Uses charged in the period per catalogue: the credits of the company's charges."""
    if account is None:
        return []
    label = aliased(Organisation)
    rows = session.execute(
        sa.select(
            Catalogue.id,
            Catalogue.name,
            label.id,
            label.name,
            sa.func.count(),
            sa.func.sum(LedgerPosting.amount_micros),
        )
        .select_from(LedgerPosting)
        .join(Use, Use.id == LedgerPosting.use_id)
        .join(Catalogue, Catalogue.id == Use.catalogue_id)
        .join(label, label.id == Catalogue.label_id)
        .where(LedgerPosting.transaction_id.in_(_charges_paid_by(account, period)))
        .group_by(Catalogue.id, Catalogue.name, label.id, label.name)
        .order_by(label.name, Catalogue.name, Catalogue.id)
    )
    return [
        CatalogueRow(
            catalogue_id=cid,
            catalogue=name,
            label_id=lid,
            label=lname,
            uses=int(n),
            amount_micros=int(total),
        )
        for cid, name, lid, lname, n, total in rows
    ]


# CSV --------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "section",
    "line",
    "currency",
    "available_micros",
    "on_hold_micros",
    "track_id",
    "isrc",
    "title",
    "ai_company_id",
    "ai_company",
    "catalogue_id",
    "catalogue",
    "label_id",
    "label",
    "uses",
    "earned_micros",
    "amount_micros",
    "transaction_id",
    "kind",
    "adjusts_period",
    "original_transaction_id",
    "dispute_id",
    "conflict_id",
    "use_id",
    "status",
    "reason",
    "at",
]


def statement_csv(doc: Statement) -> Iterator[str]:
    """The statement as one CSV table; `section` says which part a row belongs to."""
    rows: list[dict[str, Any]] = [
        {"section": "summary", **row.model_dump(mode="json")} for row in doc.summary
    ]
    rows += [{"section": "track", **row.model_dump(mode="json")} for row in doc.tracks]
    rows += _common_rows(doc.adjustments, doc.disputes)
    rows += [{"section": "conflict", **row.model_dump(mode="json")} for row in doc.conflicts]
    return _csv(doc.model_dump(mode="json"), rows)


def invoice_csv(doc: Invoice) -> Iterator[str]:
    """The invoice as one CSV table; `section` says which part a row belongs to."""
    rows: list[dict[str, Any]] = [
        {"section": "summary", **row.model_dump(mode="json")} for row in doc.summary
    ]
    rows += [{"section": "catalogue", **row.model_dump(mode="json")} for row in doc.catalogues]
    rows += _common_rows(doc.adjustments, doc.disputes)
    return _csv(doc.model_dump(mode="json"), rows)


def _common_rows(
    adjustments: Sequence[AdjustmentRow], disputed: Sequence[DisputeRow]
) -> list[dict[str, Any]]:
    rows = [
        {"section": "adjustment", "at": a["created_at"], **a}
        for a in (row.model_dump(mode="json") for row in adjustments)
    ]
    rows += [
        {"section": "dispute", "at": d["last_step_at"], **d}
        for d in (row.model_dump(mode="json") for row in disputed)
    ]
    return rows


def _csv(head: dict[str, Any], rows: list[dict[str, Any]]) -> Iterator[str]:
    """A header row naming the document, then one row per line."""
    titled = [
        {
            "section": "document",
            "line": head["month"],
            "currency": head["currency"],
            "label": head.get("label"),
            "label_id": head.get("label_id"),
            "ai_company": head.get("ai_company"),
            "ai_company_id": head.get("ai_company_id"),
        }
    ]
    return csv_lines(CSV_COLUMNS, ([r.get(c) for c in CSV_COLUMNS] for r in titled + rows))
