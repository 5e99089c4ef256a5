"""The double-entry ledger: accounts, transactions chained by hash, and their postings.

Every table here is append-only (the database refuses UPDATE, DELETE and TRUNCATE) and every
transaction's postings sum to zero (checked by the database at commit). See migration 0003.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class AccountKind(enum.StrEnum):
    AI_COMPANY = "ai_company"
    LABEL = "label"
    PLATFORM = "platform"


class TransactionKind(enum.StrEnum):
    CHARGE = "charge"
    REVERSAL = "reversal"


class LedgerAccount(Base):
    """One account per organisation (and one for the platform's fees), in one currency."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "currency", postgresql_nulls_not_distinct=True),
        sa.CheckConstraint("kind IN ('ai_company', 'label', 'platform')", name="kind_known"),
        sa.CheckConstraint("(kind = 'platform') = (org_id IS NULL)", name="platform_has_no_org"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("organisations.id"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    currency: Mapped[str] = mapped_column(sa.String(3))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LedgerTransaction(Base):
    """A balanced set of postings; `hash` chains it to the transaction before it."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('charge', 'reversal')", name="kind_known"),
        sa.CheckConstraint("(kind = 'reversal') = (reverses_id IS NOT NULL)", name="reversal_refs"),
        sa.CheckConstraint("prev_hash ~ '^[0-9a-f]{64}$'", name="prev_hash_hex"),
        sa.CheckConstraint("hash ~ '^[0-9a-f]{64}$'", name="hash_hex"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    check_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("checks.id"), index=True)
    reverses_id: Mapped[int | None] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ledger_transactions.id"), unique=True
    )
    reason: Mapped[str | None] = mapped_column(sa.Text)
    currency: Mapped[str] = mapped_column(sa.String(3))
    created_at: Mapped[dt.datetime]
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)


class LedgerPosting(Base):
    """An amount credited (positive) or debited (negative) to one account."""

    __tablename__ = "ledger_postings"
    __table_args__ = (
        sa.CheckConstraint("amount_micros <> 0", name="amount_not_zero"),
        sa.Index("ix_ledger_postings_account_id_transaction_id", "account_id", "transaction_id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ledger_transactions.id"), index=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("ledger_accounts.id"))
    amount_micros: Mapped[int] = mapped_column(sa.BigInteger)
    use_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("uses.id"), index=True)
