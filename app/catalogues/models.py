"""Catalogues, their versioned license terms, and their tracks."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class CatalogueStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Catalogue(Base):
    __tablename__ = "catalogues"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    label_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LicenseTerms(Base):
    """One version of a catalogue's license terms; a change adds a version, never edits one."""

    __tablename__ = "license_terms"
    __table_args__ = (
        sa.UniqueConstraint("catalogue_id", "version"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.CheckConstraint("rate_per_use_micros >= 0", name="rate_not_negative"),
        sa.CheckConstraint("threshold >= 0 AND threshold <= 1", name="threshold_unit_interval"),
        sa.CheckConstraint(
            "valid_from IS NULL OR valid_to IS NULL OR valid_to > valid_from",
            name="validity_ordered",
        ),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="status_known"),
        sa.CheckConstraint(
            "penalty_rate_per_use_micros IS NULL "
            "OR penalty_rate_per_use_micros >= rate_per_use_micros",
            name="penalty_at_least_rate",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    catalogue_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("catalogues.id"))
    version: Mapped[int]
    rate_per_use_micros: Mapped[int] = mapped_column(sa.BigInteger)
    # What a use of a track whose preferences say `notAllowed` is charged; None: the rate.
    penalty_rate_per_use_micros: Mapped[int | None] = mapped_column(sa.BigInteger)
    threshold: Mapped[float] = mapped_column(sa.Double)
    valid_from: Mapped[dt.datetime | None]
    valid_to: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def in_force(self, at: dt.datetime) -> bool:
        """True when these terms let the catalogue match at time `at`."""
        return (
            self.status == CatalogueStatus.ACTIVE
            and (self.valid_from is None or self.valid_from <= at)
            and (self.valid_to is None or at < self.valid_to)
        )


class TrackStatus(enum.StrEnum):
    PENDING = "pending"
    INDEXED = "indexed"
    FAILED = "failed"


# Values the index manager tails: new segments by id, withdrawals by this sequence.
withdrawal_seq = sa.Sequence("track_withdrawal_seq", metadata=Base.metadata)


class Track(Base):
    """A licensed recording. Its audio lives in the blob store under `audio_sha256`."""

    __tablename__ = "tracks"
    __table_args__ = (
        sa.CheckConstraint("status IN ('pending', 'indexed', 'failed')", name="status_known"),
        sa.CheckConstraint("(status = 'failed') = (error IS NOT NULL)", name="error_iff_failed"),
        # The same audio may be uploaded again only after the earlier copy was withdrawn.
        sa.Index(
            "uq_tracks_catalogue_id_audio_sha256",
            "catalogue_id",
            "audio_sha256",
            unique=True,
            postgresql_where=sa.text("withdrawn_at IS NULL"),
        ),
        sa.Index("ix_tracks_catalogue_id_created_at", "catalogue_id", "created_at", "id"),
        sa.Index("ix_tracks_isrc", "isrc"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    catalogue_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("catalogues.id"))
    title: Mapped[str] = mapped_column(sa.String(500))
    artist: Mapped[str] = mapped_column(sa.String(500))
    isrc: Mapped[str | None] = mapped_column(sa.String(12))
    external_id: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16), default=TrackStatus.PENDING.value)
    error: Mapped[str | None] = mapped_column(sa.Text)
    audio_sha256: Mapped[str] = mapped_column(sa.String(64))
    audio_format: Mapped[str] = mapped_column(sa.String(8))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    sample_rate: Mapped[int]
    channels: Mapped[int]
    embedder: Mapped[str | None] = mapped_column(sa.String(32))
    embedder_version: Mapped[str | None] = mapped_column(sa.String(64))
    segment_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    indexed_at: Mapped[dt.datetime | None]
    withdrawn_at: Mapped[dt.datetime | None]
    withdrawal_seq: Mapped[int | None] = mapped_column(sa.BigInteger, unique=True)
    # The same label's earlier track this one was found to repeat (see `overlaps`); both
    # still match, and a check pays the earlier one once for a passage they share.
    duplicate_of: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("tracks.id"))


