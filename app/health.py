"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from app.migrate import current_revision, head_revision

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    migration: str | None
    migration_head: str | None
    index_segments: int = Field(description="Segments in this process's similarity index.")
    index_watermark: int = Field(description="Highest segment id the index has taken in.")


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
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
