"""The console: server-rendered pages under /console, the API's second face.

Every page calls the API's own route functions (or the services they call) with the signed-in
principal, after the API's own role gate for that route (`gate(ApiDep, user)` runs the very
dependency the API route declares). So the console shows exactly what the API would answer
to the same key: another tenant's object is a 404 page, a role's forbidden page a 403 page.
The routes stay out of the OpenAPI document (they answer HTML); tests/test_console.py covers
their isolation in a real browser.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.responses import FileResponse

from app.catalogues import routes as catalogue_api
from app.catalogues.models import TrackStatus
from app.catalogues.schemas import TrackRead, TrackUpload
from app.checks import routes as check_api
from app.checks import service as checks
from app.clock import Clock
from app.console import views
from app.console.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    ConsoleSession,
    Signer,
    load_secret,
)
from app.db import SessionDep
from app.errors import AppError, Forbidden, NotFound, Unauthorized, Unprocessable
from app.ledger import routes as ledger_api
from app.ledger import service as ledger
from app.logging import get_logger
from app.orgs import service as orgs
from app.orgs.auth import (
    LabelDep,
    LabelOrReaderDep,
    Principal,
    ReaderDep,
    authenticate,
    authenticate_key,
    client_address,
)
from app.orgs.models import OrgKind
from app.pagination import Page
from app.reports import routes as report_api
from app.reports import service as reports
from app.reports.schemas import GroupBy
from app.state import BlobsDep, SessionsDep, SettingsDep

log = get_logger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
PAGE_SIZE = 25


class SignInRequired(AppError):
    """No live console session: the browser is sent to the sign-in page."""

    status_code = 401
    code = "sign_in_required"


class ConsoleRoute(APIRoute):
    """Errors become pages (with the API's status code), not JSON bodies."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                response = RedirectResponse(
                    "/console/sign-in?" + urlencode({"next": target}), status_code=303
                )
                response.delete_cookie(SESSION_COOKIE, path="/console")
                return response
            except AppError as exc:
                return error_page(request, exc.status_code, exc.message, headers=exc.headers)
            except RequestValidationError as exc:
                fields = ", ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                    for e in exc.errors()
                )
                return error_page(request, 422, f"invalid request: {fields}")

        return route


router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)
# Routes called by the pages' scripts: they answer JSON, errors in the API's one error shape.
script_router = APIRouter(prefix="/console", include_in_schema=False)

# The console's track upload: the gate middleware authenticates it (`authenticate_upload`)
# and counts it against the key's upload limits before its body is read.
UPLOAD_PATH = re.compile(r"^/console/catalogues/[^/]+/tracks$")


