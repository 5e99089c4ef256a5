"""The segment index on Milvus (`ECHOLEDGER_INDEX_BACKEND=milvus`), through pymilvus.

One collection per embedder name and version holds each live segment: its id (the primary
key), track, window start and vector. `ECHOLEDGER_MILVUS_URI` names the engine: a file path
ending in `.db` runs Milvus Lite inside the process (tests, single machines; the default is
`milvus.db` in the index directory), an `http://host:19530` address a Milvus standalone or
cluster, which replicas then share.

As with FAISS, PostgreSQL stays the source of truth: the index takes in segments by increasing
id and withdrawals by number (`SegmentSource`), and can be rebuilt from it. The watermarks the
collection is known to hold are kept in Milvus too (collection `echoledger_index_state`), so a
restart resumes from them instead of reloading everything; rows are upserted by segment id and
withdrawn ids deleted, so replaying a stretch twice (a crash between writing rows and their
watermark, or two replicas tailing one shared collection) changes nothing.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.index import tiers
from app.index.base import IndexMismatch, SearchResult, SegmentBatch, SegmentSource
from app.index.manager import IndexReport, IndexSpec, SyncStats
from app.logging import get_logger

log = get_logger(__name__)

_BATCH = 20_000
_INSERT_CHUNK = 5_000
_STATE_COLLECTION = "echoledger_index_state"
INDEX_TYPES = ("AUTOINDEX", "FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW")

__all__ = ["INDEX_TYPES", "MilvusIndex"]


def _collection_name(spec: IndexSpec) -> str:
    raw = f"segments_{spec.embedder}_{spec.embedder_version}"
    return re.sub(r"[^A-Za-z0-9_]", "_", raw)[:255]


class MilvusIndex:
    """Segments of one embedder in a Milvus collection; thread-safe."""

    def __init__(
        self,
        spec: IndexSpec,
        *,
        source: SegmentSource,
        uri: str,
        token: str = "",
        index_type: str = "AUTOINDEX",
        search_params: str = "",
    ) -> None:
        from pymilvus import MilvusClient  # an optional extra: imported when chosen

        if source.dim != spec.dim:
            raise IndexMismatch(f"the segment source holds dim {source.dim}, the index {spec.dim}")
        if index_type not in INDEX_TYPES:
            raise ValueError(f"Milvus index type {index_type!r}; known: {', '.join(INDEX_TYPES)}")
        self.spec = spec
        self.source = source
        self.uri = uri
        self.index_type = index_type
        self._search_override = _parse_params(search_params)
        self.collection = _collection_name(spec)
        self._client: Any = MilvusClient(uri=uri, token=token)
        self._sync_lock = threading.Lock()
        self._slots_lock = threading.Lock()
        self._track_ids: list[uuid.UUID] = []
        self._track_slots: dict[uuid.UUID, int] = {}
        self._segment_watermark = 0
        self._withdrawal_watermark = 0
        self._count = 0
        self._build_params: dict[str, int] = {}
        self._changes = 0
        self._saved_changes = 0
        self._saved_at = 0.0
        self._started_from: str | None = None
        self._start_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def snapshot_path(self) -> Path:
        return Path(self.uri)

    def start(self) -> SyncStats:
        """Resume from the collection and its watermarks, or rebuild; then catch up."""
        started = time.perf_counter()
        kept = self._read_state()
        if kept is None:
            with self._sync_lock:
                self._build()
            source = "rebuild"
        else:
            self._segment_watermark, self._withdrawal_watermark, self._build_params = kept
            self._client.load_collection(self.collection)
            self._count = self._stored_count()
            source = "snapshot"
        stats = self.sync()
        self._started_from = source
        self._start_seconds = round(time.perf_counter() - started, 3)
        log.info(
            "index.ready",
            backend="milvus",
            source=source,
            segments=self.size,
            watermark=self.watermark,
            seconds=round(self._start_seconds, 2),
            index_type=self.index_type,
        )
        return stats

    def rebuild(self) -> None:
        with self._sync_lock:
            self._build()
        self.save_snapshot(force=True)

    def close(self) -> None:
        self._client.close()

    @property
    def size(self) -> int:
        return self._count

    @property
    def watermark(self) -> int:
        return self._segment_watermark

    # -- reading -----------------------------------------------------------------------------

    def search(self, vectors: npt.NDArray[np.float32], *, k: int) -> SearchResult:
        if vectors.ndim != 2 or vectors.shape[1] != self.spec.dim:
            raise IndexMismatch(
                f"query vectors have shape {vectors.shape}; this index holds dim {self.spec.dim}"
            )
        watermark = self._segment_watermark
        m = int(vectors.shape[0])
        k = max(1, min(k, max(1, self._count)))
        sims = np.full((m, k), -np.inf, dtype=np.float32)
        ids = np.full((m, k), -1, dtype=np.int64)
        tracks = np.full((m, k), -1, dtype=np.int64)
        starts = np.zeros((m, k), dtype=np.float32)
        if m and self._count:
            hits = self._client.search(
                self.collection,
                data=np.ascontiguousarray(vectors, dtype=np.float32).tolist(),
                limit=k,
                output_fields=["track_id", "start_s"],
                search_params={"metric_type": "IP", "params": self._search_params(k)},
            )
            for row, found in enumerate(hits):
                for col, hit in enumerate(list(found)[:k]):
                    entity = hit["entity"]
                    sims[row, col] = hit["distance"]
                    ids[row, col] = hit["id"]
                    tracks[row, col] = self._slot(uuid.UUID(entity["track_id"]))
                    starts[row, col] = entity["start_s"]
        return SearchResult(
            similarities=sims,
            tracks=tracks,
            reference_starts=starts,
            segments=ids,
            track_ids=self._track_ids,
            watermark=watermark,
        )

    def _slot(self, track_id: uuid.UUID) -> int:
        found = self._track_slots.get(track_id)
        if found is None:
            with self._slots_lock:
                found = self._track_slots.get(track_id)
                if found is None:
                    found = len(self._track_ids)
                    self._track_ids.append(track_id)
                    self._track_slots[track_id] = found
        return found

    def _search_params(self, k: int) -> dict[str, int]:
        if self._search_override:
            return dict(self._search_override)
        if self.index_type in ("IVF_FLAT", "IVF_SQ8"):
            return {"nprobe": tiers.nprobe_for(self._build_params.get("nlist", 128))}
        if self.index_type in ("HNSW", "AUTOINDEX"):
            return {"ef": max(64, k)}
        return {}

    # -- keeping up with the database --------------------------------------------------------

    def catch_up(self) -> None:
        if self.source.last_segment_id() > self.watermark:
            self.sync()

    def sync(self) -> SyncStats:
        with self._sync_lock:
            stats = SyncStats()
            while True:
                batch = self.source.segments_after(self._segment_watermark, limit=_BATCH)
                if not len(batch):
                    break
                stats.added += self._write(batch, upsert=True)
                self._segment_watermark = int(batch.ids[-1])
                self._changes += 1
            withdrawals = self.source.withdrawals_after(self._withdrawal_watermark)
            if withdrawals:
                segment_ids = self.source.segment_ids_of([t for t, _ in withdrawals])
                stats.removed = self._delete(segment_ids)
                self._withdrawal_watermark = withdrawals[-1][1]
                stats.withdrawn_tracks = len(withdrawals)
                self._changes += 1
            if stats.added or stats.withdrawn_tracks:
                log.info(
                    "index.synced",
                    backend="milvus",
                    added=stats.added,
                    removed=stats.removed,
                    withdrawn_tracks=stats.withdrawn_tracks,
                    watermark=self._segment_watermark,
                )
            return stats

    def _write(self, batch: SegmentBatch, *, upsert: bool) -> int:
        keep = np.flatnonzero(batch.live)
        rows = [
            {
                "id": int(batch.ids[i]),
                "track_id": str(batch.track_ids[i]),
                "start_s": float(batch.starts[i]),
                "vector": batch.vectors[i].tolist(),
            }
            for i in keep
        ]
        write = self._client.upsert if upsert else self._client.insert
        for first in range(0, len(rows), _INSERT_CHUNK):
            write(self.collection, rows[first : first + _INSERT_CHUNK])
        # An upsert of a segment already held (a replayed stretch) does not add one; the
        # count is corrected from Milvus at the next start.
        self._count += len(rows)
        return len(rows)

    def _delete(self, segment_ids: npt.NDArray[np.int64]) -> int:
        removed = 0
        values = [int(i) for i in segment_ids]
        for first in range(0, len(values), _INSERT_CHUNK):
            chunk = values[first : first + _INSERT_CHUNK]
            result = self._client.delete(self.collection, ids=chunk)
            removed += int(_delete_count(result, len(chunk)))
        self._count = max(0, self._count - removed)
        return removed

    # -- building ----------------------------------------------------------------------------

    def _build(self) -> None:
        """Drop the collection and load every live segment from the database."""
        from pymilvus import DataType

        started = time.perf_counter()
        count = self.source.segment_count()
        self._build_params = self._index_build_params(count)
        if self._client.has_collection(self.collection):
            self._client.drop_collection(self.collection)
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("track_id", DataType.VARCHAR, max_length=36)
        schema.add_field("start_s", DataType.FLOAT)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.spec.dim)
        index = self._client.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_type=self.index_type,
            metric_type="IP",
            params=self._build_params,
        )
        self._create(self.collection, schema, index)
        self._segment_watermark = 0
        self._withdrawal_watermark = self.source.last_withdrawal()
        self._count = 0
        while True:
            batch = self.source.segments_after(self._segment_watermark, limit=_BATCH)
            if not len(batch):
                break
            self._write(batch, upsert=False)
            self._segment_watermark = int(batch.ids[-1])
        # Seal what was written so it is indexed: unsealed rows are searched exhaustively.
        self._client.flush(self.collection)
        self._client.load_collection(self.collection)
        self._changes += 1
        log.info(
            "index.built",
            backend="milvus",
            segments=self._count,
            index_type=self.index_type,
            params=self._build_params,
            seconds=round(time.perf_counter() - started, 2),
        )

    def _create(self, name: str, schema: Any, index: Any) -> None:
        """A collection with strong consistency (a search sees every write before it).

        The index is declared without waiting for it to be built (`sync=False`): it is built
        as rows arrive, and waiting asks the server for a timestamp Milvus Lite lacks."""
        self._client.create_collection(name, schema=schema, consistency_level="Strong")
        self._client.create_index(name, index, sync=False)

    def _index_build_params(self, count: int) -> dict[str, int]:
        if self.index_type in ("IVF_FLAT", "IVF_SQ8"):
            return {"nlist": tiers.nlist_for(max(count, 1))}
        if self.index_type == "HNSW":
            return {"M": 16, "efConstruction": 200}
        return {}

    def _stored_count(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    # -- the kept state ----------------------------------------------------------------------

    def _fingerprint(self) -> str:
        return json.dumps(
            {
                "embedder": self.spec.embedder,
                "embedder_version": self.spec.embedder_version,
                "dim": self.spec.dim,
                "index_type": self.index_type,
            },
            sort_keys=True,
        )

    def _ensure_state_collection(self) -> None:
        from pymilvus import DataType

        if self._client.has_collection(_STATE_COLLECTION):
            return
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=255)
        schema.add_field("segment_watermark", DataType.INT64)
        schema.add_field("withdrawal_watermark", DataType.INT64)
        schema.add_field("fingerprint", DataType.VARCHAR, max_length=1024)
        schema.add_field("build_params", DataType.VARCHAR, max_length=1024)
        # Milvus wants a vector field in every collection; this one is never searched.
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        index = self._client.prepare_index_params()
        index.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        self._create(_STATE_COLLECTION, schema, index)

    def _read_state(self) -> tuple[int, int, dict[str, int]] | None:
        """(segment watermark, withdrawal watermark, build params) kept for this collection,
        or None when there is no usable collection (missing, or made for another embedder or
        index type)."""
        self._ensure_state_collection()
        if not self._client.has_collection(self.collection):
            log.info("index.milvus_collection_missing", collection=self.collection)
            return None
        rows = self._client.query(
            _STATE_COLLECTION,
            filter=f'key == "{self.collection}"',
            output_fields=[
                "segment_watermark",
                "withdrawal_watermark",
                "fingerprint",
                "build_params",
            ],
        )
        if not rows:
            log.warning("index.milvus_state_missing", collection=self.collection)
            return None
        row = rows[0]
        if row["fingerprint"] != self._fingerprint():
            log.warning(
                "index.milvus_collection_stale",
                collection=self.collection,
                kept=row["fingerprint"],
                wanted=self._fingerprint(),
            )
            return None
        return (
            int(row["segment_watermark"]),
            int(row["withdrawal_watermark"]),
            {str(k): int(v) for k, v in json.loads(row["build_params"]).items()},
        )

    def save_snapshot(self, *, force: bool = False) -> bool:
        """Record the watermarks the collection is known to hold (its rows are already kept)."""
        with self._sync_lock:
            if self._changes == self._saved_changes and not force:
                return False
            changes = self._changes
            # Seal the rows written since the last time (indexed, and durable on a cluster)
            # before recording that the collection holds them.
            self._client.flush(self.collection)
            self._ensure_state_collection()
            self._client.upsert(
                _STATE_COLLECTION,
                [
                    {
                        "key": self.collection,
                        "segment_watermark": self._segment_watermark,
                        "withdrawal_watermark": self._withdrawal_watermark,
                        "fingerprint": self._fingerprint(),
                        "build_params": json.dumps(self._build_params),
                        "unused": [0.0, 0.0],
                    }
                ],
            )
        self._saved_changes = changes
        self._saved_at = time.monotonic()
        return True

    def snapshot_due(self, every_seconds: float) -> bool:
        changed = self._changes != self._saved_changes
        return changed and time.monotonic() - self._saved_at >= every_seconds

    # -- choosing ----------------------------------------------------------------------------

    def retrain_needed(self) -> tiers.IndexChoice | None:
        """Never: Milvus builds and rebuilds its own indexes as segments seal."""
        return None

    def retrain(self, choice: tiers.IndexChoice) -> bool:
        return False

    def report(self) -> IndexReport:
        params = self._search_override or self._search_params(20)
        return IndexReport(
            factory=f"milvus:{self.index_type}",
            search_params=",".join(f"{k}={v}" for k, v in params.items()),
            chosen_by="setting",
            segments=self._count,
            segments_at_choice=None,
            trained_at=None,
            training_sample=0,
            retraining_to=None,
            started_from=self._started_from,
            start_seconds=self._start_seconds,
        )


def _parse_params(text: str) -> dict[str, int]:
    """`"nprobe=32"` or `"ef=128"` into a dict; raises ValueError on anything else."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip().isidentifier() or not value.strip().isdigit():
            raise ValueError(f"cannot parse {part!r} in Milvus search params {text!r}")
        out[name.strip()] = int(value)
    return out


def _delete_count(result: Any, asked: int) -> int:
    """How many rows a delete removed, as pymilvus reports it (a dict or an object)."""
    if isinstance(result, dict) and "delete_count" in result:
        return int(result["delete_count"])
    count = getattr(result, "delete_count", None)
    return int(count) if count is not None else asked
