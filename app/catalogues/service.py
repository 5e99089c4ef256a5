"""Catalogues and their license terms."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.catalogues.models import Catalogue, LicenseTerms
from app.catalogues.schemas import LicenseTermsIn
from app.errors import NotFound
from app.orgs.auth import Principal


def create(
    session: Session,
    *,
    label_id: uuid.UUID,
    name: str,
    description: str,
    terms: LicenseTermsIn,
    default_threshold: float,
) -> tuple[Catalogue, LicenseTerms]:
    catalogue = Catalogue(label_id=label_id, name=name, description=description)
    session.add(catalogue)
    session.flush()
    return catalogue, _add_terms(session, catalogue, terms, 1, default_threshold)


def catalogues_query(*, label_id: uuid.UUID | None) -> sa.Select[Catalogue]:
    """Catalogues, all or one label's (unordered; the caller pages)."""
    stmt = sa.select(Catalogue)
    if label_id is not None:
        stmt = stmt.where(Catalogue.label_id == label_id)
    return stmt


def get_visible(session: Session, catalogue_id: uuid.UUID, principal: Principal) -> Catalogue:
    """The catalogue if the caller owns it or may read every tenant's; else NotFound."""
    catalogue = session.get(Catalogue, catalogue_id)
    if catalogue is None:
        raise NotFound("catalogue", catalogue_id)
    principal.owns_or_reads_all(catalogue.label_id, "catalogue", catalogue_id)
    return catalogue


def get_owned(
    session: Session, catalogue_id: uuid.UUID, label_id: uuid.UUID, *, lock: bool = False
) -> Catalogue:
    """The catalogue if `label_id` owns it; else NotFound (other tenants' ids do not leak)."""
    stmt = sa.select(Catalogue).where(Catalogue.id == catalogue_id)
    if lock:
        stmt = stmt.with_for_update()
    catalogue = session.scalars(stmt).one_or_none()
    if catalogue is None or catalogue.label_id != label_id:
        raise NotFound("catalogue", catalogue_id)
    return catalogue


def set_terms(
    session: Session, catalogue: Catalogue, terms: LicenseTermsIn, *, default_threshold: float
) -> LicenseTerms:
    """Add a new version of the terms; older versions stay as they were."""
    latest = session.scalar(
        sa.select(sa.func.max(LicenseTerms.version)).where(
            LicenseTerms.catalogue_id == catalogue.id
        )
    )
    return _add_terms(session, catalogue, terms, (latest or 0) + 1, default_threshold)


def _add_terms(
    session: Session,
    catalogue: Catalogue,
    terms: LicenseTermsIn,
    version: int,
    default_threshold: float,
) -> LicenseTerms:
    row = LicenseTerms(
        catalogue_id=catalogue.id,
        version=version,
        rate_per_use_micros=terms.rate_per_use_micros,
        penalty_rate_per_use_micros=terms.penalty_rate_per_use_micros,
        threshold=default_threshold if terms.threshold is None else terms.threshold,
        valid_from=terms.valid_from,
        valid_to=terms.valid_to,
        status=terms.status.value,
    )
    session.add(row)
    session.flush()
    return row


def current_terms(
    session: Session, catalogue_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, LicenseTerms]:
    """The latest terms version of each catalogue."""
    if not catalogue_ids:
        return {}
    latest = (
        sa.select(LicenseTerms.catalogue_id, sa.func.max(LicenseTerms.version).label("version"))
        .where(LicenseTerms.catalogue_id.in_(catalogue_ids))
        .group_by(LicenseTerms.catalogue_id)
        .subquery()
    )
    stmt = sa.select(LicenseTerms).join(
        latest,
        (LicenseTerms.catalogue_id == latest.c.catalogue_id)
        & (LicenseTerms.version == latest.c.version),
    )
    return {t.catalogue_id: t for t in session.scalars(stmt)}


def terms_versions(session: Session, catalogue_id: uuid.UUID) -> list[LicenseTerms]:
    stmt = (
        sa.select(LicenseTerms)
        .where(LicenseTerms.catalogue_id == catalogue_id)
        .order_by(LicenseTerms.version)
    )
    return list(session.scalars(stmt))


def terms_version(session: Session, catalogue_id: uuid.UUID, version: int) -> LicenseTerms:
    terms = session.scalars(
        sa.select(LicenseTerms).where(
            LicenseTerms.catalogue_id == catalogue_id, LicenseTerms.version == version
        )
    ).one_or_none()
    if terms is None:
        raise NotFound("license terms version", version)
    return terms