# ---------------------------------------------------------------------------- rendering


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = views.money
    environment.filters["when"] = views.when
    environment.filters["seconds"] = views.seconds
    environment.globals["PAGE_SIZE"] = PAGE_SIZE
    return environment


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    user: ConsoleUser | None = getattr(request.state, "console_user", None)
    context.setdefault("currency", request.app.state.settings.currency)
    html = (
        _environment()
        .get_template(template)
        .render(
            user=user,
            csrf=user.csrf if user else "",
            path=request.url.path,
            query=dict(request.query_params),
            first_url=with_query(request, cursor=None),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    # Pages show money and evidence: never cached, never framed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "media-src 'self'; frame-ancestors 'none'; form-action 'self'"
    )
    return response


def error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    titles = {
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        410: "No longer kept",
        422: "Check the request",
        429: "Too many requests",
    }
    return render(
        request,
        "error.html",
        status_code=status,
        headers=headers,
        status=status,
        title=titles.get(status, "Something went wrong"),
        message=message,
    )


def with_query(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None removes one)."""
    params = dict(request.query_params)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = str(value)
    return request.url.path + ("?" + urlencode(params) if params else "")


# ---------------------------------------------------------------------------- who is signed in


def get_signer(request: Request) -> Signer:
    signer: Signer | None = getattr(request.app.state, "console_signer", None)
    if signer is None:
        settings = request.app.state.settings
        signer = Signer(load_secret(settings.console_secret_path))
        request.app.state.console_signer = signer
    return signer


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


SignerDep = Annotated[Signer, Depends(get_signer)]
ClockDep = Annotated[Clock, Depends(get_clock)]


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    principal: Principal
    name: str
    session: ConsoleSession
    csrf: str

    @property
    def kind(self) -> str:
        return self.principal.kind.value


def get_user(
    request: Request, session: SessionDep, signer: SignerDep, clock: ClockDep
) -> ConsoleUser:
    """The signed-in organisation: the session cookie's key, looked up again now."""
    found = signer.read(request.cookies.get(SESSION_COOKIE), now=clock())
    if found is None:
        raise SignInRequired("sign in with an API key")
    principal = authenticate_key(session, found.key_id)
    if principal is None:
        log.info("console.session_ended", reason="key_revoked", key_id=str(found.key_id))
        raise SignInRequired("the API key of this session was revoked")
    request.state.principal = principal
    request.state.org_id = str(principal.org_id)
    user = ConsoleUser(
        principal=principal,
        name=orgs.get(session, principal.org_id).name,
        session=found,
        csrf=signer.csrf_token(found.nonce),
    )
    request.state.console_user = user
    return user


UserDep = Annotated[ConsoleUser, Depends(get_user)]


def gate(api_dependency: Any, user: ConsoleUser) -> Principal:
    """Run the role check an API route declares (its `Annotated[..., Depends(require(...))]`
    alias) on the console's principal: 403 exactly where the API says 403."""
    check: Callable[[Principal], Principal] = get_args(api_dependency)[1].dependency
    return check(user.principal)


async def check_csrf(request: Request, user: UserDep, signer: SignerDep) -> ConsoleUser:
    """Every state-changing console request carries the session's CSRF token (403 without)."""
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    signer.check_csrf(user.session.nonce, token)
    return user


CsrfUserDep = Annotated[ConsoleUser, Depends(check_csrf)]


def authenticate_upload(session: SessionDep, request: Request) -> Principal:
    """The caller of a console upload, before its body is read (the gate middleware calls
    this): the session cookie's key admitted as for any page (401 without a live session),
    the session's CSRF token in the `X-CSRF-Token` header (403 without), and the API upload
    route's own role rule (403 for anyone but a label)."""
    signer, clock = get_signer(request), get_clock(request)
    found = signer.read(request.cookies.get(SESSION_COOKIE), now=clock())
    if found is None:
        raise SignInRequired("your console session has ended: sign in again")
    principal = authenticate_key(session, found.key_id)
    if principal is None:
        raise SignInRequired("the API key of this session was revoked: sign in again")
    request.state.org_id = str(principal.org_id)
    signer.check_csrf(found.nonce, request.headers.get(CSRF_HEADER))
    check: Callable[[Principal], Principal] = get_args(LabelDep)[1].dependency
    return check(principal)


# ---------------------------------------------------------------------------- sign-in


def _cookie_flags(settings: Any) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": bool(settings.console_secure_cookies),
        "path": "/console",
    }


