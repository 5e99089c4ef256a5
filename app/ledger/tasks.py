"""Background tasks of the ledger domain; `TASKS` is what a worker registers."""

from __future__ import annotations

import procrastinate

from app import jobs
from app.ledger import periods
from app.ledger.appender import run_alone
from app.logging import get_logger

log = get_logger(__name__)

CLOSE_DUE_PERIODS = "close_due_periods"


def close_due_periods(context: procrastinate.JobContext, timestamp: int) -> None:
    """Periodic: months close by themselves `period_close_days` after they end. Idempotent:
    a month already closed is left as it is."""
    runtime = jobs.runtime_of(context)
    grace = runtime.settings.period_close_days
    closed = run_alone(
        runtime.sessions,
        lambda session, head: [
            periods.month_name(p.month) for p in periods.close_due(session, head, grace_days=grace)
        ],
        clock=runtime.clock,
    )
    if closed:
        log.info("ledger.periods_closed", months=closed, automatic=True)


TASKS = (
    jobs.TaskSpec(CLOSE_DUE_PERIODS, close_due_periods, jobs.MAINTENANCE_QUEUE, cron="13 * * * *"),
)
