"""Offline evaluation and calibration of the spectral embedder and the attribution check.

No HTTP, no database: the catalogue of a corpus (see bench/corpus/) is embedded with
SpectralEmbedder into a flat inner-product FAISS index (app.index.factory), and every query and
negative goes through the same path as a check: embed, then `attribute_vectors` (query-side
transpositions, top-k search, alignment, scoring, explaining away), once each with the abstain
threshold at zero. `bench.attribution.evaluate` scores the results as for the run through the
service.

    python -m bench.tune --corpus .echoledger/corpus-small
    python -m bench.tune --corpus .echoledger/corpus-full --set k=30 --calibrate

This is the fast loop for trying embedder and alignment settings; it prints the same metrics
and bars as the service runner (found, paid at the use threshold, false-positive rates).
``--use-threshold`` sets the paid-use threshold; ``--set use_threshold=..`` works too, as does
any parameter a newer attribution reads; ``--embed-set pitch_notes=8`` embeds with another
`SpectralConfig` (another version, so its own cache folder). ``--calibrate`` picks both
thresholds as the service's calibration does (bench.metrics.calibrate: one half of the
negatives per kind, held-out rate on the other half) and shows every query set and the
held-out negatives at them, but writes nothing: the threshold the service reads comes from
the run through the service, ``python -m bench.attribution --size full --calibrate`` (README,
"Attribution quality").

``--filler 1000000`` measures the same at scale: the catalogue is searched beside a million
segments of other music (recombined from half of the negatives, `bench/music_vectors.py`; the
other half is evaluated) through the index the service would choose for that many segments
(``--factory`` and ``--search-params`` force another, e.g. ``nprobe=8``).

Embeddings are cached per (embedder version, file) under ``.echoledger/cache/tune``, and so
are the nearest-neighbour searches (per catalogue, query vectors and k): a run after the first
re-does only the alignment and scoring, which is what the attribution parameters change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.audio.decode import load
from app.checks.attribution import (
    DEFAULT_CALIBRATION,
    AttributionParams,
    SearchResult,
    TrackWindows,
    attribute_vectors,
)
from app.embedding.base import Embedder, Embedding
from app.embedding.spectral import SpectralConfig, SpectralEmbedder
from app.index import factory, tiers, tuning
from bench import attribution, metrics
from bench.corpus import Manifest, Negative, load_manifest

MAX_SECONDS = 3600.0


def _cache_path(cache_dir: Path, embedder: Embedder, path: Path, hop_s: float) -> Path:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{hop_s}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return cache_dir / f"{embedder.name}-{embedder.version}" / f"{digest}.npz"


def _cached_arrays(cached: Path | None, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The arrays of an .npz cache file, or `compute`d and written there (atomically)."""
    if cached is not None and cached.exists():
        with np.load(cached) as z:
            return {name: z[name] for name in z.files}
    arrays = compute()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(cached)
    return arrays


def _load_audio(embedder: Embedder, path: Path) -> np.ndarray:
    return load(path, sample_rate=embedder.sample_rate, min_seconds=0.0, max_seconds=MAX_SECONDS)


def embed_file(
    embedder: Embedder, path: Path, *, hop_s: float, cache_dir: Path | None
) -> tuple[Embedding, float]:
    """Decode, resample and embed one file; returns (embedding, duration s)."""

    def compute() -> dict[str, Any]:
        audio = _load_audio(embedder, path)
        emb = embedder.embed(audio, embedder.sample_rate, hop_s=hop_s)
        return {"vectors": emb.vectors, "starts": emb.starts, "window": emb.window_s,
                "duration": audio.shape[0] / embedder.sample_rate}  # fmt: skip

    z = _cached_arrays(
        _cache_path(cache_dir, embedder, path, hop_s) if cache_dir else None, compute
    )
    emb = Embedding(vectors=z["vectors"], starts=z["starts"], window_s=float(z["window"]))
    return emb, float(z["duration"])