def _safe_next(target: str | None) -> str:
    """Only a console path: never another site (an open redirect)."""
    if target and target.startswith("/console/") and not target.startswith("/console//"):
        return target
    return "/console/"


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(
    request: Request,
    signer: SignerDep,
    settings: SettingsDep,
    next: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    nonce = request.cookies.get(PRESESSION_COOKIE)
    fresh = not nonce
    if fresh:
        nonce = uuid.uuid4().hex
    assert nonce is not None
    response = render(
        request,
        "sign_in.html",
        status_code=401 if error else 200,
        sign_in_csrf=signer.csrf_token("pre:" + nonce),
        next=_safe_next(next),
        error=error,
    )
    if fresh:
        response.set_cookie(PRESESSION_COOKIE, nonce, max_age=3600, **_cookie_flags(settings))
    return response


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request,
    session: SessionDep,
    signer: SignerDep,
    settings: SettingsDep,
    clock: ClockDep,
    api_key: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/console/",
) -> Response:
    """Exchange an API key for a session cookie; the key itself is never stored."""
    nonce = request.cookies.get(PRESESSION_COOKIE)
    signer.check_csrf(None if nonce is None else "pre:" + nonce, csrf_token or None)
    try:
        principal = authenticate(
            session,
            authorization=f"Bearer {api_key.strip()}",
            client=client_address(request),
            failures=request.app.state.failed_auth,
        )
    except Unauthorized:
        return sign_in_page(
            request, signer, settings, next=next, error="That API key is unknown or revoked."
        )
    cookie, _ = signer.issue(principal.key_id, now=clock(), hours=settings.console_session_hours)
    log.info("console.signed_in", org_id=str(principal.org_id), key_id=str(principal.key_id))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(settings.console_session_hours * 3600),
        **_cookie_flags(settings),
    )
    response.delete_cookie(PRESESSION_COOKIE, path="/console")
    return response


@router.post("/sign-out")
def sign_out(user: CsrfUserDep) -> Response:
    log.info("console.signed_out", org_id=str(user.principal.org_id))
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/")
def home(user: UserDep) -> Response:
    """Each role's first page."""
    first = {
        OrgKind.LABEL: "/console/dashboard",
        OrgKind.AI_COMPANY: "/console/checks",
        OrgKind.AUDITOR: "/console/usage",
        OrgKind.OPERATOR: "/console/usage",
    }[user.principal.kind]
    return RedirectResponse(first, status_code=303)


# ---------------------------------------------------------------------------- periods


@dataclass(frozen=True, slots=True)
class Period:
    """Whole UTC days, `first` to `last` inclusive; the API sees [start, end)."""

    first: dt.date
    last: dt.date

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.first, dt.time(), dt.UTC)

    @property
    def end(self) -> dt.datetime:
        return dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), dt.UTC)

    @property
    def monthly(self) -> bool:
        return (self.last - self.first).days > 62

    @property
    def api_query(self) -> str:
        return urlencode(
            {
                "from": self.start.isoformat().replace("+00:00", "Z"),
                "to": self.end.isoformat().replace("+00:00", "Z"),
            },
            safe=":",
        )


def _date(text: str | None, field: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise Unprocessable(
            f"{field} must be a date (YYYY-MM-DD), not {text[:40]!r}",
            details=[{"field": f"query.{field}", "message": "not a date"}],
        ) from None


def period_of(first: str | None, last: str | None, today: dt.date) -> Period:
    """The chosen period, by default the last 30 days including today."""
    end = _date(last, "to") or today
    start = _date(first, "from") or end - dt.timedelta(days=29)
    if start > end:
        raise Unprocessable(
            "the period's first day is after its last",
            details=[{"field": "query.from", "message": "after 'to'"}],
        )
    if (end - start).days > 3660:
        raise Unprocessable("choose a period of at most ten years")
    return Period(start, end)


FromDay = Annotated[str | None, Query(alias="from", max_length=10)]
ToDay = Annotated[str | None, Query(alias="to", max_length=10)]
Cursor = Annotated[str | None, Query(max_length=500)]
PerPage = Annotated[int, Query(ge=1, le=100)]


# ---------------------------------------------------------------------------- label pages


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    request: Request,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    user: UserDep,
    clock: ClockDep,
    first: FromDay = None,
    last: ToDay = None,
    label_id: uuid.UUID | None = None,
) -> HTMLResponse:
    """A label's earnings for a period: the API's royalty report, grouped four ways."""
    principal = gate(report_api.RoyaltyReaderDep, user)
    period = period_of(first, last, clock().date())
    if principal.kind != OrgKind.LABEL and label_id is None:
        return render(request, "pick_label.html", labels=_labels(session))

    def report(group_by: GroupBy) -> Any:
        return report_api.royalties(
            session=session,
            principal=principal,
            settings=settings,
            group_by=group_by,
            start=period.start,
            end=period.end,
            label_id=label_id,
            format=report_api.Format.JSON,
        )

    by_time = report(GroupBy.MONTH if period.monthly else GroupBy.DAY)
    amounts = {r.group: r.amount_micros for r in by_time.rows}
    bars = [
        views.Bar(key, amounts.get(key, 0))
        for key in views.calendar(period.first, period.end.date(), monthly=period.monthly)
    ]
    top_tracks = sorted(report(GroupBy.TRACK).rows, key=lambda r: -r.amount_micros)[:10]
    top_companies = sorted(report(GroupBy.AI_COMPANY).rows, key=lambda r: -r.amount_micros)[:10]
    uses = report_api.list_uses(
        session=session,
        principal=principal,
        sessions=sessions,
        start=period.start,
        end=period.end,
        label_id=label_id,
        limit=10,
        **_no_filters("start", "end", "label_id", "limit"),
    )
    assert isinstance(uses, Page)
    return render(
        request,
        "dashboard.html",
        period=period,
        report=by_time,
        reversals=sum(r.reversals for r in by_time.rows),
        chart=views.bar_chart(bars, by_time.currency),
        top_tracks=top_tracks,
        top_companies=top_companies,
        uses=uses.items,
        label_id=label_id,
        label_name=orgs.get(session, by_time.label_id).name,
    )


