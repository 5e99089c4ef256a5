"""The in-memory FAISS index of catalogue segments, derived from PostgreSQL.

PostgreSQL's segments are the source of truth; this index is a cache of them, read through a
`SegmentSource` (`app.catalogues.segments.SegmentStore`). On start the manager loads its snapshot
file and adds the segments written since (by increasing segment id, which the source makes safe
to tail); while running it keeps tailing new segments and withdrawals. A missing, stale or
corrupt snapshot is rebuilt from the database. Only vectors of one embedder (name and version)
live in an index.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from app.config import Settings
from app.embedding.base import Embedder
from app.index import factory, tuning
from app.index.base import IdArray, IndexMismatch, SearchResult, SegmentBatch, SegmentSource
from app.index.rwlock import ReadWriteLock
from app.logging import get_logger

log = get_logger(__name__)

SNAPSHOT_FORMAT = 1
_BATCH = 20_000

__all__ = ["IndexManager", "IndexMismatch", "IndexSpec", "SearchResult", "SyncStats"]


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """What an index holds and how it is built."""

    embedder: str
    embedder_version: str
    dim: int
    factory: str = "Flat"
    search_params: str = ""


@dataclass(slots=True)
class SyncStats:
    added: int = 0
    removed: int = 0
    withdrawn_tracks: int = 0


@dataclass(slots=True)
class _State:
    """Everything one snapshot holds; replaced whole on rebuild."""

    index: Any
    effective_factory: str
    segment_ids: IdArray = field(default_factory=lambda: np.zeros(0, np.int64))
    segment_tracks: IdArray = field(default_factory=lambda: np.zeros(0, np.int64))
    segment_starts: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    track_ids: list[uuid.UUID] = field(default_factory=list)
    track_slots: dict[uuid.UUID, int] = field(default_factory=dict)
    segment_watermark: int = 0
    withdrawal_watermark: int = 0

    def slot(self, track_id: uuid.UUID) -> int:
        found = self.track_slots.get(track_id)
        if found is None:
            found = len(self.track_ids)
            self.track_ids.append(track_id)
            self.track_slots[track_id] = found
        return found


class IndexManager:
    """Owns one FAISS index; thread-safe (searches share a lock that changes take alone)."""

    def __init__(self, spec: IndexSpec, *, source: SegmentSource, snapshot_dir: Path) -> None:
        if source.dim != spec.dim:
            raise IndexMismatch(f"the segment source holds dim {source.dim}, the index {spec.dim}")
        self.spec = spec
        self.source = source
        self.snapshot_dir = snapshot_dir
        self._lock = ReadWriteLock()
        # One sync at a time: two would append the same new segments twice.
        self._sync_lock = threading.Lock()
        # 60-row query batches must take FAISS's BLAS path (see tuning.prefer_blas).
        tuning.prefer_blas(spec.dim)
        self._state = self._empty(spec.factory)
        # Changes since start vs. the count the last snapshot captured: a snapshot is due when
        # they differ (a counter, not a flag, so a change during a save is never lost).
        self._changes = 0
        self._saved_changes = 0
        self._saved_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def snapshot_path(self) -> Path:
        name = f"{self.spec.embedder}-{self.spec.embedder_version}.npz"
        return self.snapshot_dir / name

    def start(self) -> SyncStats:
        """Load the snapshot (or rebuild when it is missing or unusable), then catch up."""
        started = time.perf_counter()
        try:
            state = self._read_snapshot()
            source = "snapshot"
        except FileNotFoundError:
            log.info("index.snapshot_missing", path=str(self.snapshot_path))
            state, source = self._build(), "rebuild"
            self._changes += 1
        except Exception as exc:
            log.warning(
                "index.snapshot_unusable",
                path=str(self.snapshot_path),
                error=f"{type(exc).__name__}: {exc}",
            )
            state, source = self._build(), "rebuild"
            self._changes += 1
        with self._lock.writing():
            self._state = state
        stats = self.sync()
        log.info(
            "index.ready",
            source=source,
            segments=self.size,
            watermark=self.watermark,
            seconds=round(time.perf_counter() - started, 2),
            factory=state.effective_factory,
        )
        return stats

    def rebuild(self) -> None:
        """Build a fresh index from PostgreSQL and swap it in (searches go on meanwhile)."""
        with self._sync_lock:  # a sync running against the old state would be lost
            state = self._build()
            with self._lock.writing():
                self._state = state
                self._changes += 1

    @property
    def size(self) -> int:
        return int(self._state.index.ntotal)

    @property
    def watermark(self) -> int:
        return self._state.segment_watermark

    # -- reading -----------------------------------------------------------------------------

    def search(self, vectors: npt.NDArray[np.float32], *, k: int) -> SearchResult:
        """The `k` nearest segments of each query vector, mapped to tracks and start times."""
        if vectors.ndim != 2 or vectors.shape[1] != self.spec.dim:
            raise IndexMismatch(
                f"query vectors have shape {vectors.shape}; this index holds dim {self.spec.dim}"
            )
        with self._lock.reading():
            state = self._state
            k = max(1, min(k, int(state.index.ntotal)))
            sims, ids = factory.search(
                state.index,
                np.ascontiguousarray(vectors, dtype=np.float32),
                k=k,
                threads=tuning.SEARCH_THREADS_DEFAULT,
            )
            tracks, starts = _resolve(state, ids)
            return SearchResult(
                similarities=sims,
                tracks=tracks,
                reference_starts=starts,
                segments=np.where(tracks >= 0, ids, -1).astype(np.int64),
                track_ids=state.track_ids,
                watermark=state.segment_watermark,
            )

    # -- keeping up with the database --------------------------------------------------------

    def catch_up(self) -> None:
        """Take in every segment committed so far, now (read-your-writes).

        A check calls this before it searches: once a track reads `indexed`, the next check
        can match it, on any replica, without waiting for the periodic sync. Costs one
        indexed lookup of the highest segment id when there is nothing new.
        """
        if self.source.last_segment_id() > self.watermark:
            self.sync()

    def sync(self) -> SyncStats:
        """Add segments written since the watermark and drop newly withdrawn tracks."""
        with self._sync_lock:
            return self._sync()

    def _sync(self) -> SyncStats:
        stats = SyncStats()
        while True:
            batch = self.source.segments_after(self._state.segment_watermark, limit=_BATCH)
            if not len(batch):
                break
            with self._lock.writing():
                stats.added += self._append(self._state, batch)
                self._changes += 1
        withdrawals = self.source.withdrawals_after(self._state.withdrawal_watermark)
        if withdrawals:
            segment_ids = self.source.segment_ids_of([track for track, _ in withdrawals])
            with self._lock.writing():
                if segment_ids.size:
                    stats.removed = factory.remove(self._state.index, segment_ids)
                self._state.withdrawal_watermark = withdrawals[-1][1]
                self._changes += 1
            stats.withdrawn_tracks = len(withdrawals)
        if stats.added or stats.withdrawn_tracks:
            log.info(
                "index.synced",
                added=stats.added,
                removed=stats.removed,
                withdrawn_tracks=stats.withdrawn_tracks,
                watermark=self.watermark,
            )
        return stats

    def _append(self, state: _State, batch: SegmentBatch) -> int:
        state.segment_watermark = int(batch.ids[-1])
        keep = np.flatnonzero(batch.live)
        if keep.size == 0:
            return 0
        ids = batch.ids[keep]
        if factory.needs_training(state.index):
            raise IndexMismatch("index is not trained; rebuild it")
        factory.add(state.index, np.ascontiguousarray(batch.vectors[keep]), ids)
        slots = np.fromiter((state.slot(batch.track_ids[i]) for i in keep), dtype=np.int64)
        state.segment_ids = np.concatenate([state.segment_ids, ids])
        state.segment_tracks = np.concatenate([state.segment_tracks, slots])
        state.segment_starts = np.concatenate([state.segment_starts, batch.starts[keep]])
        return int(keep.size)

    # -- building ----------------------------------------------------------------------------

    def _empty(self, factory_string: str) -> _State:
        index = factory.create_index(factory_string, self.spec.dim)
        self._apply_search_params(index, factory_string)
        return _State(index=index, effective_factory=factory_string)

    def _apply_search_params(self, index: Any, effective_factory: str) -> None:
        """Set the spec's search parameters, which are meant for the spec's factory only.

        The untrained-IVF fallback (Flat) has no `nprobe` and the like.
        """
        if effective_factory == self.spec.factory:
            factory.apply_search_params(index, self.spec.search_params)

    def _build(self) -> _State:
        """A complete index of every live segment of this embedder, from PostgreSQL."""
        started = time.perf_counter()
        state = self._empty(self.spec.factory)
        if factory.needs_training(state.index):
            sample = self._training_sample(factory.recommended_training_size(state.index))
            if len(sample) < factory.min_training_size(state.index):
                log.warning(
                    "index.too_few_segments_to_train",
                    factory=self.spec.factory,
                    segments=len(sample),
                    needed=factory.min_training_size(state.index),
                    fallback="Flat",
                )
                state = self._empty("Flat")
            else:
                factory.train(state.index, sample)
        while True:
            batch = self.source.segments_after(state.segment_watermark, limit=_BATCH)
            if not len(batch):
                break
            self._append(state, batch)
        # Withdrawals up to now are reflected by skipping their segments above.
        state.withdrawal_watermark = self.source.last_withdrawal()
        log.info(
            "index.built",
            segments=int(state.index.ntotal),
            factory=state.effective_factory,
            seconds=round(time.perf_counter() - started, 2),
        )
        return state

    def _training_sample(self, n: int) -> npt.NDArray[np.float32]:
        """Up to `n` stored vectors, the same ones for the same table, in id order."""
        ids = self.source.sample_ids(n)
        if ids.size == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        return self.source.vectors(ids)

    # -- snapshots ---------------------------------------------------------------------------

    def save_snapshot(self, *, force: bool = False) -> bool:
        """Write the index to its snapshot file (atomically) if it changed since the last one."""
        with self._lock.reading():
            if self._changes == self._saved_changes and not force:
                return False
            changes = self._changes
            state = self._state
            arrays = (
                faiss.serialize_index(state.index),
                state.segment_ids.copy(),
                state.segment_tracks.copy(),
                state.segment_starts.copy(),
                np.frombuffer(b"".join(t.bytes for t in state.track_ids), dtype=np.uint8),
            )
            meta = {
                "format": SNAPSHOT_FORMAT,
                "embedder": self.spec.embedder,
                "embedder_version": self.spec.embedder_version,
                "dim": self.spec.dim,
                "factory": self.spec.factory,
                "effective_factory": state.effective_factory,
                "segment_watermark": state.segment_watermark,
                "withdrawal_watermark": state.withdrawal_watermark,
                "ntotal": int(state.index.ntotal),
            }
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.snapshot_dir, prefix=".snapshot-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as out:
                index_bytes, segment_ids, segment_tracks, segment_starts, track_ids = arrays
                np.savez(
                    out,
                    meta=np.array(json.dumps(meta)),
                    faiss=index_bytes,
                    segment_ids=segment_ids,
                    segment_tracks=segment_tracks,
                    segment_starts=segment_starts,
                    track_ids=track_ids,
                )
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.snapshot_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._saved_changes = changes
        self._saved_at = time.monotonic()
        log.info("index.snapshot_saved", path=str(self.snapshot_path), **meta)
        return True

    def snapshot_due(self, every_seconds: float) -> bool:
        changed = self._changes != self._saved_changes
        return changed and time.monotonic() - self._saved_at >= every_seconds

    def _read_snapshot(self) -> _State:
        """The snapshot's state; raises FileNotFoundError, or another error if it is unusable.

        A snapshot of the untrained fallback (Flat where an IVF was asked for) counts as stale:
        rebuilding is cheap while the catalogue is too small to train, and once it has grown
        the rebuild trains the index that was asked for.
        """
        # From the file, not via read_bytes(): that would hold a second copy of it all.
        with np.load(self.snapshot_path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            expected = {
                "format": SNAPSHOT_FORMAT,
                "embedder": self.spec.embedder,
                "embedder_version": self.spec.embedder_version,
                "dim": self.spec.dim,
                "factory": self.spec.factory,
            }
            stale = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
            if stale:
                raise IndexMismatch(f"snapshot was made for {stale}, not {expected}")
            if meta.get("effective_factory") != self.spec.factory:
                raise IndexMismatch(
                    f"snapshot holds a {meta.get('effective_factory')!r} index in place of "
                    f"{self.spec.factory!r} (too few segments to train it then); rebuilding"
                )
            index = faiss.deserialize_index(np.ascontiguousarray(data["faiss"]))
            state = _State(
                index=index,
                effective_factory=str(meta["effective_factory"]),
                segment_ids=data["segment_ids"].astype(np.int64, copy=False),
                segment_tracks=data["segment_tracks"].astype(np.int64, copy=False),
                segment_starts=data["segment_starts"].astype(np.float32, copy=False),
                segment_watermark=int(meta["segment_watermark"]),
                withdrawal_watermark=int(meta["withdrawal_watermark"]),
            )
            for raw_id in data["track_ids"].reshape(-1, 16):
                state.slot(uuid.UUID(bytes=raw_id.tobytes()))
        if int(index.ntotal) != int(meta["ntotal"]) or index.d != self.spec.dim:
            raise IndexMismatch("snapshot index does not match its metadata")
        if not (len(state.segment_ids) == len(state.segment_tracks) == len(state.segment_starts)):
            raise IndexMismatch("snapshot segment arrays disagree in length")
        self._apply_search_params(index, state.effective_factory)
        return state


def _resolve(state: _State, ids: IdArray) -> tuple[IdArray, npt.NDArray[np.float32]]:
    """Track slot and start time of each segment id (-1 and 0 for empty result slots)."""
    tracks = np.full(ids.shape, -1, dtype=np.int64)
    starts = np.zeros(ids.shape, dtype=np.float32)
    if len(state.segment_ids) == 0:
        return tracks, starts
    # segment_ids is sorted: ids are appended in increasing order.
    pos = np.clip(np.searchsorted(state.segment_ids, ids), 0, len(state.segment_ids) - 1)
    found = (ids >= 0) & (state.segment_ids[pos] == ids)
    tracks[found] = state.segment_tracks[pos[found]]
    starts[found] = state.segment_starts[pos[found]]
    return tracks, starts


def spec_for(settings: Settings, embedder: Embedder) -> IndexSpec:
    return IndexSpec(
        embedder=embedder.name,
        embedder_version=embedder.version,
        dim=embedder.dim,
        factory=settings.index_factory,
        search_params=settings.index_search_params,
    )


async def keep_in_sync(manager: IndexManager, *, every: float, snapshot_every: float) -> None:
    """Tail the database forever (until cancelled); snapshot now and then."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(manager.sync)
            if manager.snapshot_due(snapshot_every):
                await asyncio.to_thread(manager.save_snapshot)
        except Exception:
            # A database blip must not kill the loop; the next round catches up.
            log.exception("index.sync_failed")
