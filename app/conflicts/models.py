"""The money held for uses on both sides of an open ownership conflict.

One row per held use: the check paid the use's credit to the earlier registrant's label and,
in the same transaction, held it in the platform's escrow (a `hold` answering the charge).
Resolving the conflict posts each hold once: `release` back to the earlier registrant when it
wins, `uphold` to the other label when it does (the database refuses a second posting).
Append-only: what became of a hold is read from the ledger.
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class ConflictHold(Base):
    """A use's credit held in escrow while its ownership conflict is open."""

    __tablename__ = "conflict_holds"
    __table_args__ = (sa.CheckConstraint("amount_micros > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    conflict_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("ownership_conflicts.id"), index=True
    )
    use_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("uses.id"), unique=True)
    track_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tracks.id"))  # the use's
    # The label the use was credited to (and the hold took the money from).
    label_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    check_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("checks.id"))
    hold_transaction_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("ledger_transactions.id"), unique=True
    )
    currency: Mapped[str] = mapped_column(sa.String(3))
    amount_micros: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[dt.datetime]
