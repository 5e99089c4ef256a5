"""HTTP endpoints for organisations and API keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from app.db import SessionDep
from app.errors import EVERY_ROUTE, error_responses
from app.orgs import service as orgs
from app.orgs.auth import OperatorDep, PrincipalDep, ReaderDep
from app.orgs.models import AuditEvent, Organisation, OrgKind
from app.orgs.schemas import (
    AuditEventRead,
    CreditLimitIn,
    KeyCreate,
    KeyIssued,
    KeyRead,
    OrgCreate,
    OrgCreated,
    OrgRead,
    Reason,
)
from app.pagination import CursorQuery, LimitQuery, Page, paginate

router = APIRouter(prefix="/v1", tags=["organisations"], responses=error_responses(*EVERY_ROUTE))


def _issued(issued: orgs.IssuedKey) -> KeyIssued:
    return KeyIssued(**KeyRead.model_validate(issued.record).model_dump(), key=issued.secret)


@router.post(
    "/orgs",
    status_code=status.HTTP_201_CREATED,
    response_model=OrgCreated,
    responses=error_responses(422),
    summary="Create an organisation and its first API key (operator)",
)
def create_org(body: OrgCreate, session: SessionDep, operator: OperatorDep) -> OrgCreated:
    """The key in the response is shown once; store it now."""
    org, issued = orgs.create(session, kind=body.kind, name=body.name, actor=operator.actor)
    return OrgCreated(org=OrgRead.model_validate(org), api_key=_issued(issued))


@router.get(
    "/orgs",
    response_model=Page[OrgRead],
    summary="List organisations (operator, auditor)",
)
def list_orgs(
    session: SessionDep,
    _: ReaderDep,
    kind: OrgKind | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[OrgRead]:
    rows, next_cursor = paginate(
        session,
        orgs.orgs_query(kind=kind),
        order_by=[Organisation.created_at, Organisation.id],
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[OrgRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/orgs/me", response_model=OrgRead, summary="The caller's organisation")
def read_me(session: SessionDep, principal: PrincipalDep) -> OrgRead:
    return OrgRead.model_validate(orgs.get(session, principal.org_id))


@router.get(
    "/orgs/{org_id}",
    response_model=OrgRead,
    responses=error_responses(404),
    summary="One organisation (itself; operator and auditor: any)",
)
def read_org(org_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> OrgRead:
    principal.owns_or_reads_all(org_id, "organisation", org_id)
    return OrgRead.model_validate(orgs.get(session, org_id))


@router.post(
    "/orgs/{org_id}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyIssued,
    responses=error_responses(404, 422),
    summary="Issue a recovery key for any organisation (operator), e.g. after a lost key",
)
def issue_org_key(
    org_id: uuid.UUID, body: KeyCreate, session: SessionDep, operator: OperatorDep
) -> KeyIssued:
    """A key issued here for another organisation is a recovery key: only an operator can
    revoke it, so a leaked key of that organisation cannot revoke it."""
    org = orgs.get(session, org_id)
    issued = orgs.issue_key(
        session, org, name=body.name, actor=operator.actor, recovery=org.id != operator.org_id
    )
    return _issued(issued)


@router.post(
    "/orgs/{org_id}/keys/{key_id}/revocation",
    response_model=KeyRead,
    responses=error_responses(404, 422),
    summary="Revoke any organisation's key (operator); audited with the reason",
)
def revoke_org_key(
    org_id: uuid.UUID, key_id: uuid.UUID, body: Reason, session: SessionDep, operator: OperatorDep
) -> KeyRead:
    key = orgs.revoke_key(session, org_id, key_id, actor=operator.actor, reason=body.reason)
    return KeyRead.model_validate(key)


@router.post(
    "/orgs/{org_id}/suspension",
    response_model=OrgRead,
    responses=error_responses(404, 409, 422),
    summary="Suspend an organisation (operator): its keys are refused until reinstated",
)
def suspend_org(
    org_id: uuid.UUID, body: Reason, session: SessionDep, operator: OperatorDep
) -> OrgRead:
    org = orgs.suspend(session, orgs.get(session, org_id), actor=operator.actor, reason=body.reason)
    return OrgRead.model_validate(org)


@router.post(
    "/orgs/{org_id}/reinstatement",
    response_model=OrgRead,
    responses=error_responses(404, 422),
    summary="Lift an organisation's suspension (operator)",
)
def reinstate_org(
    org_id: uuid.UUID, body: Reason, session: SessionDep, operator: OperatorDep
) -> OrgRead:
    org = orgs.get(session, org_id)
    return OrgRead.model_validate(
        orgs.reinstate(session, org, actor=operator.actor, reason=body.reason)
    )


@router.put(
    "/orgs/{org_id}/credit-limit",
    response_model=OrgRead,
    responses=error_responses(404, 422),
    summary="Set an AI company's credit limit (operator)",
)
def set_credit_limit(
    org_id: uuid.UUID, body: CreditLimitIn, session: SessionDep, operator: OperatorDep
) -> OrgRead:
    org = orgs.set_credit_limit(
        session,
        orgs.get(session, org_id),
        body.credit_limit_micros,
        actor=operator.actor,
        reason=body.reason,
    )
    return OrgRead.model_validate(org)


@router.get(
    "/orgs/{org_id}/audit",
    response_model=Page[AuditEventRead],
    responses=error_responses(404, 422),
    summary="Who did what to an organisation and its keys, newest first (itself; operator, "
    "auditor: any)",
)
def list_audit_events(
    org_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[AuditEventRead]:
    principal.owns_or_reads_all(org_id, "organisation", org_id)
    orgs.get(session, org_id)
    rows, next_cursor = paginate(
        session, orgs.audit_query(org_id), order_by=[AuditEvent.id], cursor=cursor, limit=limit
    )
    return Page(items=[AuditEventRead.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/keys", response_model=list[KeyRead], summary="The caller's API keys (prefix only)")
def list_keys(session: SessionDep, principal: PrincipalDep) -> list[KeyRead]:
    return [KeyRead.model_validate(k) for k in orgs.list_keys(session, principal.org_id)]


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyIssued,
    responses=error_responses(422),
    summary="Issue another key for the caller's organisation (for rotation)",
)
def issue_key(body: KeyCreate, session: SessionDep, principal: PrincipalDep) -> KeyIssued:
    org = orgs.get(session, principal.org_id)
    return _issued(orgs.issue_key(session, org, name=body.name, actor=principal.actor))


@router.delete(
    "/keys/{key_id}",
    response_model=KeyRead,
    responses=error_responses(404),
    summary="Revoke one of the caller's keys; it stops working at once",
)
def revoke_key(key_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> KeyRead:
    """A recovery key (issued by an operator) is revoked only by an operator: 403."""
    key = orgs.revoke_key(session, principal.org_id, key_id, actor=principal.actor)
    return KeyRead.model_validate(key)
