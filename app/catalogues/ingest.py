"""Ingestion of one track: decode, embed, store segments. Runs in workers, never in requests.

All segments of a track are written in one transaction together with the status change, so a
worker that dies mid-job leaves either nothing or everything, and a re-run starts clean.
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.audio.decode import AudioError, load
from app.catalogues import overlaps
from app.catalogues.jobs import TRACK_LOCK_PREFIX
from app.catalogues.models import Segment, Track, TrackStatus
from app.catalogues.tracks import lock_index_appends
from app.db import transaction, utcnow
from app.embedding import Embedding, EmbeddingError, embed_audio
from app.jobs import TRANSIENT_ERRORS, WorkerRuntime
from app.logging import get_logger

log = get_logger(__name__)


def ingest(runtime: WorkerRuntime, track_id: uuid.UUID, *, reembed: bool = False) -> str:
    """Index one pending track; returns the track's final status.

    reembed : instead, add segments of the current embedder to a track already indexed by
        another embedder or version; its status stays `indexed` whatever happens
    """
    embedder = runtime.embedder
    expected = TrackStatus.INDEXED if reembed else TrackStatus.PENDING
    with transaction(runtime.sessions) as session:
        track = session.get(Track, track_id)
        if track is None or track.status != expected or track.withdrawn_at is not None:
            status = "missing" if track is None else track.status
            log.info("ingest.skipped", track_id=str(track_id), status=status)
            return status
        if reembed and has_segments(session, track_id, embedder.name, embedder.version):
            return track.status
        sha256 = track.audio_sha256

    settings = runtime.settings
    try:
        audio = load(
            runtime.blobs.path(sha256),
            sample_rate=embedder.sample_rate,
            min_seconds=settings.min_audio_seconds,
            max_seconds=settings.max_audio_seconds,
        )
        embedding = embed_audio(embedder, audio)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        if reembed:
            # The file was indexed before; keep the track as it is and say why.
            log.exception("reembed.failed", track_id=str(track_id))
            return TrackStatus.INDEXED.value
        return _fail(runtime, track_id, _reason(exc))

    duration_s = len(audio) / embedder.sample_rate
    with transaction(runtime.sessions) as session:
        status = store_segments(
            session,
            track_id,
            embedding,
            embedder_name=embedder.name,
            embedder_version=embedder.version,
            duration_s=duration_s,
            expected=expected,
        )
    if status == TrackStatus.INDEXED.value and not reembed:
        find_overlaps(runtime, track_id)
    return status


def find_overlaps(runtime: WorkerRuntime, track_id: uuid.UUID) -> None:
    """Record the stored tracks this one repeats (see `overlaps`). The track is indexed
    whatever happens here: a failure is logged, and `echoledger scan-conflicts` finds what
    was missed."""
    try:
        with transaction(runtime.sessions) as session:
            overlaps.detect(session, track_id)
    except Exception:
        log.exception("ingest.overlap_detection_failed", track_id=str(track_id))


def _reason(exc: Exception) -> str:
    """What the label reads on a failed track."""
    if isinstance(exc, AudioError):
        return exc.message
    if isinstance(exc, EmbeddingError):
        return f"cannot embed this audio: {exc}"
    # A bug or an unexpected decoder failure must not leave the track pending forever.
    log.error("ingest.unexpected_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
    return f"internal error while processing audio ({type(exc).__name__})"


def has_segments(session: Session, track_id: uuid.UUID, name: str, version: str) -> bool:
    return bool(
        session.scalar(
            sa.select(
                sa.exists().where(
                    Segment.track_id == track_id,
                    Segment.embedder == name,
                    Segment.embedder_version == version,
                )
            )
        )
    )


def store_segments(
    session: Session,
    track_id: uuid.UUID,
    embedding: Embedding,
    *,
    embedder_name: str,
    embedder_version: str,
    duration_s: float,
    expected: TrackStatus = TrackStatus.PENDING,
) -> str:
    """Write a track's segments and mark it indexed, unless it changed meanwhile."""
    track = session.scalars(
        sa.select(Track).where(Track.id == track_id).with_for_update()
    ).one_or_none()
    if track is None or track.status != expected or track.withdrawn_at is not None:
        return "missing" if track is None else track.status
    if has_segments(session, track_id, embedder_name, embedder_version):
        return track.status
    lock_index_appends(session)
    vectors = np.ascontiguousarray(embedding.vectors, dtype="<f4")
    session.execute(
        sa.insert(Segment),
        [
            {
                "track_id": track_id,
                "embedder": embedder_name,
                "embedder_version": embedder_version,
                "start_s": float(start),
                "duration_s": embedding.window_s,
                "vector": vector.tobytes(),
            }
            for start, vector in zip(embedding.starts, vectors, strict=True)
        ],
    )
    track.status = TrackStatus.INDEXED.value
    track.embedder = embedder_name
    track.embedder_version = embedder_version
    track.segment_count = len(vectors)
    track.duration_s = duration_s
    track.indexed_at = utcnow()
    session.flush()
    log.info("ingest.indexed", track_id=str(track_id), segments=len(vectors))
    return TrackStatus.INDEXED.value


def _fail(runtime: WorkerRuntime, track_id: uuid.UUID, reason: str) -> str:
    with transaction(runtime.sessions) as session:
        session.execute(
            sa.update(Track)
            .where(Track.id == track_id, Track.status == TrackStatus.PENDING.value)
            .values(status=TrackStatus.FAILED.value, error=reason)
        )
    log.info("ingest.failed", track_id=str(track_id), reason=reason)
    return TrackStatus.FAILED.value


def fail_abandoned(session: Session, *, older_than: dt.timedelta) -> list[uuid.UUID]:
    """Mark failed the pending tracks whose ingestion job no longer exists or has given up.

    A job ends in `failed` after its last retry of a transient error, or disappears if an
    operator cancels it; without this sweep such a track would stay pending forever. Withdrawn
    tracks are left alone: their job skips them on purpose.
    """
    no_live_job = sa.text(
        "NOT EXISTS (SELECT 1 FROM procrastinate_jobs j "
        "WHERE j.lock = :lock_prefix || tracks.id::text AND j.status IN ('todo', 'doing'))"
    ).bindparams(lock_prefix=TRACK_LOCK_PREFIX)
    rows = session.scalars(
        sa.update(Track)
        .where(
            Track.status == TrackStatus.PENDING.value,
            Track.withdrawn_at.is_(None),
            Track.created_at < utcnow() - older_than,
            no_live_job,
        )
        .values(
            status=TrackStatus.FAILED.value,
            error="ingestion did not complete (the job failed after its retries); "
            "upload the file again to retry",
        )
        .returning(Track.id)
    )
    return list(rows)
