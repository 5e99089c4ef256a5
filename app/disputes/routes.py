"""HTTP endpoints for disputes: open, decide, appeal, and read their whole history."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from app.db import SessionDep
from app.disputes import service as disputes
from app.disputes.flow import DisputeFlow
from app.disputes.models import Dispute, DisputeStatus
from app.disputes.schemas import (
    AppealDecision,
    AppealOutcome,
    DisputeDecision,
    DisputeDetail,
    DisputeEventRead,
    DisputeOpen,
    DisputeRead,
    DisputeRelease,
    ExclusionRead,
)
from app.disputes.service import Actor
from app.errors import EVERY_ROUTE, error_responses
from app.orgs.auth import AiCompanyDep, LabelDep, OperatorDep, PrincipalDep
from app.pagination import CursorQuery, LimitQuery, Page, paginate

router = APIRouter(prefix="/v1", tags=["disputes"], responses=error_responses(*EVERY_ROUTE))


def get_dispute_flow(request: Request) -> DisputeFlow:
    flow: DisputeFlow = request.app.state.dispute_flow
    return flow


DisputeFlowDep = Annotated[DisputeFlow, Depends(get_dispute_flow)]


def _read(dispute: Dispute) -> DisputeRead:
    return DisputeRead.model_validate(
        {
            **{f: getattr(dispute, f) for f in DisputeRead.model_fields if f != "appealable"},
            "appealable": dispute.status == DisputeStatus.UPHELD and dispute.appealed_at is None,
        }
    )


def _detail(session: SessionDep, dispute_id: uuid.UUID, principal: PrincipalDep) -> DisputeDetail:
    dispute = disputes.get_visible(session, dispute_id, principal)
    events = disputes.events_of(session, [dispute.id])[dispute.id]
    exclusions = disputes.exclusions_of(session, [dispute.id])[dispute.id]
    return DisputeDetail(
        **_read(dispute).model_dump(),
        events=[DisputeEventRead.model_validate(e) for e in events],
        exclusions=[ExclusionRead.model_validate(x) for x in exclusions],
    )


@router.post(
    "/disputes",
    status_code=status.HTTP_201_CREATED,
    response_model=DisputeDetail,
    responses=error_responses(404, 409, 422),
    summary="Dispute one of your uses; its credit is held until decided (AI company)",
)
def open_dispute(
    body: DisputeOpen, flow: DisputeFlowDep, session: SessionDep, principal: AiCompanyDep
) -> DisputeDetail:
    """Moves the use's credit from the label's account into its held account. The label
    releases or upholds it within `ECHOLEDGER_DISPUTE_REVIEW_DAYS`; after that it is released.
    A use is disputed once; a use of a reversed check cannot be."""
    dispute_id = flow.open(
        body.use_id, actor=Actor.of(principal), reason=body.reason, comment=body.comment
    )
    return _detail(session, dispute_id, principal)


@router.get(
    "/disputes",
    response_model=Page[DisputeRead],
    responses=error_responses(422),
    summary="Disputes, newest first (AI company: its own; label: on its uses; auditors: all)",
)
def list_disputes(
    session: SessionDep,
    principal: PrincipalDep,
    dispute_status: Annotated[DisputeStatus | None, Query(alias="status")] = None,
    use_id: uuid.UUID | None = None,
    check_id: uuid.UUID | None = None,
    ai_company_id: uuid.UUID | None = None,
    label_id: uuid.UUID | None = None,
    opened_from: Annotated[dt.datetime | None, Query(alias="from")] = None,
    opened_to: Annotated[dt.datetime | None, Query(alias="to")] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[DisputeRead]:
    wanted = disputes.scope(
        principal,
        disputes.DisputeFilter(
            ai_company_id=ai_company_id,
            label_id=label_id,
            status=dispute_status,
            use_id=use_id,
            check_id=check_id,
            start=opened_from,
            end=opened_to,
        ),
    )
    rows, next_cursor = paginate(
        session,
        disputes.disputes_query(wanted),
        order_by=list(disputes.DISPUTE_ORDER),
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[_read(d) for d in rows], next_cursor=next_cursor)


@router.get(
    "/disputes/{dispute_id}",
    response_model=DisputeDetail,
    responses=error_responses(404),
    summary="One dispute with its whole history (its parties; auditors, operators)",
)
def read_dispute(
    dispute_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> DisputeDetail:
    """Every step, with its actor, reason, time and the ledger transaction it appended."""
    return _detail(session, dispute_id, principal)


@router.post(
    "/disputes/{dispute_id}/release",
    response_model=DisputeDetail,
    responses=error_responses(404, 409, 422),
    summary="Give the disputed use up: the held money goes back to the AI company (label)",
)
def release_dispute(
    dispute_id: uuid.UUID,
    body: DisputeRelease,
    flow: DisputeFlowDep,
    session: SessionDep,
    principal: LabelDep,
) -> DisputeDetail:
    """Optionally marks spans of the track as never to match again (`do_not_match`). 409 when
    the dispute was already decided or its review window has closed."""
    flow.release(
        dispute_id,
        actor=Actor.of(principal),
        reason=body.reason,
        do_not_match=[(s.start_s, s.end_s) for s in body.do_not_match],
    )
    return _detail(session, dispute_id, principal)


@router.post(
    "/disputes/{dispute_id}/uphold",
    response_model=DisputeDetail,
    responses=error_responses(404, 409, 422),
    summary="Stand by the disputed use: the held money is paid to you (label)",
)
def uphold_dispute(
    dispute_id: uuid.UUID,
    body: DisputeDecision,
    flow: DisputeFlowDep,
    session: SessionDep,
    principal: LabelDep,
) -> DisputeDetail:
    """409 when the dispute was already decided or its review window has closed. The AI
    company may appeal once."""
    flow.uphold(dispute_id, actor=Actor.of(principal), reason=body.reason)
    return _detail(session, dispute_id, principal)


@router.post(
    "/disputes/{dispute_id}/appeal",
    response_model=DisputeDetail,
    responses=error_responses(404, 409, 422),
    summary="Appeal an upheld dispute, once: the money is held again (AI company)",
)
def appeal_dispute(
    dispute_id: uuid.UUID,
    body: DisputeDecision,
    flow: DisputeFlowDep,
    session: SessionDep,
    principal: AiCompanyDep,
) -> DisputeDetail:
    """An operator decides the appeal."""
    flow.appeal(dispute_id, actor=Actor.of(principal), reason=body.reason)
    return _detail(session, dispute_id, principal)


@router.post(
    "/disputes/{dispute_id}/appeal/decision",
    response_model=DisputeDetail,
    responses=error_responses(404, 409, 422),
    summary="Decide an appeal: release to the AI company or uphold for the label (operator)",
)
def decide_appeal(
    dispute_id: uuid.UUID,
    body: AppealDecision,
    flow: DisputeFlowDep,
    session: SessionDep,
    principal: OperatorDep,
) -> DisputeDetail:
    """Final. 409 unless the dispute is under appeal (of two decisions, one wins)."""
    flow.decide_appeal(
        dispute_id,
        actor=Actor.of(principal),
        grant=body.outcome is AppealOutcome.RELEASE,
        reason=body.reason,
    )
    return _detail(session, dispute_id, principal)
