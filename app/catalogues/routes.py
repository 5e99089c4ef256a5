"""HTTP endpoints for catalogues and their license terms."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from fastapi import APIRouter, status
from sqlalchemy.orm import Session

from app.catalogues import service as catalogues
from app.catalogues.models import Catalogue, LicenseTerms
from app.catalogues.schemas import CatalogueCreate, CatalogueRead, LicenseTermsIn, LicenseTermsRead
from app.db import SessionDep
from app.deps import SettingsDep
from app.errors import error_responses
from app.orgs.auth import READ_ALL, LabelDep, LabelOrReaderDep
from app.pagination import CursorQuery, LimitQuery, Page, paginate

router = APIRouter(prefix="/v1", tags=["catalogues"], responses=error_responses(401, 403))


def terms_read(terms: LicenseTerms, currency: str) -> LicenseTermsRead:
    return LicenseTermsRead.model_validate(
        {
            **{k: getattr(terms, k) for k in LicenseTermsRead.model_fields if k != "currency"},
            "currency": currency,
        }
    )


def _reads(session: Session, rows: list[Catalogue], currency: str) -> list[CatalogueRead]:
    terms = catalogues.current_terms(session, [c.id for c in rows])
    return [
        CatalogueRead(
            id=c.id,
            label_id=c.label_id,
            name=c.name,
            description=c.description,
            created_at=c.created_at,
            license=terms_read(terms[c.id], currency),
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
        default_threshold=settings.default_threshold,
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
    stmt = sa.select(Catalogue)
    if principal.kind not in READ_ALL:
        stmt = stmt.where(Catalogue.label_id == principal.org_id)
    elif label_id is not None:
        stmt = stmt.where(Catalogue.label_id == label_id)
    rows, next_cursor = paginate(
        session, stmt, order_by=[Catalogue.created_at, Catalogue.id], cursor=cursor, limit=limit
    )
    return Page(items=_reads(session, rows, settings.currency), next_cursor=next_cursor)


@router.get(
    "/catalogues/{catalogue_id}",
    response_model=CatalogueRead,
    responses=error_responses(404),
    summary="One catalogue with its current license terms",
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
    terms = catalogues.set_terms(
        session, catalogue, body, default_threshold=settings.default_threshold
    )
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
    version: int,
    session: SessionDep,
    principal: LabelOrReaderDep,
    settings: SettingsDep,
) -> LicenseTermsRead:
    catalogue = catalogues.get_visible(session, catalogue_id, principal)
    return terms_read(catalogues.terms_version(session, catalogue.id, version), settings.currency)
