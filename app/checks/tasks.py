"""Background tasks of the checks domain; `TASKS` is what a worker registers."""

from __future__ import annotations

import procrastinate

from app import jobs
from app.checks import service as checks
from app.logging import get_logger

log = get_logger(__name__)

FORGET_CHECK_AUDIO = "forget_check_audio"


def forget_check_audio(context: procrastinate.JobContext, timestamp: int) -> None:
    """Periodic: checks' audio past `check_audio_retention_days` is removed from the blob
    store (unless younger checks or tracks share the bytes). Idempotent."""
    runtime = jobs.runtime_of(context)
    removed = checks.forget_expired_audio(
        runtime.sessions,
        runtime.blobs,
        retention_days=runtime.settings.check_audio_retention_days,
        now=runtime.clock(),
    )
    if removed:
        log.info("checks.audio_forgotten", files=removed)


TASKS = (
    jobs.TaskSpec(
        FORGET_CHECK_AUDIO, forget_check_audio, jobs.MAINTENANCE_QUEUE, cron="41 3 * * *"
    ),
)
