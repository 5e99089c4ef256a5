"""FAISS and Milvus side by side, through the service's own index backends.

    python -m bench.backends --size 200000
    python -m bench.backends --size 1000000 --milvus-types IVF_SQ8 --json backends.json

Both backends are driven exactly as the service drives them (`IndexManager`, `MilvusIndex`):
built from a segment source, then searched with one check's query (``--windows`` vectors,
225 = 45 windows x 5 transpositions, k = 20). The source here is an in-memory array of the
structured synthetic catalogue of `bench/index.py` (tracks as smooth walks around style
anchors, queries re-rendered excerpts and novel pieces) instead of PostgreSQL, so that the
figures are the engines' and not the database's. Milvus runs as Milvus Lite, embedded in this
process (its pure-Python server over FAISS kernels) unless ``--milvus-uri`` names a Milvus
server; a Milvus cluster's figures would differ.

Printed per option: build seconds, RSS growth of the process over the build, search p50 / p95
(one thread), recall@10 against exact search.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from app.index import tiers, tuning
from app.index.base import FloatArray, IdArray, IndexMismatch, SegmentBatch
from app.index.manager import IndexManager, IndexSpec
from bench.index import _pct, _rss, make_corpus, recall_at

DIM = 128
K = 20


class ArraySource:
    """A `SegmentSource` over arrays in memory: segment i + 1 is row i, 240 per track."""

    def __init__(self, vectors: FloatArray, track_len: int = 240) -> None:
        self._vectors = vectors
        n = vectors.shape[0]
        self._ids = np.arange(1, n + 1, dtype=np.int64)
        tracks = [uuid.UUID(int=t + 1) for t in range(-(-n // track_len))]
        self._track_of = [tracks[i // track_len] for i in range(n)]
        self._starts = (np.arange(n) % track_len).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def segments_after(self, after: int, *, limit: int) -> SegmentBatch:
        lo = max(0, after)
        hi = min(self._vectors.shape[0], lo + limit)
        return SegmentBatch(
            ids=self._ids[lo:hi],
            track_ids=self._track_of[lo:hi],
            starts=self._starts[lo:hi],
            vectors=self._vectors[lo:hi],
            live=np.ones(hi - lo, dtype=bool),
        )

    def last_segment_id(self) -> int:
        return int(self._vectors.shape[0])

    def withdrawals_after(self, after: int) -> list[tuple[uuid.UUID, int]]:
        return []

    def last_withdrawal(self) -> int:
        return 0

    def segment_ids_of(self, track_ids: Sequence[uuid.UUID]) -> IdArray:
        return np.zeros(0, dtype=np.int64)

    def vectors(self, segment_ids: IdArray) -> FloatArray:
        if segment_ids.size and (segment_ids.min() < 1 or segment_ids.max() > len(self._ids)):
            raise IndexMismatch("unknown segment ids")
        return np.ascontiguousarray(self._vectors[segment_ids - 1])

    def track_windows(self, track_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
        return {}

    def segment_count(self) -> int:
        return int(self._vectors.shape[0])

    def sample_ids(self, n: int) -> IdArray:
        rng = np.random.default_rng(0)
        size = min(n, len(self._ids))
        return np.sort(rng.choice(self._ids, size=size, replace=False))


def measure(name: str, make: Any, queries: FloatArray, truth: IdArray) -> dict[str, Any]:
    before = _rss()
    started = time.perf_counter()
    index = make()
    index.start()
    build_s = time.perf_counter() - started
    grown = _rss() - before
    tuning.set_search_threads(1)
    for q in queries[:3]:
        index.search(q, k=K)
    latencies, recalls = [], []
    for q, t in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        found = index.search(q, k=K)
        latencies.append((time.perf_counter() - t0) * 1000)
        recalls.append(float(recall_at(found.segments, t).mean()))
    row = {
        "option": name,
        "report": index.report().factory,
        "build_s": round(build_s, 1),
        "rss_mb": round(grown / 2**20),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(_pct(latencies, 95), 1),
        "recall_at_10": round(statistics.fmean(recalls), 3),
    }
    print(row, file=sys.stderr)
    close = getattr(index, "close", None)
    if close is not None:
        close()
    del index
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--windows", type=int, default=225)
    parser.add_argument("--milvus-types", default="IVF_SQ8,HNSW")
    parser.add_argument(
        "--milvus-uri", default=None, help="a Milvus server (http://host:19530); default: Lite"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    tuning.prefer_blas(DIM)
    corpus = make_corpus(
        args.size,
        DIM,
        n_queries=args.queries,
        windows=args.windows,
        styles=200,
        track_len=240,
        seed=0,
    )
    source = ArraySource(corpus.vectors)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(corpus.vectors)
    truth = []
    for q in corpus.queries:
        _, ids = exact.search(q, 10)
        truth.append(ids + 1)  # row i is segment i + 1
    del exact
    queries = [np.ascontiguousarray(q) for q in corpus.queries]

    choice = tiers.choose(args.size, DIM, tiers.TierPolicy())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = IndexSpec("bench", "1", DIM, factory="auto")
        rows.append(
            measure(
                f"faiss auto ({choice.factory} {choice.search_params})",
                lambda: IndexManager(spec, source=source, snapshot_dir=Path(tmp) / "faiss"),
                queries,
                truth,
            )
        )
        from app.index.milvus import MilvusIndex

        for kind in filter(None, args.milvus_types.split(",")):
            uri = args.milvus_uri or str(Path(tmp) / f"milvus-{kind}.db")
            rows.append(
                measure(
                    f"milvus {'server' if args.milvus_uri else 'lite'} {kind}",
                    lambda kind=kind, uri=uri: MilvusIndex(
                        spec, source=source, uri=uri, index_type=kind
                    ),
                    queries,
                    truth,
                )
            )
    print(f"{args.size} segments, dim {DIM}, {args.windows} query vectors, k = {K}, one thread")
    print(f"{'option':<44}{'build s':>9}{'RSS MB':>8}{'p50 ms':>8}{'p95 ms':>8}{'recall@10':>10}")
    for r in rows:
        print(
            f"{r['option']:<44}{r['build_s']:>9}{r['rss_mb']:>8}{r['p50_ms']:>8}{r['p95_ms']:>8}"
            f"{r['recall_at_10']:>10}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
