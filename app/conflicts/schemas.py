"""Request and response shapes for ownership conflicts and duplicates."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field

from app.catalogues.models import ConflictResolution, OverlapKind, OverlapStatus

Reason = Field(min_length=3, max_length=2000, description="Why, in words; kept on the conflict.")


class OverlapSpan(BaseModel):
    """A stretch both tracks share: the newer track's time and the original's."""

    track_start: float
    track_end: float
    original_start: float
    original_end: float
    similarity: float = Field(description="Mean window similarity over the stretch (0..1).")


class AmountRead(BaseModel):
    currency: str
    held_micros: int = Field(description="In escrow until the conflict is resolved.")
    paid_micros: int = Field(description="Paid to the winner when it was resolved.")


class ConflictRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: OverlapKind = Field(
        description="`duplicate`: one label registered the recording twice (nothing held; "
        "a passage both match is paid to the earlier track). `conflict`: two labels claim it."
    )
    status: OverlapStatus = Field(
        description="`noted` (a duplicate), `open` (money held), `resolved`."
    )
    track_id: uuid.UUID = Field(description="The newer registration.")
    label_id: uuid.UUID
    original_track_id: uuid.UUID = Field(description="The earlier registration.")
    original_label_id: uuid.UUID
    coverage: float = Field(description="Share of the newer track the original covers.")
    resemblance: float = Field(description="Mean window similarity over the covered part.")
    tempo_ratio: float
    offset_s: float = Field(description="original time = tempo_ratio * track time + offset_s")
    detected_at: dt.datetime
    resolved_at: dt.datetime | None
    resolution: ConflictResolution | None
    winner_label_id: uuid.UUID | None
    resolved_by: uuid.UUID | None
    resolved_reason: str | None
    amounts: list[AmountRead] = Field(default_factory=list)


class HoldRead(BaseModel):
    use_id: uuid.UUID
    check_id: uuid.UUID
    label_id: uuid.UUID = Field(description="The label the use was credited to.")
    currency: str
    amount_micros: int
    hold_transaction_id: int
    state: str = Field(description="`held`, `released` (to the label it was credited to) or "
                       "`upheld` (to the other label).")  # fmt: skip
    resolution_transaction_id: int | None
    created_at: dt.datetime


class ConflictDetail(ConflictRead):
    evidence: list[OverlapSpan] = Field(description="The stretches both tracks share.")
    holds: list[HoldRead] = Field(description="Every use held for this conflict.")


class ClaimWithdrawal(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Reason


class ConflictDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    winner_label_id: uuid.UUID = Field(description="The label that owns the recording.")
    reason: str = Reason
