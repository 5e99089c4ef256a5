"""The FastAPI application: routers, error handlers, and the resources its lifespan owns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from app import health
from app.catalogues.routes import router as catalogues_router
from app.catalogues.segments import segment_index
from app.checks.attribution import Calibration
from app.checks.flow import CheckFlow
from app.checks.routes import router as checks_router
from app.clock import Clock, system_clock
from app.config import Settings, get_settings
from app.db import create_db_engine, resolve_database_url
from app.disputes.flow import DisputeFlow
from app.disputes.routes import router as disputes_router
from app.errors import install_error_handlers
from app.index.manager import keep_in_sync
from app.ledger.appender import LedgerAppender
from app.ledger.routes import router as ledger_router
from app.logging import configure_logging, get_logger
from app.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.orgs.routes import router as orgs_router
from app.reports.routes import router as reports_router
from app.state import ServiceState
from app.worker import build_runtime, in_process_worker

log = get_logger(__name__)

DESCRIPTION = """
Echoledger licenses music catalogues as training data for generative models.

* **Labels** register catalogues with license terms and upload tracks.
* **AI companies** submit generated pieces; each check reports which catalogue tracks the piece
  resembles, where, and how strongly, and records a micropayment per use.
* **Auditors** read the full usage history and verify the ledger's hash chain.
* AI companies **dispute** uses; the money is held until the label (or, on appeal, an
  operator) decides. Months **close**; labels get **statements** and AI companies
  **invoices** for closed months.

Authenticate with `Authorization: Bearer <API key>`. Every error has the body
`{"error": {"code", "message", "details", "request_id"}}`. Money is in integer micro-units
(10^-6) of the settlement currency.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    clock: Clock = app.state.clock
    url = resolve_database_url(settings)
    engine = create_db_engine(url)
    runtime = build_runtime(settings, engine, clock=clock)
    index = segment_index(settings, runtime.embedder, runtime.sessions)
    await asyncio.to_thread(index.start)
    service = ServiceState(
        engine=engine,
        sessions=runtime.sessions,
        blobs=runtime.blobs,
        embedder=runtime.embedder,
        index=index,
    )
    # One appender for every flow that moves money: one group commit, one chain lock holder.
    appender = LedgerAppender(runtime.sessions, clock=clock)
    check_flow = CheckFlow(
        settings=settings,
        sessions=runtime.sessions,
        blobs=runtime.blobs,
        embedder=runtime.embedder,
        index=index,
        calibration=Calibration.load(settings.calibration_file),
        appender=appender,
        clock=clock,
    )
    app.state.service = service
    app.state.ledger_appender = appender
    app.state.check_flow = check_flow
    app.state.dispute_flow = DisputeFlow(
        settings=settings, sessions=runtime.sessions, appender=appender
    )
    log.info("service.started", database=engine.url.render_as_string(hide_password=True))
    syncing = asyncio.create_task(
        keep_in_sync(
            index,
            every=settings.index_sync_seconds,
            snapshot_every=settings.index_snapshot_seconds,
        )
    )
    try:
        async with AsyncExitStack() as stack:
            if settings.run_worker:
                await stack.enter_async_context(
                    in_process_worker(url, runtime, concurrency=settings.worker_concurrency)
                )
            yield
    finally:
        syncing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await syncing
        await asyncio.to_thread(appender.close)
        await asyncio.to_thread(index.save_snapshot)
        engine.dispose()
        log.info("service.stopped")


def create_app(settings: Settings | None = None, *, clock: Clock = system_clock) -> FastAPI:
    """The application. `clock` dates everything that moves money (tests move it forward)."""
    settings = settings or get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    app = FastAPI(
        title="Echoledger",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock
    install_error_handlers(app)
    # Multipart framing adds a little to the file itself.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes + 64 * 1024)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(orgs_router)
    app.include_router(catalogues_router)
    app.include_router(checks_router)
    app.include_router(ledger_router)
    app.include_router(disputes_router)
    app.include_router(reports_router)
    return app
