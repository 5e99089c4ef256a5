"""Organisations and API keys: creation, lookup by secret, revocation."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import NotFound
from app.orgs.models import ApiKey, Organisation, OrgKind

KEY_PREFIX = "el"
# Characters of the secret shown in listings, enough to tell keys apart, too few to guess one.
VISIBLE_SECRET_CHARS = 6


@dataclass(frozen=True, slots=True)
class IssuedKey:
    record: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(session: Session, *, kind: OrgKind, name: str) -> tuple[Organisation, IssuedKey]:
    """Create an organisation and its first API key."""
    org = Organisation(kind=kind.value, name=name)
    session.add(org)
    session.flush()
    return org, issue_key(session, org)


def issue_key(session: Session, org: Organisation, *, name: str = "default") -> IssuedKey:
    """Create a new random key for `org`; the secret is only returned here."""
    head = f"{KEY_PREFIX}_{org.kind}_"
    secret = head + secrets.token_urlsafe(32)
    key = ApiKey(
        org_id=org.id,
        name=name,
        prefix=secret[: len(head) + VISIBLE_SECRET_CHARS],
        key_hash=hash_key(secret),
    )
    session.add(key)
    session.flush()
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


def list_keys(session: Session, org_id: uuid.UUID) -> list[ApiKey]:
    stmt = sa.select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at)
    return list(session.scalars(stmt))


def revoke_key(session: Session, org_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """Revoke one of `org_id`'s keys (idempotent: revoking twice keeps the first time)."""
    key = session.get(ApiKey, key_id)
    if key is None or key.org_id != org_id:
        raise NotFound("api key", key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key
