"""Organisations (tenants), their API keys, and the audit trail of what operators did to them."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, utcnow


class OrgKind(enum.StrEnum):
    OPERATOR = "operator"
    LABEL = "label"
    AI_COMPANY = "ai_company"
    AUDITOR = "auditor"


class Organisation(Base):
    __tablename__ = "organisations"
    __table_args__ = (
        sa.CheckConstraint(
            "kind IN ('operator', 'label', 'ai_company', 'auditor')", name="kind_known"
        ),
        sa.CheckConstraint("credit_limit_micros >= 0", name="credit_limit_not_negative"),
        sa.CheckConstraint(
            "(suspended_at IS NULL) = (suspension_reason IS NULL)", name="suspension_has_reason"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # A suspended organisation's keys are refused (403) until an operator reinstates it.
    suspended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    suspension_reason: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # An AI company's own credit limit; None: the service default.
    credit_limit_micros: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)

    keys: Mapped[list[ApiKey]] = relationship(
        back_populates="org", lazy="raise", foreign_keys="ApiKey.org_id"
    )


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100), default="default")
    prefix: Mapped[str] = mapped_column(sa.String(32))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Issued by an operator to recover an organisation: only an operator may revoke it, so a
    # leaked key of the organisation cannot lock its owner out for good.
    recovery: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    revoked_by_org_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("organisations.id"), default=None
    )
    revocation_reason: Mapped[str | None] = mapped_column(sa.Text, default=None)

    org: Mapped[Organisation] = relationship(
        back_populates="keys", lazy="raise", foreign_keys=[org_id]
    )


class AuditAction(enum.StrEnum):
    KEY_ISSUED = "key_issued"
    KEY_REVOKED = "key_revoked"
    ORG_SUSPENDED = "org_suspended"
    ORG_REINSTATED = "org_reinstated"
    CREDIT_LIMIT_SET = "credit_limit_set"


class AuditEvent(Base):
    """Who did what to which organisation or key, when and why (append-only by use)."""

    __tablename__ = "org_audit_events"
    __table_args__ = (sa.Index("ix_org_audit_events_target_org_id_id", "target_org_id", "id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor_org_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("organisations.id"))
    actor_key_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    action: Mapped[str] = mapped_column(sa.String(32))
    target_org_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    target_key_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    reason: Mapped[str | None] = mapped_column(sa.Text)
