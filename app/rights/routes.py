"""HTTP endpoints for training preferences, lookups and exports, TDMRep files and DDEX delivery."""

from __future__ import annotations

import uuid
import zipfile
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from app.catalogues import preferences
from app.catalogues import service as catalogues
from app.catalogues.models import TrainingPreferences
from app.db import SessionDep, utcnow
from app.errors import NotFound, Unprocessable, error_responses
from app.orgs.auth import LabelDep, Principal, PrincipalDep, require
from app.orgs.models import OrgKind
from app.pagination import CursorQuery, LimitQuery, Page, paginate
from app.rights import ddex, delivery, lookup, tdmrep
from app.rights import service as rights
from app.rights.schemas import (
    Assertion,
    DeliveredResource,
    DeliveryResult,
    EffectivePreferencesRead,
    EntryOut,
    ExportFormat,
    LookupIn,
    LookupResult,
    PreferencesIn,
    PreferencesVersionRead,
    RecordingRead,
    TdmRule,
    decided_entries,
)
from app.state import BlobsDep, SessionsDep, SettingsDep

router = APIRouter(prefix="/v1", tags=["rights"], responses=error_responses(401, 403))
# Reservations are public: TDM agents read them without an account.
public_router = APIRouter(tags=["rights"])

TrainingReaderDep = Annotated[
    Principal, Depends(require(OrgKind.AI_COMPANY, OrgKind.AUDITOR, OrgKind.OPERATOR))
]


def version_read(row: TrainingPreferences) -> PreferencesVersionRead:
    return PreferencesVersionRead(
        catalogue_id=row.catalogue_id,
        track_id=row.track_id,
        version=row.version,
        created_at=row.created_at,
        entries={
            a: EntryOut(use=e.use, constraints_info=e.constraints_info)
            for a, e in preferences.entries_of(row).items()
        },
    )


@router.put(
    "/catalogues/{catalogue_id}/preferences",
    response_model=PreferencesVersionRead,
    responses=error_responses(404, 422),
    summary="Set the catalogue's default training preferences: adds a version (label)",
)
def put_catalogue_preferences(
    catalogue_id: uuid.UUID, body: PreferencesIn, session: SessionDep, principal: LabelDep
) -> PreferencesVersionRead:
    """Uses left out are `allowed`. Each track takes the more restrictive of this default and
    its own override, use by use."""
    # The row lock serialises changes so versions never collide.
    catalogue = catalogues.get_owned(session, catalogue_id, principal.org_id, lock=True)
    return version_read(preferences.set_default(session, catalogue, body.entries_by_label()))


