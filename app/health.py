"""Liveness and readiness probes."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from app.index.manager import IndexReport
from app.migrate import current_revision, head_revision

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class IndexInfo(BaseModel):
    factory: str = Field(description="The FAISS factory serving, e.g. `Flat`, `IVF1024,SQ8`.")
    search_params: str = Field(description="Its query-time parameters, e.g. `nprobe=8`.")
    chosen_by: str = Field(description="`auto` (by segment count) or `setting`.")
    segments: int = Field(description="Segments in the index now.")
    segments_at_choice: int | None = Field(
        description="With `auto`: the segment count the factory was chosen for."
    )
    trained_at: datetime | None = Field(
        description="When its codebooks were trained; null for an index that learns nothing."
    )
    training_sample: int = Field(description="Stored segments it was trained on.")
    retraining_to: str | None = Field(
        description="The factory being trained in the background (the current one serves "
        "until it is ready), or null."
    )
    started_from: str | None = Field(description="`snapshot` or `rebuild`.")
    start_seconds: float | None = Field(description="Seconds the index took to start.")


class Readiness(BaseModel):
    status: str
    database: str
    migration: str | None
    migration_head: str | None
    index_segments: int = Field(description="Segments in this process's similarity index.")
    index_watermark: int = Field(description="Highest segment id the index has taken in.")
    index: IndexInfo = Field(description="Which index serves, and why.")


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; the body says why"}},
    summary="The database is reachable, its schema at the latest migration; index size",
)
def readyz(request: Request) -> JSONResponse:
    head = head_revision()
    service = request.app.state.service
    try:
        with service.engine.connect() as conn:
            current = current_revision(conn)
        database = "ok"
    except SQLAlchemyError as exc:
        current, database = None, f"unreachable: {type(exc).__name__}"
    ready = database == "ok" and current == head
    body = Readiness(
        status="ready" if ready else "not_ready",
        database=database,
        migration=current,
        migration_head=head,
        index_segments=service.index.size,
        index_watermark=service.index.watermark,
        index=_index_info(service.index.report()),
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)


def _index_info(report: IndexReport) -> IndexInfo:
    trained = report.trained_at
    return IndexInfo(
        factory=report.factory,
        search_params=report.search_params,
        chosen_by=report.chosen_by,
        segments=report.segments,
        segments_at_choice=report.segments_at_choice,
        trained_at=None if trained is None else datetime.fromtimestamp(trained, UTC),
        training_sample=report.training_sample,
        retraining_to=report.retraining_to,
        started_from=report.started_from,
        start_seconds=report.start_seconds,
    )
