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
    rate_per_use_micros: int
    resemblance: float
    share: float
    amount_micros: int
    ledger_transaction_id: int | None
    reversal_transaction_id: int | None = Field(
        description="Set when the check's charge was reversed."
    )


USE_CSV_COLUMNS = list(UseRead.model_fields)
