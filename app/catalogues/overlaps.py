"""Finding the same recording registered twice: a duplicate within one label, an ownership
conflict between two.

A newer track repeats a stored one when, window by window at one alignment, the stored track
covers most of it at near-verbatim similarity: the same offset throughout, a tempo ratio of
1 within 2 %, no transposition (the windows are compared as they are). A remaster at another
gain, a compilation's copy or the same master delivered by a second label all pass; a cover,
a sample or music that is merely similar does not.

Detection runs after a track is indexed (the ingestion job) and on demand for a whole
catalogue (`echoledger scan-conflicts`). Candidates are found by streaming the stored
segments of the same embedder from PostgreSQL against a few probe windows of the new track
(so no worker needs the similarity index), then each candidate is compared window by window.
Rows are written with ON CONFLICT DO NOTHING: running it twice finds nothing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.catalogues.models import (
    Catalogue,
    OverlapKind,
    OverlapStatus,
    OwnershipConflict,
    Segment,
    Track,
    TrackStatus,
)
from app.db import utcnow
from app.logging import get_logger

log = get_logger(__name__)

FloatArray = npt.NDArray[np.float32]

# Window cosine similarity of the same audio at another gain or encoding is > 0.999 with the
# spectral embedder; distinct tracks of the test corpus stay under 0.7 even at their best
# window pair. 0.95 leaves room for lossy re-encoding.
NEAR_VERBATIM = 0.95
# The share of the newer track's windows the stored one must cover.
MIN_COVERAGE = 0.8
MAX_TEMPO_DEVIATION = 0.02
# Probe windows of the new track searched against every stored segment.
PROBES = 12
# A stored track is a candidate when this share of the probes find a window of it.
PROBE_HITS = 0.5
BATCH = 20_000


@dataclass(frozen=True, slots=True)
class Overlap:
    """How a stored track covers a newer one (see `compare`)."""

    coverage: float
    resemblance: float
    tempo_ratio: float
    offset_s: float
    spans: list[dict[str, float]]


def compare(
    starts: npt.NDArray[np.floating], vectors: FloatArray,
    original_starts: npt.NDArray[np.floating], original_vectors: FloatArray,
    *, window_s: float,
) -> Overlap | None:  # fmt: skip
    """How much of a track (`starts` [n], `vectors` [n, d], L2-normalised) the original
    covers at one alignment; None unless it covers at least `MIN_COVERAGE` at near-verbatim
    similarity and a tempo ratio within `MAX_TEMPO_DEVIATION` of 1.

    Each window is paired with its most similar original window; the alignment is the median
    offset of the near-verbatim pairs, and a window counts as covered when its pair sits at
    that offset (within a window hop).
    """
    if vectors.ndim != 2 or original_vectors.ndim != 2:
        raise ValueError(f"expected [n, d] vectors, got {vectors.shape}, {original_vectors.shape}")
    if len(starts) != len(vectors) or len(original_starts) != len(original_vectors):
        raise ValueError("starts and vectors differ in length")
    if len(vectors) == 0 or len(original_vectors) == 0:
        return None
    sims = vectors @ original_vectors.T
    best = sims.argmax(axis=1)
    best_sim = sims[np.arange(len(vectors)), best]
    close = best_sim >= NEAR_VERBATIM
    if close.sum() < max(2, MIN_COVERAGE * len(vectors)):
        return None
    q = np.asarray(starts, dtype=np.float64)
    r = np.asarray(original_starts, dtype=np.float64)[best]
    offset = float(np.median((r - q)[close]))
    hop = float(np.median(np.diff(np.sort(q)))) if len(q) > 1 else window_s
    aligned = close & (np.abs(r - q - offset) <= max(hop, 1e-3) + 1e-6)
    coverage = float(aligned.mean())
    if coverage < MIN_COVERAGE:
        return None
    ratio = 1.0
    if aligned.sum() >= 3 and np.ptp(q[aligned]) > 0:
        ratio, intercept = np.polyfit(q[aligned], r[aligned], 1)
        ratio = float(ratio)
        offset = float(intercept)
    if abs(ratio - 1.0) > MAX_TEMPO_DEVIATION:
        return None
    return Overlap(
        coverage=round(coverage, 4),
        resemblance=round(float(best_sim[aligned].mean()), 4),
        tempo_ratio=round(ratio, 4),
        offset_s=round(offset, 3),
        spans=_spans(q, aligned, window_s=window_s, hop=hop, ratio=ratio, offset=offset,
                     sims=best_sim),
    )  # fmt: skip


def _spans(
    q: npt.NDArray[np.float64],
    aligned: npt.NDArray[np.bool_],
    *,
    window_s: float,
    hop: float,
    ratio: float,
    offset: float,
    sims: npt.NDArray[np.floating],
) -> list[dict[str, float]]:
    """Runs of consecutive covered windows, in both tracks' time."""
    order = np.argsort(q)
    spans: list[dict[str, float]] = []
    run: list[int] = []
    for i in [*order.tolist(), -1]:
        if i >= 0 and aligned[i] and (not run or q[i] - q[run[-1]] <= hop * 1.5):
            run.append(i)
            continue
        if run:
            start, end = float(q[run[0]]), float(q[run[-1]]) + window_s
            spans.append(
                {
                    "track_start": round(start, 2),
                    "track_end": round(end, 2),
                    "original_start": round(ratio * start + offset, 2),
                    "original_end": round(ratio * end + offset, 2),
                    "similarity": round(float(np.mean(sims[run])), 4),
                }
            )
        run = [i] if i >= 0 and aligned[i] else []
    return spans


