"""The double-entry ledger: accounts, transactions chained by hash, and their postings.

Every table here is append-only (the database refuses UPDATE, DELETE and TRUNCATE) and every
transaction's postings sum to zero (checked by the database at commit). See migration 0003.
A month, once closed (`LedgerPeriod`), takes no transaction dated in it: the database refuses
the insert (migration 0005).
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
    # Money set aside until a decision posts it to one side (a disputed use's credit); an
    # organisation's held account (org_id set) or the platform's escrow (org_id NULL).
    HELD = "held"


class TransactionKind(enum.StrEnum):
    CHARGE = "charge"
    REVERSAL = "reversal"
    HOLD = "hold"  # money moves into a held account, pending a decision
    RELEASE = "release"  # held money goes back to the one who paid it
    UPHOLD = "uphold"  # held money goes to the one who claimed it
    ADJUSTMENT = "adjustment"


# The kinds that post a pending hold to one side; each hold is answered at most once.
RESOLUTIONS = (TransactionKind.RELEASE, TransactionKind.UPHOLD)


class LedgerAccount(Base):
    """An organisation's account (and one for the platform's fees) in one currency; labels
    also have a held account for money under dispute."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "kind", "currency", postgresql_nulls_not_distinct=True),
        sa.CheckConstraint(
            "kind IN ('ai_company', 'label', 'platform', 'held')", name="kind_known"
        ),
        sa.CheckConstraint(
            "kind = 'held' OR (kind = 'platform') = (org_id IS NULL)", name="platform_has_no_org"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("organisations.id"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    currency: Mapped[str] = mapped_column(sa.String(3))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LedgerTransaction(Base):
    """A balanced set of postings; `hash` chains it to the transaction before it.

    What it answers: `reverses_id` (a reversal's original), `answers_id` (the transaction a
    hold, release, uphold or adjustment follows: a hold answers the charge it holds money of,
    a release or uphold the hold it posts), `dispute_id`; `adjusts_period` is the closed month
    of the original when there is one (the transaction is then an adjustment line of the month
    it is dated in). `actor_id` is the organisation that caused it (NULL: the service itself).
    """

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        sa.CheckConstraint(
            "kind IN ('charge', 'reversal', 'hold', 'release', 'uphold', 'adjustment')",
            name="kind_known",
        ),
        sa.CheckConstraint("(kind = 'reversal') = (reverses_id IS NOT NULL)", name="reversal_refs"),
        sa.CheckConstraint(
            "kind NOT IN ('hold', 'release', 'uphold', 'adjustment') OR answers_id IS NOT NULL",
            name="answers_refs",
        ),
        sa.CheckConstraint(
            "adjusts_period IS NULL OR extract(day FROM adjusts_period) = 1",
            name="adjusts_period_is_month",
        ),
        sa.CheckConstraint("prev_hash ~ '^[0-9a-f]{64}$'", name="prev_hash_hex"),
        sa.CheckConstraint("hash ~ '^[0-9a-f]{64}$'", name="hash_hex"),
        # A hold is posted to one side once: two decisions on it cannot both commit.
        sa.Index(
            "uq_ledger_transactions_resolves",
            "answers_id",
            unique=True,
            postgresql_where=sa.text("kind IN ('release', 'uphold')"),
        ),
        sa.Index("ix_ledger_transactions_created_at_id", "created_at", "id"),
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
    actor_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("organisations.id"))
    answers_id: Mapped[int | None] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ledger_transactions.id"), index=True
    )
    # use_alter: disputes name their transactions too, so the two tables are created first and
    # this constraint after them.
    dispute_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("disputes.id", use_alter=True), index=True
    )
    adjusts_period: Mapped[dt.date | None] = mapped_column(sa.Date)


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


class LedgerPeriod(Base):
    """A closed month (UTC): no transaction dated in it is ever written again.

    Months close in order, so the latest row says "closed through"; the database refuses a
    transaction dated on or before its end, and refuses changing or removing a row here.
    """

    __tablename__ = "ledger_periods"
    __table_args__ = (
        sa.CheckConstraint("extract(day FROM month) = 1", name="month_starts_on_the_first"),
    )

    month: Mapped[dt.date] = mapped_column(sa.Date, primary_key=True)
    closed_at: Mapped[dt.datetime]
    # NULL: closed by the service's own schedule.
    closed_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("organisations.id"))
