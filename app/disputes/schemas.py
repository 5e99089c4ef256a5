"""Request and response shapes for disputes."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.disputes.models import ActorRole, DisputeReason, DisputeStatus, DisputeStep

Reason = Field(min_length=3, max_length=2000, description="Why, in words; kept in the history.")


class DisputeOpen(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    use_id: uuid.UUID = Field(description="The disputed use (from the check or `/v1/uses`).")
    reason: DisputeReason
    comment: str = Field(min_length=3, max_length=2000)


class SpanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_s: float = Field(ge=0, description="Start in the reference track (s).")
    end_s: float = Field(gt=0, description="End in the reference track (s).")

    @model_validator(mode="after")
    def _ordered(self) -> SpanIn:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        return self


class DisputeRelease(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Reason
    do_not_match: list[SpanIn] = Field(
        default_factory=list,
        max_length=20,
        description="Spans of the disputed track (e.g. a check's evidence "
        "`reference_start..reference_end`) that must never match again, for anyone.",
    )


class DisputeDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Reason


class AppealOutcome(enum.StrEnum):
    RELEASE = "release"  # the appeal is granted: the money goes back to the AI company
    UPHOLD = "uphold"  # the appeal is denied: the money is paid to the label


class AppealDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    outcome: AppealOutcome
    reason: str = Reason


class DisputeEventRead(BaseModel):
    """One step of a dispute: who, when, why, and the ledger transaction it appended."""

    model_config = ConfigDict(from_attributes=True)

    step: DisputeStep
    status_after: DisputeStatus
    actor_id: uuid.UUID | None = Field(description="Null: the service (the review timer).")
    actor_role: ActorRole
    reason: str
    comment: str | None
    at: dt.datetime
    ledger_transaction_id: int | None


class ExclusionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    track_id: uuid.UUID
    start_s: float
    end_s: float


class DisputeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    use_id: uuid.UUID
    check_id: uuid.UUID
    ai_company_id: uuid.UUID
    label_id: uuid.UUID
    track_id: uuid.UUID
    currency: str
    amount_micros: int = Field(description="The use's credit, held while undecided.")
    reason: DisputeReason
    comment: str
    status: DisputeStatus
    opened_at: dt.datetime
    review_deadline: dt.datetime = Field(
        description="The label decides before it; after it the dispute is released."
    )
    decided_at: dt.datetime | None
    appealed_at: dt.datetime | None
    appealable: bool = Field(description="Upheld and not yet appealed.")
    pending_transaction_id: int | None = Field(description="The hold awaiting a decision.")
    last_transaction_id: int


class DisputeDetail(DisputeRead):
    events: list[DisputeEventRead]
    exclusions: list[ExclusionRead]
