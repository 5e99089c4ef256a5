"""Benchmark FAISS index options for the window-embedding index.

    python -m bench.index --sizes 100000,1000000 --dims 128,256 --json bench/results/index.json

For every (dim, size) it generates a synthetic catalogue, builds each index option through
``app.index.factory`` and reports build/train time, memory (serialised bytes and RSS
growth), the latency of one 30-second query (one ``search`` call with ``--windows`` vectors,
``k=--k``; median and p95 over ``--queries`` queries) and recall@10 against exact search.
The bar from the issue: a 1M-segment index answers a 30-s query in < 50 ms with
recall@10 >= 0.95 (judged here on p95 latency).

Synthetic data
--------------
Isotropic noise has no neighbourhood structure and makes every ANN index look bad (or, at
low dimension, trivially good). Real window embeddings cluster by style, then by track,
and consecutive windows of a track are close. The generator mimics that hierarchy:

1. ``--styles`` style centres, uniform on the unit sphere, with log-normal popularity.
2. Tracks of ``--track-len`` windows (240 = 4 min at the catalogue's 1 s hop). A track picks a style
   by popularity and an anchor ``a = norm(style + s_track * e)`` (cos(a, style) ~ 0.71;
   two tracks of one style ~ 0.5).
3. The windows of a track are a smooth AR(1) walk around its anchor:
   ``x_j = norm(a + u_j)``, ``u_{j+1} = rho * u_j + sqrt(1 - rho^2) * s_seg * e_j``,
   rho = 0.9, so adjacent windows have cos ~ 0.97 and far-apart windows of one track ~ 0.74.
4. All noise vectors ``e`` are anisotropic like real embeddings: per-axis scales decaying as
   (i + 1) ** -0.5 (normalised to unit mean square) in a random orthonormal basis, divided
   by sqrt(dim) so that ``|e|`` ~ 1.

Queries are pieces of ``--windows`` consecutive windows (225 by default: as many vectors as a
check of a 30-s piece searches in one call, 45 windows times 5 transpositions), two kinds in
equal numbers:

* derived: a stored track re-rendered - consecutive windows from a random start,
  interpolated at a random sub-hop offset (the piece is not aligned to the stored grid),
  plus noise of scale ``s_query`` (cos to the source window ~ 0.9). Their true neighbours
  are mostly neighbouring windows of the source track.
* novel: a new track of a random style that is not in the catalogue. Their neighbours are
  windows of many other tracks of that style; the harder case for IVF/HNSW.

Ground truth is the exact inner-product top-10 (the Flat option, which runs first).

Real music (``--data music --corpus DIR``)
------------------------------------------
The vectors are windows of tracks recombined from the frame features of a built evaluation
corpus's catalogue (`bench/music_vectors.py`: real passages, transposed, re-timed, layered),
embedded by the spectral embedder's own pooling; the queries are real checks: 45 windows
(30 s at the 0.5-s check hop) of the corpus's query files (derived: edits of catalogue
recordings) and negatives (novel), searched as a check's key scan sends them: every third
window at all twelve transpositions and the others at three, 270 vectors per search call
(``--all-keys``: every window at twelve, 540, the search before the key scan)::

    python -m bench.index --data music --corpus .echoledger/corpus-full --sizes 10000000 \
        --dims 128 --options flat,ivf-sq8 --queries 16 --truth-rows 2000 --search-threads 1

(about an hour on two cores, 12 GB of memory; `--truth-rows` keeps the exact search to one
batched call, where searching every check exactly would take hours)

Notes on measurement
--------------------
* Latency: one ``search`` per 30-s query, after 3 warm-up calls; median and p95. Each
  option is timed with every ``--search-threads`` value (OpenMP threads per search, set in
  the searching thread). Brute-force options other than Flat are timed on the first
  ``--brute-queries`` queries only.
* Memory: ``serialised`` is the size of the index as written to a file; ``rss`` is the
  growth of the process RSS over build (after malloc_trim), which includes id maps and
  allocator slack.
* IVF variants that share ``nlist`` train k-means once (in the first IVF option at that
  size) and reuse the centroids; their ``train`` column then covers only the codec.
  k-means uses ``recommended_training_size`` points (39 per centroid).
* Unless ``--faiss-blas-default``, ``tuning.prefer_blas(dim)`` lets 60-row query batches use
  BLAS for exhaustive distances (flat search, IVF coarse step); see its docstring.
* ``--concurrency`` runs a few Python threads searching at once, each with 1 or 2 OpenMP
  threads, to show throughput and tail latency under concurrent requests.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import psutil

from app.checks.attribution import AttributionParams
from app.index import factory as fx
from app.index import tiers, tuning
from app.index.reranked import RerankedIndex

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

RHO = 0.9
S_TRACK = 1.0
S_SEG = 0.6
S_QUERY = 0.5
RECALL_AT = 10
BAR_MS = 50.0
BAR_RECALL = 0.95
BAR_MEMORY_BYTES = 3 * 10**9  # index memory at 10M segments (issue "Scale")
# What a check runs with (the shipped calibration): its similarity floor (hits below it never
# propose a track) and its key scan.
CHECK_PARAMS = AttributionParams.load()
FLOOR = CHECK_PARAMS.similarity_floor


# --- synthetic data -----------------------------------------------------------------------


def _normalise(x: F32) -> F32:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


@dataclass
class NoiseModel:
    """Anisotropic noise: per-axis decaying scales in a random orthonormal basis."""

    scales: F32
    basis: F32

    @classmethod
    def make(cls, dim: int, rng: np.random.Generator) -> NoiseModel:
        scales = (np.arange(1, dim + 1, dtype=np.float64) ** -0.5).astype(np.float32)
        scales /= np.sqrt(np.mean(scales**2))
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        return cls(scales=scales, basis=q.astype(np.float32))

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> F32:
        """Noise of shape (..., dim) with E|e|^2 = 1."""
        dim = self.scales.shape[0]
        g = rng.standard_normal((*shape, dim), dtype=np.float32)
        g *= self.scales / np.float32(math.sqrt(dim))
        return g @ self.basis


@dataclass
class Corpus:
    vectors: F32  # [n, dim]
    queries: F32  # [n_queries, windows, dim]
    derived: npt.NDArray[np.bool_]  # [n_queries]
    stats: dict[str, float] = field(default_factory=dict)


def _walks(anchors: F32, length: int, noise: NoiseModel, rng: np.random.Generator) -> F32:
    """Windows [tracks, length, dim]: an AR(1) walk around each anchor, renormalised."""
    t, dim = anchors.shape
    out = np.empty((t, length, dim), dtype=np.float32)
    u = noise.sample((t,), rng) * np.float32(S_SEG)
    step = np.float32(math.sqrt(1 - RHO**2) * S_SEG)
    for j in range(length):
        out[:, j] = _normalise(anchors + u)
        u = np.float32(RHO) * u + step * noise.sample((t,), rng)
    return out


def make_corpus(
    n: int,
    dim: int,
    *,
    n_queries: int,
    windows: int,
    styles: int,
    track_len: int,
    seed: int,
) -> Corpus:
    rng = np.random.default_rng(seed)
    noise = NoiseModel.make(dim, rng)
    centres = _normalise(rng.standard_normal((styles, dim), dtype=np.float32))
    popularity = rng.lognormal(0.0, 1.0, styles)
    popularity /= popularity.sum()

    def anchors(count: int) -> F32:
        style = rng.choice(styles, size=count, p=popularity)
        return _normalise(centres[style] + np.float32(S_TRACK) * noise.sample((count,), rng))

    n_tracks = math.ceil(n / track_len)
    tracks = _walks(anchors(n_tracks), track_len, noise, rng)
    vectors = np.ascontiguousarray(tracks.reshape(-1, dim)[:n])
    full_tracks = n // track_len  # tracks stored in full

    derived = np.zeros(n_queries, dtype=bool)
    derived[: n_queries // 2] = True
    rng.shuffle(derived)
    queries = np.empty((n_queries, windows, dim), dtype=np.float32)
    n_derived = int(derived.sum())
    if n_derived:
        if full_tracks < 1 or track_len < windows + 1:
            raise SystemExit("need at least one full track longer than a query")
        src = rng.integers(0, full_tracks, n_derived)
        start = rng.integers(0, track_len - windows, n_derived)
        frac = rng.random(n_derived, dtype=np.float32)[:, None, None]
        rows = start[:, None] + np.arange(windows)[None, :]
        a = tracks[src[:, None], rows]
        b = tracks[src[:, None], rows + 1]
        base = _normalise((1 - frac) * a + frac * b)
        queries[derived] = _normalise(
            base + np.float32(S_QUERY) * noise.sample((n_derived, windows), rng)
        )
    if n_queries - n_derived:
        queries[~derived] = _walks(anchors(n_queries - n_derived), windows, noise, rng)

    adjacent = np.einsum("tjd,tjd->tj", tracks[:, 1:], tracks[:, :-1])
    far = np.einsum("td,td->t", tracks[:, 0], tracks[:, -1])
    stats = {
        "cos_adjacent_windows": float(adjacent.mean()),
        "cos_first_last_window": float(far.mean()),
        "tracks": float(n_tracks),
    }
    del tracks
    return Corpus(vectors=vectors, queries=queries, derived=derived, stats=stats)


# --- measurement helpers ------------------------------------------------------------------

_libc: Any = None


def _trim() -> None:
    """Return freed heap pages to the OS so RSS deltas mean something."""
    global _libc
    gc.collect()
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
        except OSError:
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


def _rss() -> int:
    _trim()
    return int(psutil.Process().memory_info().rss)


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def recall_at(found: I64, truth: I64, r: int = RECALL_AT) -> npt.NDArray[np.float64]:
    """Per-row |found[:, :r] & truth[:, :r]| / r."""
    hits = (found[:, :r, None] == truth[:, None, :r]).any(axis=2).sum(axis=1)
    out: npt.NDArray[np.float64] = hits.astype(np.float64) / r
    return out


@dataclass
class Timing:
    threads: int
    queries: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    cpu_p50_ms: float  # CPU time of the calling thread: robust to other load when threads == 1
    cpu_p95_ms: float


@dataclass
class SettingResult:
    params: str
    timings: list[Timing]
    recall10: float
    recall10_derived: float
    recall10_novel: float
    recall_queries: int
    meets_bar_threads: list[int]
    # --truth-rows: recall of the exact top-k neighbours at or above the proposal floor
    recall_above_floor: float = math.nan


@dataclass
class OptionResult:
    option: str
    factory: str
    removable: bool
    reconstructable: bool
    train_s: float
    add_s: float
    serialised_bytes: int
    rss_delta_bytes: int
    bytes_per_vector: float
    settings: list[SettingResult]
    note: str = ""
    load_before: float = 0.0  # 1-minute load average when the build started


def time_queries(
    index: fx.Index, queries: F32, *, k: int, threads: int, warmup: int = 3
) -> tuple[list[float], list[float], I64]:
    """Run one search per query; returns per-query wall and thread-CPU seconds, and ids.

    ids : [len(queries) * windows, k]
    """
    tuning.set_search_threads(threads)
    for i in range(min(warmup, len(queries))):
        fx.search(index, queries[i], k=k)
    times: list[float] = []
    cpu: list[float] = []
    ids: list[I64] = []
    for q in queries:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        _, found = fx.search(index, q, k=k)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        ids.append(found)
    return times, cpu, np.concatenate(ids)


def similarity_stats(index: fx.Index, corpus: Corpus, per_kind: int = 20) -> dict[str, float]:
    """Mean exact top-1 and top-10 similarity of derived and novel query windows."""
    stats: dict[str, float] = {}
    for kind, mask in (("derived", corpus.derived), ("novel", ~corpus.derived)):
        q = corpus.queries[mask][:per_kind]
        if len(q):
            sims, _ = fx.search(index, np.ascontiguousarray(q.reshape(-1, q.shape[2])), k=10)
            stats[f"{kind}_top1_sim"] = float(sims[:, 0].mean())
            stats[f"{kind}_top10_sim"] = float(sims[:, 9].mean())
    return stats


def synthetic_corpus(n: int, dim: int, args: argparse.Namespace, *, seed: int) -> Corpus:
    """`make_corpus` with the command line's query and catalogue shape."""
    return make_corpus(
        n,
        dim,
        n_queries=args.queries,
        windows=args.windows,
        styles=args.styles,
        track_len=args.track_len,
        seed=seed,
    )


