"""Disputes over uses, and the append-only history of their steps.

A dispute's row holds its current state (changed only by a compare-and-set on `status`, so two
decisions on one dispute cannot both win); every step is also an appended `DisputeEvent` with
its actor, reason and time, and every step that moves money names its ledger transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class DisputeReason(enum.StrEnum):
    NOT_DERIVED = "not_derived"
    LICENSED_ELSEWHERE = "licensed_elsewhere"
    PUBLIC_DOMAIN = "public_domain"
    OTHER = "other"


class DisputeStatus(enum.StrEnum):
    OPEN = "open"  # money held; the label reviews it
    RELEASED = "released"  # money back to the AI company (final)
    UPHELD = "upheld"  # money paid to the label (final once appealed)
    APPEALED = "appealed"  # money held again; an operator decides


class DisputeStep(enum.StrEnum):
    OPENED = "opened"
    RELEASED = "released"
    UPHELD = "upheld"
    EXPIRED = "expired"  # the review window passed: released by the service
    APPEALED = "appealed"
    APPEAL_GRANTED = "appeal_granted"  # released by an operator
    APPEAL_DENIED = "appeal_denied"  # upheld by an operator


class ActorRole(enum.StrEnum):
    AI_COMPANY = "ai_company"
    LABEL = "label"
    OPERATOR = "operator"
    SYSTEM = "system"


def _known(column: str, values: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Dispute(Base):
    """An AI company's dispute of one use; the use's credit is held until it is decided."""

    __tablename__ = "disputes"
    __table_args__ = (
        sa.UniqueConstraint("use_id"),
        sa.CheckConstraint(_known("reason", DisputeReason), name="reason_known"),
        sa.CheckConstraint(_known("status", DisputeStatus), name="status_known"),
        sa.CheckConstraint("amount_micros > 0", name="amount_positive"),
        sa.CheckConstraint(
            "(status IN ('open', 'appealed')) = (pending_transaction_id IS NOT NULL)",
            name="pending_iff_undecided",
        ),
        sa.Index("ix_disputes_status_review_deadline", "status", "review_deadline"),
        sa.Index("ix_disputes_ai_company_id_opened_at", "ai_company_id", "opened_at", "id"),
        sa.Index("ix_disputes_label_id_opened_at", "label_id", "opened_at", "id"),
        sa.Index("ix_disputes_opened_at_id", "opened_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    use_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("uses.id"))
    check_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("checks.id"))
    ai_company_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    label_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    track_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tracks.id"))
    currency: Mapped[str] = mapped_column(sa.String(3))
    amount_micros: Mapped[int] = mapped_column(sa.BigInteger)
    reason: Mapped[str] = mapped_column(sa.String(32))
    comment: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    opened_at: Mapped[dt.datetime]
    review_deadline: Mapped[dt.datetime]
    decided_at: Mapped[dt.datetime | None]
    appealed_at: Mapped[dt.datetime | None]
    # The hold awaiting a decision (while open or appealed), and the dispute's latest
    # ledger transaction (what an appeal's new hold answers). Deferred: a dispute is written
    # just before the hold that names it.
    pending_transaction_id: Mapped[int | None] = mapped_column(
        sa.BigInteger,
        sa.ForeignKey("ledger_transactions.id", deferrable=True, initially="DEFERRED"),
    )
    last_transaction_id: Mapped[int] = mapped_column(
        sa.BigInteger,
        sa.ForeignKey("ledger_transactions.id", deferrable=True, initially="DEFERRED"),
    )


class DisputeEvent(Base):
    """One step of a dispute, as it happened (append-only: the database refuses changes)."""

    __tablename__ = "dispute_events"
    __table_args__ = (
        sa.CheckConstraint(_known("step", DisputeStep), name="step_known"),
        sa.CheckConstraint(_known("status_after", DisputeStatus), name="status_after_known"),
        sa.CheckConstraint(_known("actor_role", ActorRole), name="actor_role_known"),
        sa.CheckConstraint(
            "(actor_role = 'system') = (actor_id IS NULL)", name="system_has_no_org"
        ),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    dispute_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("disputes.id"), index=True)
    step: Mapped[str] = mapped_column(sa.String(16))
    status_after: Mapped[str] = mapped_column(sa.String(16))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("organisations.id"))
    actor_role: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.Text)
    comment: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[dt.datetime]
    ledger_transaction_id: Mapped[int | None] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ledger_transactions.id")
    )
