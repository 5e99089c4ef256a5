"""What every similarity index shares: its answer, where it reads segments from, its errors.

The index is a cache of the segments PostgreSQL holds. It reads them through a
`SegmentSource` (implemented by `app.catalogues.segments`), so it knows no table names.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]


class IndexMismatch(ValueError):
    """Vectors or a snapshot from another embedder, dimension or index layout."""


class SearchResult(NamedTuple):
    """Top-k neighbours of m query vectors, resolved to tracks; every array is [m, k].

    similarities : cosine similarity of each hit
    tracks : track number of each hit, an index into `track_ids`; -1 where there is no hit
    reference_starts : start of the hit's reference window (s)
    segments : segment id of each hit, -1 where there is no hit
    track_ids : the uuid of each track number. From the index it is the index's own list,
        not a copy (a search must not copy every track id): read it, never mutate it. It only
        grows while the index runs (a rebuild replaces it whole), so numbers stay valid.
    watermark : highest segment id the index had taken in when it answered (-1: unknown)
    """

    similarities: npt.NDArray[np.float32] | npt.NDArray[np.float64]
    tracks: IdArray
    reference_starts: npt.NDArray[np.float32] | npt.NDArray[np.float64]
    segments: IdArray
    track_ids: Sequence[uuid.UUID] = ()
    watermark: int = -1


@dataclass(frozen=True, slots=True)
class SegmentBatch:
    """Stored segments in increasing id order.

    ids : np.ndarray [shape=(n,), dtype=int64]
    track_ids : the track of each segment
    starts : np.ndarray [shape=(n,), dtype=float32], window start in the track (s)
    vectors : np.ndarray [shape=(n, dim), dtype=float32]
    live : np.ndarray [shape=(n,), dtype=bool], False where the track was withdrawn
    """

    ids: IdArray
    track_ids: list[uuid.UUID]
    starts: FloatArray
    vectors: FloatArray
    live: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class SegmentSource(Protocol):
    """The stored segments of one embedder (name and version), as the index reads them."""

    @property
    def dim(self) -> int: ...

    def segments_after(self, after: int, *, limit: int) -> SegmentBatch:
        """Up to `limit` segments with ids above `after`; empty when there are none."""
        ...

    def last_segment_id(self) -> int:
        """The highest committed segment id of this embedder (0 before the first)."""
        ...

    def withdrawals_after(self, after: int) -> list[tuple[uuid.UUID, int]]:
        """(track id, withdrawal number) of tracks withdrawn after number `after`, in order."""
        ...

    def last_withdrawal(self) -> int:
        """The highest withdrawal number so far (0 before the first)."""
        ...

    def segment_ids_of(self, track_ids: Sequence[uuid.UUID]) -> IdArray:
        """Every segment id of these tracks, in increasing order (not the table's physical
        order, which updates and vacuums reshuffle)."""
        ...

    def vectors(self, segment_ids: IdArray) -> FloatArray:
        """The stored vectors of these segments, in the order asked: [len(segment_ids), dim].

        Raises IndexMismatch when one is missing or has another dimension."""
        ...

    def track_windows(
        self, track_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[FloatArray, FloatArray]]:
        """Each track's (window starts [m], vectors [m, dim]) in start order; tracks without
        segments of this embedder are left out."""
        ...

    def segment_count(self) -> int:
        """Stored segments of this embedder (withdrawn tracks' included)."""
        ...

    def sample_ids(self, n: int) -> IdArray:
        """Up to `n` segment ids, the same ones for the same table (for training)."""
        ...
