"""HTTP endpoints for attribution checks."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse

from app.blobs import sniff_audio_type
from app.checks import service as checks
from app.checks.flow import CheckFlow, CheckRequest
from app.checks.models import Check
from app.checks.schemas import CheckResult, CheckSummary, CheckUpload, ReversalIn
from app.clock import Clock
from app.db import SessionDep
from app.errors import EVERY_ROUTE, NotFound, Unprocessable, error_responses
from app.ledger.schemas import TransactionRead, transaction_with
from app.orgs.auth import READ_ALL, AiCompanyDep, OperatorDep, Principal, PrincipalDep, require
from app.orgs.models import OrgKind
from app.pagination import CursorQuery, LimitQuery, Page, paginate
from app.state import BlobsDep, SettingsDep
from app.timing import server_timing
from app.validation import Instant, SingleLine, ordered_period

router = APIRouter(prefix="/v1", tags=["checks"], responses=error_responses(*EVERY_ROUTE))

IDEMPOTENCY_DOC = (
    "Required. A unique key per logical request (a UUID is a good choice). Retrying with the "
    "same key and the same request replays the first response (`Idempotent-Replayed: true`) "
    "and never charges twice; the same key with a different request is 422; while the first "
    "request with the key is still running, 409."
)
_KEY_CHARS = set("".join(chr(c) for c in range(0x21, 0x7F)))


def get_check_flow(request: Request) -> CheckFlow:
    flow: CheckFlow = request.app.state.check_flow
    return flow


CheckFlowDep = Annotated[CheckFlow, Depends(get_check_flow)]


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


ClockDep = Annotated[Clock, Depends(get_clock)]
AUDIO_RESPONSES = error_responses(404) | {
    410: {"description": "The audio is past its retention period and no longer kept"},
    200: {"content": {"audio/*": {}}, "description": "The audio, whole"},
    206: {"content": {"audio/*": {}}, "description": "The requested byte range"},
}
CheckReaderDep = Annotated[
    Principal, Depends(require(OrgKind.AI_COMPANY, OrgKind.AUDITOR, OrgKind.OPERATOR))
]


def _check_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise Unprocessable(
            "the Idempotency-Key header is required",
            details=[{"field": checks.IDEMPOTENCY_FIELD, "message": "required"}],
        )
    key = key.strip()
    if len(key) > 255 or not set(key) <= _KEY_CHARS:
        raise Unprocessable(
            "the Idempotency-Key must be 1 to 255 visible ASCII characters",
            details=[{"field": checks.IDEMPOTENCY_FIELD, "message": "malformed"}],
        )
    return key


@router.post(
    "/checks",
    status_code=status.HTTP_201_CREATED,
    response_model=CheckResult,
    responses=error_responses(402, 409, 413, 422)
    | {
        201: {
            "description": "The check (also when replayed: see `Idempotent-Replayed`); when "
            "analysed in this request, `Server-Timing` gives its phases in milliseconds"
        }
    },
    summary="Check a generated piece against the licensed catalogues and pay for its uses",
)
def create_check(
    flow: CheckFlowDep,
    form: Annotated[CheckUpload, Form(media_type="multipart/form-data")],
    principal: AiCompanyDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", description=IDEMPOTENCY_DOC)
    ] = None,
) -> JSONResponse:
    """Finds which licensed tracks the piece draws on, how strongly and where, and records one
    ledger transaction: the caller is charged, each track's label credited. A piece that
    resembles nothing is still recorded, with no match and no charge."""
    answer = flow.run(
        CheckRequest(
            ai_company_id=principal.org_id,
            idempotency_key=_check_key(idempotency_key),
            audio=form.file.file,
            generation_id=form.generation_id,
            model=form.model,
            metadata=form.metadata_object(),
        )
    )
    headers = {"Idempotent-Replayed": "true" if answer.replayed else "false"}
    if answer.timings:
        # Where this check's time went (decode, embed, search, verify, record...), in ms.
        headers["Server-Timing"] = server_timing(answer.timings)
    return JSONResponse(answer.result, status_code=201, headers=headers)


@router.get(
    "/checks/{check_id}",
    response_model=CheckResult,
    responses=error_responses(404),
    summary="One check, exactly as first returned (the AI company that made it; auditors)",
)
def read_check(check_id: uuid.UUID, session: SessionDep, principal: CheckReaderDep) -> JSONResponse:
    check = session.get(Check, check_id)
    if check is None:
        raise NotFound("check", check_id)
    principal.owns_or_reads_all(check.ai_company_id, "check", check_id)
    return JSONResponse(check.result)


@router.get(
    "/checks",
    response_model=Page[CheckSummary],
    responses=error_responses(422),
    summary="Checks, newest first (AI company: its own; auditors: all or one company's)",
)
def list_checks(
    session: SessionDep,
    principal: CheckReaderDep,
    created_from: Annotated[Instant | None, Query(alias="from")] = None,
    created_to: Annotated[Instant | None, Query(alias="to")] = None,
    generation_id: Annotated[SingleLine | None, Query(max_length=200)] = None,
    ai_company_id: uuid.UUID | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[CheckSummary]:
    ordered_period(created_from, created_to)
    owner = ai_company_id if principal.kind in READ_ALL else principal.org_id
    stmt = checks.checks_query(
        checks.CheckFilter(
            ai_company_id=owner, start=created_from, end=created_to, generation_id=generation_id
        )
    )
    rows, next_cursor = paginate(
        session, stmt, order_by=[Check.created_at, Check.id], cursor=cursor, limit=limit
    )
    counts = checks.use_counts(session, [c.id for c in rows])
    items = [
        CheckSummary.model_validate({**_summary_fields(c), "uses": counts.get(c.id, 0)})
        for c in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


def _summary_fields(check: Check) -> dict[str, Any]:
    return {f: getattr(check, f) for f in CheckSummary.model_fields if f != "uses"}


@router.post(
    "/checks/{check_id}/reversal",
    status_code=status.HTTP_201_CREATED,
    response_model=TransactionRead,
    responses=error_responses(404, 409, 422),
    summary="Reverse a check's charge with an opposite transaction (operator)",
)
def reverse_check(
    check_id: uuid.UUID, body: ReversalIn, flow: CheckFlowDep, operator: OperatorDep
) -> TransactionRead:
    """The ledger is append-only: a correction is a new transaction that cancels the charge
    exactly, with the reason and the operator recorded. Royalties and balances net it out. A
    use whose dispute was released is left out (its money already went back); while a
    dispute holds part of the charge, 409. Reversing a charge of a closed month is an
    adjustment line of the open month (`adjusts_period`)."""
    reversal, postings = flow.reverse(check_id, reason=body.reason, actor_id=operator.org_id)
    return transaction_with(reversal, postings)


def audio_response(path: Path, media_type: str, *, filename: str) -> FileResponse:
    """A stored audio file that honours `Range` (206 with `Content-Range`), so a browser's
    player can seek straight to the evidence."""
    return FileResponse(
        path,
        media_type=media_type,
        headers={
            "Content-Disposition": f'inline; filename="{filename}"',
            "Cache-Control": "private, max-age=3600",
        },
    )


@router.get(
    "/checks/{check_id}/audio",
    response_class=FileResponse,
    responses=AUDIO_RESPONSES,
    summary="The check's uploaded audio (its AI company, the labels whose tracks it used, "
    "auditors); HTTP range requests",
)
def read_check_audio(
    check_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    clock: ClockDep,
) -> FileResponse:
    """Kept content-addressed for `ECHOLEDGER_CHECK_AUDIO_RETENTION_DAYS`; 410 afterwards."""
    check = checks.get_audio_visible(session, check_id, principal)
    path = checks.audio_path(
        check, blobs, retention_days=settings.check_audio_retention_days, now=clock()
    )
    return audio_response(path, sniff_audio_type(path), filename=f"check-{check.id}")
