"""Background tasks of the catalogue domain (registered on the job app in `app.jobs`)."""

from __future__ import annotations

import datetime as dt
import uuid

import procrastinate

from app import jobs
from app.catalogues.ingest import fail_abandoned, ingest
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
