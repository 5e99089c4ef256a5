"""HTTP endpoints for catalogues and their license terms."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, status
from fastapi.responses import FileResponse

from app.audio.decode import probe
from app.blobs import AUDIO_TYPES
from app.catalogues import service as catalogues
from app.catalogues import tracks
from app.catalogues.models import Catalogue, LicenseTerms, Track, TrackStatus
from app.catalogues.schemas import (
    CatalogueCreate,
    CatalogueRead,
    LicenseTermsIn,
    LicenseTermsRead,
    TrackRead,
    TrackUpload,
)
from app.db import SessionDep
from app.errors import EVERY_ROUTE, NotFound, error_responses
from app.orgs.auth import READ_ALL, LabelDep, LabelOrReaderDep
from app.pagination import CursorQuery, LimitQuery, Page, paginate
from app.state import BlobsDep, SettingsDep
from app.validation import INT32_MAX, SingleLine

router = APIRouter(prefix="/v1", tags=["catalogues"], responses=error_responses(*EVERY_ROUTE))


def terms_read(terms: LicenseTerms, currency: str) -> LicenseTermsRead:
    return LicenseTermsRead.model_validate(
        {
            **{k: getattr(terms, k) for k in LicenseTermsRead.model_fields if k != "currency"},
            "currency": currency,
        }
    )


def _reads(session: SessionDep, rows: list[Catalogue], currency: str) -> list[CatalogueRead]:
    ids = [c.id for c in rows]
    terms = catalogues.current_terms(session, ids)
    counts = tracks.counts_by_status(session, ids)
    return [
        CatalogueRead(
            id=c.id,
            label_id=c.label_id,
            name=c.name,
            description=c.description,
            created_at=c.created_at,
            license=terms_read(terms[c.id], currency),
            track_counts=counts[c.id],
        )
        for c in rows
    ]


@router.post(
    "/catalogues",
    status_code=status.HTTP_201_CREATED,
    response_model=CatalogueRead,
    responses=error_responses(422),
    summary="Register a licensed catalogue with its license terms (label)",
)
def create_catalogue(
    body: CatalogueCreate, session: SessionDep, principal: LabelDep, settings: SettingsDep
) -> CatalogueRead:
    catalogue, _ = catalogues.create(
        session,
        label_id=principal.org_id,
        name=body.name,
        description=body.description,
        terms=body.license,
        default_threshold=settings.use_threshold,
    )
    return _reads(session, [catalogue], settings.currency)[0]


@router.get(
    "/catalogues",
    response_model=Page[CatalogueRead],
    responses=error_responses(422),
    summary="List catalogues (label: its own; operator, auditor: all, or one label's)",
)
def list_catalogues(
    session: SessionDep,
    principal: LabelOrReaderDep,
    settings: SettingsDep,
    label_id: uuid.UUID | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[CatalogueRead]:
    owner = label_id if principal.kind in READ_ALL else principal.org_id
    stmt = catalogues.catalogues_query(label_id=owner)
    rows, next_cursor = paginate(
        session, stmt, order_by=[Catalogue.created_at, Catalogue.id], cursor=cursor, limit=limit
    )
    return Page(items=_reads(session, rows, settings.currency), next_cursor=next_cursor)


@router.get(
    "/catalogues/{catalogue_id}",
    response_model=CatalogueRead,
    responses=error_responses(404),
    summary="One catalogue with its current license terms and track counts per status",
)
def read_catalogue(
    catalogue_id: uuid.UUID,
    session: SessionDep,
    principal: LabelOrReaderDep,
    settings: SettingsDep,
) -> CatalogueRead:
    catalogue = catalogues.get_visible(session, catalogue_id, principal)
    return _reads(session, [catalogue], settings.currency)[0]


@router.put(
    "/catalogues/{catalogue_id}/license",
    response_model=LicenseTermsRead,
    responses=error_responses(404, 422),
    summary="Change the license terms: adds a new version, older ones stay readable",
)
def put_license(
    catalogue_id: uuid.UUID,
    body: LicenseTermsIn,
    session: SessionDep,
    principal: LabelDep,
    settings: SettingsDep,
) -> LicenseTermsRead:
    # The row lock serialises concurrent changes so versions never collide.
    catalogue = catalogues.get_owned(session, catalogue_id, principal.org_id, lock=True)
    terms = catalogues.set_terms(session, catalogue, body, default_threshold=settings.use_threshold)
    return terms_read(terms, settings.currency)


@router.get(
    "/catalogues/{catalogue_id}/license/versions",
    response_model=list[LicenseTermsRead],
    responses=error_responses(404),
    summary="Every version of the catalogue's license terms, oldest first",
)
def list_license_versions(
    catalogue_id: uuid.UUID,
    session: SessionDep,
    principal: LabelOrReaderDep,
    settings: SettingsDep,
) -> list[LicenseTermsRead]:
    catalogue = catalogues.get_visible(session, catalogue_id, principal)
    return [
        terms_read(t, settings.currency) for t in catalogues.terms_versions(session, catalogue.id)
    ]


@router.get(
    "/catalogues/{catalogue_id}/license/versions/{version}",
    response_model=LicenseTermsRead,
    responses=error_responses(404),
    summary="One version of the catalogue's license terms",
)
def read_license_version(
    catalogue_id: uuid.UUID,
    version: Annotated[int, Path(ge=1, le=INT32_MAX)],
    session: SessionDep,
    principal: LabelOrReaderDep,
    settings: SettingsDep,
) -> LicenseTermsRead:
    catalogue = catalogues.get_visible(session, catalogue_id, principal)
    return terms_read(catalogues.terms_version(session, catalogue.id, version), settings.currency)


@router.post(
    "/catalogues/{catalogue_id}/tracks",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TrackRead,
    responses=error_responses(404, 409, 413, 422),
    summary="Upload a track (WAV, FLAC, OGG/Vorbis or MP3); it is indexed in the background",
)
def upload_track(
    catalogue_id: uuid.UUID,
    form: Annotated[TrackUpload, Form(media_type="multipart/form-data")],
    session: SessionDep,
    principal: LabelDep,
    settings: SettingsDep,
    blobs: BlobsDep,
) -> TrackRead:
    """The track starts `pending`; poll it (or the catalogue's counts) until `indexed` or
    `failed`. Problems visible in the file's header are refused here with 422; problems
    only decoding shows (corrupt stream, silence) mark the track `failed` with a reason."""
    catalogue = catalogues.get_owned(session, catalogue_id, principal.org_id)
    with blobs.stage(form.file.file, max_bytes=settings.max_upload_bytes) as staged:
        existing = tracks.find_active_by_hash(session, catalogue.id, staged.sha256)
        if existing is not None:
            raise tracks.duplicate_error(existing)
        info = probe(
            staged.path,
            min_seconds=settings.min_audio_seconds,
            max_seconds=settings.max_audio_seconds,
        )
        blobs.commit(staged)
    track = tracks.register(session, catalogue, form, staged, info)
    return TrackRead.model_validate(track)


@router.get(
    "/catalogues/{catalogue_id}/tracks",
    response_model=Page[TrackRead],
    responses=error_responses(404, 422),
    summary="A catalogue's tracks, newest first",
)
def list_tracks(
    catalogue_id: uuid.UUID,
    session: SessionDep,
    principal: LabelOrReaderDep,
    track_status: Annotated[TrackStatus | None, Query(alias="status")] = None,
    withdrawn: bool | None = None,
    audio_sha256: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
    external_id: Annotated[SingleLine | None, Query(max_length=200)] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[TrackRead]:
    catalogue = catalogues.get_visible(session, catalogue_id, principal)
    stmt = tracks.tracks_query(
        catalogue.id,
        tracks.TrackFilter(
            status=track_status,
            withdrawn=withdrawn,
            audio_sha256=audio_sha256,
            external_id=external_id,
        ),
    )
    rows, next_cursor = paginate(
        session, stmt, order_by=[Track.created_at, Track.id], cursor=cursor, limit=limit
    )
    return Page(items=[TrackRead.model_validate(t) for t in rows], next_cursor=next_cursor)


@router.get(
    "/tracks/{track_id}",
    response_model=TrackRead,
    responses=error_responses(404),
    summary="One track, with its ingestion status",
)
def read_track(track_id: uuid.UUID, session: SessionDep, principal: LabelOrReaderDep) -> TrackRead:
    return TrackRead.model_validate(tracks.get_visible(session, track_id, principal))


@router.get(
    "/tracks/{track_id}/audio",
    response_class=FileResponse,
    responses=error_responses(404)
    | {
        200: {"content": {"audio/*": {}}, "description": "The original file, whole"},
        206: {"content": {"audio/*": {}}, "description": "The requested byte range"},
    },
    summary="The track's original audio (its label, auditors); HTTP range requests",
)
def read_track_audio(
    track_id: uuid.UUID, session: SessionDep, principal: LabelOrReaderDep, blobs: BlobsDep
) -> FileResponse:
    track = tracks.get_visible(session, track_id, principal)
    path = blobs.path(track.audio_sha256)
    if not path.is_file():
        raise NotFound("track audio", track_id)
    return FileResponse(
        path,
        media_type=AUDIO_TYPES.get(track.audio_format, "application/octet-stream"),
        headers={
            "Content-Disposition": f'inline; filename="track-{track.id}.{track.audio_format}"',
            "Cache-Control": "private, max-age=3600",
        },
    )


@router.delete(
    "/tracks/{track_id}",
    response_model=TrackRead,
    responses=error_responses(404),
    summary="Withdraw a track: it stops matching at once; its history stays",
)
def withdraw_track(track_id: uuid.UUID, session: SessionDep, principal: LabelDep) -> TrackRead:
    track = tracks.get_visible(session, track_id, principal)
    return TrackRead.model_validate(tracks.withdraw(session, track))
