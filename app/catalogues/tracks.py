"""Tracks: registration of uploaded audio, listing, withdrawal, spans excluded from matching."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from app.audio.decode import SUPPORTED_FORMATS, AudioInfo
from app.blobs import StagedFile
from app.catalogues.jobs import INGEST_TRACK, REEMBED_TRACK, defer_track_jobs
from app.catalogues.models import (
    Catalogue,
    Segment,
    Track,
    TrackExclusion,
    TrackStatus,
    withdrawal_seq,
)
from app.db import utcnow
from app.errors import Conflict, NotFound, Unprocessable
from app.orgs.auth import Principal

# Appends to the segment table and withdrawals are serialised under this advisory lock, so
# segment ids and withdrawal numbers become visible in increasing order and the index can
# tail them by id without ever skipping a row committed late.
INDEX_APPEND_LOCK = 0x45_4C_49_44  # "ELID"


def lock_index_appends(session: Session) -> None:
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(INDEX_APPEND_LOCK)))


def find_active_by_hash(session: Session, catalogue_id: uuid.UUID, sha256: str) -> Track | None:
    return session.scalars(
        sa.select(Track).where(
            Track.catalogue_id == catalogue_id,
            Track.audio_sha256 == sha256,
            Track.withdrawn_at.is_(None),
        )
    ).one_or_none()


def duplicate_error(track: Track) -> Conflict:
    return Conflict(
        f"this audio is already in the catalogue as track {track.id} ({track.title!r})",
        details={"existing_track_id": str(track.id), "status": track.status},
    )


class TrackMetadata(Protocol):
    """What a track is registered with: an upload form, or a delivered recording."""

    @property
    def title(self) -> str: ...
    @property
    def artist(self) -> str: ...
    @property
    def isrc(self) -> str | None: ...
    @property
    def external_id(self) -> str | None: ...


def register(
    session: Session,
    catalogue: Catalogue,
    upload: TrackMetadata,
    staged: StagedFile,
    info: AudioInfo,
) -> Track:
    """Record an uploaded track as pending and enqueue its ingestion in the same transaction."""
    track = Track(
        catalogue_id=catalogue.id,
        title=upload.title,
        artist=upload.artist,
        isrc=upload.isrc,
        external_id=upload.external_id,
        status=TrackStatus.PENDING.value,
        audio_sha256=staged.sha256,
        audio_format=SUPPORTED_FORMATS[info.format],
        size_bytes=staged.size,
        duration_s=info.duration_s,
        sample_rate=info.sample_rate,
        channels=info.channels,
    )
    session.add(track)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # A concurrent upload of the same audio won the race for the unique index.
        existing = find_active_by_hash(session, catalogue.id, staged.sha256)
        if existing is None:
            raise
        raise duplicate_error(existing) from None
    defer_track_jobs(session, INGEST_TRACK, [track.id])
    return track


@dataclass(frozen=True, slots=True)
class TrackFilter:
    status: TrackStatus | None = None
    withdrawn: bool | None = None
    audio_sha256: str | None = None
    external_id: str | None = None


def tracks_query(catalogue_id: uuid.UUID, f: TrackFilter) -> sa.Select[Track]:
    """A catalogue's tracks matching the filter (unordered; the caller pages)."""
    stmt = sa.select(Track).where(Track.catalogue_id == catalogue_id)
    if f.status is not None:
        stmt = stmt.where(Track.status == f.status.value)
    if f.withdrawn is not None:
        withdrawn = Track.withdrawn_at.is_not(None)
        stmt = stmt.where(withdrawn if f.withdrawn else ~withdrawn)
    if f.audio_sha256 is not None:
        stmt = stmt.where(Track.audio_sha256 == f.audio_sha256)
    if f.external_id is not None:
        stmt = stmt.where(Track.external_id == f.external_id)
    return stmt


def get_visible(session: Session, track_id: uuid.UUID, principal: Principal) -> Track:
    """The track if the caller's label owns its catalogue, or the caller reads all tenants."""
    row = session.execute(
        sa.select(Track, Catalogue.label_id)
        .join(Catalogue, Catalogue.id == Track.catalogue_id)
        .where(Track.id == track_id)
    ).one_or_none()
    if row is None:
        raise NotFound("track", track_id)
    principal.owns_or_reads_all(row[1], "track", track_id)
    return row[0]


WITHDRAWN_PENDING = "withdrawn before ingestion finished; it will not be indexed"


def withdraw(session: Session, track: Track) -> Track:
    """Stop a track matching from now on; its segments and history stay.

    A track still pending is marked failed as well: its job skips withdrawn tracks, so it
    would otherwise read `pending` forever.
    """
    if track.withdrawn_at is not None:
        return track
    lock_index_appends(session)
    if track.status == TrackStatus.PENDING.value:
        track.status = TrackStatus.FAILED.value
        track.error = WITHDRAWN_PENDING
    track.withdrawn_at = utcnow()
    track.withdrawal_seq = session.scalar(withdrawal_seq.next_value())
    session.flush()
    return track


