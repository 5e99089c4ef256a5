"""Background tasks of the catalogue domain; `TASKS` is what a worker registers."""

from __future__ import annotations

import datetime as dt
import uuid

import procrastinate

from app import jobs
from app.catalogues.ingest import fail_abandoned, ingest
from app.catalogues.jobs import INGEST_TRACK, RECONCILE_TRACKS, REEMBED_TRACK
from app.db import transaction
from app.logging import get_logger

log = get_logger(__name__)
# A pending track whose job is gone is only failed after this grace period.
ABANDONED_AFTER = dt.timedelta(minutes=2)


def ingest_track(context: procrastinate.JobContext, track_id: str) -> None:
    """Decode, embed and index one uploaded track."""
    ingest(jobs.runtime_of(context), uuid.UUID(track_id))


def reembed_track(context: procrastinate.JobContext, track_id: str) -> None:
    """Add the current embedder's segments to a track indexed by an earlier one."""
    ingest(jobs.runtime_of(context), uuid.UUID(track_id), reembed=True)


def reconcile_tracks(context: procrastinate.JobContext, timestamp: int) -> None:
    """Periodic: no track stays pending once its job has given up."""
    with transaction(jobs.runtime_of(context).sessions) as session:
        failed = fail_abandoned(session, older_than=ABANDONED_AFTER)
    if failed:
        log.warning("tracks.abandoned_ingestion_failed", tracks=[str(t) for t in failed])


TASKS = (
    jobs.TaskSpec(INGEST_TRACK, ingest_track, jobs.INGEST_QUEUE, retry=True),
    jobs.TaskSpec(REEMBED_TRACK, reembed_track, jobs.INGEST_QUEUE, retry=True),
    jobs.TaskSpec(RECONCILE_TRACKS, reconcile_tracks, jobs.MAINTENANCE_QUEUE, cron="* * * * *"),
)
