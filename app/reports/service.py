"""Royalty reports and usage history, computed from the ledger and the uses it pays for."""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import itertools
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from app.catalogues.models import Track
from app.checks.models import Use
from app.ledger import service as ledger
from app.ledger.models import LedgerPosting, LedgerTransaction
from app.orgs.models import Organisation


class GroupBy(enum.StrEnum):
    DAY = "day"
    MONTH = "month"
    TRACK = "track"
    AI_COMPANY = "ai_company"


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
    """The label's ledger credits in [start, end), grouped; amounts net of reversals.

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
            sa.func.count().filter(amount > 0).label("uses"),
            sa.func.count().filter(amount < 0).label("reversals"),
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


def uses_query(f: UseFilter) -> sa.Select[Use]:
    stmt = sa.select(Use)
    for column, value in (
        (Use.ai_company_id, f.ai_company_id),
        (Use.label_id, f.label_id),
        (Use.catalogue_id, f.catalogue_id),
        (Use.track_id, f.track_id),
        (Use.check_id, f.check_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if f.start is not None:
        stmt = stmt.where(Use.created_at >= f.start)
    if f.end is not None:
        stmt = stmt.where(Use.created_at < f.end)
    return stmt


def reversal_of(session: Session, transaction_ids: Iterable[int]) -> dict[int, int]:
    """For charge transactions that were reversed: charge id -> reversal id."""
    ids = list(set(transaction_ids))
    if not ids:
        return {}
    rows = session.execute(
        sa.select(LedgerTransaction.reverses_id, LedgerTransaction.id).where(
            LedgerTransaction.reverses_id.in_(ids)
        )
    )
    # reverses_id IN (...) is never NULL.
    return {cast(int, charge): reversal for charge, reversal in rows}


def titles_of(session: Session, track_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    ids = list(set(track_ids))
    if not ids:
        return {}
    rows = session.execute(sa.select(Track.id, Track.title).where(Track.id.in_(ids)))
    return {row.id: row.title for row in rows}


def csv_lines(header: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    """CSV text, one line at a time (for streaming responses); None is written empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in itertools.chain([header], rows):
        writer.writerow(["" if v is None else v for v in row])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
