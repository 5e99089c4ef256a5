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
from app.catalogues.models import Segment, Track, TrackStatus
from app.catalogues.tracks import lock_index_appends
from app.db import transaction, utcnow
from app.embedding import Embedding, EmbeddingError, embed_audio
from app.jobs import TRANSIENT_ERRORS, WorkerRuntime
from app.logging import get_logger

log = get_logger(__name__)


def ingest(runtime: WorkerRuntime, track_id: uuid.UUID) -> str:
    """Index one pending track; returns the track's final status."""
    with transaction(runtime.sessions) as session:
        track = session.get(Track, track_id)
        if track is None or track.status != TrackStatus.PENDING or track.withdrawn_at is not None:
            status = "missing" if track is None else track.status
            log.info("ingest.skipped", track_id=str(track_id), status=status)
            return status
        sha256 = track.audio_sha256

    settings = runtime.settings
    embedder = runtime.embedder
    try:
        audio = load(
            runtime.blobs.path(sha256),
            sample_rate=embedder.sample_rate,
            min_seconds=settings.min_audio_seconds,
            max_seconds=settings.max_audio_seconds,
        )
        embedding = embed_audio(embedder, audio)
    except AudioError as exc:
        return _fail(runtime, track_id, exc.message)
    except EmbeddingError as exc:
        return _fail(runtime, track_id, f"cannot embed this audio: {exc}")
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        # A bug or an unexpected decoder failure must not leave the track pending forever.
        log.exception("ingest.unexpected_error", track_id=str(track_id))
        return _fail(
            runtime, track_id, f"internal error while processing audio ({type(exc).__name__})"
        )

    duration_s = len(audio) / embedder.sample_rate
    with transaction(runtime.sessions) as session:
        return store_segments(
            session,
            track_id,
            embedding,
            embedder_name=embedder.name,
            embedder_version=embedder.version,
            duration_s=duration_s,
        )


def store_segments(
    session: Session,
    track_id: uuid.UUID,
    embedding: Embedding,
    *,
    embedder_name: str,
    embedder_version: str,
    duration_s: float,
) -> str:
    """Write a track's segments and mark it indexed, unless it changed meanwhile."""
    track = session.scalars(
        sa.select(Track).where(Track.id == track_id).with_for_update()
    ).one_or_none()
    if track is None or track.status != TrackStatus.PENDING or track.withdrawn_at is not None:
        return "missing" if track is None else track.status
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
    operator cancels it; without this sweep such a track would stay pending forever.
    """
    no_live_job = sa.text(
        "NOT EXISTS (SELECT 1 FROM procrastinate_jobs j "
        "WHERE j.lock = 'track:' || tracks.id::text AND j.status IN ('todo', 'doing'))"
    )
    rows = session.scalars(
        sa.update(Track)
        .where(
            Track.status == TrackStatus.PENDING.value,
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