def _windows(
    session: Session, track_ids: Sequence[uuid.UUID], *, embedder: str, version: str
) -> dict[uuid.UUID, tuple[npt.NDArray[np.float64], FloatArray]]:
    rows = session.execute(
        sa.select(Segment.track_id, Segment.start_s, Segment.vector)
        .where(
            Segment.track_id.in_(track_ids),
            Segment.embedder == embedder,
            Segment.embedder_version == version,
        )
        .order_by(Segment.track_id, Segment.start_s)
    ).all()
    grouped: dict[uuid.UUID, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.track_id, []).append(row)
    return {
        track_id: (
            np.array([r.start_s for r in part], dtype=np.float64),
            _decode([r.vector for r in part]),
        )
        for track_id, part in grouped.items()
    }


def _decode(blobs: list[bytes]) -> FloatArray:
    joined = np.frombuffer(b"".join(blobs), dtype="<f4")
    return np.ascontiguousarray(joined.reshape(len(blobs), -1), dtype=np.float32)


def _candidates(
    session: Session, track: Track, probes: FloatArray, *, embedder: str, version: str
) -> list[uuid.UUID]:
    """Live indexed tracks with a near-verbatim window for most of the probes."""
    hit_by: dict[uuid.UUID, set[int]] = {}
    after = 0
    while True:
        # One range of the (embedder, version, id) index per batch; withdrawn tracks are
        # left out afterwards, among the few candidates.
        rows = session.execute(
            sa.select(Segment.id, Segment.track_id, Segment.vector)
            .where(
                Segment.embedder == embedder,
                Segment.embedder_version == version,
                Segment.id > after,
            )
            .order_by(Segment.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        after = rows[-1].id
        sims = probes @ _decode([r.vector for r in rows]).T  # [probes, batch]
        for p, j in zip(*np.nonzero(sims >= NEAR_VERBATIM), strict=True):
            hit_by.setdefault(rows[int(j)].track_id, set()).add(int(p))
    need = PROBE_HITS * len(probes)
    found = [t for t, hit in hit_by.items() if len(hit) >= need and t != track.id]
    if not found:
        return []
    live = session.scalars(
        sa.select(Track.id).where(Track.id.in_(found), Track.withdrawn_at.is_(None))
    )
    return sorted(live, key=str)


def detect(session: Session, track_id: uuid.UUID) -> list[OwnershipConflict]:
    """Find the stored tracks the track repeats (or that repeat it) and record each pair,
    oriented from the earlier registration; returns the pairs recorded now. A track that
    repeats an earlier one of its own label is marked `duplicate_of` it."""
    track = session.get(Track, track_id)
    if (
        track is None
        or track.withdrawn_at is not None
        or track.status != TrackStatus.INDEXED.value
        or track.embedder is None
        or track.embedder_version is None
    ):
        return []
    embedder, version = track.embedder, track.embedder_version
    own = _windows(session, [track.id], embedder=embedder, version=version).get(track.id)
    if own is None:
        return []
    starts, vectors = own
    picks = np.unique(np.linspace(0, len(vectors) - 1, num=min(PROBES, len(vectors))).round())
    probes = vectors[picks.astype(np.int64)]
    candidates = _candidates(session, track, probes, embedder=embedder, version=version)
    if not candidates:
        return []
    window_s = _window_s(session, track.id)
    others = _windows(session, candidates, embedder=embedder, version=version)
    found: list[OwnershipConflict] = []
    for other_id, (other_starts, other_vectors) in others.items():
        other = session.get(Track, other_id)
        assert other is not None
        older = (other.created_at, str(other.id)) < (track.created_at, str(track.id))
        newer_id, original_id = (track.id, other.id) if older else (other.id, track.id)
        overlap = (
            compare(starts, vectors, other_starts, other_vectors, window_s=window_s)
            if older
            else compare(other_starts, other_vectors, starts, vectors, window_s=window_s)
        )
        if overlap is None:
            continue
        row = _record(session, newer_id, original_id, overlap)
        if row is not None:
            found.append(row)
    return found


def _window_s(session: Session, track_id: uuid.UUID) -> float:
    value = session.scalar(
        sa.select(Segment.duration_s).where(Segment.track_id == track_id).limit(1)
    )
    return float(value or 0.0)


def _record(
    session: Session, newer_id: uuid.UUID, original_id: uuid.UUID, overlap: Overlap
) -> OwnershipConflict | None:
    labels = dict(
        session.execute(
            sa.select(Track.id, Catalogue.label_id)
            .join(Catalogue, Catalogue.id == Track.catalogue_id)
            .where(Track.id.in_([newer_id, original_id]))
        ).all()
    )
    same = labels[newer_id] == labels[original_id]
    kind = OverlapKind.DUPLICATE if same else OverlapKind.CONFLICT
    status = OverlapStatus.NOTED if same else OverlapStatus.OPEN
    conflict_id = session.scalar(
        insert(OwnershipConflict)
        .values(
            id=uuid.uuid4(),
            kind=kind.value,
            status=status.value,
            track_id=newer_id,
            label_id=labels[newer_id],
            original_track_id=original_id,
            original_label_id=labels[original_id],
            coverage=overlap.coverage,
            resemblance=overlap.resemblance,
            tempo_ratio=overlap.tempo_ratio,
            offset_s=overlap.offset_s,
            evidence=overlap.spans,
            detected_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["track_id", "original_track_id"])
        .returning(OwnershipConflict.id)
    )
    if conflict_id is None:
        return None
    if same:
        newer = session.get(Track, newer_id)
        assert newer is not None
        if newer.duplicate_of is None:
            newer.duplicate_of = original_id
    session.flush()
    found = session.get(OwnershipConflict, conflict_id)
    assert found is not None
    log.info(
        "tracks.overlap_found",
        kind=kind.value,
        conflict_id=str(conflict_id),
        track_id=str(newer_id),
        original_track_id=str(original_id),
        coverage=overlap.coverage,
        resemblance=overlap.resemblance,
    )
    return found


def scan(session: Session, *, catalogue_id: uuid.UUID | None = None) -> list[OwnershipConflict]:
    """Detect overlaps for every live indexed track (of one catalogue); returns the new ones."""
    stmt = sa.select(Track.id).where(
        Track.withdrawn_at.is_(None), Track.status == TrackStatus.INDEXED.value
    )
    if catalogue_id is not None:
        stmt = stmt.where(Track.catalogue_id == catalogue_id)
    found: list[OwnershipConflict] = []
    for track_id in session.scalars(stmt.order_by(Track.created_at, Track.id)).all():
        found += detect(session, track_id)
    return found


def pairs_touching(session: Session, track_ids: Sequence[uuid.UUID]) -> list[OwnershipConflict]:
    """The duplicates and open conflicts with a track of `track_ids` on either side (resolved
    conflicts are left out: the losing track was withdrawn)."""
    if not track_ids:
        return []
    return list(
        session.scalars(
            sa.select(OwnershipConflict)
            .where(
                sa.or_(
                    OwnershipConflict.track_id.in_(track_ids),
                    OwnershipConflict.original_track_id.in_(track_ids),
                ),
                OwnershipConflict.status.in_([OverlapStatus.NOTED.value, OverlapStatus.OPEN.value]),
            )
            .order_by(OwnershipConflict.detected_at, OwnershipConflict.id)
        )
    )