class Segment(Base):
    """One embedded window of a track: the source of truth the FAISS index is built from."""

    __tablename__ = "segments"
    __table_args__ = (
        sa.CheckConstraint("duration_s > 0", name="duration_positive"),
        sa.CheckConstraint("start_s >= 0", name="start_not_negative"),
        sa.Index("ix_segments_embedder_id", "embedder", "embedder_version", "id"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    track_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tracks.id"), index=True)
    embedder: Mapped[str] = mapped_column(sa.String(32))
    embedder_version: Mapped[str] = mapped_column(sa.String(64))
    start_s: Mapped[float] = mapped_column(sa.Double)
    duration_s: Mapped[float] = mapped_column(sa.Double)
    # float32 little-endian, `dim` values; bytes keep 1M vectors compact and fast to stream.
    vector: Mapped[bytes] = mapped_column(sa.LargeBinary)


class TrackExclusion(Base):
    """A span of a track that must never match again: its label said so (for example when
    releasing a dispute over a passage the track shares with music it does not own).

    A stored segment is excluded when the middle of its window falls inside the span.
    """

    __tablename__ = "track_exclusions"
    __table_args__ = (sa.CheckConstraint("start_s >= 0 AND end_s > start_s", name="span_ordered"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    track_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tracks.id"), index=True)
    start_s: Mapped[float] = mapped_column(sa.Double)
    end_s: Mapped[float] = mapped_column(sa.Double)
    reason: Mapped[str] = mapped_column(sa.Text)
    created_by: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    # The dispute whose release asked for it, if any.
    dispute_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("disputes.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Preference(enum.StrEnum):
    """A CAWG training-and-data-mining value, least restrictive first."""

    ALLOWED = "allowed"
    CONSTRAINED = "constrained"
    NOT_ALLOWED = "notAllowed"


# The CAWG assertion labels and the columns that hold them.
ASSERTION_COLUMNS = {
    "cawg.data_mining": "data_mining",
    "cawg.ai_training": "ai_training",
    "cawg.ai_generative_training": "ai_generative_training",
    "cawg.ai_inference": "ai_inference",
}


def _preference_checks() -> list[sa.CheckConstraint]:
    known = ", ".join(f"'{p.value}'" for p in Preference)
    checks = []
    for column in ASSERTION_COLUMNS.values():
        checks.append(sa.CheckConstraint(f"{column} IN ({known})", name=f"{column}_known"))
        # A policy goes with `constrained` and only with it.
        checks.append(
            sa.CheckConstraint(
                f"({column}_policy IS NOT NULL) = ({column} IS NOT DISTINCT FROM 'constrained')",
                name=f"{column}_policy_iff_constrained",
            )
        )
    every = " AND ".join(f"{c} IS NOT NULL" for c in ASSERTION_COLUMNS.values())
    checks.append(sa.CheckConstraint(f"track_id IS NOT NULL OR ({every})", name="default_complete"))
    return checks


class TrainingPreferences(Base):
    """One version of a catalogue's training preferences: its default (no `track_id`, every
    use set) or one track's override (a use left NULL takes the default). A change adds a
    version, numbered per catalogue; versions are never edited."""

    __tablename__ = "training_preferences"
    __table_args__ = (
        sa.UniqueConstraint("catalogue_id", "version"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.Index("ix_training_preferences_track_id_version", "track_id", "version"),
        # The latest default without walking past the overrides appended since.
        sa.Index(
            "ix_training_preferences_defaults",
            "catalogue_id",
            "version",
            postgresql_where=sa.text("track_id IS NULL"),
        ),
        *_preference_checks(),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    catalogue_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("catalogues.id"))
    track_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("tracks.id"))
    version: Mapped[int]
    data_mining: Mapped[str | None] = mapped_column(sa.String(16))
    data_mining_policy: Mapped[str | None] = mapped_column(sa.String(2000))
    ai_training: Mapped[str | None] = mapped_column(sa.String(16))
    ai_training_policy: Mapped[str | None] = mapped_column(sa.String(2000))
    ai_generative_training: Mapped[str | None] = mapped_column(sa.String(16))
    ai_generative_training_policy: Mapped[str | None] = mapped_column(sa.String(2000))
    ai_inference: Mapped[str | None] = mapped_column(sa.String(16))
    ai_inference_policy: Mapped[str | None] = mapped_column(sa.String(2000))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OverlapKind(enum.StrEnum):
    DUPLICATE = "duplicate"  # one label registered the recording twice
    CONFLICT = "conflict"  # two labels claim the recording


class OverlapStatus(enum.StrEnum):
    NOTED = "noted"  # a duplicate: nothing to decide, money goes to the earlier track
    OPEN = "open"  # a conflict: money for matches on it is held
    RESOLVED = "resolved"  # a conflict decided: the winner was paid what was held


class ConflictResolution(enum.StrEnum):
    CLAIM_WITHDRAWN = "claim_withdrawn"  # one label gave up its claim
    DECIDED = "decided"  # an operator decided


class OwnershipConflict(Base):
    """A stored track (`original_track_id`, registered first) covers most of a newer one at
    near-verbatim resemblance: the same recording registered twice.

    Within one label it is a duplicate; between two labels an ownership conflict, whose
    money is held until one label withdraws its claim or an operator decides. The row changes
    once, from open to resolved, by a compare-and-set on `status`.
    """

    __tablename__ = "ownership_conflicts"
    __table_args__ = (
        sa.UniqueConstraint("track_id", "original_track_id"),
        sa.CheckConstraint("track_id <> original_track_id", name="two_tracks"),
        sa.CheckConstraint("kind IN ('duplicate', 'conflict')", name="kind_known"),
        sa.CheckConstraint("status IN ('noted', 'open', 'resolved')", name="status_known"),
        sa.CheckConstraint(
            "(kind = 'duplicate') = (status = 'noted')", name="duplicates_are_noted"
        ),
        sa.CheckConstraint(
            "(kind = 'duplicate') = (label_id = original_label_id)", name="duplicate_iff_same_label"
        ),
        sa.CheckConstraint(
            "(status = 'resolved') = (resolved_at IS NOT NULL AND winner_label_id IS NOT NULL "
            "AND resolution IS NOT NULL)",
            name="resolved_fields",
        ),
        sa.CheckConstraint(
            "resolution IS NULL OR resolution IN ('claim_withdrawn', 'decided')",
            name="resolution_known",
        ),
        sa.Index("ix_ownership_conflicts_original_track_id", "original_track_id"),
        sa.Index("ix_ownership_conflicts_label_id_detected_at", "label_id", "detected_at", "id"),
        sa.Index(
            "ix_ownership_conflicts_original_label_id_detected_at",
            "original_label_id",
            "detected_at",
            "id",
        ),
        sa.Index("ix_ownership_conflicts_detected_at_id", "detected_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    track_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tracks.id"))
    label_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    original_track_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tracks.id"))
    original_label_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"))
    # What the detection saw: the share of the newer track covered, the mean window
    # similarity over it, the tempo ratio and offset (original time = ratio * time + offset),
    # and the covered spans of both tracks.
    coverage: Mapped[float] = mapped_column(sa.Double)
    resemblance: Mapped[float] = mapped_column(sa.Double)
    tempo_ratio: Mapped[float] = mapped_column(sa.Double)
    offset_s: Mapped[float] = mapped_column(sa.Double)
    evidence: Mapped[list[dict[str, float]]] = mapped_column(JSONB)
    detected_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None]
    resolution: Mapped[str | None] = mapped_column(sa.String(16))
    winner_label_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("organisations.id"))
    # Who decided (NULL: nobody yet), and why.
    resolved_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("organisations.id"))
    resolved_reason: Mapped[str | None] = mapped_column(sa.Text)