def embed_file_octaves(
    embedder: SpectralEmbedder, path: Path, *, hop_s: float, cache_dir: Path | None
) -> tuple[Embedding, float, dict[int, np.ndarray]]:
    """As `embed_file`, and the octave views -1 and +1, in one pass as a check computes them
    (`embed_audio_octaves`: view 0 is the embedding)."""

    def compute() -> dict[str, Any]:
        audio = _load_audio(embedder, path)
        views = embedder.embed_octaves(audio, embedder.sample_rate, hop_s=hop_s,
                                       octaves=(-1, 0, 1))  # fmt: skip
        return {"vectors": views[0].vectors, "starts": views[0].starts,
                "window": views[0].window_s, "duration": audio.shape[0] / embedder.sample_rate,
                "down": views[-1].vectors, "up": views[1].vectors}  # fmt: skip

    cached = _cache_path(cache_dir, embedder, path, hop_s) if cache_dir else None
    z = _cached_arrays(cached.with_name(f"{cached.stem}-views.npz") if cached else None, compute)
    emb = Embedding(vectors=z["vectors"], starts=z["starts"], window_s=float(z["window"]))
    return emb, float(z["duration"]), {-1: z["down"], 1: z["up"]}


@dataclass
class Catalogue:
    """The embedded catalogue: a flat index plus what a check needs to map its hits."""

    piece_ids: list[str]
    index: Any
    vectors: np.ndarray  # [segments, dim], row = segment id
    track_of: np.ndarray  # [segments] catalogue index of each segment
    start_of: np.ndarray  # [segments] reference window start of each segment (s)
    seconds: float
    search_dir: Path | None = None  # nearest neighbours kept on disk between runs
    _memo: dict[bytes, SearchResult] = field(default_factory=dict, repr=False)

    def search(self, vectors: np.ndarray, k: int) -> SearchResult:
        """Top-k of each row mapped to tracks, memoised in memory and on disk.

        The exact search is most of a run's time and depends only on the vectors and k, not
        on the alignment and scoring parameters a sweep changes: a second run reads it back.
        """
        key = hashlib.blake2b(vectors.tobytes(), digest_size=16).digest() + k.to_bytes(4)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        path = self.search_dir / f"{key.hex()}.npz" if self.search_dir else None
        if path is not None and path.exists():
            with np.load(path) as z:
                sims, ids = z["sims"], z["ids"].astype(np.int64)
        else:
            k_eff = min(k, int(self.index.ntotal))
            sims, ids = factory.search(self.index, np.ascontiguousarray(vectors), k=k_eff)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, sims=sims.astype(np.float32), ids=ids.astype(np.int32))
                tmp.replace(path)
        valid = ids >= 0
        safe = np.where(valid, ids, 0)
        result = SearchResult(
            similarities=sims,
            tracks=np.where(valid, self.track_of[safe], -1),
            reference_starts=np.where(valid, self.start_of[safe], 0.0),
            segments=np.where(valid, ids, -1),
        )
        self._memo[key] = result
        return result

    def windows(self, tracks: Sequence[int]) -> dict[int, TrackWindows]:
        """The stored windows of catalogue pieces (what a check reads to verify them)."""
        out = {}
        for t in tracks:
            rows = np.flatnonzero(self.track_of == t)
            out[t] = TrackWindows(starts=self.start_of[rows], vectors=self.vectors[rows])
        return out


@dataclass(frozen=True)
class Filler:
    """Other labels' music in the index beside the corpus catalogue.

    segments : window vectors of tracks recombined from every other negative of the corpus
        (`bench.music_vectors`, `filler_negatives`): music in the catalogue's styles that
        holds none of its passages, so every proposal has to beat it. The negatives it is
        made of leave the evaluation (they would be explained away by their own passages).
    factory, search_params : the index they are searched with, as the service would choose
    """

    segments: int
    factory: str = "auto"
    search_params: str = ""
    seed: int = 0


FILLER_PREFIX = "filler-"


