"""Background jobs on procrastinate: the job app, in-transaction deferral, maintenance tasks.

Jobs are rows in PostgreSQL, so any number of workers on any machines share one queue and a
job exists exactly when the transaction that created it committed.

This module knows no domain: each domain lists its tasks as `TaskSpec`s (e.g.
`app.catalogues.tasks.TASKS`) and the process that runs workers (`app.worker`) registers them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import procrastinate
import psycopg
import sqlalchemy as sa
import sqlalchemy.exc
from procrastinate.manager import JobManager
from sqlalchemy.orm import Session, sessionmaker

from app.blobs import BlobStore
from app.clock import Clock, system_clock
from app.config import Settings
from app.db import libpq_conninfo
from app.embedding.base import Embedder
from app.logging import get_logger

log = get_logger(__name__)

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
    clock: Clock = system_clock


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task as a domain declares it; `build_app` registers it.

    func : called with the job context first (procrastinate's pass_context)
    retry : retry transient errors (RETRY)
    cron : run periodically on this schedule (the task then takes a `timestamp` argument);
        one job at a time across all workers
    """

    name: str
    func: Callable[..., Any]
    queue: str
    retry: bool = False
    cron: str | None = None


# procrastinate_defer_jobs_v1 is the versioned SQL entry point procrastinate's own `defer`
# calls. Calling it on the caller's connection puts the jobs in the caller's transaction.
_DEFER_JOBS = sa.text(
    "SELECT procrastinate_defer_jobs_v1(ARRAY("
    "SELECT ROW(:queue, :task_name, 0, j.lock, NULL, j.args, NULL)::procrastinate_job_to_defer_v1 "
    "FROM unnest(CAST(:locks AS text[]), CAST(:args AS jsonb[])) AS j(lock, args)))"
)


def defer(
    session: Session,
    *,
    task_name: str,
    queue: str,
    jobs: Sequence[tuple[str | None, Mapping[str, Any]]],
) -> None:
    """Enqueue `task_name(**args)` for each (lock, args), in one statement and in the
    session's transaction: the jobs exist only if that transaction commits. Jobs sharing a
    lock never run at the same time."""
    if not jobs:
        return
    session.execute(
        _DEFER_JOBS,
        {
            "queue": queue,
            "task_name": task_name,
            "locks": [lock for lock, _ in jobs],
            "args": [json.dumps(dict(args)) for _, args in jobs],
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


MAINTENANCE_TASKS = (
    TaskSpec("retry_stalled_jobs", retry_stalled_jobs, MAINTENANCE_QUEUE, cron="* * * * *"),
)


def build_app(
    settings: Settings, database_url: str, *, tasks: Sequence[TaskSpec], pool_size: int = 4
) -> procrastinate.App:
    """The procrastinate app bound to the service's database, with `tasks` registered."""
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
    for spec in tasks:
        task = app.task(
            name=spec.name,
            queue=spec.queue,
            retry=RETRY if spec.retry else False,
            queueing_lock=spec.name if spec.cron else None,
            pass_context=True,
        )(spec.func)
        if spec.cron:
            app.periodic(cron=spec.cron, periodic_id=spec.name)(task)
    return app