def music_corpus(n: int, dim: int, args: argparse.Namespace) -> Corpus:
    """Recombined real music and real checks (`bench/music_vectors.py`)."""
    from bench.corpus import load_manifest
    from bench.music_vectors import check_queries, describe, music_vectors

    if args.corpus is None:
        raise SystemExit("--data music needs --corpus, a built bench.corpus directory")
    manifest = load_manifest(args.corpus)
    vectors = music_vectors(manifest, n, seed=args.seed)
    if vectors.shape[1] != dim:
        raise SystemExit(f"the spectral embedder gives {vectors.shape[1]} dimensions, not {dim}")
    queries, derived = check_queries(
        manifest,
        count=args.queries,
        windows=args.check_windows,
        seed=args.seed,
        key_scan=None if args.all_keys else (CHECK_PARAMS.key_scan_stride, CHECK_PARAMS.scan_keys),
    )
    stats = describe(vectors, np.random.default_rng(args.seed))
    return Corpus(vectors=vectors, queries=queries, derived=derived, stats=stats)


def sample_truth(index: fx.Index, corpus: Corpus, rows: I64, *, k: int) -> tuple[I64, I64]:
    """Exact top-k of sampled query rows in one batched search (BLAS at full block size), and
    their similarity statistics; a stand-in for searching every query at ten million.

    Returns the ids, and the ids of the neighbours at or above the proposal floor `FLOOR`
    (others -2): what the attribution's proposal step can use at all."""
    flat = corpus.queries.reshape(-1, corpus.queries.shape[2])
    sims, ids = fx.search(index, np.ascontiguousarray(flat[rows]), k=k)
    kinds = corpus.derived[rows // corpus.queries.shape[1]]
    for kind, mask in (("derived", kinds), ("novel", ~kinds)):
        if mask.any():
            corpus.stats[f"{kind}_top1_sim"] = float(sims[mask, 0].mean())
            corpus.stats[f"{kind}_top10_sim"] = float(sims[mask, 9].mean())
    truth: I64 = np.where(sims >= FLOOR, ids, -2)  # -2: below the floor, matches no id
    corpus.stats["truth_rows_with_a_hit_above_floor"] = float((sims[:, 0] >= FLOOR).mean())
    return ids, truth


# --- options --------------------------------------------------------------------------------


@dataclass
class Option:
    name: str
    factory: Callable[[int, int], str]  # (n, dim) -> factory string
    sweep: Callable[[int], list[str]]  # n -> search param strings
    brute: bool = False  # scans everything: time on --brute-queries only
    removal: bool = True  # False: benchmark an index the service could not use as is


# The service's rule for inverted lists (about 4·√n, a power of two): 1024 at 100k, 4096 at 1M.
nlist_for = tiers.nlist_for


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in [
        Option("flat", lambda n, d: "Flat", lambda n: [""], brute=True),
        Option("sq8", lambda n, d: "SQ8", lambda n: [""], brute=True),
        Option(
            "hnsw32",
            lambda n, d: "HNSW32",
            lambda n: [f"efSearch={e}" for e in (32, 64, 128, 256, 512)],
            removal=False,
        ),
        Option(
            # Graphs over 8-bit codes: what a graph would cost at 10M segments in memory
            # (128 B of codes plus 2·M links of 4 B each per segment).
            "hnsw16-sq8",
            lambda n, d: "HNSW16_SQ8",
            lambda n: [f"efSearch={e}" for e in (32, 64, 128, 256, 512)],
            removal=False,
        ),
        Option(
            "hnsw32-sq8",
            lambda n, d: "HNSW32_SQ8",
            lambda n: [f"efSearch={e}" for e in (32, 64, 128, 256, 512)],
            removal=False,
        ),
        Option(
            "ivf-flat",
            lambda n, d: f"IVF{nlist_for(n)},Flat",
            lambda n: [f"nprobe={p}" for p in (4, 8, 16, 32, 64, 128)],
        ),
        Option(
            "ivf-sq8",
            lambda n, d: f"IVF{nlist_for(n)},SQ8",
            lambda n: [f"nprobe={p}" for p in (8, 16, 32, 64)],
        ),
        Option(
            "ivf-pq",
            # "np": skip polysemous training (slow, only useful with a Hamming threshold)
            lambda n, d: f"IVF{nlist_for(n)},PQ{d // 4}np",
            lambda n: [f"nprobe={p}" for p in (16, 32, 64)],
        ),
        Option(
            # The tier `ECHOLEDGER_INDEX_FACTORY=auto` picks at tens of millions of segments.
            "opq-ivf-pq",
            lambda n, d: f"OPQ{tiers.pq_bytes(d)},IVF{nlist_for(n)},PQ{tiers.pq_bytes(d)}",
            lambda n: [f"nprobe={p}" for p in (16, 32, 64)],
        ),
        Option(
            # 4-bit PQ codes scanned with SIMD lookups (two dimensions per sub-quantizer),
            # 32 bytes a segment at 128 dimensions, a quarter of SQ8's.
            "ivf-pqfs",
            lambda n, d: f"IVF{nlist_for(n)},PQ{d // 2}x4fs",
            lambda n: [f"nprobe={p}" for p in (32, 64, 128, 256)],
        ),
        Option(
            # The same, the top k * k_factor_rf re-ranked on SQ8 codes: the service's
            # RerankedIndex (removable), with the lists SQ8 would have (what `auto` picked
            # from ECHOLEDGER_INDEX_RERANK_FROM_SEGMENTS before the coarse variant below).
            "ivf-pqfs-rsq8",
            lambda n, d: f"IVF{nlist_for(n)},PQ{d // 2}x4fs,Refine(SQ8)",
            lambda n: [f"nprobe={p},k_factor_rf=4" for p in (32, 64, 128, 256, 512)],
        ),
        Option(
            # The same over a quarter of the lists, probing a quarter as many (the same share
            # of the codes): a check searches a few hundred rows at once, so the coarse step
            # (every row against every centroid) is a cost of its own at 16k lists. What
            # `auto` picks from ECHOLEDGER_INDEX_RERANK_FROM_SEGMENTS (tiers.
            # RERANK_LIST_DIVISOR), at half the nprobe of the row above.
            "ivf-pqfs-rsq8-coarse",
            lambda n, d: (
                f"IVF{max(tiers.MIN_NLIST, nlist_for(n) // tiers.RERANK_LIST_DIVISOR)},"
                f"PQ{d // 2}x4fs,Refine(SQ8)"
            ),
            lambda n: [f"nprobe={p},k_factor_rf=4" for p in (8, 16, 32, 64, 128)],
        ),
        Option(
            "ivf-hnsw-flat",
            lambda n, d: f"IVF{4 * nlist_for(n)}_HNSW32,Flat",
            lambda n: [f"nprobe={p},quantizer_efSearch=128" for p in (16, 32, 64, 128)],
        ),
    ]
}
DEFAULT_OPTIONS = "flat,sq8,hnsw32,ivf-flat,ivf-sq8,ivf-pq"