def build_catalogue(
    manifest: Manifest,
    embedder: Embedder,
    *,
    cache_dir: Path | None,
    verbose: bool = False,
    filler: Filler | None = None,
) -> Catalogue:
    """Embed every catalogue piece at the embedder's hop into an inner-product index: flat,
    or with `filler` the index the service would choose for that many segments."""
    vectors: list[np.ndarray] = []
    tracks: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    seconds = 0.0
    for i, piece in enumerate(manifest.catalogue):
        emb, duration = embed_file(
            embedder, manifest.path(piece.file), hop_s=embedder.hop_s, cache_dir=cache_dir
        )
        vectors.append(emb.vectors)
        tracks.append(np.full(emb.starts.shape, i, dtype=np.int64))
        starts.append(emb.starts)
        seconds += duration
        if verbose and (i + 1) % 50 == 0:
            print(f"  embedded {i + 1}/{len(manifest.catalogue)} pieces", file=sys.stderr)
    piece_ids = [p.id for p in manifest.catalogue]
    if filler is not None:
        piece_ids += _add_filler(manifest, filler, vectors, tracks, starts)
    all_vectors = np.ascontiguousarray(np.concatenate(vectors))
    tuning.prefer_blas(embedder.dim)  # as the service does: query batches take the BLAS path
    index = _index(all_vectors, filler, verbose=verbose)
    search_dir = None
    if cache_dir is not None:  # one folder per catalogue: its embeddings, in order
        fingerprint = hashlib.sha256(all_vectors.tobytes()).hexdigest()[:24]
        if filler is not None:
            fingerprint += f"-{index_spec(filler, all_vectors.shape[0])}"
        search_dir = cache_dir / "search" / f"{embedder.name}-{embedder.version}-{fingerprint}"
    return Catalogue(
        piece_ids=piece_ids,
        index=index,
        vectors=all_vectors,
        track_of=np.concatenate(tracks),
        start_of=np.concatenate(starts).astype(np.float64),
        seconds=seconds,
        search_dir=search_dir,
    )


def _add_filler(
    manifest: Manifest,
    filler: Filler,
    vectors: list[np.ndarray],
    tracks: list[np.ndarray],
    starts: list[np.ndarray],
) -> list[str]:
    """Append `filler.segments` recombined windows; returns the filler tracks' names."""
    from bench.music_vectors import Recombiner, frames_of

    library = frames_of(manifest, [n.file for n in filler_negatives(manifest)[0]])
    gen = Recombiner(library, np.random.default_rng(filler.seed))
    first = len(manifest.catalogue)
    names: list[str] = []
    for j, emb in enumerate(gen.tracks(filler.segments)):
        vectors.append(emb.vectors)
        tracks.append(np.full(emb.starts.shape, first + j, dtype=np.int64))
        starts.append(emb.starts)
        names.append(f"{FILLER_PREFIX}{j}")
    return names


def filler_negatives(manifest: Manifest) -> tuple[list[Negative], list[Negative]]:
    """The negatives filler is made of (every other one), and those left to evaluate."""
    return manifest.negatives[::2], manifest.negatives[1::2]


def index_spec(filler: Filler | None, segments: int) -> str:
    """The factory and search parameters a catalogue of `segments` is searched with."""
    if filler is None:
        return "Flat"
    if filler.factory != tiers.AUTO:
        return f"{filler.factory}|{filler.search_params}"
    choice = tiers.choose(segments, SpectralEmbedder().dim, tiers.TierPolicy())
    return f"{choice.factory}|{filler.search_params or choice.search_params}"


def _index(vectors: np.ndarray, filler: Filler | None, *, verbose: bool) -> Any:
    spec, _, search_params = index_spec(filler, vectors.shape[0]).partition("|")
    index = factory.create_index(spec, vectors.shape[1])
    if factory.needs_training(index):
        rng = np.random.default_rng(1)
        size = min(vectors.shape[0], factory.recommended_training_size(index))
        sample = np.ascontiguousarray(vectors[np.sort(rng.choice(len(vectors), size, False))])
        if verbose:
            print(f"training {spec} on {size} vectors", file=sys.stderr)
        factory.train(index, sample)
    factory.add(index, vectors, np.arange(vectors.shape[0], dtype=np.int64))
    if search_params:
        factory.apply_search_params(index, search_params)
    return index


