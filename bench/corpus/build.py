"""Build orchestration: select, render, plan, execute in the pool, write the manifest."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.corpus.execute import execute_job
from bench.corpus.manifest import CataloguePiece, Manifest, Negative, Query, write_json
from bench.corpus.melody import repeat_offsets
from bench.corpus.midi import timed_notes
from bench.corpus.planning import Planner, plan_negatives, plan_queries, relabel_related
from bench.corpus.render import RenderContext, Runner, fluidsynth_version, render_full_job
from bench.corpus.scores import music21_version
from bench.corpus.selection import Piece, Selector, piece_composer, piece_title, take_quota
from bench.corpus.spec import (
    COLLECTIONS,
    DEFAULT_SOUNDFONT,
    RELATED,
    SECOND_SOUNDFONT,
    SIZES,
    CollectionSpec,
    Size,
    SizePreset,
)

log = logging.getLogger("bench.corpus")


def _link(src: Path, dst: Path) -> None:
    """Hard-link (or copy) a cached file into the corpus directory atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete audio files from an earlier build that this manifest no longer lists."""
    for sub in ("catalogue", "queries", "negatives"):
        base = out_dir / sub
        if not base.exists():
            continue
        for path in base.rglob("*"):
            if path.is_file() and path.relative_to(out_dir).as_posix() not in keep:
                path.unlink()


def check_tools(soundfont: Path) -> None:
    """Fail early when FluidSynth or the soundfont is missing."""
    if shutil.which("fluidsynth") is None:
        raise RuntimeError("fluidsynth not found: apt-get install -y fluidsynth")
    if not soundfont.exists():
        raise RuntimeError(f"{soundfont} not found: apt-get install -y fluid-soundfont-gm")


def build_corpus(
    out_dir: Path,
    *,
    size: Size | SizePreset = "small",
    seed: int = 0,
    sample_rate: int = 22050,
    workers: int | None = None,
    cache_dir: Path | None = None,
    soundfont: Path | None = None,
    second_soundfont: Path | None = None,
    progress: bool = False,
) -> Manifest:
    """Build (or refresh) the corpus in `out_dir` and return its manifest.

    Renderings are cached in `cache_dir` (default `out_dir/cache`); `workers` defaults to the
    number of CPUs. Without the second soundfont the `soundfont2` set is left out (and the
    manifest says so).
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    preset = SIZES[size] if isinstance(size, str) else size
    size_name = size if isinstance(size, str) else "custom"
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "cache"
    soundfont = Path(soundfont or os.environ.get("ECHOLEDGER_SOUNDFONT") or DEFAULT_SOUNDFONT)
    check_tools(soundfont)
    second = Path(second_soundfont or SECOND_SOUNDFONT)
    skipped = [] if second.exists() else ["soundfont2"]
    if skipped:
        log.warning(
            "%s not found (apt-get install -y timgm6mb-soundfont): no soundfont2 set", second
        )
    workers = max(1, workers or os.cpu_count() or 1)
    ctx = RenderContext(str(cache_dir), sample_rate, str(soundfont), "" if skipped else str(second))
    runner = Runner(workers, cache_dir / "music21", progress)
    try:
        selector = Selector(runner, cache_dir, seed, preset.max_piece_s)
        main = [s for s in COLLECTIONS if s.role == "catalogue"]
        other = [s for s in COLLECTIONS if s.role == "other"]
        catalogue, audio = _select_catalogue(selector, runner, main, preset.catalogue, ctx)
        log.info("catalogue rendered after %.1fs", time.monotonic() - started)
        hard = take_quota(selector, main, preset.hard_negatives)
        others = take_quota(selector, other, preset.other_negatives)
        fillers = take_quota(selector, other, preset.fillers)
        log.info(
            "selected %d catalogue, %d hard, %d other, %d filler pieces in %.1fs",
            len(catalogue),
            len(hard),
            len(others),
            len(fillers),
            time.monotonic() - started,
        )

        pieces = []
        for piece in catalogue:
            rel = f"catalogue/{piece.id}.flac"
            _link(Path(audio[piece.id]), out_dir / rel)
            duration = sf.info(audio[piece.id]).frames / sample_rate
            ref = piece.info.ref
            pieces.append(
                CataloguePiece(
                    piece.id,
                    piece_title(piece),
                    piece.spec.name,
                    piece_composer(piece),
                    ref.path,
                    ref.number,
                    piece.info.tune,
                    piece.palette,
                    piece.programs,
                    piece.voicing.tempo[0][1]
                    if piece.voicing.tempo and piece.voicing.tempo[0][0] == 0
                    else piece.voicing.qpm,
                    round(duration, 6),
                    rel,
                )
            )

        planner = Planner(sample_rate)
        jobs = plan_queries(catalogue, audio, fillers, preset, seed, planner, skip=skipped)
        negatives = plan_negatives(hard, "hard_negative", seed, planner)
        negatives += plan_negatives(others, "other_negative", seed, planner)
        negatives, related = relabel_related(negatives, catalogue, planner)
        jobs += [j for j in negatives if j.group == RELATED]
        jobs += [j for j in negatives if j.group != RELATED]
        results = runner.map(execute_job, [(j, str(out_dir), ctx) for j in jobs], desc="queries")
    finally:
        runner.close()

    queries = _with_repeats([r for r in results if isinstance(r, Query)], catalogue)
    negatives = [r for r in results if isinstance(r, Negative)]
    errors = [r for r in results if isinstance(r, str)]
    for message in errors:
        log.warning("skipped %s", message)
    info = {
        "music21_version": music21_version(),
        "fluidsynth": fluidsynth_version(),
        "soundfont": soundfont.name,
        "second_soundfont": "" if skipped else second.name,
        "skipped_sets": skipped,
        "related": related,
        "preset": asdict(preset),
        "collections": dict(sorted(Counter(p.collection for p in pieces).items())),
        "rejected_candidates": dict(sorted(selector.rejected.items())),
        "failed_scores": selector.failures,
        "failed_files": errors,
    }
    manifest = Manifest(out_dir, seed, size_name, sample_rate, pieces, queries, negatives, info)
    keep = {p.file for p in pieces} | {q.file for q in queries} | {n.file for n in negatives}
    _remove_stale(out_dir, keep)
    write_json(out_dir / "manifest.json", manifest.to_json())
    log.info("corpus built in %.1fs: %s", time.monotonic() - started, out_dir)
    return manifest


