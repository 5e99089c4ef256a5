"""Request and response shapes for attribution checks and usage history."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.validation import MultiLine, SingleLine, json_object

MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32


class CheckUpload(BaseModel):
    """A generated piece to check, as multipart form fields."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    file: UploadFile = Field(description="The generated audio: WAV, FLAC, OGG/Vorbis or MP3.")
    generation_id: SingleLine | None = Field(
        default=None, max_length=200, description="Your identifier for this generation."
    )
    model: SingleLine | None = Field(
        default=None, max_length=200, description="The generating model."
    )
    metadata: str | None = Field(
        default=None,
        description="A JSON object (at most 16 KiB, 32 levels deep; no NaN or Infinity) "
        "stored with the check.",
    )

    @field_validator("metadata")
    @classmethod
    def _json_object(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            json_object(value, max_bytes=MAX_METADATA_BYTES, max_depth=MAX_METADATA_DEPTH)
        except ValueError as exc:
            raise ValueError(f"metadata: {exc}") from None
        return value

    def metadata_object(self) -> dict[str, Any]:
        return {} if self.metadata is None else dict(json.loads(self.metadata))


class EvidenceOut(BaseModel):
    """Where the piece resembles the track: times in seconds in each."""

    query_start: float
    query_end: float
    reference_start: float
    reference_end: float
    similarity: float
    transposition: int = Field(
        default=0,
        description="semitones the piece sounds above the track over this interval "
        "(negative: below); pitch classes decide it, and an octave is named only where "
        "the octave views and the band levels agree, so a piece an octave away may read 0",
    )


class MatchOut(BaseModel):
    track_id: uuid.UUID
    catalogue_id: uuid.UUID
    label_id: uuid.UUID
    title: str
    artist: str
    resemblance: float = Field(
        description="How strongly the piece resembles the track, 0..1: 1 is verbatim reuse "
        "of at least 16 s (see the README's resemblance table)."
    )
    expected_fpr: float | None = Field(
        description="The false-positive rate at this resemblance: the share of pieces not "
        "drawn from the catalogue whose best match reaches it, or for a match `beside_use`, "
        "of pieces with a paid use in which a track that is not a source reaches it (from "
        "the calibration)."
    )
    share: float = Field(description="This use's part of the piece's uses (0 when not a use).")
    is_use: bool = Field(description="Resemblance reached `threshold`: paid.")
    threshold: float = Field(
        description="The threshold this match was judged by: the catalogue's (never under the "
        "abstain threshold, from which matches heard alone are listed), or for a match "
        "`beside_use`, the catalogue's scaled by the calibrated ratio."
    )
    beside_use: bool = Field(
        default=False,
        description="Heard beside a stronger paid use of this piece and under the catalogue's "
        "threshold: judged as another source of a mix, whose threshold and `expected_fpr` come "
        "from the spurious matches beside true uses (see the README's Calibration). Such a "
        "match is listed even when it is under the abstain threshold, from which matches "
        "heard alone are listed.",
    )
    terms_version: int
    preference: str = Field(
        default="allowed",
        description="The track's effective `cawg.ai_generative_training` preference: "
        "`allowed`, `constrained` or `notAllowed`. A `notAllowed` use was not permitted by "
        "the label; it is charged at the catalogue's penalty rate when one is set.",
    )
    preference_policy: str | None = Field(
        default=None, description="The policy URL of a `constrained` preference."
    )
    amount_micros: int = Field(description="What the track's label is credited for this use.")
    evidence: list[EvidenceOut]
    counted_with: uuid.UUID | None = Field(
        default=None,
        description="Another registration of the same recording that matched the same "
        "passage: this match is counted in that track's use (one passage, one payment).",
    )
    conflict_id: uuid.UUID | None = Field(
        default=None,
        description="The open ownership conflict this use's money is held for, until one "
        "label withdraws its claim or an operator decides.",
    )


class EmbedderOut(BaseModel):
    name: str
    version: str


class CheckResult(BaseModel):
    """The outcome of a check, as first returned and as replayed later."""

    id: uuid.UUID
    created_at: dt.datetime
    idempotency_key: str
    audio_sha256: str
    duration_s: float
    generation_id: str | None
    model: str | None
    metadata: dict[str, Any]
    embedder: EmbedderOut
    index_watermark: int
    matches: list[MatchOut] = Field(
        description=(
            "Tracks the piece resembles, strongest first (the highest resemblance; at equal "
            "resemblance, the one whose windows match more closely); empty when nothing does."
        )
    )
    charge_micros: int
    fee_micros: int
    currency: str
    ledger_transaction_id: int | None


class CheckSummary(BaseModel):
    """A check in listings (the full result is at GET /v1/checks/{id})."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    ai_company_id: uuid.UUID
    created_at: dt.datetime
    generation_id: str | None
    model: str | None
    audio_sha256: str
    duration_s: float
    charge_micros: int
    currency: str
    uses: int


class ReversalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: MultiLine = Field(min_length=3, max_length=2000)
