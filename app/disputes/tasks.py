"""Background tasks of the dispute domain; `TASKS` is what a worker registers."""

from __future__ import annotations

import procrastinate

from app import jobs
from app.disputes.flow import expire_due

EXPIRE_DISPUTES = "expire_disputes"


def expire_disputes(context: procrastinate.JobContext, timestamp: int) -> None:
    """Periodic: a dispute the label left undecided past its review window is released.
    Idempotent (see `expire_due`)."""
    runtime = jobs.runtime_of(context)
    expire_due(runtime.sessions, clock=runtime.clock)


TASKS = (
    jobs.TaskSpec(EXPIRE_DISPUTES, expire_disputes, jobs.MAINTENANCE_QUEUE, cron="*/10 * * * *"),
)