def _with_repeats(queries: list[Query], catalogue: list[Piece]) -> list[Query]:
    """Queries with each source span's repeats in its catalogue piece recorded."""
    pieces = {p.id: p for p in catalogue}
    notes: dict[str, np.ndarray] = {}
    out = []
    for query in queries:
        spans = []
        for span in query.sources:
            if span.piece_id not in notes:
                notes[span.piece_id] = timed_notes(pieces[span.piece_id].voicing)
            offsets = repeat_offsets(notes[span.piece_id], span.source_start_s, span.source_end_s)
            spans.append(replace(span, repeat_offsets_s=offsets))
        out.append(replace(query, sources=spans))
    return out


def _select_catalogue(
    selector: Selector,
    runner: Runner,
    specs: Sequence[CollectionSpec],
    total: int,
    ctx: RenderContext,
) -> tuple[list[Piece], dict[str, str]]:
    """Choose and render catalogue pieces, replacing any whose rendering fails."""
    chosen: list[Piece] = []
    audio: dict[str, str] = {}
    pending = take_quota(selector, specs, total)
    log.info("catalogue scores chosen")
    while pending:
        results = runner.map(render_full_job, [(p.voicing, ctx) for p in pending], desc="catalogue")
        failed: list[Piece] = []
        for piece, (path, error) in zip(pending, results, strict=True):
            if error:
                log.warning("skipping %s: render failed: %s", piece.info.ref.key, error)
                selector.failures.append({"score": piece.info.ref.key, "reason": error})
                failed.append(piece)
            else:
                chosen.append(piece)
                audio[piece.id] = path
        pending = []
        for piece in failed:
            pending += selector.take(piece.spec, 1)
    order = {p.id: i for i, p in enumerate(_take_order(chosen, specs))}
    return sorted(chosen, key=lambda p: order[p.id]), audio


def _take_order(pieces: list[Piece], specs: Sequence[CollectionSpec]) -> list[Piece]:
    """Pieces grouped by collection in collection order (stable within a collection)."""
    rank = {s.name: i for i, s in enumerate(specs)}
    return sorted(pieces, key=lambda p: rank[p.spec.name])


def summarize(manifest: Manifest) -> dict[str, Any]:
    """Counts, audio hours and disk size of a built corpus."""
    files = [manifest.path(p.file) for p in manifest.catalogue]
    files += [manifest.path(q.file) for q in manifest.queries]
    files += [manifest.path(n.file) for n in manifest.negatives]
    seconds = {
        "catalogue": sum(p.duration_s for p in manifest.catalogue),
        "queries": sum(q.duration_s for q in manifest.queries),
        "negatives": sum(n.duration_s for n in manifest.negatives),
    }
    return {
        "catalogue_pieces": len(manifest.catalogue),
        "queries": dict(Counter(q.transformation for q in manifest.queries)),
        "negatives": dict(Counter(n.kind for n in manifest.negatives)),
        "catalogue_per_collection": dict(Counter(p.collection for p in manifest.catalogue)),
        "hard_negatives_per_collection": dict(
            Counter(n.collection for n in manifest.negatives if n.kind == "hard_negative")
        ),
        "other_negatives_per_collection": dict(
            Counter(n.collection for n in manifest.negatives if n.kind == "other_negative")
        ),
        "instrumentations": dict(Counter(p.instrumentation for p in manifest.catalogue)),
        "audio_hours": {k: round(v / 3600, 3) for k, v in seconds.items()},
        "total_audio_hours": round(sum(seconds.values()) / 3600, 3),
        "output_megabytes": round(sum(f.stat().st_size for f in files) / 1e6, 1),
    }