class _ByteCounter(io.RawIOBase):
    """A sink that counts what is written to it (no copy of a 10M-segment index)."""

    written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.written += size
        return size


def _serialised_size(index: fx.Index) -> int:
    if isinstance(index, RerankedIndex):
        counter = _ByteCounter()
        index.write(counter)  # type: ignore[arg-type]
        return counter.written
    return int(faiss.serialize_index(index).nbytes)


def build(
    option: Option,
    corpus: Corpus,
    shared_centroids: dict[int, F32],
    log: Callable[[str], None],
    build_threads: int,
) -> tuple[fx.Index, OptionResult]:
    n, dim = corpus.vectors.shape
    spec = option.factory(n, dim)
    load = os.getloadavg()[0]
    tuning.set_search_threads(build_threads)
    rss0 = _rss()
    index = fx.create_index(spec, dim, require_removal=option.removal, require_reconstruct=False)
    caps = fx.capabilities(index)
    note = ""
    t0 = time.perf_counter()
    if fx.needs_training(index):
        ivf = faiss.try_extract_index_ivf(index.base if isinstance(index, RerankedIndex) else index)
        nlist = int(ivf.nlist) if ivf is not None else 0
        reuse = ivf is not None and nlist in shared_centroids and "HNSW" not in spec
        if reuse and ivf is not None:
            ivf.quantizer.add(shared_centroids[nlist])
            note = "k-means centroids shared"
        size = min(n, fx.recommended_training_size(index))
        rng = np.random.default_rng(1)
        sample = np.ascontiguousarray(corpus.vectors[np.sort(rng.choice(n, size, replace=False))])
        log(f"    training {spec} on {size} vectors{' (' + note + ')' if note else ''}")
        fx.train(index, sample)
        if ivf is not None and not reuse and "HNSW" not in spec:
            shared_centroids[nlist] = ivf.quantizer.reconstruct_n(0, nlist)
        del sample
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fx.add(index, corpus.vectors, np.arange(n, dtype=np.int64))
    add_s = time.perf_counter() - t0
    rss_delta = _rss() - rss0
    serialised = _serialised_size(index)
    _trim()
    result = OptionResult(
        option=option.name,
        factory=spec,
        removable=caps.removable,
        reconstructable=caps.reconstructable,
        train_s=train_s,
        add_s=add_s,
        serialised_bytes=serialised,
        rss_delta_bytes=rss_delta,
        bytes_per_vector=serialised / n,
        settings=[],
        note=note,
        load_before=load,
    )
    return index, result


