"""What the service needs from a similarity index of catalogue segments, whatever engine holds it.

Two backends implement it: `app.index.manager.IndexManager` (FAISS in this process, the
default) and `app.index.milvus.MilvusIndex` (a Milvus collection, embedded Milvus Lite or a
Milvus cluster). PostgreSQL's segments stay the source of truth for both: an index only ever
takes in what `SegmentSource` reads, tails it by segment id and withdrawal number, and can be
rebuilt from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.index.base import SearchResult, SegmentSource
from app.index.manager import IndexReport, SyncStats
from app.index.tiers import IndexChoice

__all__ = ["SegmentIndex"]


class SegmentIndex(Protocol):
    source: SegmentSource

    def start(self) -> SyncStats:
        """Resume from what the backend kept (or rebuild from the database), then catch up."""
        ...

    def rebuild(self) -> None:
        """Build the index afresh from the database (searches go on meanwhile)."""
        ...

    @property
    def size(self) -> int: ...

    @property
    def watermark(self) -> int: ...

    @property
    def snapshot_path(self) -> Path: ...

    def search(self, vectors: npt.NDArray[np.float32], *, k: int) -> SearchResult: ...

    def catch_up(self) -> None:
        """Take in every segment committed so far, now (read-your-writes)."""
        ...

    def sync(self) -> SyncStats:
        """Add segments written since the watermark and drop newly withdrawn tracks."""
        ...

    def save_snapshot(self, *, force: bool = False) -> bool: ...

    def snapshot_due(self, every_seconds: float) -> bool: ...

    def retrain_needed(self) -> IndexChoice | None: ...

    def retrain(self, choice: IndexChoice) -> bool: ...

    def report(self) -> IndexReport: ...