def _no_filters(*given: str) -> dict[str, Any]:
    """The API route's remaining parameters at their defaults (called as a function, FastAPI
    does not fill them in)."""
    defaults: dict[str, Any] = {
        "start": None,
        "end": None,
        "ai_company_id": None,
        "label_id": None,
        "catalogue_id": None,
        "track_id": None,
        "check_id": None,
        "preference": None,
        "format": report_api.Format.JSON,
        "limit": PAGE_SIZE,
        "cursor": None,
    }
    return {k: v for k, v in defaults.items() if k not in given}


def _labels(session: SessionDep) -> list[Any]:
    return list(session.scalars(orgs.orgs_query(kind=OrgKind.LABEL).limit(200)))


@router.get("/catalogues", response_class=HTMLResponse)
def catalogue_list(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: UserDep,
    label_id: uuid.UUID | None = None,
    cursor: Cursor = None,
    per_page: PerPage = PAGE_SIZE,
) -> HTMLResponse:
    principal = gate(LabelOrReaderDep, user)
    page = catalogue_api.list_catalogues(
        session=session,
        principal=principal,
        settings=settings,
        label_id=label_id,
        limit=per_page,
        cursor=cursor,
    )
    return render(
        request,
        "catalogues.html",
        page=page,
        next_url=page.next_cursor and with_query(request, cursor=page.next_cursor),
    )


@router.get("/catalogues/{catalogue_id}", response_class=HTMLResponse)
def catalogue_page(
    request: Request,
    catalogue_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    user: UserDep,
    status: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Cursor = None,
    per_page: PerPage = PAGE_SIZE,
) -> HTMLResponse:
    principal = gate(LabelOrReaderDep, user)
    catalogue = catalogue_api.read_catalogue(
        catalogue_id=catalogue_id, session=session, principal=principal, settings=settings
    )
    versions = catalogue_api.list_license_versions(
        catalogue_id=catalogue_id, session=session, principal=principal, settings=settings
    )
    wanted = None
    if status:
        try:
            wanted = TrackStatus(status)
        except ValueError:
            raise Unprocessable(f"no track status {status!r}") from None
    tracks = catalogue_api.list_tracks(
        catalogue_id=catalogue_id,
        session=session,
        principal=principal,
        track_status=wanted,
        withdrawn=None,
        audio_sha256=None,
        external_id=None,
        limit=per_page,
        cursor=cursor,
    )
    return render(
        request,
        "catalogue.html",
        catalogue=catalogue,
        versions=list(reversed(versions)),
        tracks=tracks,
        statuses=[s.value for s in TrackStatus],
        status=status,
        max_upload_bytes=settings.max_upload_bytes,
        next_url=tracks.next_cursor and with_query(request, cursor=tracks.next_cursor),
    )


