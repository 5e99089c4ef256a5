"""HTTP endpoints for ownership conflicts and duplicates: read them with their evidence and
held money; a label withdraws its claim, or an operator decides."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.catalogues.models import OverlapKind, OverlapStatus, OwnershipConflict
from app.conflicts import service as conflicts
from app.conflicts.flow import ConflictFlow
from app.conflicts.schemas import (
    AmountRead,
    ClaimWithdrawal,
    ConflictDecision,
    ConflictDetail,
    ConflictRead,
    HoldRead,
    OverlapSpan,
)
from app.db import SessionDep
from app.errors import EVERY_ROUTE, error_responses
from app.orgs.auth import LabelDep, LabelOrReaderDep, OperatorDep
from app.pagination import CursorQuery, LimitQuery, Page, paginate

router = APIRouter(prefix="/v1", tags=["conflicts"], responses=error_responses(*EVERY_ROUTE))


def get_conflict_flow(request: Request) -> ConflictFlow:
    flow: ConflictFlow = request.app.state.conflict_flow
    return flow


ConflictFlowDep = Annotated[ConflictFlow, Depends(get_conflict_flow)]


def _reads(session: SessionDep, rows: list[OwnershipConflict]) -> list[ConflictRead]:
    amounts = conflicts.amounts_of(session, [c.id for c in rows])
    return [
        ConflictRead.model_validate(c).model_copy(
            update={
                "amounts": [
                    AmountRead.model_validate(a, from_attributes=True) for a in amounts[c.id]
                ]
            }
        )
        for c in rows
    ]


def _detail(
    session: SessionDep, conflict_id: uuid.UUID, principal: LabelOrReaderDep
) -> ConflictDetail:
    conflict = conflicts.get_visible(session, conflict_id, principal)
    [read] = _reads(session, [conflict])
    holds = conflicts.holds_of(session, conflict_ids=[conflict.id])
    return ConflictDetail(
        **read.model_dump(),
        evidence=[OverlapSpan.model_validate(span) for span in conflict.evidence],
        holds=[
            HoldRead(
                use_id=h.hold.use_id,
                check_id=h.hold.check_id,
                label_id=h.hold.label_id,
                currency=h.hold.currency,
                amount_micros=h.hold.amount_micros,
                hold_transaction_id=h.hold.hold_transaction_id,
                state=h.state,
                resolution_transaction_id=h.resolution_transaction_id,
                created_at=h.hold.created_at,
            )
            for h in holds
        ],
    )


@router.get(
    "/conflicts",
    response_model=Page[ConflictRead],
    responses=error_responses(422),
    summary="Tracks registered twice: duplicates and ownership conflicts (labels: their own; "
    "operators, auditors: all)",
)
def list_conflicts(
    session: SessionDep,
    principal: LabelOrReaderDep,
    kind: OverlapKind | None = None,
    conflict_status: Annotated[OverlapStatus | None, Query(alias="status")] = None,
    track_id: uuid.UUID | None = None,
    label_id: uuid.UUID | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[ConflictRead]:
    """A label sees those it is a party to, on either side; `label_id` and `track_id` match
    either side."""
    wanted = conflicts.scope(
        principal,
        conflicts.ConflictFilter(
            label_id=label_id, kind=kind, status=conflict_status, track_id=track_id
        ),
    )
    rows, next_cursor = paginate(
        session,
        conflicts.conflicts_query(wanted),
        order_by=list(conflicts.CONFLICT_ORDER),
        cursor=cursor,
        limit=limit,
    )
    return Page(items=_reads(session, list(rows)), next_cursor=next_cursor)


@router.get(
    "/conflicts/{conflict_id}",
    response_model=ConflictDetail,
    responses=error_responses(404),
    summary="One duplicate or conflict: its evidence, and the uses held for it",
)
def read_conflict(
    conflict_id: uuid.UUID, session: SessionDep, principal: LabelOrReaderDep
) -> ConflictDetail:
    """Both labels, operators and auditors; anyone else 404."""
    return _detail(session, conflict_id, principal)


@router.post(
    "/conflicts/{conflict_id}/withdraw-claim",
    response_model=ConflictDetail,
    responses=error_responses(404, 409, 422),
    summary="Give up your claim to the recording: the other label wins and is paid what was "
    "held (label)",
)
def withdraw_claim(
    conflict_id: uuid.UUID,
    body: ClaimWithdrawal,
    flow: ConflictFlowDep,
    session: SessionDep,
    principal: LabelDep,
) -> ConflictDetail:
    """Your track in the conflict is withdrawn (it matches no more). 409 when the conflict is
    already resolved (of two concurrent resolutions one wins) or is a duplicate."""
    assert principal.org_id is not None
    flow.withdraw_claim(conflict_id, label_id=principal.org_id, reason=body.reason)
    return _detail(session, conflict_id, principal)


@router.post(
    "/conflicts/{conflict_id}/decision",
    response_model=ConflictDetail,
    responses=error_responses(404, 409, 422),
    summary="Decide who owns the recording: the winner is paid what was held (operator)",
)
def decide_conflict(
    conflict_id: uuid.UUID,
    body: ConflictDecision,
    flow: ConflictFlowDep,
    session: SessionDep,
    principal: OperatorDep,
) -> ConflictDetail:
    """The loser's track is withdrawn. Final; 409 unless the conflict is open."""
    assert principal.org_id is not None
    flow.decide(
        conflict_id,
        operator_id=principal.org_id,
        winner_label_id=body.winner_label_id,
        reason=body.reason,
    )
    return _detail(session, conflict_id, principal)
