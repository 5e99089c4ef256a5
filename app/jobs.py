"""Background jobs on procrastinate: the job app, in-transaction deferral, maintenance tasks.

Jobs are rows in PostgreSQL, so any number of workers on any machines share one queue and a
job exists exactly when the transaction that created it committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import procrastinate
import psycopg
import sqlalchemy as sa
import sqlalchemy.exc
from procrastinate.manager import JobManager
from sqlalchemy.orm import Session, sessionmaker

from app.blobs import BlobStore
from app.config import Settings
from app.db import libpq_conninfo
from app.embedding.base import Embedder
from app.logging import get_logger

log = get_logger(__name__)

INGEST_TRACK = "ingest_track"
REEMBED_TRACK = "reembed_track"
RECONCILE_TRACKS = "reconcile_tracks"

INGEST_QUEUE = "ingest"
MAINTENANCE_QUEUE = "maintenance"
QUEUES = (INGEST_QUEUE, MAINTENANCE_QUEUE)

# Errors worth retrying: the database or the disk hiccupped, not the input.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,
)
RETRY = procrastinate.RetryStrategy(
    max_attempts=5, exponential_wait=3, retry_exceptions=list(TRANSIENT_ERRORS)
)


@dataclass(frozen=True, slots=True)
class WorkerRuntime:
    """What tasks need, loaded once per worker process and handed to every job."""

    settings: Settings
    sessions: sessionmaker[Session]
    embedder: Embedder
    blobs: BlobStore


# Every job about one track holds this lock, so two never run on the same track at once and
# the reconciliation sweep can tell whether a track still has a live job.
TRACK_LOCK_PREFIX = "track:"


def track_lock(track_id: uuid.UUID | str) -> str:
    return f"{TRACK_LOCK_PREFIX}{track_id}"


# procrastinate_defer_jobs_v1 is the versioned SQL entry point procrastinate's own `defer`
# calls. Calling it on the caller's connection puts the jobs in the caller's transaction.
_DEFER_TRACK_JOBS = sa.text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY("
    "SELECT ROW(:queue, :task_name, 0, :lock_prefix || t, NULL, "
    "jsonb_build_object('track_id', t), NULL)::procrastinate_job_to_defer_v1 "
    "FROM unnest(CAST(:track_ids AS text[])) AS t))"
)


def defer_track_jobs(
    session: Session, task_name: str, track_ids: Sequence[uuid.UUID], *, queue: str = INGEST_QUEUE
) -> None:
    """Enqueue `task_name(track_id=...)` for each track, in one statement and in the session's
    transaction: the jobs exist only if that transaction commits."""
    if not track_ids:
        return
    session.execute(
        _DEFER_TRACK_JOBS,
        {
            "queue": queue,
            "task_name": task_name,
            "lock_prefix": TRACK_LOCK_PREFIX,
            "track_ids": [str(t) for t in track_ids],
        },
    )


def runtime_of(context: procrastinate.JobContext) -> WorkerRuntime:
    """The worker's runtime, as `echoledger worker` hands it to every job."""
    runtime: WorkerRuntime = context.additional_context["runtime"]
    return runtime


async def retry_stalled(manager: JobManager, *, seconds: float) -> int:
    """Hand the jobs of workers silent for `seconds` (killed mid-job, machine lost) back to
    the queue; returns how many."""
    stalled = list(await manager.get_stalled_jobs(seconds_since_heartbeat=seconds))
    for job in stalled:
        log.warning("jobs.stalled_job_retried", job_id=job.id, task=job.task_name)
        await manager.retry_job(job)
    return len(stalled)


async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
    """Periodic: stalled jobs go back to the queue."""
    settings = runtime_of(context).settings
    await retry_stalled(context.app.job_manager, seconds=settings.worker_stalled_seconds)


def build_app(settings: Settings, database_url: str, *, pool_size: int = 4) -> procrastinate.App:
    """The procrastinate app bound to the service's database, with every task registered."""
    from app.catalogues import tasks as catalogue_tasks  # tasks import this module

    connector = procrastinate.PsycopgConnector(
        conninfo=libpq_conninfo(database_url), min_size=1, max_size=pool_size
    )
    app = procrastinate.App(
        connector=connector,
        worker_defaults={
            "update_heartbeat_interval": settings.worker_heartbeat_seconds,
            "stalled_worker_timeout": settings.worker_stalled_seconds,
        },
    )
    app.task(name=INGEST_TRACK, queue=INGEST_QUEUE, retry=RETRY, pass_context=True)(
        catalogue_tasks.ingest_track
    )
    app.task(name=REEMBED_TRACK, queue=INGEST_QUEUE, retry=RETRY, pass_context=True)(
        catalogue_tasks.reembed_track
    )
    reconcile = app.task(
        name=RECONCILE_TRACKS,
        queue=MAINTENANCE_QUEUE,
        queueing_lock=RECONCILE_TRACKS,
        pass_context=True,
    )(catalogue_tasks.reconcile_tracks)
    app.periodic(cron="* * * * *", periodic_id=RECONCILE_TRACKS)(reconcile)
    retry = app.task(
        name="retry_stalled_jobs",
        queue=MAINTENANCE_QUEUE,
        queueing_lock="retry_stalled_jobs",
        pass_context=True,
    )(retry_stalled_jobs)
    app.periodic(cron="* * * * *", periodic_id="retry_stalled_jobs")(retry)
    return app