@script_router.post("/catalogues/{catalogue_id}/tracks", status_code=202, response_model=TrackRead)
def upload_track(
    catalogue_id: uuid.UUID,
    form: Annotated[TrackUpload, Form(media_type="multipart/form-data")],
    session: SessionDep,
    settings: SettingsDep,
    blobs: BlobsDep,
    user: CsrfUserDep,
) -> TrackRead:
    """One file from the catalogue page's uploader, through the API's own upload route: the
    same validation, size limit, duplicate check and errors. The page polls the new track
    until it is indexed or failed."""
    track = catalogue_api.upload_track(
        catalogue_id=catalogue_id,
        form=form,
        session=session,
        principal=gate(LabelDep, user),
        settings=settings,
        blobs=blobs,
    )
    log.info("console.track_uploaded", track_id=str(track.id), catalogue_id=str(catalogue_id))
    return track


@router.get("/tracks/{track_id}", response_class=HTMLResponse)
def track_page(
    request: Request,
    track_id: uuid.UUID,
    session: SessionDep,
    sessions: SessionsDep,
    user: UserDep,
    cursor: Cursor = None,
    per_page: PerPage = PAGE_SIZE,
) -> HTMLResponse:
    principal = gate(LabelOrReaderDep, user)
    track = catalogue_api.read_track(track_id=track_id, session=session, principal=principal)
    uses = report_api.list_uses(
        session=session,
        principal=principal,
        sessions=sessions,
        track_id=track_id,
        cursor=cursor,
        limit=per_page,
        **_no_filters("track_id", "cursor", "limit"),
    )
    assert isinstance(uses, Page)
    return render(
        request,
        "track.html",
        track=track,
        uses=uses,
        next_url=uses.next_cursor and with_query(request, cursor=uses.next_cursor),
    )


def _may_read_track(principal: Principal) -> bool:
    """Whether the API lets this role read tracks (and so hear them)."""
    try:
        get_args(LabelOrReaderDep)[1].dependency(principal)
    except Forbidden:
        return False
    return True


@router.get("/uses/{use_id}", response_class=HTMLResponse)
def use_page(
    request: Request,
    use_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    user: UserDep,
) -> HTMLResponse:
    """One use and its evidence: the timeline and the two passages to listen to."""
    principal = gate(report_api.UseReaderDep, user)
    use = reports.use_reads(session, [reports.get_visible(session, use_id, principal)])[0]
    # The check's stored answer, restricted to this use's track (it may name other labels').
    check = checks.get_audio_visible(session, use.check_id, principal)
    match = next((m for m in check.result["matches"] if m["track_id"] == str(use.track_id)), None)
    evidence = match["evidence"] if match else []
    track = None
    if _may_read_track(principal):
        track = catalogue_api.read_track(
            track_id=use.track_id, session=session, principal=principal
        )
    found = views.passages(evidence)
    return render(
        request,
        "use.html",
        use=use,
        match=match,
        check=check,
        currency=settings.currency,
        evidence=evidence,
        track=track,
        company_name=orgs.get(session, use.ai_company_id).name,
        label_name=orgs.get(session, use.label_id).name,
        timeline=views.timeline(
            evidence,
            piece_seconds=check.duration_s,
            reference_seconds=track.duration_s if track else None,
        ),
        passages=found,
        can_see_check=principal.kind != OrgKind.LABEL,
    )


# ---------------------------------------------------------------------------- checks


