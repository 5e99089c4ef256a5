"""Public reservations in the W3C TDM Reservation Protocol (TDMRep) file format.

A `tdmrep.json` file is an array of rules `{"location", "tdm-reservation", "tdm-policy"}`; an
agent uses the first rule whose location matches, so the more specific rules come first. The
recordings are named by their paths on this server: a catalogue by `/v1/catalogues/{id}`, a
track by `/v1/tracks/{id}`. A track gets a rule of its own only when its declaration differs
from its catalogue's; otherwise its catalogue's rule states it.

From CAWG preferences to TDMRep: text and data mining covers mining and training, so the
reservation follows `cawg.data_mining`, `cawg.ai_training` and `cawg.ai_generative_training`
together (`cawg.ai_inference` is not mining and has no say). All allowed: `tdm-reservation`
0. Any `notAllowed`: 1, without a policy (rights reserved). Otherwise some are `constrained`:
1 with the first one's policy as `tdm-policy` (reserved, a license is available there).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from app.catalogues import preferences
from app.catalogues.models import Catalogue, Preference, Track, TrainingPreferences
from app.rights.schemas import TdmRule

TDM_ASSERTIONS = ("cawg.data_mining", "cawg.ai_generative_training", "cawg.ai_training")


def declaration(effective: preferences.Effective) -> tuple[int, str | None]:
    """(`tdm-reservation`, `tdm-policy`) for effective preferences."""
    entries = [effective.entries[a].entry for a in TDM_ASSERTIONS]
    if any(e.use is Preference.NOT_ALLOWED for e in entries):
        return 1, None
    for entry in entries:
        if entry.use is Preference.CONSTRAINED:
            return 1, entry.constraints_info
    return 0, None


def _rule(location: str, declared: tuple[int, str | None]) -> TdmRule:
    reservation, policy = declared
    return TdmRule(location=location, tdm_reservation=reservation, tdm_policy=policy)


def rules(session: Session, catalogue_ids: Sequence[uuid.UUID] | None = None) -> list[TdmRule]:
    """The rules for the given catalogues (all when None): tracks that differ first, then
    one rule per catalogue, each group oldest first."""
    stmt = sa.select(Catalogue.id).order_by(Catalogue.created_at, Catalogue.id)
    if catalogue_ids is not None:
        stmt = stmt.where(Catalogue.id.in_(catalogue_ids))
    ids = list(session.scalars(stmt))
    defaults = preferences.latest_defaults(session, ids)
    overridden = (
        list(
            session.scalars(
                sa.select(TrainingPreferences)
                .join(Track, Track.id == TrainingPreferences.track_id)
                .where(TrainingPreferences.catalogue_id.in_(ids), Track.withdrawn_at.is_(None))
                .order_by(TrainingPreferences.track_id, TrainingPreferences.version.desc())
                .ext(distinct_on(TrainingPreferences.track_id))
            )
        )
        if ids
        else []
    )
    catalogue_rules = []
    declared_of = {}
    for catalogue_id in ids:
        declared_of[catalogue_id] = declaration(
            preferences.combine(defaults.get(catalogue_id), None)
        )
        catalogue_rules.append(_rule(f"/v1/catalogues/{catalogue_id}", declared_of[catalogue_id]))
    track_rules = []
    for override in sorted(overridden, key=lambda o: (o.version, str(o.track_id))):
        declared = declaration(preferences.combine(defaults.get(override.catalogue_id), override))
        if declared != declared_of[override.catalogue_id]:
            track_rules.append(_rule(f"/v1/tracks/{override.track_id}", declared))
    return track_rules + catalogue_rules
