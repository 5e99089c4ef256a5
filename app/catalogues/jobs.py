"""The catalogue's background jobs: their names, the per-track lock, and deferral."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.orm import Session

from app import jobs

INGEST_TRACK = "ingest_track"
REEMBED_TRACK = "reembed_track"
RECONCILE_TRACKS = "reconcile_tracks"

# Every job about one track holds this lock, so two never run on the same track at once and
# the reconciliation sweep can tell whether a track still has a live job.
TRACK_LOCK_PREFIX = "track:"


def track_lock(track_id: uuid.UUID | str) -> str:
    return f"{TRACK_LOCK_PREFIX}{track_id}"


def defer_track_jobs(session: Session, task_name: str, track_ids: Sequence[uuid.UUID]) -> None:
    """Enqueue `task_name(track_id=...)` for each track in the session's transaction."""
    jobs.defer(
        session,
        task_name=task_name,
        queue=jobs.INGEST_QUEUE,
        jobs=[(track_lock(t), {"track_id": str(t)}) for t in track_ids],
    )