@router.get("/checks", response_class=HTMLResponse)
def check_list(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: UserDep,
    ai_company_id: uuid.UUID | None = None,
    cursor: Cursor = None,
    per_page: PerPage = PAGE_SIZE,
) -> HTMLResponse:
    """An AI company's checks, charges and balance (auditors: any company's)."""
    principal = gate(check_api.CheckReaderDep, user)
    page = check_api.list_checks(
        session=session,
        principal=principal,
        created_from=None,
        created_to=None,
        generation_id=None,
        ai_company_id=ai_company_id,
        limit=per_page,
        cursor=cursor,
    )
    account = None
    if principal.kind == OrgKind.AI_COMPANY:
        account = ledger_api.my_account(session=session, principal=principal, settings=settings)
    return render(
        request,
        "checks.html",
        page=page,
        account=account,
        currency=settings.currency,
        next_url=page.next_cursor and with_query(request, cursor=page.next_cursor),
    )


@router.get("/checks/{check_id}", response_class=HTMLResponse)
def check_page(
    request: Request,
    check_id: uuid.UUID,
    session: SessionDep,
    sessions: SessionsDep,
    settings: SettingsDep,
    user: UserDep,
) -> HTMLResponse:
    """A check as recorded: embedder, index watermark, terms versions, every match with its
    evidence, and (auditors, operators) the ledger transaction with its postings and hashes."""
    principal = gate(check_api.CheckReaderDep, user)
    answer = check_api.read_check(check_id=check_id, session=session, principal=principal)
    result = json.loads(bytes(answer.body))
    uses = report_api.list_uses(
        session=session,
        principal=principal,
        sessions=sessions,
        check_id=check_id,
        limit=100,
        **_no_filters("check_id", "limit"),
    )
    assert isinstance(uses, Page)
    use_of = {str(u.track_id): u for u in uses.items}
    transactions = None
    if principal.kind in (OrgKind.AUDITOR, OrgKind.OPERATOR):
        transactions = ledger_api.list_transactions(
            session=session,
            _=principal,
            created_from=None,
            created_to=None,
            kind=None,
            check_id=check_id,
            dispute_id=None,
            limit=100,
            cursor=None,
        ).items
    accounts = ledger.account_names(
        session, (p.account_id for t in transactions or () for p in t.postings)
    )
    readable = _may_read_track(principal)
    matches = []
    for m in result["matches"]:
        duration = None
        if readable:
            duration = catalogue_api.read_track(
                track_id=uuid.UUID(m["track_id"]), session=session, principal=principal
            ).duration_s
        matches.append(
            {
                "match": m,
                "use": use_of.get(m["track_id"]),
                "timeline": views.timeline(
                    m["evidence"], piece_seconds=result["duration_s"], reference_seconds=duration
                ),
            }
        )
    return render(
        request,
        "check.html",
        result=result,
        matches=matches,
        transactions=transactions,
        accounts=accounts,
        currency=result["currency"],
    )


# ---------------------------------------------------------------------------- usage, ledger


@router.get("/usage", response_class=HTMLResponse)
def usage(
    request: Request,
    session: SessionDep,
    sessions: SessionsDep,
    user: UserDep,
    clock: ClockDep,
    first: FromDay = None,
    last: ToDay = None,
    ai_company_id: Annotated[str | None, Query(max_length=36)] = None,
    label_id: Annotated[str | None, Query(max_length=36)] = None,
    catalogue_id: Annotated[str | None, Query(max_length=36)] = None,
    track_id: Annotated[str | None, Query(max_length=36)] = None,
    check_id: Annotated[str | None, Query(max_length=36)] = None,
    cursor: Cursor = None,
    per_page: PerPage = PAGE_SIZE,
) -> HTMLResponse:
    """The usage history with the API's filters (empty fields: no filter)."""
    principal = gate(report_api.UseReaderDep, user)
    filters = _use_filters(first, last, ai_company_id, label_id, catalogue_id, track_id, check_id)
    page = report_api.list_uses(
        session=session,
        principal=principal,
        sessions=sessions,
        cursor=cursor,
        limit=per_page,
        **filters,
        **_no_filters(*filters, "cursor", "limit"),
    )
    assert isinstance(page, Page)
    csv_query = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    return render(
        request,
        "usage.html",
        page=page,
        currency=request.app.state.settings.currency,
        csv_url="/console/usage.csv" + ("?" + urlencode(csv_query) if csv_query else ""),
        next_url=page.next_cursor and with_query(request, cursor=page.next_cursor),
        can_verify=principal.kind in (OrgKind.AUDITOR, OrgKind.OPERATOR),
    )


