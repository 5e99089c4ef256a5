"""Request and response shapes for training preferences, lookups, exports and TDMRep."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from app.catalogues.models import Preference
from app.catalogues.preferences import Decided, Effective, Entry
from app.catalogues.schemas import normalise_isrc

MAX_LOOKUP = 10_000


class Assertion(enum.StrEnum):
    """The CAWG training-and-data-mining uses."""

    DATA_MINING = "cawg.data_mining"
    AI_TRAINING = "cawg.ai_training"
    AI_GENERATIVE_TRAINING = "cawg.ai_generative_training"
    AI_INFERENCE = "cawg.ai_inference"


class EntryIn(BaseModel):
    """One use: `allowed`, `notAllowed`, or `constrained` with the policy that grants it."""

    model_config = ConfigDict(extra="forbid")

    use: Preference
    constraints_info: str | None = Field(
        default=None,
        max_length=2000,
        description="With `constrained` (and only then): the URL of the policy under which "
        "the use is permitted.",
    )

    @model_validator(mode="after")
    def _policy_with_constrained(self) -> EntryIn:
        if self.use is Preference.CONSTRAINED:
            if self.constraints_info is None:
                raise ValueError("`constrained` needs constraints_info: the policy's URL")
            parts = urlsplit(self.constraints_info)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("constraints_info must be an http(s) URL")
        elif self.constraints_info is not None:
            raise ValueError("constraints_info goes only with `constrained`")
        return self

    def entry(self) -> Entry:
        return Entry(self.use, self.constraints_info)


class PreferencesIn(BaseModel):
    """Preferences in the shape of a CAWG training-and-data-mining assertion. For a
    catalogue default, uses left out are `allowed`; for a track, they take the default."""

    model_config = ConfigDict(extra="forbid")

    entries: dict[Assertion, EntryIn] = Field(
        examples=[
            {
                "cawg.ai_generative_training": {"use": "notAllowed"},
                "cawg.ai_training": {
                    "use": "constrained",
                    "constraints_info": "https://label.example/ai-policy",
                },
            }
        ]
    )

    def entries_by_label(self) -> dict[str, Entry]:
        return {a.value: e.entry() for a, e in self.entries.items()}


class EntryOut(BaseModel):
    use: Preference
    constraints_info: str | None = None


class DecidedOut(EntryOut):
    source: Literal["catalogue", "track", "unset"] = Field(
        description="What decided the value: the catalogue default, the track's override "
        "(the more restrictive wins), or nothing set (allowed)."
    )

    @classmethod
    def of(cls, decided: Decided) -> DecidedOut:
        return cls(
            use=decided.entry.use,
            constraints_info=decided.entry.constraints_info,
            source=decided.source,
        )


def decided_entries(effective: Effective) -> dict[str, DecidedOut]:
    return {a: DecidedOut.of(d) for a, d in effective.entries.items()}


class PreferencesVersionRead(BaseModel):
    """One stored version: the catalogue default (no track) or one track's override."""

    catalogue_id: uuid.UUID
    track_id: uuid.UUID | None
    version: int
    created_at: dt.datetime
    entries: dict[str, EntryOut] = Field(description="The uses this version sets.")


class EffectivePreferencesRead(BaseModel):
    catalogue_id: uuid.UUID
    track_id: uuid.UUID | None
    preferences_version: int | None = Field(
        description="The version that last changed these values (null: none ever set)."
    )
    entries: dict[str, DecidedOut]


Isrc = Annotated[str, AfterValidator(normalise_isrc)]


class LookupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    isrcs: list[Isrc] = Field(default_factory=list)
    track_ids: list[uuid.UUID] = Field(default_factory=list)

    @model_validator(mode="after")
    def _size(self) -> LookupIn:
        n = len(self.isrcs) + len(self.track_ids)
        if not 1 <= n <= MAX_LOOKUP:
            raise ValueError(f"look up 1 to {MAX_LOOKUP} ISRCs and track ids together, got {n}")
        return self


class RecordingRead(BaseModel):
    """A recording with its effective training preferences and license terms version."""

    track_id: uuid.UUID
    catalogue_id: uuid.UUID
    label_id: uuid.UUID
    isrc: str | None
    title: str
    artist: str
    licensed: bool = Field(description="The catalogue's current license terms are in force.")
    terms_version: int
    preferences_version: int | None
    entries: dict[str, DecidedOut]


class LookupItem(RecordingRead):
    query: str = Field(description="The ISRC or track id this recording answers.")


class LookupResult(BaseModel):
    items: list[LookupItem] = Field(
        description="Recordings found, in the order asked; an ISRC held by several live "
        "tracks answers with each."
    )
    not_found: list[str] = Field(description="ISRCs and track ids no live track has.")


class ExportFormat(enum.StrEnum):
    JSON = "json"
    CSV = "csv"
    JSONL = "jsonl"


class TdmRule(BaseModel):
    """One rule of a W3C TDMRep `tdmrep.json` file."""

    location: str = Field(description="Path pattern on this server the rule applies to.")
    tdm_reservation: Literal[0, 1] = Field(serialization_alias="tdm-reservation")
    tdm_policy: str | None = Field(default=None, serialization_alias="tdm-policy")


class DeliveredResource(BaseModel):
    resource_reference: str
    isrc: str
    status: Literal["created", "updated", "replaced", "unchanged", "failed"] = Field(
        description="created: a new track; updated: title or artist changed; replaced: new "
        "audio for the ISRC (the old track withdrawn); unchanged; failed: see `reason`."
    )
    track_id: uuid.UUID | None
    reason: str | None


class DeliveryResult(BaseModel):
    catalogue_id: uuid.UUID
    message_id: str | None
    counts: dict[str, int]
    resources: list[DeliveredResource]
