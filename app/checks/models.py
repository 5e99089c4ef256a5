"""Attribution checks, the uses they found, and the idempotency keys that guard them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class Check(Base):
    """One submitted piece and what it was found to draw on; replayable from its record."""

    __tablename__ = "checks"
    __table_args__ = (
        sa.UniqueConstraint("ai_company_id", "idempotency_key"),
        sa.CheckConstraint("charge_micros >= 0", name="charge_not_negative"),
        sa.Index("ix_checks_ai_company_id_created_at", "ai_company_id", "created_at", "id"),
        sa.Index("ix_checks_created_at_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    ai_company_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    idempotency_key: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    audio_sha256: Mapped[str] = mapped_column(sa.String(64))
    duration_s: Mapped[float] = mapped_column(sa.Double)
    generation_id: Mapped[str | None] = mapped_column(sa.String(200), index=True)
    model: Mapped[str | None] = mapped_column(sa.String(200))
    request_metadata: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    embedder: Mapped[str] = mapped_column(sa.String(32))
    embedder_version: Mapped[str] = mapped_column(sa.String(64))
    index_watermark: Mapped[int] = mapped_column(sa.BigInteger)
    # Alignment constants and thresholds the check ran with, so it can be replayed exactly.
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    charge_micros: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    # The response as first sent; idempotent retries and GET return it (same content).
    result: Mapped[dict[str, Any]] = mapped_column(JSONB)


class Use(Base):
    """A match at or above the threshold it was judged by (its catalogue's, or that scaled
    beside a stronger use): a paid use of one track."""

    __tablename__ = "uses"
    __table_args__ = (
        sa.CheckConstraint("amount_micros >= 0", name="amount_not_negative"),
        sa.CheckConstraint("resemblance >= 0 AND resemblance <= 1", name="resemblance_unit"),
        sa.CheckConstraint("share > 0 AND share <= 1", name="share_unit"),
        sa.Index("ix_uses_created_at_id", "created_at", "id"),
        sa.Index("ix_uses_label_id_created_at", "label_id", "created_at", "id"),
        sa.Index("ix_uses_ai_company_id_created_at", "ai_company_id", "created_at", "id"),
        sa.CheckConstraint(
            "preference IN ('allowed', 'constrained', 'notAllowed')", name="preference_known"
        ),
        # An auditor lists the uses of tracks whose preferences refuse generative training.
        sa.Index(
            "ix_uses_not_allowed_created_at",
            "created_at",
            "id",
            postgresql_where=sa.text("preference = 'notAllowed'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    check_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("checks.id"), index=True)
    created_at: Mapped[dt.datetime]
    ai_company_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    label_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    catalogue_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("catalogues.id"))
    track_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tracks.id"), index=True)
    license_terms_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("license_terms.id"))
    terms_version: Mapped[int]
    # The rate applied: the penalty rate when the track's preference refused the use.
    rate_per_use_micros: Mapped[int] = mapped_column(sa.BigInteger)
    # The track's effective `cawg.ai_generative_training` when the use was recorded.
    preference: Mapped[str] = mapped_column(sa.String(16), server_default="allowed")
    preferences_version: Mapped[int | None]
    resemblance: Mapped[float] = mapped_column(sa.Double)
    share: Mapped[float] = mapped_column(sa.Double)
    amount_micros: Mapped[int] = mapped_column(sa.BigInteger)
    # Deferred: the use is written just before the transaction that pays for it.
    ledger_transaction_id: Mapped[int | None] = mapped_column(
        sa.BigInteger,
        sa.ForeignKey("ledger_transactions.id", deferrable=True, initially="DEFERRED"),
        index=True,
    )


class IdempotencyKey(Base):
    """A client's Idempotency-Key: claimed while its check runs, then bound to the check."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        sa.CheckConstraint("(check_id IS NULL) = (completed_at IS NULL)", name="done_has_check"),
    )

    ai_company_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organisations.id"), primary_key=True
    )
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    claimed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    check_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("checks.id"))
    completed_at: Mapped[dt.datetime | None]
    # The process (its boot, see `app.boot`) running the claimed check: a claim whose process
    # is gone is freed at once instead of after the lock time.
    boot_id: Mapped[int | None] = mapped_column(default=None)
