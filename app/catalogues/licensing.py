"""Which tracks may match at a given time, and the license terms they are priced with."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.catalogues.models import Catalogue, Track
from app.catalogues.service import current_terms


@dataclass(frozen=True, slots=True)
class Licensed:
    """A track that may match now, with the terms in force."""

    track_id: uuid.UUID
    title: str
    artist: str
    catalogue_id: uuid.UUID
    label_id: uuid.UUID
    terms_id: uuid.UUID
    terms_version: int
    rate_per_use_micros: int
    threshold: float


def licensed_tracks(
    session: Session, track_ids: list[uuid.UUID], *, at: dt.datetime
) -> dict[uuid.UUID, Licensed]:
    """Of `track_ids`, those not withdrawn whose catalogue's current terms are in force."""
    if not track_ids:
        return {}
    rows = session.execute(
        sa.select(Track, Catalogue.label_id)
        .join(Catalogue, Catalogue.id == Track.catalogue_id)
        .where(Track.id.in_(track_ids), Track.withdrawn_at.is_(None))
    ).all()
    terms_of = current_terms(session, list({track.catalogue_id for track, _ in rows}))
    licensed: dict[uuid.UUID, Licensed] = {}
    for track, label_id in rows:
        terms = terms_of.get(track.catalogue_id)
        if terms is None or not terms.in_force(at):
            continue
        licensed[track.id] = Licensed(
            track_id=track.id,
            title=track.title,
            artist=track.artist,
            catalogue_id=track.catalogue_id,
            label_id=label_id,
            terms_id=terms.id,
            terms_version=terms.version,
            rate_per_use_micros=terms.rate_per_use_micros,
            threshold=terms.threshold,
        )
    return licensed
