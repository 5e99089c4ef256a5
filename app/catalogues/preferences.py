"""Training preferences: what a label lets AI companies do with its recordings.

The vocabulary is the CAWG training-and-data-mining assertion: four uses
(`cawg.data_mining`, `cawg.ai_training`, `cawg.ai_generative_training`, `cawg.ai_inference`),
each `allowed`, `constrained` (permission on the terms of a policy, named by URL) or
`notAllowed`.

A catalogue has a default and each track may override it. For every use the most restrictive
of the two wins, so an override tightens a track and never loosens it: a label that wants to
open a few tracks of a closed catalogue opens the default and closes the others. A use the
override leaves unset takes the default; a catalogue that never set preferences allows every
use (its license terms alone govern). Like license terms, preferences are versioned: a change
appends a version, numbered per catalogue, and no version is ever edited, so what was in force
for a past use can always be read back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from app.catalogues.models import ASSERTION_COLUMNS, Catalogue, Preference, TrainingPreferences

ASSERTIONS = tuple(ASSERTION_COLUMNS)
# A check sees generated output: what it can show is that a generative model learned from the
# track, so this assertion decides whether a use was permitted.
GOVERNS_CHECKS = "cawg.ai_generative_training"

RESTRICTIVENESS = {Preference.ALLOWED: 0, Preference.CONSTRAINED: 1, Preference.NOT_ALLOWED: 2}


@dataclass(frozen=True, slots=True)
class Entry:
    """One use's value, with its policy when `constrained`."""

    use: Preference
    constraints_info: str | None = None

    def __post_init__(self) -> None:
        if (self.use is Preference.CONSTRAINED) != (self.constraints_info is not None):
            raise ValueError(f"a policy goes with `constrained` and only with it: {self}")


@dataclass(frozen=True, slots=True)
class Decided:
    """A use's effective value and where it came from: `catalogue`, `track`, or `unset`."""

    entry: Entry
    source: str


UNSET = Decided(Entry(Preference.ALLOWED), "unset")


@dataclass(frozen=True, slots=True)
class Effective:
    """A track's effective preferences, and the version that last changed them (None when
    neither its catalogue nor the track ever set any)."""

    entries: Mapping[str, Decided]
    version: int | None

    def use(self, assertion: str) -> Preference:
        return self.entries[assertion].entry.use


NOTHING_SET = Effective(dict.fromkeys(ASSERTIONS, UNSET), None)

# A stored version: the ORM object, or its row when read in bulk (ten thousand ORM objects
# cost more to build than the query that finds them).
Stored = TrainingPreferences | sa.Row[Any]
COLUMNS = tuple(TrainingPreferences.__table__.columns)


def entries_of(row: Stored) -> dict[str, Entry]:
    """The uses a stored version sets (an override may leave some unset)."""
    entries = {}
    for assertion, column in ASSERTION_COLUMNS.items():
        value = getattr(row, column)
        if value is not None:
            entries[assertion] = Entry(Preference(value), getattr(row, f"{column}_policy"))
    return entries


def combine(default: Stored | None, override: Stored | None) -> Effective:
    """The most restrictive of the catalogue default and the track's override, per use; on a
    tie the track's (more specific) policy is the one reported."""
    if default is None and override is None:
        return NOTHING_SET
    layers = [
        (entries_of(row), source)
        for row, source in ((default, "catalogue"), (override, "track"))
        if row is not None
    ]
    decided = {}
    for assertion in ASSERTIONS:
        best = UNSET
        for entries, source in layers:
            entry = entries.get(assertion)
            if entry is not None and (
                best is UNSET or RESTRICTIVENESS[entry.use] >= RESTRICTIVENESS[best.entry.use]
            ):
                best = Decided(entry, source)
        decided[assertion] = best
    version = max(row.version for row in (default, override) if row is not None)
    return Effective(decided, version)


def _array(values: list[uuid.UUID]) -> sa.BindParameter[Any]:
    """One array parameter: ten thousand ids stay one bind value."""
    return sa.bindparam("ids", values, type_=postgresql.ARRAY(sa.Uuid()))


