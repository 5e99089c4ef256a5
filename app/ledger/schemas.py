"""Response shapes for accounts, ledger transactions, periods and chain verification."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.ledger.models import LedgerPosting, LedgerTransaction


class PostingRead(BaseModel):
    account_id: uuid.UUID
    amount_micros: int = Field(description="Positive: credited to the account; negative: debited.")
    use_id: uuid.UUID | None


class TransactionRead(BaseModel):
    id: int
    kind: str
    created_at: dt.datetime
    currency: str
    check_id: uuid.UUID | None
    reverses_id: int | None
    reason: str | None
    actor_id: uuid.UUID | None = Field(
        description="The organisation that caused it; null for the service's own schedule."
    )
    answers_id: int | None = Field(
        description="The transaction it follows: a hold's charge, a release's or uphold's hold."
    )
    dispute_id: uuid.UUID | None
    adjusts_period: str | None = Field(
        description="YYYY-MM: the closed month of the original it corrects (an adjustment line)."
    )
    prev_hash: str
    hash: str
    postings: list[PostingRead]


def transaction_with(
    transaction: LedgerTransaction, postings: list[LedgerPosting]
) -> TransactionRead:
    return TransactionRead(
        id=transaction.id,
        kind=transaction.kind,
        created_at=transaction.created_at,
        currency=transaction.currency,
        check_id=transaction.check_id,
        reverses_id=transaction.reverses_id,
        reason=transaction.reason,
        actor_id=transaction.actor_id,
        answers_id=transaction.answers_id,
        dispute_id=transaction.dispute_id,
        adjusts_period=(
            transaction.adjusts_period.strftime("%Y-%m") if transaction.adjusts_period else None
        ),
        prev_hash=transaction.prev_hash,
        hash=transaction.hash,
        postings=[
            PostingRead(account_id=p.account_id, amount_micros=p.amount_micros, use_id=p.use_id)
            for p in postings
        ],
    )


class AccountRead(BaseModel):
    """An organisation's position: labels are owed positive balances, AI companies owe."""

    org_id: uuid.UUID
    account_id: uuid.UUID | None = Field(description="Null until the first posting.")
    currency: str
    balance_micros: int
    credits_micros: int
    debits_micros: int
    transactions: int
    held_micros: int = Field(
        description="A label's money set aside for open disputes (not in balance_micros)."
    )


class VerificationRead(BaseModel):
    ok: bool
    transactions_checked: int
    last_hash: str = Field(description="Hash of the last transaction that verified.")
    first_broken_transaction_id: int | None
    problem: str | None


class PeriodRead(BaseModel):
    month: str = Field(description="YYYY-MM (UTC).")
    closed_at: dt.datetime
    closed_by: uuid.UUID | None = Field(description="Null: closed by the schedule.")


class PeriodClose(BaseModel):
    """The months a close request closed: the one asked for and any earlier still open."""

    closed: list[PeriodRead]
    closed_through: str


CHECKPOINT_DOC = (
    "The signed message is the UTF-8 text `echoledger-checkpoint\\n{key_id}\\n{transactions}"
    "\\n{head_id}\\n{head_hash}\\n{created_at}` (head_id empty for an empty ledger; "
    "created_at as `YYYY-MM-DDTHH:MM:SS.ffffffZ`), signed with Ed25519; `public_key` is the "
    "raw 32-byte key in base64."
)


class CheckpointIn(BaseModel):
    """A checkpoint as the service signed it, kept by an auditor."""

    model_config = ConfigDict(extra="ignore")

    transactions: int = Field(ge=0, le=2**63 - 1)
    head_id: int | None = Field(ge=1, le=2**63 - 1)
    head_hash: str = Field(pattern="^[0-9a-f]{64}$")
    created_at: AwareDatetime
    key_id: str = Field(pattern="^[0-9a-f]{16}$")
    signature: str = Field(max_length=200)


class CheckpointRead(CheckpointIn):
    __doc__ = "The chain's head, signed: keep it, and POST it to /v1/ledger/verify later. " + (
        CHECKPOINT_DOC
    )

    algorithm: str
    public_key: str