def counts_by_status(
    session: Session, catalogue_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """Tracks per status for each catalogue, plus how many were withdrawn."""
    counts: dict[uuid.UUID, dict[str, int]] = {
        cid: {s.value: 0 for s in TrackStatus} | {"withdrawn": 0} for cid in catalogue_ids
    }
    if not catalogue_ids:
        return counts
    withdrawn = Track.withdrawn_at.is_not(None)
    rows = session.execute(
        sa.select(Track.catalogue_id, Track.status, withdrawn, sa.func.count())
        .where(Track.catalogue_id.in_(catalogue_ids))
        .group_by(Track.catalogue_id, Track.status, withdrawn)
    )
    for catalogue_id, status, is_withdrawn, n in rows:
        counts[catalogue_id]["withdrawn" if is_withdrawn else status] += n
    return counts


def enqueue_reembedding(
    session: Session,
    *,
    embedder_name: str,
    embedder_version: str,
    catalogue_id: uuid.UUID | None = None,
) -> int:
    """Enqueue a re-embedding job for every live indexed track without segments of this
    embedder version (after the embedder changed); returns how many."""
    current = sa.exists().where(
        Segment.track_id == Track.id,
        Segment.embedder == embedder_name,
        Segment.embedder_version == embedder_version,
    )
    stmt = sa.select(Track.id).where(
        Track.status == TrackStatus.INDEXED.value, Track.withdrawn_at.is_(None), ~current
    )
    if catalogue_id is not None:
        stmt = stmt.where(Track.catalogue_id == catalogue_id)
    track_ids = list(session.scalars(stmt))
    defer_track_jobs(session, REEMBED_TRACK, track_ids)
    return len(track_ids)


@dataclass(frozen=True, slots=True)
class Pruned:
    """What `prune_superseded_segments` removed, or would remove.

    tracks : tracks whose other embedders' or versions' segments went
    segments : how many segments went
    waiting : tracks that have only other versions' segments (not re-embedded yet, withdrawn
        before the change, or re-embedding failed), left alone
    """

    tracks: int
    segments: int
    waiting: int


def prune_superseded_segments(
    session: Session,
    *,
    embedder_name: str,
    embedder_version: str,
    dry_run: bool = False,
    batch: int = 500,
) -> Pruned:
    """Delete the segments of other embedders or versions from every track that has segments
    of this one (after `enqueue_reembedding` and its jobs ran).

    Re-embedding keeps the old version's segments, so the release before an upgrade can go on
    matching until the new one takes over; once no running process reads the old version
    they only take space. A track without segments of this version keeps its old ones (its
    only ones). Deletes `batch` tracks a transaction, committing as it goes, so a large
    catalogue never holds one long transaction.
    """
    mine = sa.and_(Segment.embedder == embedder_name, Segment.embedder_version == embedder_version)
    other = sa.exists().where(Segment.track_id == Track.id, ~mine)
    current = sa.exists().where(Segment.track_id == Track.id, mine)
    waiting = session.scalar(sa.select(sa.func.count(Track.id)).where(other, ~current)) or 0
    if dry_run:
        tracks = session.scalar(sa.select(sa.func.count(Track.id)).where(other, current)) or 0
        kept = aliased(Segment)
        count = session.scalar(
            sa.select(sa.func.count(Segment.id)).where(
                ~mine,
                sa.exists().where(
                    kept.track_id == Segment.track_id,
                    kept.embedder == embedder_name,
                    kept.embedder_version == embedder_version,
                ),
            )
        )
        return Pruned(tracks=tracks, segments=count or 0, waiting=waiting)
    candidates = list(session.scalars(sa.select(Track.id).where(other, current).order_by(Track.id)))
    deleted = 0
    for start in range(0, len(candidates), batch):
        chunk = candidates[start : start + batch]
        result = session.execute(
            sa.delete(Segment).where(Segment.track_id.in_(chunk), ~mine),
            execution_options={"synchronize_session": False},
        )
        deleted += result.rowcount or 0  # type: ignore[attr-defined]
        session.commit()
    return Pruned(tracks=len(candidates), segments=deleted, waiting=waiting)


def exclude_spans(
    session: Session,
    track: Track,
    spans: Sequence[tuple[float, float]],
    *,
    created_by: uuid.UUID,
    reason: str,
    dispute_id: uuid.UUID | None = None,
    at: dt.datetime | None = None,
) -> list[TrackExclusion]:
    """Mark spans of `track` (seconds) as never to match again; checks from now on drop the
    search hits that fall on them. Raises Unprocessable for a span outside the track."""
    for n, (start, end) in enumerate(spans):
        if not 0 <= start < end <= track.duration_s + 1e-6:
            raise Unprocessable(
                f"span {start}..{end} s is not inside the track (0..{track.duration_s:.2f} s)",
                details=[{"field": f"body.do_not_match.{n}", "message": "outside the track"}],
            )
    rows = [
        TrackExclusion(
            track_id=track.id,
            start_s=start,
            end_s=end,
            reason=reason,
            created_by=created_by,
            dispute_id=dispute_id,
            created_at=at or utcnow(),
        )
        for start, end in spans
    ]
    session.add_all(rows)
    session.flush()
    return rows