def latest_defaults(
    session: Session, catalogue_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Stored]:
    ids = list(set(catalogue_ids))
    if not ids:
        return {}
    stmt = (
        sa.select(*COLUMNS)
        .where(
            TrainingPreferences.track_id.is_(None),
            TrainingPreferences.catalogue_id == sa.any_(_array(ids)),
        )
        .order_by(TrainingPreferences.catalogue_id, TrainingPreferences.version.desc())
        .ext(distinct_on(TrainingPreferences.catalogue_id))
    )
    return {row.catalogue_id: row for row in session.connection().execute(stmt)}


def latest_overrides(session: Session, track_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Stored]:
    ids = list(set(track_ids))
    if not ids:
        return {}
    stmt = (
        sa.select(*COLUMNS)
        .where(TrainingPreferences.track_id == sa.any_(_array(ids)))
        .order_by(TrainingPreferences.track_id, TrainingPreferences.version.desc())
        .ext(distinct_on(TrainingPreferences.track_id))
    )
    return {row.track_id: row for row in session.connection().execute(stmt)}


def effective(
    session: Session, tracks: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> dict[uuid.UUID, Effective]:
    """Effective preferences of `(track_id, catalogue_id)` pairs, in two queries."""
    defaults = latest_defaults(session, (c for _, c in tracks))
    overrides = latest_overrides(session, (t for t, _ in tracks))
    # Tracks without an override share their catalogue's result: combine each pair once.
    combined: dict[tuple[uuid.UUID | None, uuid.UUID | None], Effective] = {}
    result = {}
    for track_id, catalogue_id in tracks:
        default, override = defaults.get(catalogue_id), overrides.get(track_id)
        key = (default.id if default else None, override.id if override else None)
        if key not in combined:
            combined[key] = combine(default, override)
        result[track_id] = combined[key]
    return result


def catalogue_default(session: Session, catalogue_id: uuid.UUID) -> Effective:
    """What a track of this catalogue without an override gets."""
    return combine(latest_defaults(session, [catalogue_id]).get(catalogue_id), None)


def set_default(
    session: Session, catalogue: Catalogue, entries: Mapping[str, Entry]
) -> TrainingPreferences:
    """Append a version of the catalogue default; uses not given are `allowed`. The caller
    holds the catalogue's row lock, so versions never collide."""
    complete = {a: entries.get(a, Entry(Preference.ALLOWED)) for a in ASSERTIONS}
    return _append(session, catalogue, None, complete)


def set_override(
    session: Session, catalogue: Catalogue, track_id: uuid.UUID, entries: Mapping[str, Entry]
) -> TrainingPreferences:
    """Append a version of one track's override; uses not given take the default (an empty
    override removes the track's own values). The caller holds the catalogue's row lock."""
    return _append(session, catalogue, track_id, entries)


def _append(
    session: Session,
    catalogue: Catalogue,
    track_id: uuid.UUID | None,
    entries: Mapping[str, Entry],
) -> TrainingPreferences:
    unknown = set(entries) - set(ASSERTIONS)
    if unknown:
        raise ValueError(f"unknown assertions: {sorted(unknown)}")
    latest = session.scalar(
        sa.select(sa.func.max(TrainingPreferences.version)).where(
            TrainingPreferences.catalogue_id == catalogue.id
        )
    )
    values: dict[str, Any] = {}
    for assertion, column in ASSERTION_COLUMNS.items():
        entry = entries.get(assertion)
        values[column] = None if entry is None else entry.use.value
        values[f"{column}_policy"] = None if entry is None else entry.constraints_info
    row = TrainingPreferences(
        catalogue_id=catalogue.id, track_id=track_id, version=(latest or 0) + 1, **values
    )
    session.add(row)
    session.flush()
    return row


def versions_query(
    catalogue_id: uuid.UUID, *, track_id: uuid.UUID | None = None, defaults_only: bool = False
) -> sa.Select[TrainingPreferences]:
    """A catalogue's preference versions, all or one track's or the defaults' (unordered;
    the caller pages)."""
    stmt = sa.select(TrainingPreferences).where(TrainingPreferences.catalogue_id == catalogue_id)
    if track_id is not None:
        stmt = stmt.where(TrainingPreferences.track_id == track_id)
    elif defaults_only:
        stmt = stmt.where(TrainingPreferences.track_id.is_(None))
    return stmt
