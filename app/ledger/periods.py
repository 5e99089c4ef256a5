"""Accounting periods: calendar months (UTC) that close, in order, and are never written again.

Closing a month takes the chain lock (it runs as ledger work, like an append), so no append can
slip in between the check "has this month ended?" and the close. From then on the database
refuses any transaction (or posting) dated in a closed month; corrections about it are new
transactions in the open month that name the original (`adjusts_period`).

A month is a `datetime.date` on the first day of the month.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.ledger.models import LedgerPeriod, LedgerTransaction
from app.ledger.service import ChainHead

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str) -> dt.date:
    """'2026-11' -> 2026-11-01; ValueError naming the value otherwise."""
    found = _MONTH.match(text)
    if found is None or not 1 <= int(found.group(2)) <= 12:
        raise ValueError(f"a month is written YYYY-MM, got {text!r}")
    return dt.date(int(found.group(1)), int(found.group(2)), 1)


def month_name(month: dt.date) -> str:
    return month.strftime("%Y-%m")


def month_of(when: dt.datetime) -> dt.date:
    """The month (UTC) that `when` falls in."""
    utc = when.astimezone(dt.UTC)
    return dt.date(utc.year, utc.month, 1)


def next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def previous_month(month: dt.date) -> dt.date:
    return dt.date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the month as UTC datetimes."""
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    after = next_month(month)
    return start, dt.datetime(after.year, after.month, 1, tzinfo=dt.UTC)


def closed_through(session: Session) -> dt.date | None:
    """The latest closed month; every month up to it is closed."""
    return session.scalar(sa.select(sa.func.max(LedgerPeriod.month)))


def is_closed(session: Session, month: dt.date) -> bool:
    through = closed_through(session)
    return through is not None and month <= through


def closed_month_of(session: Session, when: dt.datetime) -> dt.date | None:
    """The month of `when` if it is closed: what a correction dated now adjusts."""
    month = month_of(when)
    return month if is_closed(session, month) else None


def get(session: Session, month: dt.date) -> LedgerPeriod | None:
    return session.get(LedgerPeriod, month)


def listed(session: Session) -> Sequence[LedgerPeriod]:
    """Closed months, latest first."""
    return session.scalars(sa.select(LedgerPeriod).order_by(LedgerPeriod.month.desc())).all()


def close(
    session: Session, head: ChainHead, *, month: dt.date, actor_id: uuid.UUID | None
) -> list[LedgerPeriod]:
    """Close `month` and every earlier month still open; returns the months it closed (none
    when `month` was already closed). Runs as ledger work (under the chain lock).

    Raises Conflict when the month has not ended yet.
    """
    now = head.now()
    _, end = bounds(month)
    if now < end:
        raise Conflict(
            f"{month_name(month)} has not ended yet; it can be closed from {end.isoformat()}",
            details={"month": month_name(month), "ends_at": end.isoformat()},
        )
    through = closed_through(session)
    if through is not None and month <= through:
        return []
    first = next_month(through) if through is not None else _first_month(session) or month
    closing: list[LedgerPeriod] = []
    current = min(first, month)
    while current <= month:
        closing.append(LedgerPeriod(month=current, closed_at=now, closed_by=actor_id))
        current = next_month(current)
    session.add_all(closing)
    session.flush()
    return closing


def close_and_report(
    session: Session, head: ChainHead, *, month: dt.date, actor_id: uuid.UUID | None
) -> tuple[list[LedgerPeriod], dt.date]:
    """`close`, and the latest closed month afterwards."""
    closed = close(session, head, month=month, actor_id=actor_id)
    through = closed_through(session)
    assert through is not None
    return closed, through


def due(now: dt.datetime, *, grace_days: int) -> dt.date:
    """The latest month that should be closed at `now`: the one whose end is at least
    `grace_days` days ago."""
    return previous_month(month_of(now - dt.timedelta(days=grace_days)))


def close_due(session: Session, head: ChainHead, *, grace_days: int) -> list[LedgerPeriod]:
    """Close every month that ended `grace_days` or more days ago (the schedule's work);
    months before the ledger's first transaction are left alone."""
    month = due(head.now(), grace_days=grace_days)
    first = _first_month(session)
    if first is None or month < first:
        return []
    return close(session, head, month=month, actor_id=None)


def _first_month(session: Session) -> dt.date | None:
    first = session.scalar(sa.select(sa.func.min(LedgerTransaction.created_at)))
    return month_of(first) if first is not None else None
