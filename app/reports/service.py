"""Royalty reports and usage history, computed from the ledger and the uses it pays for."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased, sessionmaker

from app.catalogues.models import Preference, Track
from app.checks.models import Use
from app.conflicts import service as conflicts
from app.csv_export import csv_lines as csv_lines  # re-exported: every CSV export's writer
from app.errors import NotFound
from app.ledger import service as ledger
from app.ledger.models import LedgerPosting, LedgerTransaction, TransactionKind
from app.orgs.auth import READ_ALL, Principal
from app.orgs.models import Organisation, OrgKind
from app.pagination import MAX_LIMIT, paginate
from app.reports.schemas import USE_CSV_COLUMNS, GroupBy, UseRead


@dataclass(frozen=True, slots=True)
class RoyaltyRow:
    group: str
    name: str | None
    uses: int
    reversals: int
    amount_micros: int


def royalties(
    session: Session,
    *,
    label_id: uuid.UUID,
    currency: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
    group_by: GroupBy,
) -> list[RoyaltyRow]:
    """The label's ledger credits in [start, end), grouped; amounts net of reversals and of
    money held for disputes (and of what was paid out of holds).

    Built from the postings on the label's account, so the rows sum exactly to the account's
    movement over the period.
    """
    account = ledger.find_account(session, label_id, currency)
    if account is None:
        return []
    utc = sa.func.timezone("UTC", LedgerTransaction.created_at)
    company = aliased(Organisation)
    key: Any
    name: Any
    if group_by is GroupBy.DAY:
        key, name = sa.func.to_char(utc, "YYYY-MM-DD"), None
    elif group_by is GroupBy.MONTH:
        key, name = sa.func.to_char(utc, "YYYY-MM"), None
    elif group_by is GroupBy.TRACK:
        key, name = sa.cast(Use.track_id, sa.String), Track.title
    else:
        key, name = sa.cast(Use.ai_company_id, sa.String), company.name
    grouping = [key] if name is None else [key, name]
    amount = LedgerPosting.amount_micros
    stmt = (
        sa.select(
            key.label("group"),
            (sa.null() if name is None else name).label("name"),
            # By kind, not sign: a dispute's hold is negative and its uphold positive.
            sa.func.count()
            .filter(LedgerTransaction.kind == TransactionKind.CHARGE.value)
            .label("uses"),
            sa.func.count()
            .filter(LedgerTransaction.kind == TransactionKind.REVERSAL.value)
            .label("reversals"),
            sa.func.sum(amount).label("amount"),
        )
        .select_from(LedgerPosting)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .join(Use, Use.id == LedgerPosting.use_id)
        .where(LedgerPosting.account_id == account)
        .group_by(*grouping)
        .order_by(key)
    )
    if group_by is GroupBy.TRACK:
        stmt = stmt.join(Track, Track.id == Use.track_id)
    elif group_by is GroupBy.AI_COMPANY:
        stmt = stmt.join(company, company.id == Use.ai_company_id)
    if start is not None:
        stmt = stmt.where(LedgerTransaction.created_at >= start)
    if end is not None:
        stmt = stmt.where(LedgerTransaction.created_at < end)
    return [
        RoyaltyRow(r.group, r.name, int(r.uses), int(r.reversals), int(r.amount))
        for r in session.execute(stmt)
    ]


@dataclass(frozen=True, slots=True)
class UseFilter:
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    ai_company_id: uuid.UUID | None = None
    label_id: uuid.UUID | None = None
    catalogue_id: uuid.UUID | None = None
    track_id: uuid.UUID | None = None
    check_id: uuid.UUID | None = None
    preference: Preference | None = None
    use_id: uuid.UUID | None = None


def visible_to(principal: Principal, f: UseFilter) -> UseFilter:
    """Labels see uses of their tracks, AI companies their own uses, auditors everything."""
    if principal.kind in READ_ALL:
        return f
    if principal.kind == OrgKind.LABEL:
        return dataclasses.replace(f, label_id=principal.org_id)
    return dataclasses.replace(f, ai_company_id=principal.org_id)


def get_visible(session: Session, use_id: uuid.UUID, principal: Principal) -> Use:
    """One use the principal may read (another tenant's is NotFound)."""
    found = session.scalars(uses_query(visible_to(principal, UseFilter(use_id=use_id)))).first()
    if found is None:
        raise NotFound("use", use_id)
    return found


def uses_query(f: UseFilter) -> sa.Select[Use]:
    stmt = sa.select(Use)
    for column, value in (
        (Use.ai_company_id, f.ai_company_id),
        (Use.label_id, f.label_id),
        (Use.catalogue_id, f.catalogue_id),
        (Use.track_id, f.track_id),
        (Use.check_id, f.check_id),
        (Use.id, f.use_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if f.preference is not None:
        stmt = stmt.where(Use.preference == f.preference.value)
    if f.start is not None:
        stmt = stmt.where(Use.created_at >= f.start)
    if f.end is not None:
        stmt = stmt.where(Use.created_at < f.end)
    return stmt


def titles_of(session: Session, track_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    ids = list(set(track_ids))
    if not ids:
        return {}
    rows = session.execute(sa.select(Track.id, Track.title).where(Track.id.in_(ids)))
    return {row.id: row.title for row in rows}


def use_reads(session: Session, rows: list[Use]) -> list[UseRead]:
    """Uses as the API shows them: with the track's title and the reversal, if any."""
    titles = titles_of(session, (u.track_id for u in rows))
    reversed_by = ledger.reversal_of(
        session, (u.ledger_transaction_id for u in rows if u.ledger_transaction_id)
    )
    held = {h.hold.use_id: h for h in conflicts.holds_of(session, use_ids=[u.id for u in rows])}
    return [
        UseRead.model_validate(
            {
                **{f: getattr(u, f) for f in UseRead.model_fields if hasattr(Use, f)},
                "track_title": titles.get(u.track_id, ""),
                "reversal_transaction_id": reversed_by.get(u.ledger_transaction_id or -1),
                "conflict_id": held[u.id].hold.conflict_id if u.id in held else None,
                "conflict_state": held[u.id].state if u.id in held else None,
            }
        )
        for u in rows
    ]


USE_ORDER = (Use.created_at, Use.id)


def export_uses(sessions: sessionmaker[Session], wanted: UseFilter) -> Iterator[str]:
    """Every matching use as CSV lines, read page by page on a session of its own (a
    streamed response outlives the request's session)."""

    def rows() -> Iterator[list[object]]:
        cursor: str | None = None
        with sessions() as session:
            while True:
                page, cursor = paginate(
                    session, uses_query(wanted), order_by=USE_ORDER, cursor=cursor, limit=MAX_LIMIT
                )
                for use in use_reads(session, page):
                    dumped = use.model_dump(mode="json")
                    yield [dumped[c] for c in USE_CSV_COLUMNS]
                if cursor is None:
                    return

    return csv_lines(USE_CSV_COLUMNS, rows())
