"""Reading stored segments for the similarity index (`app.index.base.SegmentSource`).

Segment ids and withdrawal numbers become visible in increasing order (both are written under
`tracks.lock_index_appends`), so the index can tail them without ever skipping a late commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from app.catalogues.models import Segment, Track
from app.config import Settings
from app.embedding import Embedder
from app.index.backend import SegmentIndex
from app.index.base import FloatArray, IdArray, IndexMismatch, SegmentBatch
from app.index.manager import IndexManager, spec_for


def _array(values: list[Any], item: Any) -> sa.BindParameter[Any]:
    """One array parameter (`= ANY(:values)`): a list of 100k ids stays one bind value, where
    `IN (...)` would expand it into 100k parameters."""
    return sa.bindparam("values", values, type_=postgresql.ARRAY(item))


class SegmentStore:
    """The segments of one embedder name and version, read from PostgreSQL."""

    def __init__(
        self, sessions: sessionmaker[Session], *, embedder: str, version: str, dim: int
    ) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.version = version
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    def _ours(self) -> sa.ColumnElement[bool]:
        return sa.and_(Segment.embedder == self.embedder, Segment.embedder_version == self.version)

    def segments_after(self, after: int, *, limit: int) -> SegmentBatch:
        stmt = (
            sa.select(
                Segment.id,
                Segment.track_id,
                Segment.start_s,
                Segment.vector,
                Track.withdrawn_at.is_(None).label("live"),
            )
            .join(Track, Track.id == Segment.track_id)
            .where(self._ours(), Segment.id > after)
            .order_by(Segment.id)
            .limit(limit)
        )
        with self.sessions() as session:
            rows = session.execute(stmt).all()
        return SegmentBatch(
            ids=np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows)),
            track_ids=[r.track_id for r in rows],
            starts=np.fromiter((r.start_s for r in rows), dtype=np.float32, count=len(rows)),
            vectors=self._decode([r.vector for r in rows]),
            live=np.fromiter((r.live for r in rows), dtype=bool, count=len(rows)),
        )

    def last_segment_id(self) -> int:
        with self.sessions() as session:
            last = session.scalar(sa.select(sa.func.max(Segment.id)).where(self._ours()))
        return int(last or 0)

    def withdrawals_after(self, after: int) -> list[tuple[uuid.UUID, int]]:
        stmt = (
            sa.select(Track.id, Track.withdrawal_seq)
            .where(Track.withdrawal_seq > after)
            .order_by(Track.withdrawal_seq)
        )
        with self.sessions() as session:
            # withdrawal_seq > after excludes NULL.
            return [(track_id, int(seq or 0)) for track_id, seq in session.execute(stmt)]

    def last_withdrawal(self) -> int:
        with self.sessions() as session:
            last = session.scalar(sa.select(sa.func.max(Track.withdrawal_seq)))
        return int(last or 0)

    def segment_ids_of(self, track_ids: Sequence[uuid.UUID]) -> IdArray:
        if not track_ids:
            return np.zeros(0, dtype=np.int64)
        stmt = (
            sa.select(Segment.id)
            .where(self._ours(), Segment.track_id == sa.any_(_array(list(track_ids), sa.Uuid)))
            .order_by(Segment.id)
        )
        with self.sessions() as session:
            ids = session.scalars(stmt).all()
        return np.fromiter(ids, dtype=np.int64, count=len(ids))

    def vectors(self, segment_ids: IdArray) -> FloatArray:
        wanted = np.asarray(segment_ids, dtype=np.int64)
        unique = np.unique(wanted)
        stmt = (
            sa.select(Segment.id, Segment.vector)
            .where(Segment.id == sa.any_(_array([int(i) for i in unique], sa.BigInteger)))
            .order_by(Segment.id)
        )
        with self.sessions() as session:
            rows = session.execute(stmt).all()
        if len(rows) != unique.size:
            missing = sorted(set(unique.tolist()) - {int(r.id) for r in rows})
            raise IndexMismatch(f"segments {missing[:5]} are in the index but not the database")
        vectors = self._decode([r.vector for r in rows])
        return vectors[np.searchsorted(unique, wanted)]

    def track_windows(
        self, track_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[FloatArray, FloatArray]]:
        if not track_ids:
            return {}
        stmt = (
            sa.select(Segment.track_id, Segment.start_s, Segment.vector)
            .where(self._ours(), Segment.track_id == sa.any_(_array(list(track_ids), sa.Uuid)))
            .order_by(Segment.track_id, Segment.start_s)
        )
        with self.sessions() as session:
            rows = session.execute(stmt).all()
        out: dict[uuid.UUID, tuple[FloatArray, FloatArray]] = {}
        first = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i].track_id != rows[first].track_id:
                part = rows[first:i]
                starts = np.fromiter((r.start_s for r in part), dtype=np.float32, count=len(part))
                out[rows[first].track_id] = (starts, self._decode([r.vector for r in part]))
                first = i
        return out

    def segment_count(self) -> int:
        with self.sessions() as session:
            count = session.scalar(sa.select(sa.func.count()).where(self._ours()))
        return int(count or 0)

    def sample_ids(self, n: int) -> IdArray:
        # Ids are picked first and the vectors read after: ordering whole rows, vectors
        # included, by hash made a rebuild of a million segments sort gigabytes. Withdrawn
        # tracks' segments may be in the sample: they describe the same kind of music, and
        # leaving out the join keeps the plan a single index scan whatever the statistics say.
        stmt = (
            sa.select(Segment.id)
            .where(self._ours())
            .order_by(sa.func.md5(sa.cast(Segment.id, sa.Text)))
            .limit(n)
        )
        with self.sessions() as session:
            ids = session.scalars(stmt).all()
        return np.sort(np.fromiter(ids, dtype=np.int64, count=len(ids)))

    def _decode(self, blobs: list[bytes]) -> FloatArray:
        expected = self._dim * 4
        bad = next((len(b) for b in blobs if len(b) != expected), None)
        if bad is not None:
            raise IndexMismatch(
                f"a stored vector has {bad // 4} values; {self.embedder} {self.version} "
                f"vectors have {self._dim}"
            )
        joined = np.frombuffer(b"".join(blobs), dtype="<f4")
        return np.ascontiguousarray(joined.reshape(len(blobs), self._dim), dtype=np.float32)


def segment_index(
    settings: Settings, embedder: Embedder, sessions: sessionmaker[Session]
) -> SegmentIndex:
    """The similarity index of the current embedder's segments (not started yet)."""
    source = SegmentStore(
        sessions, embedder=embedder.name, version=embedder.version, dim=embedder.dim
    )
    spec = spec_for(settings, embedder)
    if settings.index_backend == "milvus":
        from app.index.milvus import MilvusIndex

        settings.index_dir.mkdir(parents=True, exist_ok=True)
        return MilvusIndex(
            spec,
            source=source,
            uri=settings.milvus_uri or str(settings.index_dir / "milvus.db"),
            token=settings.milvus_token,
            index_type=settings.milvus_index_type,
            search_params=settings.index_search_params,
        )
    return IndexManager(spec, source=source, snapshot_dir=settings.index_dir)
