"""Request and response shapes for catalogues and license terms."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated

from fastapi import UploadFile
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from app.catalogues.models import CatalogueStatus, TrackStatus
from app.validation import MultiLine, SingleLine, in_range

# A use priced above a million currency units is a typo, not a license.
MAX_RATE_MICROS = 10**12
# An aware instant that PostgreSQL can store (in UTC, years 1..9999).
TermsInstant = Annotated[AwareDatetime, AfterValidator(in_range)]


class LicenseTermsIn(BaseModel):
    """License terms for a catalogue; each PUT creates a new version."""

    model_config = ConfigDict(extra="forbid")

    rate_per_use_micros: int = Field(
        strict=True,
        ge=0,
        le=MAX_RATE_MICROS,
        description="Price of one full use, in micro-units (10^-6) of the settlement currency.",
    )
    penalty_rate_per_use_micros: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=MAX_RATE_MICROS,
        description="Price of one full use of a track whose training preferences say "
        "`notAllowed` for generative training; at least the rate. Omitted: the rate.",
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Resemblance (0..1) at or above which a match counts as a use. "
        "Omitted: the service default (ECHOLEDGER_DEFAULT_THRESHOLD). A match heard beside a "
        "stronger use of the same piece (another source of a mix) is judged by this threshold "
        "scaled by the calibrated ratio (`beside_use` in a check's matches).",
    )
    valid_from: TermsInstant | None = None
    valid_to: TermsInstant | None = None
    status: CatalogueStatus = CatalogueStatus.ACTIVE

    @field_validator("penalty_rate_per_use_micros")
    @classmethod
    def _penalty_at_least_rate(cls, penalty: int | None, info: ValidationInfo) -> int | None:
        rate = info.data.get("rate_per_use_micros")
        if penalty is not None and rate is not None and penalty < rate:
            # A penalty below the rate would make ignoring a refusal cheaper than a license.
            raise ValueError("penalty_rate_per_use_micros must be at least rate_per_use_micros")
        return penalty

    @field_validator("valid_to")
    @classmethod
    def _after_valid_from(
        cls, valid_to: dt.datetime | None, info: ValidationInfo
    ) -> dt.datetime | None:
        valid_from = info.data.get("valid_from")
        if valid_to is not None and valid_from is not None and valid_to <= valid_from:
            raise ValueError("valid_to must be after valid_from")
        return valid_to


class LicenseTermsRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    rate_per_use_micros: int
    penalty_rate_per_use_micros: int | None
    currency: str
    threshold: float
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None
    status: CatalogueStatus
    created_at: dt.datetime


class CatalogueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SingleLine = Field(min_length=1, max_length=200)
    description: MultiLine = Field(default="", max_length=5000)
    license: LicenseTermsIn


class CatalogueRead(BaseModel):
    id: uuid.UUID
    label_id: uuid.UUID
    name: str
    description: str
    created_at: dt.datetime
    license: LicenseTermsRead
    track_counts: dict[str, int] = Field(
        description="Tracks per status (pending, indexed, failed) and withdrawn tracks."
    )


ISRC_PATTERN = r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$"


def normalise_isrc(value: str) -> str:
    """An ISRC in its stored form (12 characters, upper case, no hyphens); ValueError if the
    value is not one."""
    normalised = value.strip().replace("-", "").upper()
    if not re.match(ISRC_PATTERN, normalised):
        raise ValueError("not an ISRC (CC-XXX-YY-NNNNN, 12 characters)")
    return normalised


class TrackUpload(BaseModel):
    """A track upload: the audio file and its metadata, as multipart form fields."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    file: UploadFile = Field(description="WAV, FLAC, OGG/Vorbis or MP3.")
    title: SingleLine = Field(min_length=1, max_length=500)
    artist: SingleLine = Field(min_length=1, max_length=500)
    isrc: str | None = Field(
        default=None, description="International Standard Recording Code, e.g. USRC17607839."
    )
    external_id: SingleLine | None = Field(
        default=None, max_length=200, description="The label's own identifier for the track."
    )

    @field_validator("isrc")
    @classmethod
    def _isrc(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return normalise_isrc(value)

    @field_validator("external_id")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None


class TrackRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    catalogue_id: uuid.UUID
    title: str
    artist: str
    isrc: str | None
    external_id: str | None
    status: TrackStatus
    error: str | None = Field(description="Why ingestion failed (status `failed` only).")
    audio_sha256: str
    audio_format: str
    size_bytes: int
    duration_s: float
    sample_rate: int
    channels: int
    embedder: str | None
    embedder_version: str | None
    segment_count: int
    created_at: dt.datetime
    indexed_at: dt.datetime | None
    withdrawn_at: dt.datetime | None
    duplicate_of: uuid.UUID | None = Field(
        description="The same label's earlier track this one repeats (same recording, found "
        "at ingestion); a check pays the earlier one once for a passage both match."
    )
