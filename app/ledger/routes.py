"""HTTP endpoints for balances, the ledger's transactions, its periods and its verification."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status

from app.db import SessionDep
from app.errors import EVERY_ROUTE, Unprocessable, error_responses
from app.ledger import periods
from app.ledger import service as ledger
from app.ledger.appender import LedgerAppender
from app.ledger.models import LedgerPeriod, LedgerTransaction, TransactionKind
from app.ledger.schemas import (
    AccountRead,
    CheckpointIn,
    CheckpointRead,
    PeriodClose,
    PeriodRead,
    TransactionRead,
    VerificationRead,
    transaction_with,
)
from app.orgs.auth import OperatorDep, PrincipalDep, ReaderDep
from app.pagination import CursorQuery, LimitQuery, Page, paginate
from app.signing import ALGORITHM
from app.state import SettingsDep, SignerDep
from app.validation import Instant, ordered_period

router = APIRouter(prefix="/v1", tags=["ledger"], responses=error_responses(*EVERY_ROUTE))


def get_appender(request: Request) -> LedgerAppender:
    """The process's one ledger appender (built and closed by the lifespan)."""
    appender: LedgerAppender = request.app.state.ledger_appender
    return appender


AppenderDep = Annotated[LedgerAppender, Depends(get_appender)]
MonthPath = Annotated[str, Path(description="YYYY-MM (UTC)", examples=["2026-11"])]


def month_param(text: str, field: str = "path.month") -> dt.date:
    """A YYYY-MM request parameter as a month, or a 422 naming the field."""
    try:
        return periods.parse_month(text)
    except ValueError as exc:
        raise Unprocessable(str(exc), details=[{"field": field, "message": str(exc)}]) from None


@router.get("/accounts/me", response_model=AccountRead, summary="The caller's balance")
def my_account(session: SessionDep, principal: PrincipalDep, settings: SettingsDep) -> AccountRead:
    """Sum of every posting on the caller's account: what a label has earned, what an AI
    company owes (negative), net of reversals."""
    found = ledger.balance(session, org_id=principal.org_id, currency=settings.currency)
    return AccountRead(org_id=principal.org_id, **dataclasses.asdict(found))


@router.get(
    "/ledger/transactions",
    response_model=Page[TransactionRead],
    responses=error_responses(422),
    summary="Ledger transactions with their postings, newest first (auditor, operator)",
)
def list_transactions(
    session: SessionDep,
    _: ReaderDep,
    created_from: Annotated[Instant | None, Query(alias="from")] = None,
    created_to: Annotated[Instant | None, Query(alias="to")] = None,
    kind: TransactionKind | None = None,
    check_id: uuid.UUID | None = None,
    dispute_id: uuid.UUID | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[TransactionRead]:
    ordered_period(created_from, created_to)
    stmt = ledger.transactions_query(
        ledger.TransactionFilter(
            start=created_from,
            end=created_to,
            kind=kind,
            check_id=check_id,
            dispute_id=dispute_id,
        )
    )
    rows, next_cursor = paginate(
        session, stmt, order_by=[LedgerTransaction.id], cursor=cursor, limit=limit
    )
    postings = ledger.postings_of(session, [t.id for t in rows])
    return Page(items=[transaction_with(t, postings[t.id]) for t in rows], next_cursor=next_cursor)


@router.get(
    "/ledger/verify",
    response_model=VerificationRead,
    summary="Walk the hash chain and report the first broken link (auditor, operator)",
)
def verify_ledger(session: SessionDep, _: ReaderDep) -> VerificationRead:
    """Recomputes every transaction's hash from its stored content and its predecessor's hash.
    A transaction or posting changed after it was written breaks the chain at that point."""
    return VerificationRead(**dataclasses.asdict(ledger.verify(session)))


def _period_read(period: LedgerPeriod) -> PeriodRead:
    return PeriodRead(
        month=periods.month_name(period.month),
        closed_at=period.closed_at,
        closed_by=period.closed_by,
    )


@router.get(
    "/periods",
    response_model=list[PeriodRead],
    summary="Closed months, latest first (every organisation)",
)
def list_periods(session: SessionDep, _: PrincipalDep) -> list[PeriodRead]:
    """A closed month is never written again: statements and invoices are issued for it, and
    corrections about it are adjustment lines of the open month."""
    return [_period_read(p) for p in periods.listed(session)]


@router.post(
    "/periods/{month}/close",
    response_model=PeriodClose,
    status_code=status.HTTP_200_OK,
    responses=error_responses(409, 422),
    summary="Close a month that has ended, and any earlier month still open (operator)",
)
def close_period(month: MonthPath, appender: AppenderDep, operator: OperatorDep) -> PeriodClose:
    """Idempotent: closing a month already closed closes nothing. A month that has not ended
    is 409. Months also close by themselves `ECHOLEDGER_PERIOD_CLOSE_DAYS` after they end."""
    wanted = month_param(month)
    closed, through = appender.run(
        lambda session, head: periods.close_and_report(
            session, head, month=wanted, actor_id=operator.org_id
        )
    )
    return PeriodClose(
        closed=[_period_read(p) for p in closed], closed_through=periods.month_name(through)
    )


@router.get(
    "/ledger/checkpoint",
    response_model=CheckpointRead,
    summary="The chain's head, signed, for an auditor to keep outside the database "
    "(auditor, operator)",
)
def ledger_checkpoint(session: SessionDep, _: ReaderDep, signer: SignerDep) -> CheckpointRead:
    """Verification walks the chain, which cannot tell that its newest transactions were
    removed (by someone able to bypass the database's guards): what remains still links up.
    A checkpoint kept elsewhere can: POST it to `/v1/ledger/verify`."""
    head = ledger.checkpoint(session)
    return CheckpointRead(
        transactions=head.transactions,
        head_id=head.head_id,
        head_hash=head.head_hash,
        created_at=head.created_at,
        key_id=signer.key_id,
        signature=signer.sign(head.message(signer.key_id)),
        algorithm=ALGORITHM,
        public_key=signer.public_key,
    )


@router.post(
    "/ledger/verify",
    response_model=VerificationRead,
    responses=error_responses(422),
    summary="Verify the chain and that it still reaches a kept checkpoint (auditor, operator)",
)
def verify_ledger_from(
    body: CheckpointIn, session: SessionDep, _: ReaderDep, signer: SignerDep
) -> VerificationRead:
    """422 when the checkpoint's signature does not verify with this service's key."""
    kept = ledger.Checkpoint(body.transactions, body.head_id, body.head_hash, body.created_at)
    if body.key_id != signer.key_id or not signer.verify(kept.message(body.key_id), body.signature):
        raise Unprocessable(
            "the checkpoint's signature does not verify with this service's signing key",
            details=[{"field": "body.signature", "message": "does not verify"}],
        )
    return VerificationRead(**dataclasses.asdict(ledger.verify_from(session, kept)))