@dataclass
class Query:
    """An embedded query or negative."""

    id: str
    embedding: Embedding
    duration_s: float
    octave_views: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Run:
    """The embedded corpus; `predict` re-scores it under any attribution parameters.

    `manifest` lists only the query sets that were embedded.
    """

    manifest: Manifest
    embedder: SpectralEmbedder
    catalogue: Catalogue
    queries: dict[str, Query]
    negatives: dict[str, Query]


def prepare(
    manifest: Manifest,
    embedder: SpectralEmbedder,
    *,
    query_hop_s: float,
    cache_dir: Path | None,
    transformations: Sequence[str] | None = None,
    verbose: bool = False,
    filler: Filler | None = None,
    octave_views: bool = False,
    with_queries: bool = True,
) -> Run:
    """Embed the catalogue, the queries of `transformations` (default all; none without
    `with_queries`) and every negative."""
    catalogue = build_catalogue(
        manifest, embedder, cache_dir=cache_dir, verbose=verbose, filler=filler
    )
    if verbose:
        print(
            f"catalogue: {len(catalogue.piece_ids)} pieces, {catalogue.seconds / 3600:.2f} h, "
            f"{catalogue.index.ntotal} segments",
            file=sys.stderr,
        )

    def embed(item_id: str, file: str) -> Query:
        if octave_views:
            emb, duration, views = embed_file_octaves(
                embedder, manifest.path(file), hop_s=query_hop_s, cache_dir=cache_dir
            )
            return Query(item_id, emb, duration, views)
        emb, duration = embed_file(
            embedder, manifest.path(file), hop_s=query_hop_s, cache_dir=cache_dir
        )
        return Query(item_id, emb, duration)

    selected = [
        q
        for q in manifest.queries
        if with_queries and (not transformations or q.transformation in transformations)
    ]
    kept = filler_negatives(manifest)[1] if filler is not None else manifest.negatives
    queries = {q.id: embed(q.id, q.file) for q in selected}
    negatives = {n.id: embed(n.id, n.file) for n in kept}
    return Run(
        replace(manifest, queries=selected, negatives=kept),
        embedder,
        catalogue,
        queries,
        negatives,
    )


def predict(run: Run, query: Query, params: AttributionParams) -> list[metrics.Prediction]:
    """The check's attribution for one embedded query, with the pieces named."""
    cat = run.catalogue
    views = query.octave_views if params.octave_views else {}
    matches = attribute_vectors(
        vectors=query.embedding.vectors,
        query_starts=query.embedding.starts,
        window_s=query.embedding.window_s,
        query_duration_s=query.duration_s,
        search=lambda v: cat.search(v, params.k),
        params=params,
        transpose=run.embedder.transpose,
        windows=cat.windows,
        octave_views={o: v for o, v in views.items() if o in params.octave_views},
        octave_apart=run.embedder.octave_apart,
    )
    # Matches with filler tracks are other labels' music: outside what the corpus can judge.
    return [
        metrics.Prediction(
            piece_id=cat.piece_ids[m.track],
            resemblance=m.resemblance,
            evidence=tuple(
                metrics.Span(
                    e.query_start,
                    e.query_end,
                    e.reference_start,
                    e.reference_end,
                    e.similarity,
                    transposition=-e.variant,
                )
                for e in m.evidence
            ),
        )
        for m in matches
        if not cat.piece_ids[m.track].startswith(FILLER_PREFIX)
    ]