def run_size(
    dim: int,
    n: int,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> dict[str, Any]:
    if not args.faiss_blas_default:
        tuning.prefer_blas(dim)
    t0 = time.perf_counter()
    if args.data == "music":
        corpus = music_corpus(n, dim, args)
    else:
        corpus = synthetic_corpus(n, dim, args, seed=args.seed + dim * 7 + n)
    gen_s = time.perf_counter() - t0
    log(
        f"\n== dim={dim} n={n:,}  (data {gen_s:.1f}s; BLAS threshold "
        f"{faiss.cvar.distance_compute_blas_threshold}; adjacent-window cos "
        f"{corpus.stats['cos_adjacent_windows']:.3f}; load {os.getloadavg()[0]:.2f})"
    )
    queries = corpus.queries
    windows = queries.shape[1]
    rows = queries.shape[0] * windows
    sample = np.sort(
        np.random.default_rng(args.seed).choice(rows, min(args.truth_rows, rows), replace=False)
    )
    truth: I64 | None = None
    truth_floor: I64 | None = None
    shared: dict[int, F32] = {}
    results: list[OptionResult] = []
    names = [s for s in args.options.split(",") if s]
    if names[0] != "flat":
        raise SystemExit("the flat option must run first: it provides the ground truth")
    for name in names:
        option = OPTIONS[name]
        if n > args.hnsw_max and name.startswith("hnsw"):
            log(f"  -- skipping {name} at n={n:,} (--hnsw-max {args.hnsw_max:,})")
            continue
        log(f"  -- {name}: building (load {os.getloadavg()[0]:.2f})")
        index, res = build(option, corpus, shared, log, args.build_threads)
        log(
            f"     {res.factory}: train {res.train_s:.1f}s add {res.add_s:.1f}s, "
            f"{res.serialised_bytes / 2**20:.0f} MiB serialised, "
            f"RSS +{res.rss_delta_bytes / 2**20:.0f} MiB"
        )
        if args.truth_rows and name == "flat":
            truth, truth_floor = sample_truth(index, corpus, sample, k=args.k)
            log(f"     exact top-{args.k} of {len(sample):,} sampled query vectors")
            results.append(res)
            del index
            _trim()
            continue
        for params in option.sweep(n):
            fx.apply_search_params(index, params)
            timings: list[Timing] = []
            found: I64 | None = None
            q_recall = 0
            for j, threads in enumerate(args.search_threads):
                count = len(queries)
                if option.brute and (name != "flat" or j > 0):
                    count = min(count, args.brute_queries)
                times, cpu, ids = time_queries(index, queries[:count], k=args.k, threads=threads)
                if found is None:
                    found, q_recall = ids, count
                timings.append(
                    Timing(
                        threads=threads,
                        queries=count,
                        p50_ms=1e3 * statistics.median(times),
                        p95_ms=1e3 * _pct(times, 95),
                        mean_ms=1e3 * statistics.fmean(times),
                        cpu_p50_ms=1e3 * statistics.median(cpu),
                        cpu_p95_ms=1e3 * _pct(cpu, 95),
                    )
                )
            assert found is not None
            if truth is None:
                # Flat is exact: its top-k is the ground truth.
                truth = found
                corpus.stats.update(similarity_stats(index, corpus))
            r_floor = math.nan
            if args.truth_rows and truth_floor is not None:  # recall on the sampled rows
                per_query = recall_at(found[sample], truth)
                kinds = corpus.derived[sample // windows]
                # Of the exact top-k neighbours above the floor, the share the index returns.
                wanted = np.asarray(truth_floor >= 0)
                got = (found[sample][:, None, :] == truth_floor[:, :, None]).any(axis=2)
                r_floor = float(got[wanted].mean()) if wanted.any() else math.nan
            else:
                rec = recall_at(found, truth[: len(found)])
                per_query = rec.reshape(q_recall, windows).mean(axis=1)
                kinds = corpus.derived[:q_recall]
            r_all = float(per_query.mean())
            r_der = float(per_query[kinds].mean()) if kinds.any() else math.nan
            r_nov = float(per_query[~kinds].mean()) if (~kinds).any() else math.nan
            meets = [t.threads for t in timings if t.p95_ms < BAR_MS and r_all >= BAR_RECALL]
            setting = SettingResult(
                params=params or "-",
                timings=timings,
                recall10=r_all,
                recall10_derived=r_der,
                recall10_novel=r_nov,
                recall_queries=q_recall,
                recall_above_floor=r_floor,
                meets_bar_threads=meets,
            )
            res.settings.append(setting)
            tim = "  ".join(
                f"t{t.threads}: {t.p50_ms:7.2f}/{t.p95_ms:7.2f} (cpu {t.cpu_p50_ms:6.2f}) ms"
                for t in timings
            )
            log(f"     {setting.params:<34} R@10 {r_all:.3f}  R>={FLOOR} {r_floor:.3f}  {tim}")
        results.append(res)
        del index
        _trim()

    return {
        "dim": dim,
        "n": n,
        "data_seconds": gen_s,
        "data_stats": corpus.stats,
        "options": [asdict(r) for r in results],
    }


# --- concurrency ----------------------------------------------------------------------------


def concurrent_searches(
    index: fx.Index, queries: F32, *, workers: int, omp: int, k: int
) -> dict[str, Any]:
    """``workers`` Python threads each run every query once, at the same time."""
    lat: list[float] = []
    seen: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers + 1)

    def work(offset: int) -> None:
        tuning.set_search_threads(omp)  # per thread: libgomp keeps the limit per OS thread
        mine: list[float] = []
        order = np.roll(np.arange(len(queries)), offset)
        fx.search(index, queries[order[0]], k=k)
        barrier.wait()
        for i in order:
            t0 = time.perf_counter()
            fx.search(index, queries[i], k=k)
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)
            seen.append(tuning.get_search_threads())

    threads = [threading.Thread(target=work, args=(w * 7,)) for w in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "python_threads": workers,
        "omp_threads": omp,
        "omp_threads_seen": sorted(set(seen)),
        "queries": len(lat),
        "qps": len(lat) / wall,
        "p50_ms": 1e3 * statistics.median(lat),
        "p95_ms": 1e3 * _pct(lat, 95),
    }


