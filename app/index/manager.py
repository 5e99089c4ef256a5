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
import contextlib
import json
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import numpy.typing as npt

from app.config import Settings
from app.embedding.base import Embedder
from app.index import factory, sorted_ids, tiers, tuning
from app.index.base import IdArray, IndexMismatch, SearchResult, SegmentBatch, SegmentSource
from app.index.rwlock import ReadWriteLock
from app.logging import get_logger

if TYPE_CHECKING:
    from app.index.backend import SegmentIndex

log = get_logger(__name__)

SNAPSHOT_FORMAT = 2
# Snapshots of format 1 hold the index inside the .npz; they are still read.
_READABLE_FORMATS = (1, 2)
_BATCH = 20_000

__all__ = [
    "IndexManager",
    "IndexMismatch",
    "IndexReport",
    "IndexSpec",
    "SearchResult",
    "SyncStats",
]


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """What an index holds and how it is built.

    factory : a FAISS factory string, or "auto": the index is chosen by segment count
        (`app.index.tiers`) and retrained as the catalogue grows
    search_params : query-time parameters for a forced factory; with "auto", when given,
        they replace the chosen ones on inverted-file tiers (never on Flat)
    tier_policy : the segment counts at which "auto" moves to the next kind of index
    """

    embedder: str
    embedder_version: str
    dim: int
    factory: str = "Flat"
    search_params: str = ""
    tier_policy: tiers.TierPolicy = field(default_factory=tiers.TierPolicy)

    @property
    def auto(self) -> bool:
        return self.factory == tiers.AUTO


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What the index is and how it came to be (for /readyz and logs).

    chosen_by : "auto" (by segment count) or "setting" (a forced factory)
    segments_at_choice : the segment count the factory was chosen for (auto), else None
    trained_at : when its codebooks were trained (unix seconds), None for indexes that
        learn nothing (Flat)
    training_sample : segments its codebooks were trained on (0 for Flat)
    retraining_to : the factory a background retraining is building, if one runs
    started_from : "snapshot" or "rebuild"
    """

    factory: str
    search_params: str
    chosen_by: str
    segments: int
    segments_at_choice: int | None
    trained_at: float | None
    training_sample: int
    retraining_to: str | None
    started_from: str | None
    start_seconds: float | None


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
    search_params: str = ""
    segments_at_choice: int | None = None
    trained_at: float | None = None
    training_sample: int = 0
    segment_ids: IdArray = field(default_factory=lambda: np.zeros(0, np.int64))
    segment_tracks: IdArray = field(default_factory=lambda: np.zeros(0, np.int64))
    segment_starts: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    track_ids: list[uuid.UUID] = field(default_factory=list)
    track_slots: dict[uuid.UUID, int] = field(default_factory=dict)
    segment_watermark: int = 0
    withdrawal_watermark: int = 0
    # The array `_anchors` was computed from (held, so its identity cannot be reused).
    _anchored: IdArray | None = field(default=None, init=False, repr=False, compare=False)
    _anchors: IdArray = field(
        default_factory=lambda: np.zeros(0, np.int64), init=False, repr=False, compare=False
    )

    def segment_anchors(self) -> IdArray:
        """`sorted_ids.anchors` of `segment_ids`, recomputed when that array was replaced."""
        if self._anchored is not self.segment_ids:
            self._anchors = sorted_ids.anchors(self.segment_ids)
            self._anchored = self.segment_ids
        return self._anchors

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
        # Searches in flight: a lone one may use every core (tuning.search_threads).
        self._searching = 0
        self._searching_lock = threading.Lock()
        # 60-row query batches must take FAISS's BLAS path (see tuning.prefer_blas).
        tuning.prefer_blas(spec.dim)
        initial = tiers.IndexChoice("Flat", "", 0) if spec.auto else self._forced()
        self._state = self._empty(initial)
        # The factory a background retraining is building (None when none runs).
        self._retraining: str | None = None
        self._started_from: str | None = None
        self._start_seconds: float | None = None
        # Changes since start vs. the count the last snapshot captured: a snapshot is due when
        # they differ (a counter, not a flag, so a change during a save is never lost).
        self._changes = 0
        self._saved_changes = 0
        self._saved_at = 0.0
        # The index file of the snapshot this process last read or wrote.
        self._index_file: str | None = None

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
            state, source = self._build(self._choice()), "rebuild"
            self._changes += 1
        except Exception as exc:
            log.warning(
                "index.snapshot_unusable",
                path=str(self.snapshot_path),
                error=f"{type(exc).__name__}: {exc}",
            )
            state, source = self._build(self._choice()), "rebuild"
            self._changes += 1
        with self._lock.writing():
            self._state = state
        stats = self.sync()
        self._started_from = source
        self._start_seconds = round(time.perf_counter() - started, 3)
        log.info(
            "index.ready",
            source=source,
            segments=self.size,
            watermark=self.watermark,
            seconds=round(self._start_seconds, 2),
            factory=state.effective_factory,
        )
        return stats

    def rebuild(self) -> None:
        """Build a fresh index from PostgreSQL and swap it in (searches go on meanwhile)."""
        with self._sync_lock:  # a sync running against the old state would be lost
            state = self._build(self._choice())
            with self._lock.writing():
                self._state = state
                self._changes += 1

    # -- choosing and retraining -------------------------------------------------------------

    def _forced(self) -> tiers.IndexChoice:
        return tiers.IndexChoice(self.spec.factory, self.spec.search_params, 0)

    def _choice(self, segments: int | None = None) -> tiers.IndexChoice:
        """The factory to build now: the setting's, or the tier of the stored segment count."""
        if not self.spec.auto:
            return self._forced()
        count = self.source.segment_count() if segments is None else segments
        chosen = tiers.choose(count, self.spec.dim, self.spec.tier_policy)
        if self.spec.search_params and chosen.factory != "Flat":
            chosen = tiers.IndexChoice(chosen.factory, self.spec.search_params, chosen.segments)
        return chosen

    def retrain_needed(self) -> tiers.IndexChoice | None:
        """The index to retrain into, when the catalogue has outgrown the current one.

        With "auto": the tier of the current segment count, when it is a later tier than the
        one serving. With a forced factory: that factory, when the service fell back to Flat
        for want of training data and there is enough now.
        """
        state = self._state
        size = int(state.index.ntotal)
        if self.spec.auto:
            wanted = self._choice(size)
            if tiers.is_upgrade(state.effective_factory, wanted.factory):
                return wanted
            return None
        if state.effective_factory == self.spec.factory:
            return None
        probe = factory.create_index(self.spec.factory, self.spec.dim)
        return self._forced() if size >= factory.min_training_size(probe) else None

    @property
    def retraining(self) -> bool:
        return self._retraining is not None

    def retrain(self, choice: tiers.IndexChoice) -> bool:
        """Build `choice` from PostgreSQL beside the serving index, then swap it in.

        Searches and syncs go on against the old index while the new one trains and fills;
        the new one then takes in what was committed meanwhile and replaces the old under the
        write lock, so no search sees half of either. Returns False if one already runs.
        """
        with self._sync_lock:
            if self._retraining is not None:
                return False
            self._retraining = choice.factory
        try:
            log.info(
                "index.retraining",
                current=self._state.effective_factory,
                to=choice.factory,
                segments=self.size,
            )
            state = self._build(choice)
            with self._sync_lock:
                self._catch_up_state(state, live=False)
                with self._lock.writing():
                    self._state = state
                    self._changes += 1
            log.info("index.retrained", factory=state.effective_factory, segments=self.size)
            return True
        finally:
            self._retraining = None

    def report(self) -> IndexReport:
        state = self._state
        return IndexReport(
            factory=state.effective_factory,
            search_params=state.search_params,
            chosen_by="auto" if self.spec.auto else "setting",
            segments=int(state.index.ntotal),
            segments_at_choice=state.segments_at_choice,
            trained_at=state.trained_at,
            training_sample=state.training_sample,
            retraining_to=self._retraining,
            started_from=self._started_from,
            start_seconds=self._start_seconds,
        )

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
            with self._searching_lock:
                self._searching += 1
                in_flight = self._searching
            try:
                sims, ids = factory.search(
                    state.index,
                    np.ascontiguousarray(vectors, dtype=np.float32),
                    k=k,
                    threads=tuning.search_threads(state.effective_factory, in_flight),
                )
            finally:
                with self._searching_lock:
                    self._searching -= 1
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
        stats = self._catch_up_state(self._state, live=True)
        if stats.added or stats.withdrawn_tracks:
            log.info(
                "index.synced",
                added=stats.added,
                removed=stats.removed,
                withdrawn_tracks=stats.withdrawn_tracks,
                watermark=self.watermark,
            )
        return stats

    def _catch_up_state(self, state: _State, *, live: bool) -> SyncStats:
        """Add segments after `state`'s watermark, drop tracks withdrawn after its own.

        live : `state` is the one searches read, so changes take the write lock
        """
        stats = SyncStats()
        writing = self._lock.writing if live else contextlib.nullcontext
        while True:
            batch = self.source.segments_after(state.segment_watermark, limit=_BATCH)
            if not len(batch):
                break
            with writing():
                stats.added += self._append(state, batch)
                self._changes += 1
        withdrawals = self.source.withdrawals_after(state.withdrawal_watermark)
        if withdrawals:
            segment_ids = self.source.segment_ids_of([track for track, _ in withdrawals])
            with writing():
                if segment_ids.size:
                    stats.removed = factory.remove(state.index, segment_ids)
                state.withdrawal_watermark = withdrawals[-1][1]
                self._changes += 1
            stats.withdrawn_tracks = len(withdrawals)
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

    def _empty(self, choice: tiers.IndexChoice) -> _State:
        index = factory.create_index(choice.factory, self.spec.dim)
        factory.apply_search_params(index, choice.search_params)
        return _State(
            index=index,
            effective_factory=choice.factory,
            search_params=choice.search_params,
            segments_at_choice=choice.segments if self.spec.auto else None,
        )

    def _build(self, choice: tiers.IndexChoice) -> _State:
        """A complete index of every live segment of this embedder, from PostgreSQL."""
        started = time.perf_counter()
        state = self._empty(choice)
        # Read before the segments: a withdrawal committed while they are read is applied
        # again by the next catch-up (removing what is absent is harmless), never missed.
        state.withdrawal_watermark = self.source.last_withdrawal()
        if factory.needs_training(state.index):
            sample = self._training_sample(factory.recommended_training_size(state.index))
            if len(sample) < factory.min_training_size(state.index):
                log.warning(
                    "index.too_few_segments_to_train",
                    factory=choice.factory,
                    segments=len(sample),
                    needed=factory.min_training_size(state.index),
                    fallback="Flat",
                )
                flat = self._empty(tiers.IndexChoice("Flat", "", choice.segments))
                flat.withdrawal_watermark = state.withdrawal_watermark
                state = flat
            else:
                factory.train(state.index, sample)
                state.trained_at = time.time()
                state.training_sample = len(sample)
        while True:
            batch = self.source.segments_after(state.segment_watermark, limit=_BATCH)
            if not len(batch):
                break
            self._append(state, batch)
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
        """Write the index to its snapshot files (atomically) if it changed since the last one.

        Two files: the index as `factory.write_index` writes it (read back without a
        second copy in memory) under a name of its own, and the `.npz` that names it, with the
        segment arrays and the watermarks. The `.npz` is replaced last, so a reader finds
        either the old pair or the new one.

        The write holds the sync lock, not the search lock: nothing changes the index while
        it is written (every change is a sync, a rebuild or a retrain's swap, all under the
        sync lock), and searches, which only read, go on. A sync that arrives meanwhile waits
        for the write; under the search lock it would have waited as a writer, and every
        search would have queued behind it for the whole write (180 MB at 1M segments took
        0.2-0.7 s to write here; the file at 10M is 1.9 GB).
        """
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        index_name = f"{self.snapshot_path.stem}-{uuid.uuid4().hex[:12]}.faiss"
        index_tmp = self.snapshot_dir / f".{index_name}.tmp"
        with self._sync_lock:
            if self._changes == self._saved_changes and not force:
                return False
            changes = self._changes
            state = self._state
            factory.write_index(state.index, index_tmp)
            arrays = (
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
                "search_params": state.search_params,
                "segments_at_choice": state.segments_at_choice,
                "trained_at": state.trained_at,
                "training_sample": state.training_sample,
                "segment_watermark": state.segment_watermark,
                "withdrawal_watermark": state.withdrawal_watermark,
                "ntotal": int(state.index.ntotal),
                "faiss_file": index_name,
            }
        fd, tmp = tempfile.mkstemp(dir=self.snapshot_dir, prefix=".snapshot-", suffix=".npz")
        try:
            with index_tmp.open("rb+") as written:
                os.fsync(written.fileno())
            os.replace(index_tmp, self.snapshot_dir / index_name)
            with os.fdopen(fd, "wb") as out:
                segment_ids, segment_tracks, segment_starts, track_ids = arrays
                np.savez(
                    out,
                    meta=np.array(json.dumps(meta)),
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
            index_tmp.unlink(missing_ok=True)
            (self.snapshot_dir / index_name).unlink(missing_ok=True)
            raise
        self._remove_old_index_files(keep=index_name)
        self._saved_changes = changes
        self._saved_at = time.monotonic()
        log.info("index.snapshot_saved", path=str(self.snapshot_path), **meta)
        return True

    def _remove_old_index_files(self, *, keep: str) -> None:
        """Drop index files no snapshot names any more: this process's previous one at once,
        others' (replicas sharing the directory) once they are an hour old."""
        previous, self._index_file = self._index_file, keep
        now = time.time()
        for path in self.snapshot_dir.glob(f"{self.snapshot_path.stem}-*.faiss"):
            if path.name == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                if path.name == previous or now - path.stat().st_mtime > 3600:
                    path.unlink()

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
            if meta.get("format") not in _READABLE_FORMATS:
                raise IndexMismatch(f"snapshot format {meta.get('format')!r} is not readable")
            expected = {
                "embedder": self.spec.embedder,
                "embedder_version": self.spec.embedder_version,
                "dim": self.spec.dim,
                "factory": self.spec.factory,
            }
            stale = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
            if stale:
                raise IndexMismatch(f"snapshot was made for {stale}, not {expected}")
            if not self.spec.auto and meta.get("effective_factory") != self.spec.factory:
                raise IndexMismatch(
                    f"snapshot holds a {meta.get('effective_factory')!r} index in place of "
                    f"{self.spec.factory!r} (too few segments to train it then); rebuilding"
                )
            if "faiss_file" in meta:
                name = Path(str(meta["faiss_file"])).name  # never a path out of the directory
                index = factory.read_index(self.snapshot_dir / name)
                self._index_file = name
            else:
                index = faiss.deserialize_index(np.ascontiguousarray(data["faiss"]))
            effective = str(meta["effective_factory"])
            params = str(meta.get("search_params", ""))
            if not self.spec.auto or (self.spec.search_params and effective != "Flat"):
                params = self.spec.search_params
            state = _State(
                index=index,
                effective_factory=effective,
                search_params=params,
                segments_at_choice=meta.get("segments_at_choice"),
                trained_at=meta.get("trained_at"),
                training_sample=int(meta.get("training_sample", 0)),
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
        factory.apply_search_params(index, state.search_params)
        return state


def _resolve(state: _State, ids: IdArray) -> tuple[IdArray, npt.NDArray[np.float32]]:
    """Track slot and start time of each segment id (-1 and 0 for empty result slots)."""
    tracks = np.full(ids.shape, -1, dtype=np.int64)
    starts = np.zeros(ids.shape, dtype=np.float32)
    if len(state.segment_ids) == 0:
        return tracks, starts
    # segment_ids is sorted: ids are appended in increasing order.
    pos, found = sorted_ids.locate(state.segment_ids, ids, state.segment_anchors())
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
        tier_policy=tiers.TierPolicy(
            ivf_from=settings.index_ivf_from_segments,
            rerank_from=settings.index_rerank_from_segments,
            pq_from=settings.index_pq_from_segments,
        ),
    )


async def keep_in_sync(manager: SegmentIndex, *, every: float, snapshot_every: float) -> None:
    """Tail the database forever (until cancelled); snapshot now and then; retrain in the
    background when the catalogue has outgrown the index."""
    retraining: asyncio.Task[bool] | None = None
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(manager.sync)
            if retraining is not None and retraining.done():
                if retraining.exception() is not None:
                    log.error("index.retrain_failed", error=repr(retraining.exception()))
                retraining = None
            if retraining is None:
                choice = manager.retrain_needed()
                if choice is not None:
                    retraining = asyncio.create_task(asyncio.to_thread(manager.retrain, choice))
            if manager.snapshot_due(snapshot_every):
                await asyncio.to_thread(manager.save_snapshot)
        except Exception:
            # A database blip must not kill the loop; the next round catches up.
            log.exception("index.sync_failed")
