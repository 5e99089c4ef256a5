"""Response shapes for royalty reports and usage history."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from pydantic import BaseModel, Field


class GroupBy(enum.StrEnum):
    DAY = "day"
    MONTH = "month"
    TRACK = "track"
    AI_COMPANY = "ai_company"


class RoyaltyRowRead(BaseModel):
    group: str = Field(
        description="The day (YYYY-MM-DD), month (YYYY-MM), track id or AI company id."
    )
    name: str | None = Field(description="Track title or AI company name, when grouped by them.")
    uses: int
    reversals: int
    amount_micros: int = Field(description="Net of reversals.")


class RoyaltyReport(BaseModel):
    label_id: uuid.UUID
    currency: str
    start: dt.datetime | None = Field(serialization_alias="from")
    end: dt.datetime | None = Field(serialization_alias="to")
    group_by: GroupBy
    rows: list[RoyaltyRowRead]
    total_micros: int
    uses: int


class UseRead(BaseModel):
    """One paid use: which check drew on which track, under which terms, for how much."""

    id: uuid.UUID
    created_at: dt.datetime
    check_id: uuid.UUID
    ai_company_id: uuid.UUID
    label_id: uuid.UUID
    catalogue_id: uuid.UUID
    track_id: uuid.UUID
    track_title: str
    license_terms_id: uuid.UUID
    terms_version: int
    rate_per_use_micros: int = Field(
        description="The rate applied: the penalty rate when the preference was `notAllowed`."
    )
    preference: str = Field(
        description="The track's `cawg.ai_generative_training` preference when the use was "
        "recorded; `notAllowed` marks a use the label did not permit."
    )
    preferences_version: int | None
    resemblance: float
    share: float
    amount_micros: int
    ledger_transaction_id: int | None
    reversal_transaction_id: int | None = Field(
        description="Set when the check's charge was reversed."
    )
    conflict_id: uuid.UUID | None = Field(
        default=None,
        description="The ownership conflict this use's credit was held for (the recording is "
        "claimed by two labels).",
    )
    conflict_state: str | None = Field(
        default=None,
        description="`held` (in escrow until the conflict is resolved), `released` (paid to "
        "this use's label, which won) or `upheld` (paid to the other label, which won).",
    )


USE_CSV_COLUMNS = list(UseRead.model_fields)


# Statements and invoices ------------------------------------------------------------------


class StatementLine(enum.StrEnum):
    """The rows of a statement's summary, in order; each movement row sums the postings of
    one kind of transaction dated in the month."""

    OPENING_BALANCE = "opening_balance"
    EARNED = "earned"  # charges: credits for uses
    HELD = "held"  # disputes opened or appealed: moved to the held account
    RELEASED = "released"  # held money returned to AI companies
    UPHELD = "upheld"  # held money paid to the label
    REVERSED = "reversed"  # reversals of charges
    ADJUSTMENTS = "adjustments"  # reversals and dispute outcomes about closed months
    FEES = "fees"
    CLOSING_BALANCE = "closing_balance"


class InvoiceLine(enum.StrEnum):
    OPENING_BALANCE = "opening_balance"
    USES = "uses"  # charges for uses, without the platform fee
    FEES = "fees"  # the platform fee on those charges
    RELEASED = "released"  # disputed uses refunded
    REVERSED = "reversed"  # reversed charges refunded
    ADJUSTMENTS = "adjustments"  # reversals and dispute outcomes about closed months
    CLOSING_BALANCE = "closing_balance"


class StatementSummaryRow(BaseModel):
    line: StatementLine
    available_micros: int = Field(description="Effect on the label's balance.")
    on_hold_micros: int = Field(description="Effect on the money held for its disputes.")


class InvoiceSummaryRow(BaseModel):
    line: InvoiceLine
    amount_micros: int = Field(description="Effect on the AI company's balance (negative: owed).")


class StatementTrackRow(BaseModel):
    """What one track earned from one AI company in the month, and what moved for it."""

    track_id: uuid.UUID | None = Field(description="Null: movements not about one use.")
    isrc: str | None
    title: str | None
    ai_company_id: uuid.UUID | None
    ai_company: str | None
    uses: int = Field(description="Uses charged in the month.")
    earned_micros: int
    amount_micros: int = Field(description="Net effect on the balance (earned, held, ...).")
    on_hold_micros: int


class AdjustmentRow(BaseModel):
    """A transaction of this month that corrects a closed month, naming the original."""

    transaction_id: int
    kind: str
    created_at: dt.datetime
    adjusts_period: str = Field(description="The closed month (YYYY-MM) it corrects.")
    original_transaction_id: int | None = Field(description="The charge it is about.")
    use_id: uuid.UUID | None
    track_id: uuid.UUID | None
    title: str | None
    amount_micros: int
    on_hold_micros: int
    reason: str | None


class DisputeRow(BaseModel):
    """A dispute as it stood at the end of the month."""

    dispute_id: uuid.UUID
    use_id: uuid.UUID
    track_id: uuid.UUID
    title: str
    label_id: uuid.UUID
    ai_company_id: uuid.UUID
    reason: str
    opened_at: dt.datetime
    amount_micros: int
    status: str = Field(description="At the end of the month.")
    last_step: str
    last_step_at: dt.datetime


class ConflictHoldRow(BaseModel):
    """A use held for an ownership conflict, as it stood at the end of the month: the
    recording is claimed by two labels, and its money waits in escrow for the winner."""

    conflict_id: uuid.UUID
    use_id: uuid.UUID
    track_id: uuid.UUID
    label_id: uuid.UUID = Field(description="The label the use was credited to.")
    other_label_id: uuid.UUID = Field(description="The other label claiming the recording.")
    amount_micros: int
    status: str = Field(
        description="At the end of the month: `held`, `released` (paid to `label_id`) or "
        "`upheld` (paid to `other_label_id`)."
    )
    held_at: dt.datetime
    at: dt.datetime = Field(description="When it reached that status.")


class CatalogueRow(BaseModel):
    catalogue_id: uuid.UUID
    catalogue: str
    label_id: uuid.UUID
    label: str
    uses: int
    amount_micros: int


class Statement(BaseModel):
    """A label's statement for one closed month in one currency.

    Per column, opening balance + the movement rows = closing balance, and both balances are
    the ledger's own sums at the month's bounds.
    """

    label_id: uuid.UUID
    label: str
    month: str
    currency: str
    period_start: dt.datetime
    period_end: dt.datetime
    closed_at: dt.datetime
    summary: list[StatementSummaryRow]
    tracks: list[StatementTrackRow]
    adjustments: list[AdjustmentRow]
    disputes: list[DisputeRow]
    conflicts: list[ConflictHoldRow] = Field(
        default_factory=list,
        description="Uses of recordings claimed by this label and another, whose money was "
        "held in escrow during the month (not on this label's accounts while held).",
    )


class Invoice(BaseModel):
    """An AI company's invoice for one closed month in one currency.

    Opening balance + the movement rows = closing balance (the ledger's sums); `due_micros` is
    what the month adds to what the company owes.
    """

    ai_company_id: uuid.UUID
    ai_company: str
    month: str
    currency: str
    period_start: dt.datetime
    period_end: dt.datetime
    closed_at: dt.datetime
    summary: list[InvoiceSummaryRow]
    uses: int
    due_micros: int
    catalogues: list[CatalogueRow]
    adjustments: list[AdjustmentRow]
    disputes: list[DisputeRow]