def run_concurrency(
    dim: int, n: int, args: argparse.Namespace, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Throughput and latency with several Python threads searching one index at once."""
    if not args.faiss_blas_default:
        tuning.prefer_blas(dim)
    corpus = synthetic_corpus(n, dim, args, seed=args.seed + 99)
    out: list[dict[str, Any]] = []
    specs = [(OPTIONS["ivf-flat"], f"nprobe={args.concurrency_nprobe}", args.queries)]
    specs.append((OPTIONS["flat"], "", min(args.queries, args.brute_queries)))
    log(f"\n== concurrency: dim={dim} n={n:,}, load {os.getloadavg()[0]:.2f}")
    for option, params, per_worker in specs:
        index, res = build(option, corpus, {}, log, args.build_threads)
        fx.apply_search_params(index, params)
        queries = corpus.queries[:per_worker]
        for workers in args.concurrency_workers:
            for omp in args.search_threads:
                row = {
                    "factory": res.factory,
                    "params": params or "-",
                    **concurrent_searches(index, queries, workers=workers, omp=omp, k=args.k),
                    "load": os.getloadavg()[0],
                }
                out.append(row)
                log(
                    f"  {res.factory:<16} {row['params']:<10} py={workers} omp={omp}: "
                    f"{row['qps']:7.1f} q/s  p50 {row['p50_ms']:8.2f}  p95 {row['p95_ms']:8.2f} ms"
                )
        del index
        _trim()
    return out


# --- report ---------------------------------------------------------------------------------


def table(runs: list[dict[str, Any]], threads: list[int]) -> str:
    """Plain-text table: one row per (option, search setting)."""
    head = (
        f"{'dim':>4} {'n':>9} {'factory':<22} {'params':<18} {'train s':>7} {'add s':>6} "
        f"{'ser MiB':>7} {'RSS MiB':>7} {'B/vec':>5} "
        + " ".join(f"{'p50/p95 t' + str(t):>13}" for t in threads)
        + f" {'cpu t' + str(threads[0]):>11} {'R@10':>5} {'der':>4} {'nov':>4} {'bar':>5}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        for opt in run["options"]:
            for i, s in enumerate(opt["settings"]):
                build_cols = (
                    f"{opt['train_s']:7.1f} {opt['add_s']:6.1f} "
                    f"{opt['serialised_bytes'] / 2**20:7.0f} "
                    f"{opt['rss_delta_bytes'] / 2**20:7.0f} {opt['bytes_per_vector']:5.0f}"
                    if i == 0
                    else " " * 37
                )
                factory = opt["factory"] + ("" if opt["removable"] else " *") if i == 0 else ""
                by_t = {t["threads"]: t for t in s["timings"]}
                tcols = [
                    f"{by_t[t]['p50_ms']:6.1f}/{by_t[t]['p95_ms']:6.1f}" if t in by_t else "-"
                    for t in threads
                ]
                first = by_t.get(threads[0])
                cpu = f"{first['cpu_p50_ms']:5.1f}/{first['cpu_p95_ms']:5.1f}" if first else "-"
                bar = ",".join(f"t{t}" for t in s["meets_bar_threads"]) or "-"
                params = s["params"].replace(",quantizer_efSearch=", ",qef=")
                lines.append(
                    f"{run['dim']:>4} {run['n']:>9,} {factory:<22} {params:<18} {build_cols} "
                    + " ".join(f"{c:>13}" for c in tcols)
                    + f" {cpu:>11} {s['recall10']:5.3f} {s['recall10_derived']:4.2f} "
                    f"{s['recall10_novel']:4.2f} {bar:>5}"
                )
    lines.append("")
    for run in runs:
        for opt in run["options"]:
            if not opt["settings"]:
                continue  # exact search only gave the truth (--truth-rows)
            rss = opt["rss_delta_bytes"]
            recalls = ", ".join(
                f"{s['params'] or '-'} {s['recall10'] / BAR_RECALL:.2f}" for s in opt["settings"]
            )
            lines.append(
                f"{run['n']:,} {opt['factory']}: memory {rss / BAR_MEMORY_BYTES:.2f} of the "
                f"{BAR_MEMORY_BYTES / 1e9:g} GB bar; recall@10 of the {BAR_RECALL} bar: {recalls}"
            )
    lines.append(
        "* no remove_ids. Times: ms per 30-s query (one search call), tN = N OpenMP threads per "
        "search; cpu = CPU time of the searching thread (robust to other load). bar = p95 < 50 ms "
        "and R@10 >= 0.95. der/nov = recall@10 of derived/novel queries."
    )
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--sizes", type=_int_list, default=[100_000, 1_000_000])
    p.add_argument("--dims", "--dim", type=_int_list, default=[128, 256])
    p.add_argument("--options", default=DEFAULT_OPTIONS, help=f"from {', '.join(OPTIONS)}")
    p.add_argument("--queries", type=int, default=200, help="30-s queries per setting")
    # A check of a 30-s piece searches 45 windows (0.5 s hop, 8 s windows) at 5
    # transpositions in one call, k = 20 (app/checks/calibration.json).
    p.add_argument("--windows", type=int, default=225, help="vectors per 30-s query")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--brute-queries", type=int, default=30)
    p.add_argument(
        "--truth-rows",
        type=int,
        default=0,
        help="exact search on this many sampled query vectors only (flat is then not timed); "
        "0: every query, timed",
    )
    p.add_argument("--search-threads", type=_int_list, default=[1, 2])
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument(
        "--faiss-blas-default",
        action="store_true",
        help="keep faiss' BLAS threshold instead of tuning.prefer_blas(dim)",
    )
    p.add_argument(
        "--data",
        choices=("synthetic", "music"),
        default="synthetic",
        help="synthetic clusters (below) or recombined real music from --corpus",
    )
    p.add_argument("--corpus", type=Path, help="a built bench.corpus directory (--data music)")
    p.add_argument(
        "--check-windows",
        type=int,
        default=45,
        help="--data music: query windows per check (45 = 30 s)",
    )
    p.add_argument(
        "--all-keys",
        action="store_true",
        help="--data music: every window at all 12 transpositions (540 vectors), not the key "
        "scan a check runs by default (every third window at 12, the rest at 3: 270)",
    )
    p.add_argument("--styles", type=int, default=256)
    p.add_argument("--track-len", type=int, default=240)
    p.add_argument("--hnsw-max", type=int, default=10**9, help="skip HNSW above this size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", action="store_true", help="run the thread experiment")
    p.add_argument("--concurrency-only", action="store_true")
    p.add_argument("--concurrency-size", type=int, default=1_000_000)
    p.add_argument("--concurrency-dim", type=int, default=128)
    p.add_argument("--concurrency-workers", type=_int_list, default=[1, 2, 4])
    p.add_argument("--concurrency-nprobe", type=int, default=32)
    p.add_argument("--json", help="write results here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    meta = {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "omp_max_threads_default": tuning.get_search_threads(),
        "loadavg_start": os.getloadavg(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "generator": {"rho": RHO, "s_track": S_TRACK, "s_seg": S_SEG, "s_query": S_QUERY},
    }
    log(f"faiss {faiss.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    runs: list[dict[str, Any]] = []
    out: dict[str, Any] = {"meta": meta, "runs": runs}

    def save() -> None:
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=1)

    if not args.concurrency_only:
        for dim in args.dims:
            for n in args.sizes:
                runs.append(run_size(dim, n, args, log))
                save()
        log("\n" + table(runs, args.search_threads))
    if args.concurrency or args.concurrency_only:
        out["concurrency"] = run_concurrency(args.concurrency_dim, args.concurrency_size, args, log)
    meta["loadavg_end"] = os.getloadavg()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
