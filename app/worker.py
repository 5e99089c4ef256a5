"""Running workers (ingestion, schedules): standalone (`echoledger worker`), inside `serve`, or
in tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import procrastinate
from sqlalchemy.engine import Engine

from app import jobs
from app.blobs import BlobStore
from app.catalogues import tasks as catalogue_tasks
from app.checks import tasks as check_tasks
from app.clock import Clock, system_clock
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, resolve_database_url
from app.disputes import tasks as dispute_tasks
from app.embedding import get_embedder
from app.ledger import tasks as ledger_tasks
from app.logging import get_logger

log = get_logger(__name__)


# Every task a worker runs: maintenance, then each domain's.
TASKS: tuple[jobs.TaskSpec, ...] = (
    *jobs.MAINTENANCE_TASKS,
    *catalogue_tasks.TASKS,
    *ledger_tasks.TASKS,
    *dispute_tasks.TASKS,
    *check_tasks.TASKS,
)


def build_job_app(
    settings: Settings, database_url: str, *, pool_size: int = 4
) -> procrastinate.App:
    """The job app with every task registered."""
    return jobs.build_app(settings, database_url, tasks=TASKS, pool_size=pool_size)


def build_runtime(
    settings: Settings, engine: Engine, *, clock: Clock = system_clock
) -> jobs.WorkerRuntime:
    return jobs.WorkerRuntime(
        settings=settings,
        sessions=make_sessionmaker(engine),
        embedder=get_embedder(settings.embedder),
        blobs=BlobStore(settings.blob_dir),
        clock=clock,
    )


async def work(
    job_app: procrastinate.App,
    runtime: jobs.WorkerRuntime,
    *,
    wait: bool = True,
    concurrency: int = 1,
    install_signal_handlers: bool = False,
) -> None:
    """Process jobs until stopped (or, with wait=False, until the queues are empty)."""
    await job_app.run_worker_async(
        queues=list(jobs.QUEUES),
        wait=wait,
        concurrency=concurrency,
        install_signal_handlers=install_signal_handlers,
        additional_context={"runtime": runtime},
    )


# Pause before starting a worker again that stopped on its own.
RESTART_AFTER_SECONDS = 2.0


async def work_supervised(
    job_app: procrastinate.App,
    runtime: jobs.WorkerRuntime,
    *,
    concurrency: int = 1,
    restart_after: float = RESTART_AFTER_SECONDS,
) -> None:
    """Process jobs until cancelled, starting the worker again whenever it stops by itself.

    procrastinate stops a worker when one of its side tasks fails, as its LISTEN connection
    does when the database restarts; without this the process would live on and ingest
    nothing more.
    """
    while True:
        try:
            await work(job_app, runtime, concurrency=concurrency)
        except Exception:
            log.exception("worker.crashed")
        log.warning("worker.restarting", after_seconds=restart_after)
        await asyncio.sleep(restart_after)


@contextlib.asynccontextmanager
async def in_process_worker(
    database_url: str, runtime: jobs.WorkerRuntime, *, concurrency: int
) -> AsyncIterator[None]:
    """A worker running beside the API in the same event loop, stopped on exit."""
    job_app = build_job_app(runtime.settings, database_url)
    async with job_app.open_async():
        task = asyncio.create_task(work_supervised(job_app, runtime, concurrency=concurrency))
        log.info("worker.started", mode="in-process", concurrency=concurrency)
        try:
            yield
        finally:
            # Cancelling stops the worker after the jobs it is running finish.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("worker.stopped", mode="in-process")


async def run_standalone(settings: Settings, *, concurrency: int) -> None:
    """The body of `echoledger worker`: a worker process until SIGINT/SIGTERM."""
    url = resolve_database_url(settings)
    engine = create_db_engine(url, pool_size=concurrency + 1)
    runtime = build_runtime(settings, engine)
    job_app = build_job_app(settings, url, pool_size=concurrency + 2)
    try:
        async with job_app.open_async():
            log.info("worker.started", mode="standalone", concurrency=concurrency)
            task = asyncio.create_task(work_supervised(job_app, runtime, concurrency=concurrency))
            # Stopping is cancelling (the running jobs finish first), so that a worker that
            # stops by itself can be told from one that was asked to.
            loop = asyncio.get_running_loop()
            for stop_signal in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(stop_signal, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        engine.dispose()
        log.info("worker.stopped", mode="standalone")
