"""What AI companies read before training: the export of every licensed recording a given use
is permitted on (the lookup by ISRC is in `lookup`), and who may read which preferences."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session, sessionmaker

from app.catalogues import preferences
from app.catalogues import service as catalogues
from app.catalogues import tracks as track_service
from app.catalogues.models import (
    ASSERTION_COLUMNS,
    Catalogue,
    CatalogueStatus,
    LicenseTerms,
    Preference,
    Track,
    TrainingPreferences,
)
from app.csv_export import csv_lines
from app.errors import NotFound
from app.orgs.auth import Principal
from app.orgs.models import OrgKind
from app.pagination import MAX_LIMIT, paginate


def visible_catalogue(session: Session, catalogue_id: uuid.UUID, principal: Principal) -> Catalogue:
    """Preferences are public, so AI companies read any catalogue's; labels only their own."""
    if principal.kind is OrgKind.AI_COMPANY:
        catalogue = session.get(Catalogue, catalogue_id)
        if catalogue is None:
            raise NotFound("catalogue", catalogue_id)
        return catalogue
    return catalogues.get_visible(session, catalogue_id, principal)


def visible_track(session: Session, track_id: uuid.UUID, principal: Principal) -> Track:
    if principal.kind is OrgKind.AI_COMPANY:
        track = session.get(Track, track_id)
        if track is None:
            raise NotFound("track", track_id)
        return track
    return track_service.get_visible(session, track_id, principal)


def _array(name: str, values: list[Any], item: Any) -> sa.BindParameter[Any]:
    return sa.bindparam(name, values, type_=postgresql.ARRAY(item))


Recording = dict[str, Any]  # a recording as the API shows it (`schemas.RecordingRead`)
# What a recording is read from: a Track, or these columns of it when read in bulk.
TRACK_FIELDS = (
    Track.id,
    Track.catalogue_id,
    Track.isrc,
    Track.title,
    Track.artist,
    Track.created_at,
)
TrackFields = Any  # a Track, or a row of TRACK_FIELDS


def _entries_json(effective: preferences.Effective) -> dict[str, dict[str, Any]]:
    return {
        a: {
            "use": d.entry.use.value,
            "constraints_info": d.entry.constraints_info,
            "source": d.source,
        }
        for a, d in effective.entries.items()
    }


def recordings(
    session: Session, tracks: Sequence[TrackFields], *, at: dt.datetime
) -> list[Recording]:
    """Tracks with their label, current terms and effective preferences (four queries), as
    JSON-ready dicts in the shape of `schemas.RecordingRead`: a lookup answers ten thousand
    of them, and building a model for each would cost more than the queries."""
    catalogue_ids = list({t.catalogue_id for t in tracks})
    rows = session.execute(
        sa.select(Catalogue.id, Catalogue.label_id).where(
            Catalogue.id == sa.any_(_array("catalogues", catalogue_ids, sa.Uuid()))
        )
    )
    labels = {row.id: str(row.label_id) for row in rows}
    terms = catalogues.current_terms(session, catalogue_ids)
    effective = preferences.effective(session, [(t.id, t.catalogue_id) for t in tracks])
    # What tracks of one catalogue share, worked out once per catalogue.
    of_catalogue = {
        c: {
            "catalogue_id": str(c),
            "label_id": labels[c],
            "licensed": terms[c].in_force(at),
            "terms_version": terms[c].version,
        }
        for c in catalogue_ids
    }
    # Tracks that share their effective preferences share one entries dict.
    entries: dict[int, dict[str, dict[str, Any]]] = {}
    read = []
    for t in tracks:
        mine = effective[t.id]
        if id(mine) not in entries:
            entries[id(mine)] = _entries_json(mine)
        read.append(
            {
                "track_id": str(t.id),
                **of_catalogue[t.catalogue_id],
                "isrc": t.isrc,
                "title": t.title,
                "artist": t.artist,
                "preferences_version": mine.version,
                "entries": entries[id(mine)],
            }
        )
    return read


def _latest_terms() -> Any:
    """Each catalogue's latest terms version, as a subquery."""
    return (
        sa.select(LicenseTerms)
        .order_by(LicenseTerms.catalogue_id, LicenseTerms.version.desc())
        .ext(distinct_on(LicenseTerms.catalogue_id))
        .subquery()
    )