def _uuid_or_none(text: str | None, field: str) -> uuid.UUID | None:
    if not text:
        return None
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise Unprocessable(
            f"{field} must be an id (a UUID), not {text[:40]!r}",
            details=[{"field": f"query.{field}", "message": "not a UUID"}],
        ) from None


def _use_filters(
    first: str | None,
    last: str | None,
    ai_company_id: str | None,
    label_id: str | None,
    catalogue_id: str | None,
    track_id: str | None,
    check_id: str | None,
) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if first or last:
        start = _date(first, "from")
        end = _date(last, "to")
        filters["start"] = dt.datetime.combine(start, dt.time(), dt.UTC) if start else None
        filters["end"] = (
            dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC) if end else None
        )
    for name, value in (
        ("ai_company_id", ai_company_id),
        ("label_id", label_id),
        ("catalogue_id", catalogue_id),
        ("track_id", track_id),
        ("check_id", check_id),
    ):
        found = _uuid_or_none(value, name)
        if found is not None:
            filters[name] = found
    return filters


@router.get("/usage.csv")
def usage_csv(
    session: SessionDep,
    sessions: SessionsDep,
    user: UserDep,
    first: FromDay = None,
    last: ToDay = None,
    ai_company_id: Annotated[str | None, Query(max_length=36)] = None,
    label_id: Annotated[str | None, Query(max_length=36)] = None,
    catalogue_id: Annotated[str | None, Query(max_length=36)] = None,
    track_id: Annotated[str | None, Query(max_length=36)] = None,
    check_id: Annotated[str | None, Query(max_length=36)] = None,
) -> StreamingResponse:
    """The API's CSV export of the same filters (every matching row)."""
    principal = gate(report_api.UseReaderDep, user)
    filters = _use_filters(first, last, ai_company_id, label_id, catalogue_id, track_id, check_id)
    answer = report_api.list_uses(
        session=session,
        principal=principal,
        sessions=sessions,
        **filters,
        **(_no_filters(*filters, "format") | {"format": report_api.Format.CSV}),
    )
    assert isinstance(answer, StreamingResponse)
    return answer


@router.post("/ledger/verify", response_class=HTMLResponse)
def verify_chain(request: Request, session: SessionDep, user: CsrfUserDep) -> HTMLResponse:
    """Walk the hash chain (the API's verification) and show the result in the page."""
    principal = gate(ReaderDep, user)
    result = ledger_api.verify_ledger(session=session, _=principal)
    log.info("console.ledger_verified", ok=result.ok, checked=result.transactions_checked)
    return render(request, "_verification.html", result=result)


# ---------------------------------------------------------------------------- audio


@router.get("/audio/checks/{check_id}")
def check_audio(
    check_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    user: UserDep,
    clock: ClockDep,
    request: Request,
) -> FileResponse:
    return check_api.read_check_audio(
        check_id=check_id,
        session=session,
        principal=user.principal,
        blobs=request.app.state.service.blobs,
        settings=settings,
        clock=clock,
    )


@router.get("/audio/tracks/{track_id}")
def track_audio(
    track_id: uuid.UUID, session: SessionDep, user: UserDep, request: Request
) -> FileResponse:
    principal = gate(LabelOrReaderDep, user)
    return catalogue_api.read_track_audio(
        track_id=track_id,
        session=session,
        principal=principal,
        blobs=request.app.state.service.blobs,
    )


@router.get("/{rest:path}")
def not_found(rest: str, user: UserDep) -> Response:
    """Any other console address: a 404 page (after sign-in, so it says nothing to strangers)."""
    raise NotFound("page", "/console/" + rest[:200])