def predict_all(run: Run, params: AttributionParams) -> attribution.Outcome:
    """Every query and negative through the check once, with the abstain threshold at zero.

    The threshold only filters the final scores (`attribute_vectors`), so the results at any
    threshold are these filtered; `bench.attribution.evaluate` applies it.
    """
    open_params = replace(params, abstain_threshold=0.0)
    items = {**run.queries, **run.negatives}
    return attribution.Outcome(
        predictions={item_id: predict(run, query, open_params) for item_id, query in items.items()}
    )


def pooled_negatives(
    corpora: Sequence[Path],
    embedder: SpectralEmbedder,
    params: AttributionParams,
    **prepare_kw: Any,
) -> tuple[dict[str, float], dict[str, str]]:
    """Best resemblance and kind of every negative of other corpora, each searched against its
    own catalogue (a negative of one draw may be a catalogue piece of another), keyed
    ``corpus-name/negative-id``: more negatives to calibrate on than one corpus holds."""
    scores: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for corpus in corpora:
        manifest = load_manifest(corpus)
        run = prepare(manifest, embedder, query_hop_s=params.query_hop_s, with_queries=False,
                      octave_views=bool(params.octave_views), **prepare_kw)  # fmt: skip
        outcome = predict_all(run, params)
        for n in run.manifest.negatives:
            key = f"{corpus.name}/{n.id}"
            scores[key] = metrics.best_score(outcome.predictions[n.id])
            kinds[key] = n.kind
    return scores, kinds


