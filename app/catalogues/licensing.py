"""Which tracks may match at a given time, the license terms they are priced with, whether
their training preferences permitted the use, and the spans of them their labels excluded
from matching."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.catalogues import preferences
from app.catalogues.models import Catalogue, Preference, Track, TrackExclusion
from app.catalogues.service import current_terms

Span = tuple[float, float]


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
    # (start_s, end_s) spans of the track that must not match (see TrackExclusion).
    excluded: tuple[Span, ...] = ()
    # The track's effective `cawg.ai_generative_training` (see `preferences.GOVERNS_CHECKS`).
    preference: Preference = Preference.ALLOWED
    preference_policy: str | None = None
    preferences_version: int | None = None
    penalty_rate_per_use_micros: int | None = None

    @property
    def refused(self) -> bool:
        """The label's preferences did not permit this track to be used for generation."""
        return self.preference is Preference.NOT_ALLOWED

    @property
    def applied_rate_micros(self) -> int:
        """What one full use costs: the penalty rate for a refused track, when one is set."""
        if self.refused and self.penalty_rate_per_use_micros is not None:
            return self.penalty_rate_per_use_micros
        return self.rate_per_use_micros


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
    excluded = exclusions_of(session, [track.id for track, _ in rows])
    effective = preferences.effective(session, [(t.id, t.catalogue_id) for t, _ in rows])
    licensed: dict[uuid.UUID, Licensed] = {}
    for track, label_id in rows:
        terms = terms_of.get(track.catalogue_id)
        if terms is None or not terms.in_force(at):
            continue
        governing = effective[track.id].entries[preferences.GOVERNS_CHECKS].entry
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
            excluded=tuple(excluded.get(track.id, ())),
            preference=governing.use,
            preference_policy=governing.constraints_info,
            preferences_version=effective[track.id].version,
            penalty_rate_per_use_micros=terms.penalty_rate_per_use_micros,
        )
    return licensed


def exclusions_of(session: Session, track_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Span]]:
    """The excluded spans of each track (tracks without any are left out)."""
    found: dict[uuid.UUID, list[Span]] = {}
    if not track_ids:
        return found
    rows = session.execute(
        sa.select(TrackExclusion.track_id, TrackExclusion.start_s, TrackExclusion.end_s)
        .where(TrackExclusion.track_id.in_(track_ids))
        .order_by(TrackExclusion.start_s)
    )
    for track_id, start, end in rows:
        found.setdefault(track_id, []).append((start, end))
    return found


def excluded_hits(
    tracks: npt.NDArray[np.int64],
    reference_middles: npt.NDArray[np.floating],
    spans: Mapping[int, Sequence[Span]],
) -> npt.NDArray[np.bool_]:
    """Which search hits fall on an excluded span of their track.

    tracks : np.ndarray [shape=(m, k)], the track number of each hit
    reference_middles : np.ndarray [shape=(m, k)], the middle of each hit's reference window (s)
    spans : track number -> its excluded (start_s, end_s) spans, bounds included
    Returns a boolean array [shape=(m, k)].
    """
    if tracks.shape != reference_middles.shape:
        raise ValueError(f"tracks {tracks.shape} and middles {reference_middles.shape} differ")
    hit = np.zeros(tracks.shape, dtype=bool)
    for track, track_spans in spans.items():
        on_track = tracks == track
        for start, end in track_spans:
            hit |= on_track & (reference_middles >= start) & (reference_middles <= end)
    return hit
