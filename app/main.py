"""The FastAPI application: routers, error handlers, and the resources its lifespan owns."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import Scope

from app import health
from app.boot import Boot
from app.catalogues.routes import router as catalogues_router
from app.catalogues.segments import segment_index
from app.checks.attribution import Calibration
from app.checks.flow import CheckFlow
from app.checks.routes import router as checks_router
from app.checks.service import release_orphaned_claims
from app.clock import Clock, system_clock
from app.config import Settings, get_settings
from app.conflicts.flow import ConflictFlow
from app.conflicts.routes import router as conflicts_router
from app.console.routes import UPLOAD_PATH as CONSOLE_UPLOAD_PATH
from app.console.routes import authenticate_upload as console_upload_caller
from app.console.routes import router as console_router
from app.console.routes import script_router as console_script_router
from app.db import create_db_engine, resolve_database_url, transaction
from app.disputes.flow import DisputeFlow
from app.disputes.routes import router as disputes_router
from app.docs import install_docs
from app.errors import DATABASE_RETRY_AFTER, ServiceUnavailable, install_error_handlers
from app.index.manager import keep_in_sync
from app.jobs import WorkerRuntime
from app.ledger.appender import LedgerAppender
from app.ledger.routes import router as ledger_router
from app.limits import FailedAuth, InFlight, TokenBuckets
from app.logging import configure_logging, get_logger
from app.middleware import BodySizeLimitMiddleware, Gate, GateMiddleware, RequestContextMiddleware
from app.orgs.auth import Principal, authenticate_request
from app.orgs.routes import router as orgs_router
from app.reports.routes import router as reports_router
from app.rights.routes import public_router as rights_public_router
from app.rights.routes import router as rights_router
from app.signing import Signer
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
    process = Boot(engine)
    await asyncio.to_thread(process.hold)
    await asyncio.to_thread(_clean_up_after_dead_processes, settings, runtime)
    index = segment_index(settings, runtime.embedder, runtime.sessions)
    await asyncio.to_thread(index.start)
    service = ServiceState(
        engine=engine,
        sessions=runtime.sessions,
        blobs=runtime.blobs,
        embedder=runtime.embedder,
        index=index,
        signer=await asyncio.to_thread(Signer.from_file, settings.signing_key_path),
    )
    # One appender for every flow that moves money: one group commit, one chain lock holder.
    appender = LedgerAppender(runtime.sessions, clock=clock)
    calibration = Calibration.load(settings.calibration_file)
    if calibration.fitted_for_another(runtime.embedder.name, runtime.embedder.version):
        log.warning(
            "calibration.fitted_for_another_embedder",
            file=str(settings.calibration_file),
            fitted_for=" ".join(calibration.fitted_for or ()),
            embedder=f"{runtime.embedder.name} {runtime.embedder.version}",
            remedy="python -m bench.attribution --calibrate, or a file fitted for this one",
        )
    check_flow = CheckFlow(
        settings=settings,
        sessions=runtime.sessions,
        blobs=runtime.blobs,
        embedder=runtime.embedder,
        index=index,
        calibration=calibration,
        appender=appender,
        clock=clock,
        boot_id=process.id,
    )
    app.state.service = service
    app.state.ledger_appender = appender
    app.state.check_flow = check_flow
    app.state.dispute_flow = DisputeFlow(
        settings=settings, sessions=runtime.sessions, appender=appender
    )
    app.state.conflict_flow = ConflictFlow(sessions=runtime.sessions, appender=appender)
    log.info("service.started", database=engine.url.render_as_string(hide_password=True))
    syncing = asyncio.create_task(
        keep_in_sync(
            index,
            every=settings.index_sync_seconds,
            snapshot_every=settings.index_snapshot_seconds,
        )
    )
    keeping = asyncio.create_task(_keep_boot(process))
    try:
        async with AsyncExitStack() as stack:
            if settings.run_worker:
                await stack.enter_async_context(
                    in_process_worker(url, runtime, concurrency=settings.worker_concurrency)
                )
            yield
    finally:
        for task in (syncing, keeping):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(appender.close)
        await asyncio.to_thread(index.save_snapshot)
        await asyncio.to_thread(process.release)
        engine.dispose()
        log.info("service.stopped")


# Staging files untouched this long belong to a process that died mid-upload.
STALE_STAGING_SECONDS = 3600.0
BOOT_KEEP_SECONDS = 5.0


def _clean_up_after_dead_processes(settings: Settings, runtime: WorkerRuntime) -> None:
    """What a crash leaves behind: claims of Idempotency-Keys whose process is gone (they
    would answer 409 until the lock time ran out) and half-written upload staging files."""
    freed = release_orphaned_claims(runtime.sessions)
    swept = runtime.blobs.sweep_staging(older_than=STALE_STAGING_SECONDS)
    if freed or swept:
        log.warning("service.crash_leftovers_cleaned", claims_freed=freed, staging_swept=swept)


async def _keep_boot(process: Boot) -> None:
    """Re-take the boot lock after a database restart (until cancelled)."""
    while True:
        await asyncio.sleep(BOOT_KEEP_SECONDS)
        try:
            await asyncio.to_thread(process.keep)
        except Exception:
            log.warning("boot.keep_failed", boot_id=process.id, exc_info=True)


def _gates(settings: Settings, app: FastAPI) -> list[Gate]:
    """Per-key limits on the routes that take audio: checks and track uploads, the latter
    through the API or the console (one key's uploads count once, whichever way in)."""

    def buckets(per_minute: float) -> TokenBuckets:
        burst = max(1, math.ceil(per_minute / 60 * settings.rate_limit_burst_seconds))
        return TokenBuckets(per_minute=per_minute, burst=burst)

    bound = settings.max_concurrent_uploads_per_key
    uploads, uploading = buckets(settings.rate_limit_uploads_per_minute), InFlight(bound)
    return [
        Gate(
            "POST",
            re.compile(r"^/v1/checks$"),
            buckets(settings.rate_limit_checks_per_minute),
            InFlight(bound),
            "checks",
        ),
        Gate("POST", re.compile(r"^/v1/catalogues/[^/]+/tracks$"), uploads, uploading, "uploads"),
        Gate(
            "POST",
            CONSOLE_UPLOAD_PATH,
            uploads,
            uploading,
            "uploads",
            authenticate=_in_transaction(app, console_upload_caller),
        ),
    ]


def _authenticate_first(app: FastAPI) -> Callable[[Scope], Principal]:
    """Authentication for the gate middleware, on a short transaction of its own."""
    return _in_transaction(app, authenticate_request)


def _in_transaction(
    app: FastAPI, authenticate_with: Callable[[Session, Request], Principal]
) -> Callable[[Scope], Principal]:
    def authenticate(scope: Scope) -> Principal:
        try:
            with transaction(app.state.service.sessions) as session:
                return authenticate_with(session, Request(scope))
        except (OperationalError, InterfaceError):
            # Outside the exception handlers here: answer as they would.
            raise ServiceUnavailable(
                "the database is unavailable; retry shortly",
                headers={"Retry-After": DATABASE_RETRY_AFTER},
            ) from None

    return authenticate


def _routed(app: FastAPI) -> Callable[[Scope], bool]:
    def routed(scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)

    return routed


def create_app(settings: Settings | None = None, *, clock: Clock = system_clock) -> FastAPI:
    """The application. `clock` dates everything that moves money (tests move it forward)."""
    settings = settings or get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    app = FastAPI(
        title="Echoledger",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the package's own assets below
        redoc_url=None,
    )
    install_docs(app, title="Echoledger")
    app.state.settings = settings
    app.state.clock = clock
    app.state.failed_auth = FailedAuth(
        max_failures=settings.auth_max_failures,
        window=settings.auth_failure_window_seconds,
        lockout=settings.auth_lockout_seconds,
    )
    install_error_handlers(app)
    # Outermost last: request id and headers, then size and time limits, then the gate.
    app.add_middleware(
        GateMiddleware,
        authenticate=_authenticate_first(app),
        routed=_routed(app),
        gates=_gates(settings, app),
    )
    app.add_middleware(
        BodySizeLimitMiddleware,
        # Multipart framing adds a little to the file itself.
        max_bytes=settings.max_upload_bytes + 64 * 1024,
        report_bytes=settings.max_upload_bytes,
        timeout=settings.request_body_timeout_seconds,
    )
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(orgs_router)
    app.include_router(catalogues_router)
    app.include_router(rights_router)
    app.include_router(rights_public_router)
    app.include_router(checks_router)
    app.include_router(ledger_router)
    app.include_router(disputes_router)
    app.include_router(conflicts_router)
    app.include_router(reports_router)
    app.include_router(console_router)  # HTML pages, outside the OpenAPI document
    app.include_router(console_script_router)
    return app