def _latest(*, defaults: bool) -> Any:
    """The latest catalogue defaults (or track overrides), one per catalogue (or track)."""
    key = TrainingPreferences.catalogue_id if defaults else TrainingPreferences.track_id
    scope = TrainingPreferences.track_id.is_(None)
    return (
        sa.select(TrainingPreferences)
        .where(scope if defaults else ~scope)
        .order_by(key, TrainingPreferences.version.desc())
        .ext(distinct_on(key))
        .subquery()
    )


def permitted_query(
    *, assertion: str, include_constrained: bool, at: dt.datetime
) -> sa.Select[Track]:
    """Live tracks whose catalogue's terms are in force at `at` and whose effective
    preference for `assertion` permits it (unordered; the caller pages). Decided in SQL with
    the same rule as `preferences.combine`: neither the default nor the override refuses."""
    column = ASSERTION_COLUMNS[assertion]
    permitted = [Preference.ALLOWED.value]
    if include_constrained:
        permitted.append(Preference.CONSTRAINED.value)
    terms, default, override = _latest_terms(), _latest(defaults=True), _latest(defaults=False)
    allowed = sa.literal(Preference.ALLOWED.value)
    return (
        sa.select(Track)
        .join(terms, terms.c.catalogue_id == Track.catalogue_id)
        .outerjoin(default, default.c.catalogue_id == Track.catalogue_id)
        .outerjoin(override, override.c.track_id == Track.id)
        .where(
            Track.withdrawn_at.is_(None),
            terms.c.status == CatalogueStatus.ACTIVE.value,
            sa.or_(terms.c.valid_from.is_(None), terms.c.valid_from <= at),
            sa.or_(terms.c.valid_to.is_(None), terms.c.valid_to > at),
            sa.func.coalesce(default.c[column], allowed).in_(permitted),
            sa.func.coalesce(override.c[column], allowed).in_(permitted),
        )
    )


EXPORT_ORDER = (Track.created_at, Track.id)

EXPORT_CSV_COLUMNS = [
    "track_id",
    "isrc",
    "title",
    "artist",
    "catalogue_id",
    "label_id",
    "terms_version",
    "preferences_version",
    *(f"{a}{suffix}" for a in ASSERTION_COLUMNS for suffix in ("", ".constraints_info")),
]


def export_page(
    session: Session,
    stmt: sa.Select[Track],
    *,
    cursor: str | None,
    limit: int,
    at: dt.datetime,
) -> tuple[list[Recording], str | None]:
    """One page of the export, oldest recordings first (new ones join at the end)."""
    rows, next_cursor = paginate(
        session, stmt, order_by=EXPORT_ORDER, cursor=cursor, limit=limit, descending=False
    )
    return recordings(session, rows, at=at), next_cursor


def _every(
    sessions: sessionmaker[Session], stmt: sa.Select[Track], at: dt.datetime
) -> Iterator[Recording]:
    """Every permitted recording, read page by page on a session of its own (a streamed
    response outlives the request's session)."""
    cursor: str | None = None
    with sessions() as session:
        while True:
            page, cursor = export_page(session, stmt, cursor=cursor, limit=MAX_LIMIT, at=at)
            yield from page
            if cursor is None:
                return


def _csv_row(recording: Recording) -> list[Any]:
    row = [recording[c] for c in EXPORT_CSV_COLUMNS[:8]]
    for assertion in ASSERTION_COLUMNS:
        entry = recording["entries"][assertion]
        row += [entry["use"], entry["constraints_info"]]
    return row


def export_csv(
    sessions: sessionmaker[Session], stmt: sa.Select[Track], *, at: dt.datetime
) -> Iterator[str]:
    return csv_lines(EXPORT_CSV_COLUMNS, (_csv_row(r) for r in _every(sessions, stmt, at)))


def export_jsonl(
    sessions: sessionmaker[Session], stmt: sa.Select[Track], *, at: dt.datetime
) -> Iterator[str]:
    for recording in _every(sessions, stmt, at):
        yield json.dumps(recording, separators=(",", ":")) + "\n"