@router.get(
    "/catalogues/{catalogue_id}/preferences",
    response_model=EffectivePreferencesRead,
    responses=error_responses(404),
    summary="The catalogue's current default training preferences",
)
def read_catalogue_preferences(
    catalogue_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> EffectivePreferencesRead:
    catalogue = rights.visible_catalogue(session, catalogue_id, principal)
    effective = preferences.catalogue_default(session, catalogue.id)
    return EffectivePreferencesRead(
        catalogue_id=catalogue.id,
        track_id=None,
        preferences_version=effective.version,
        entries=decided_entries(effective),
    )


@router.get(
    "/catalogues/{catalogue_id}/preferences/versions",
    response_model=Page[PreferencesVersionRead],
    responses=error_responses(404, 422),
    summary="Every version of the catalogue's preferences (defaults and overrides), oldest first",
)
def list_preference_versions(
    catalogue_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    track_id: uuid.UUID | None = None,
    defaults_only: bool = False,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[PreferencesVersionRead]:
    catalogue = rights.visible_catalogue(session, catalogue_id, principal)
    stmt = preferences.versions_query(catalogue.id, track_id=track_id, defaults_only=defaults_only)
    rows, next_cursor = paginate(
        session,
        stmt,
        order_by=[TrainingPreferences.version],
        cursor=cursor,
        limit=limit,
        descending=False,
    )
    return Page(items=[version_read(r) for r in rows], next_cursor=next_cursor)


@router.put(
    "/tracks/{track_id}/preferences",
    response_model=PreferencesVersionRead,
    responses=error_responses(404, 422),
    summary="Override one track's training preferences: adds a version (label)",
)
def put_track_preferences(
    track_id: uuid.UUID, body: PreferencesIn, session: SessionDep, principal: LabelDep
) -> PreferencesVersionRead:
    """Uses left out take the catalogue default; where both are set the more restrictive
    wins, so an override can close a track but not open it."""
    track = rights.visible_track(session, track_id, principal)
    catalogue = catalogues.get_owned(session, track.catalogue_id, principal.org_id, lock=True)
    row = preferences.set_override(session, catalogue, track.id, body.entries_by_label())
    return version_read(row)


@router.get(
    "/tracks/{track_id}/preferences",
    response_model=EffectivePreferencesRead,
    responses=error_responses(404),
    summary="A track's effective training preferences and what decided each",
)
def read_track_preferences(
    track_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> EffectivePreferencesRead:
    track = rights.visible_track(session, track_id, principal)
    effective = preferences.effective(session, [(track.id, track.catalogue_id)])[track.id]
    return EffectivePreferencesRead(
        catalogue_id=track.catalogue_id,
        track_id=track.id,
        preferences_version=effective.version,
        entries=decided_entries(effective),
    )


@router.post(
    "/preferences/lookup",
    response_model=LookupResult,
    responses=error_responses(422),
    summary="Effective preferences and terms version of up to 10,000 ISRCs or track ids",
)
def lookup_preferences(
    body: LookupIn, session: SessionDep, principal: TrainingReaderDep
) -> Response:
    """For AI companies before training. Withdrawn tracks are not found; unknown ISRCs and
    ids are listed in `not_found`, not refused."""
    found = lookup.lookup(session, isrcs=body.isrcs, track_ids=body.track_ids, at=utcnow())
    # Built as JSON by the database: ten thousand items through the model would cost more
    # than finding them (the model documents the shape; the tests hold the two together).
    return Response(found.json(), media_type="application/json")


@router.get(
    "/preferences/export",
    response_model=Page[RecordingRead],
    responses=error_responses(422)
    | {200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
    summary="Every licensed recording a use is permitted on (paged JSON, or CSV / JSONL)",
)
def export_permitted(
    session: SessionDep,
    principal: TrainingReaderDep,
    sessions: SessionsDep,
    use: Annotated[
        Assertion, Query(description="The use to train for.")
    ] = Assertion.AI_GENERATIVE_TRAINING,
    include_constrained: Annotated[
        bool,
        Query(
            description="Also recordings where the use is `constrained` (permitted on the "
            "terms of the policy each row names). CAWG reads `constrained` without further "
            "information as `notAllowed`, hence off by default."
        ),
    ] = False,
    format: ExportFormat = ExportFormat.JSON,
    limit: LimitQuery = 500,
    cursor: CursorQuery = None,
) -> JSONResponse | StreamingResponse:
    """Live tracks of catalogues whose license terms are in force, oldest first, whose
    effective preference for `use` permits it. `format=csv` and `format=jsonl` stream every
    row."""
    at = utcnow()
    stmt = rights.permitted_query(
        assertion=use.value, include_constrained=include_constrained, at=at
    )
    if format is ExportFormat.CSV:
        return StreamingResponse(
            rights.export_csv(sessions, stmt, at=at),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="permitted-recordings.csv"'},
        )
    if format is ExportFormat.JSONL:
        return StreamingResponse(
            rights.export_jsonl(sessions, stmt, at=at), media_type="application/x-ndjson"
        )
    items, next_cursor = rights.export_page(session, stmt, cursor=cursor, limit=limit, at=at)
    return JSONResponse({"items": items, "next_cursor": next_cursor})


@router.post(
    "/catalogues/{catalogue_id}/ddex",
    response_model=DeliveryResult,
    responses=error_responses(404, 413, 422),
    summary="Import a DDEX ERN 4.x delivery (a zip of the message and its files) (label)",
)
def import_ddex(
    catalogue_id: uuid.UUID,
    package: Annotated[
        UploadFile,
        File(
            description="A zip holding one NewReleaseMessage (.xml) and the audio files it "
            "refers to, at their paths relative to the message."
        ),
    ],
    session: SessionDep,
    principal: LabelDep,
    settings: SettingsDep,
    blobs: BlobsDep,
) -> DeliveryResult:
    """Tracks are matched by ISRC within the catalogue and created, updated or replaced; a
    message with an invalid SoundRecording is refused whole (422, each resource and field
    named); a recording whose audio cannot be used fails alone. Re-sending changes nothing."""
    catalogue = catalogues.get_owned(session, catalogue_id, principal.org_id, lock=True)
    try:
        archive = zipfile.ZipFile(package.file)
    except zipfile.BadZipFile:
        raise Unprocessable(
            "the package is not a zip file",
            details=[{"field": "body.package", "message": "not a zip file"}],
        ) from None
    with archive:
        data, files = delivery.open_package(archive)
        message = ddex.parse(data)
        outcomes = delivery.import_message(
            session, catalogue, message, files, blobs=blobs, settings=settings
        )
    return DeliveryResult(
        catalogue_id=catalogue.id,
        message_id=message.message_id,
        counts=delivery.counts(outcomes),
        resources=[
            DeliveredResource(
                resource_reference=o.reference,
                isrc=o.isrc,
                status=o.status.value,
                track_id=uuid.UUID(o.track_id) if o.track_id else None,
                reason=o.reason,
            )
            for o in outcomes
        ],
    )


@public_router.get(
    "/.well-known/tdmrep.json",
    response_model=list[TdmRule],
    response_model_exclude_none=True,
    summary="W3C TDMRep reservations for every catalogue (public)",
)
def well_known_tdmrep(session: SessionDep) -> list[TdmRule]:
    return tdmrep.rules(session)


@public_router.get(
    "/v1/catalogues/{catalogue_id}/tdmrep.json",
    response_model=list[TdmRule],
    response_model_exclude_none=True,
    responses=error_responses(404),
    summary="W3C TDMRep reservations for one catalogue (public)",
)
def catalogue_tdmrep(catalogue_id: uuid.UUID, session: SessionDep) -> list[TdmRule]:
    found = tdmrep.rules(session, [catalogue_id])
    if not found:
        raise NotFound("catalogue", catalogue_id)
    return found
