"""Organisations and API keys: creation, lookup by secret, revocation, suspension, audit.

Rules that keep a leaked key from owning its organisation for good:

* an operator can revoke any organisation's keys and suspend an organisation (its keys are
  then refused with 403 until it is reinstated);
* a key an operator issued to an organisation (`POST /v1/orgs/{id}/keys`, a recovery key) can
  be revoked only by an operator, so a leaked key cannot revoke the way back in;
* every issue, revocation, suspension, reinstatement and credit-limit change is recorded in
  the audit trail: who (organisation and key), when, and why.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import Conflict, Forbidden, NotFound, Unprocessable
from app.orgs.models import ApiKey, AuditAction, AuditEvent, Organisation, OrgKind

KEY_PREFIX = "el"
# Characters of the secret shown in listings, enough to tell keys apart, too few to guess one.
VISIBLE_SECRET_CHARS = 6


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an organisation and the key it used (None from the command line)."""

    org_id: uuid.UUID | None
    key_id: uuid.UUID | None
    is_operator: bool


def audit(
    session: Session,
    actor: Actor | None,
    action: AuditAction,
    *,
    target_org_id: uuid.UUID,
    target_key_id: uuid.UUID | None = None,
    reason: str | None = None,
) -> AuditEvent:
    event = AuditEvent(
        actor_org_id=actor.org_id if actor else None,
        actor_key_id=actor.key_id if actor else None,
        action=action.value,
        target_org_id=target_org_id,
        target_key_id=target_key_id,
        reason=reason,
    )
    session.add(event)
    session.flush()
    return event


def audit_query(target_org_id: uuid.UUID) -> sa.Select[AuditEvent]:
    """An organisation's audit trail (unordered; the caller pages)."""
    return sa.select(AuditEvent).where(AuditEvent.target_org_id == target_org_id)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    session: Session, *, kind: OrgKind, name: str, actor: Actor | None = None
) -> tuple[Organisation, IssuedKey]:
    """Create an organisation and its first API key."""
    org = Organisation(kind=kind.value, name=name)
    session.add(org)
    session.flush()
    return org, issue_key(session, org, actor=actor)


def issue_key(
    session: Session,
    org: Organisation,
    *,
    name: str = "default",
    actor: Actor | None = None,
    recovery: bool = False,
) -> IssuedKey:
    """Create a new random key for `org`; the secret is only returned here.

    recovery : an operator's key for another organisation, revocable by operators only
    """
    head = f"{KEY_PREFIX}_{org.kind}_"
    secret = head + secrets.token_urlsafe(32)
    key = ApiKey(
        org_id=org.id,
        name=name,
        prefix=secret[: len(head) + VISIBLE_SECRET_CHARS],
        key_hash=hash_key(secret),
        recovery=recovery,
    )
    session.add(key)
    session.flush()
    audit(session, actor, AuditAction.KEY_ISSUED, target_org_id=org.id, target_key_id=key.id)
    return IssuedKey(record=key, secret=secret)


def orgs_query(*, kind: OrgKind | None) -> sa.Select[Organisation]:
    """Organisations, all or of one kind (unordered; the caller pages)."""
    stmt = sa.select(Organisation)
    if kind is not None:
        stmt = stmt.where(Organisation.kind == kind.value)
    return stmt


def get(session: Session, org_id: uuid.UUID) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound("organisation", org_id)
    return org


def authenticate(session: Session, secret: str) -> tuple[Organisation, ApiKey] | None:
    """The organisation and key for a presented secret, unless unknown or revoked."""
    row = session.execute(
        sa.select(Organisation, ApiKey)
        .join(ApiKey, ApiKey.org_id == Organisation.id)
        .where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def live_key(session: Session, key_id: uuid.UUID) -> tuple[Organisation, ApiKey] | None:
    """The organisation and key for a key id, unless unknown or revoked (a console session
    names its key by id and is looked up on every request, so revoking the key ends it)."""
    row = session.execute(
        sa.select(Organisation, ApiKey)
        .join(ApiKey, ApiKey.org_id == Organisation.id)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def list_keys(session: Session, org_id: uuid.UUID) -> list[ApiKey]:
    stmt = sa.select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at)
    return list(session.scalars(stmt))


def revoke_key(
    session: Session,
    org_id: uuid.UUID,
    key_id: uuid.UUID,
    *,
    actor: Actor,
    reason: str | None = None,
) -> ApiKey:
    """Revoke one of `org_id`'s keys (idempotent: revoking twice keeps the first time).

    A recovery key is revoked only by an operator (Forbidden for anyone else).
    """
    key = session.get(ApiKey, key_id)
    if key is None or key.org_id != org_id:
        raise NotFound("api key", key_id)
    if key.recovery and not actor.is_operator:
        raise Forbidden(
            "this key was issued by an operator for recovery; only an operator can revoke it",
            details={"key_id": str(key_id), "reason": "recovery_key"},
        )
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        key.revoked_by_org_id = actor.org_id
        key.revocation_reason = reason
        session.flush()
        audit(
            session,
            actor,
            AuditAction.KEY_REVOKED,
            target_org_id=org_id,
            target_key_id=key_id,
            reason=reason,
        )
    return key


def suspend(session: Session, org: Organisation, *, actor: Actor, reason: str) -> Organisation:
    """Refuse every key of `org` until it is reinstated (operators cannot be suspended, so
    the service always keeps a way in)."""
    if org.kind == OrgKind.OPERATOR.value:
        raise Conflict("an operator organisation cannot be suspended; revoke its keys instead")
    if org.suspended_at is None:
        org.suspended_at = utcnow()
        org.suspension_reason = reason
        session.flush()
        audit(session, actor, AuditAction.ORG_SUSPENDED, target_org_id=org.id, reason=reason)
    return org


def reinstate(session: Session, org: Organisation, *, actor: Actor, reason: str) -> Organisation:
    """Lift a suspension; the organisation's unrevoked keys work again."""
    if org.suspended_at is not None:
        org.suspended_at = None
        org.suspension_reason = None
        session.flush()
        audit(session, actor, AuditAction.ORG_REINSTATED, target_org_id=org.id, reason=reason)
    return org


def set_credit_limit(
    session: Session, org: Organisation, limit_micros: int | None, *, actor: Actor, reason: str
) -> Organisation:
    """An AI company's own credit limit (None: back to the service default)."""
    if org.kind != OrgKind.AI_COMPANY.value:
        raise Unprocessable(
            "credit limits apply to AI companies only",
            details=[{"field": "path.org_id", "message": f"this organisation is a {org.kind}"}],
        )
    org.credit_limit_micros = limit_micros
    session.flush()
    audit(
        session,
        actor,
        AuditAction.CREDIT_LIMIT_SET,
        target_org_id=org.id,
        reason=f"{reason} (limit: {'default' if limit_micros is None else limit_micros})",
    )
    return org