def _assignments(items: Sequence[str]) -> dict[str, Any]:
    """NAME=VALUE pairs, each VALUE read as JSON."""
    out: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = json.loads(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(".echoledger/corpus-small"))
    parser.add_argument("--params", type=Path, default=None,
                        help="calibration file to start from (default: packaged)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override one attribution parameter (repeatable)")  # fmt: skip
    parser.add_argument("--transformations", default="",
                        help="comma-separated query sets (default: all)")  # fmt: skip
    parser.add_argument("--calibrate", action="store_true",
                        help="fit both thresholds on the negatives; report only")  # fmt: skip
    parser.add_argument("--target-fpr", type=float, default=attribution.FPR_BAR,
                        help="false-positive rate the use threshold is fitted to")  # fmt: skip
    parser.add_argument("--abstain-fpr", type=float, default=0.05,
                        help="false-positive rate the abstain threshold is fitted to")  # fmt: skip
    parser.add_argument("--min-threshold", type=float, default=0.1,
                        help="never calibrate the abstain threshold below this")  # fmt: skip
    parser.add_argument("--pool-negatives", action="append", type=Path, default=[],
                        metavar="CORPUS", help="with --calibrate: fit the thresholds on this "
                        "corpus's negatives too, each against its own catalogue "
                        "(repeatable)")  # fmt: skip
    parser.add_argument("--fit", choices=("all", "half"), default="all",
                        help="as bench.attribution --fit")  # fmt: skip
    parser.add_argument("--use-threshold", type=float, default=None,
                        help="paid-use threshold (default: the params' use_threshold, else "
                        "the abstain threshold)")  # fmt: skip
    parser.add_argument("--beside-threshold", type=float, default=None,
                        help="threshold of a match heard beside a paid use (default: the "
                        "params' beside_use_threshold)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--cache", type=Path, default=Path(".echoledger/cache/tune"),
                        help="embedding cache directory")  # fmt: skip
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--filler", type=int, default=0,
                        help="add this many segments of other music (recombined negatives) "
                        "and search with the index the service would choose")  # fmt: skip
    parser.add_argument("--factory", default="auto", help="with --filler: force a factory")
    parser.add_argument("--search-params", default="",
                        help="with --filler: e.g. nprobe=8 (default: the tier's)")  # fmt: skip
    parser.add_argument("--embed-set", action="append", default=[], metavar="NAME=VALUE",
                        help="override one SpectralConfig field (repeatable)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.pool_negatives and not args.calibrate:
        parser.error("--pool-negatives needs --calibrate")

    base, extra = attribution.load_params(args.params or DEFAULT_CALIBRATION)
    overrides = _assignments(args.set)
    known = base.as_dict().keys()
    params = AttributionParams.from_dict(
        {**base.as_dict(), **{k: v for k, v in overrides.items() if k in known}}
    )
    extra |= {k: v for k, v in overrides.items() if k not in known}

    manifest = load_manifest(args.corpus)
    embedder = SpectralEmbedder(SpectralConfig(**_assignments(args.embed_set)))
    cache_dir = None if args.no_cache else args.cache
    wanted = [t for t in args.transformations.split(",") if t]
    filler = Filler(args.filler, args.factory, args.search_params) if args.filler else None
    run = prepare(manifest, embedder, query_hop_s=params.query_hop_s, cache_dir=cache_dir,
                  transformations=wanted, verbose=args.verbose, filler=filler,
                  octave_views=bool(params.octave_views))  # fmt: skip

    outcome = predict_all(run, params)
    threshold = params.abstain_threshold
    use_threshold = float(extra.get("use_threshold", params.use_threshold))
    beside_threshold = params.beside_use_threshold
    held_out: set[str] | None = None
    cal: metrics.Calibration | None = None
    if args.calibrate:
        pooled = (
            pooled_negatives(
                args.pool_negatives, embedder, params, cache_dir=cache_dir, verbose=args.verbose
            )
            if args.pool_negatives
            else None
        )
        cal = attribution.calibrate(
            manifest,
            outcome,
            target_fpr=args.target_fpr,
            abstain_fpr=args.abstain_fpr,
            min_threshold=args.min_threshold,
            pooled=pooled,
            fit_on_all=args.fit == "all",
        )
        threshold, use_threshold = cal.threshold, cal.use_threshold
        beside_threshold = cal.beside.threshold if cal.beside is not None else use_threshold
        if cal.fitted_on == "half":
            held_out = set(cal.heldout_ids)
    if args.use_threshold is not None:
        use_threshold = args.use_threshold
    if args.beside_threshold is not None:
        beside_threshold = args.beside_threshold
    rows = attribution.evaluate(
        run.manifest,
        outcome,
        threshold=threshold,
        use_threshold=use_threshold,
        held_out=held_out,
        beside_threshold=beside_threshold,
    )
    print(
        f"corpus {args.corpus} (seed {manifest.seed}, {manifest.size}): "
        f"{len(manifest.catalogue)} pieces, {run.catalogue.index.ntotal} segments "
        f"({index_spec(filler, run.catalogue.index.ntotal)}); "
        f"embedder {embedder.name} v{embedder.version} dim {embedder.dim}; "
        f"abstain_threshold {threshold:.4f}, use_threshold {use_threshold:.4f}, "
        f"beside_use_threshold {beside_threshold:.4f}"
    )
    print(metrics.format_table(rows))
    print()
    print(attribution.format_verdicts(attribution.verdicts(rows, cal)))
    if cal is not None:
        print(
            f"calibrated on {len(cal.calibration_ids)} negatives, reported on "
            f"{len(cal.heldout_ids)} held out (nothing written): abstain_threshold "
            f"{cal.threshold:.4f} (FPR {cal.calibration_fpr:.3f} / {cal.heldout_fpr:.3f}), "
            f"use_threshold {cal.use_threshold:.4f} (FPR {cal.use_calibration_fpr:.3f} / "
            f"{cal.use_heldout_fpr:.3f}); cross-fitted FPR {cal.crossfit_fpr:.3f} / "
            f"{cal.use_crossfit_fpr:.3f}; thresholds fitted on {cal.fitted_on}"
        )
        if cal.beside is not None:
            print(
                f"beside_use_threshold {cal.beside.threshold:.4f}: spurious matches beside a "
                f"paid use in {cal.beside.fpr:.4f} of {cal.beside.n} checks "
                f"({cal.beside.crossfit_fpr:.4f} cross-fitted)"
            )
    if args.json:
        args.json.write_text(json.dumps([metrics.row_json(r) | {"name": r.name} for r in rows],
                                        indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
