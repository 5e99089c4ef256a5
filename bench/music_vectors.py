"""Millions of window vectors with the statistics of real music, for the scale benchmarks.

    python -m bench.music_vectors --corpus /work/corpus-full --n 1000000   # prints statistics

Rendering ten million seconds of audio is out of reach on one box, and isotropic or Gaussian
stand-ins flatter approximate indexes (they have no dense regions). So the spectral
embedder's own pipeline is fed recombined real music: the per-frame features
(`SpectralEmbedder.frames`: chroma, level, band powers every 50 ms) of a built evaluation
corpus's catalogue recordings are cut into passages of 6-30 s, and each synthetic track
(2-5 minutes) strings passages together, every one

* from a random recording and position,
* transposed by a random number of semitones (a roll of the chroma axis),
* played at a random tempo within +/-15 % (frames resampled),
* with probability `LAYER_P` layered with a second passage 0-9 dB under it (magnitudes and
  powers add, as they do in a mix),

under a per-track spectral tilt (an equaliser on the band powers). `embed_frames` then
pools the frames into 8-s windows at the catalogue hop, exactly as for a recording. Every
vector is therefore a window of plausible music - real chord progressions, voicings and
instrument spectra - while the ten million are not copies of the few hundred recordings.
What the recombination cannot add is harmony that none of the recordings has; a catalogue of
many styles would spread wider, which favours the index.

Queries come from the corpus too: the check-side windows (0.5-s hop) of its query files
(`derived`: edits of catalogue recordings, whose frames the synthetic tracks reuse) and of its
negatives (`novel`), each searched at all twelve transpositions as a check searches them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.audio.decode import load
from app.embedding.base import Embedding
from app.embedding.spectral import FrameFeatures, SpectralEmbedder
from bench.corpus import Manifest, load_manifest

F32 = npt.NDArray[np.float32]

TRACK_S = (120.0, 300.0)
PASSAGE_S = (6.0, 30.0)
TEMPO = (0.85, 1.15)
LAYER_P = 0.35
LAYER_DB = (0.0, 9.0)
TILT_DB = 6.0  # band-power tilt across the bands, at most this many dB either way
QUERY_HOP_S = 0.5
KEYS = tuple(range(-5, 7))  # a check's twelve transpositions


def _load(embedder: SpectralEmbedder, path: Path) -> FrameFeatures:
    audio = load(path, sample_rate=embedder.sample_rate, min_seconds=0.0, max_seconds=3600.0)
    return embedder.frames(audio)


def frames_of(manifest: Manifest, files: Sequence[str]) -> list[FrameFeatures]:
    """The frame features of corpus files (e.g. its catalogue recordings)."""
    embedder = SpectralEmbedder()
    return [_load(embedder, manifest.path(f)) for f in files]


@dataclass
class Recombiner:
    """Synthetic tracks from the frames of real recordings (see the module docstring)."""

    library: list[FrameFeatures]
    rng: np.random.Generator
    embedder: SpectralEmbedder = field(default_factory=SpectralEmbedder)

    def __post_init__(self) -> None:
        self.fps = 1.0 / self.embedder.config.frame_s
        self.library = [f for f in self.library if f.chroma.shape[0] > self.fps * PASSAGE_S[0]]
        if not self.library:
            raise ValueError(f"no recording is longer than {PASSAGE_S[0]} s")

    def passage(self, frames: int) -> FrameFeatures:
        """Up to `frames` frames of one recording at a random tempo and transposition
        (fewer when the recording is shorter)."""
        src = self.library[int(self.rng.integers(len(self.library)))]
        tempo = float(self.rng.uniform(*TEMPO))
        frames = min(frames, int((src.chroma.shape[0] - 2) / tempo))
        span = math.ceil(frames * tempo) + 1
        start = int(self.rng.integers(0, src.chroma.shape[0] - span + 1))
        rows = start + np.floor(np.arange(frames) * tempo).astype(np.int64)
        shift = int(self.rng.integers(12))
        return FrameFeatures(
            chroma=np.roll(src.chroma[rows], shift, axis=1),
            level=src.level[rows],
            bands=src.bands[rows],
        )

    def track(self) -> FrameFeatures:
        total = int(self.rng.uniform(*TRACK_S) * self.fps)
        parts: list[FrameFeatures] = []
        made = 0
        while made < total:
            part = self.passage(min(total - made, int(self.rng.uniform(*PASSAGE_S) * self.fps)))
            if self.rng.random() < LAYER_P:
                other = self.passage(part.chroma.shape[0])
                n = other.chroma.shape[0]  # a short recording gives a shorter layer
                amp = 10 ** (-self.rng.uniform(*LAYER_DB) / 20)
                chroma, level, bands = part.chroma.copy(), part.level.copy(), part.bands.copy()
                chroma[:n] += amp * other.chroma
                level[:n] += amp * other.level
                bands[:n] += amp**2 * other.bands
                part = FrameFeatures(chroma=chroma, level=level, bands=bands)
            parts.append(part)
            made += part.chroma.shape[0]
        bands = np.concatenate([p.bands for p in parts])
        tilt = self.rng.uniform(-TILT_DB, TILT_DB) * np.linspace(-1.0, 1.0, bands.shape[1])
        return FrameFeatures(
            chroma=np.concatenate([p.chroma for p in parts]),
            level=np.concatenate([p.level for p in parts]),
            bands=(bands * 10 ** (tilt / 10)).astype(np.float32),
        )

    def tracks(self, n: int) -> Iterator[Embedding]:
        """Catalogue-hop embeddings of synthetic tracks, `n` windows in all."""
        made = 0
        while made < n:
            emb = self.embedder.embed_frames(self.track())
            take = min(n - made, emb.vectors.shape[0])
            yield Embedding(emb.vectors[:take], emb.starts[:take], emb.window_s)
            made += take


def music_vectors(manifest: Manifest, n: int, *, seed: int = 0) -> F32:
    """`n` window vectors of recombined catalogue music (float32, L2-normalised rows)."""
    library = frames_of(manifest, [p.file for p in manifest.catalogue])
    gen = Recombiner(library, np.random.default_rng(seed))
    out = np.empty((n, gen.embedder.dim), dtype=np.float32)
    at = 0
    for emb in gen.tracks(n):
        out[at : at + emb.vectors.shape[0]] = emb.vectors
        at += emb.vectors.shape[0]
    return out


def check_queries(
    manifest: Manifest,
    *,
    count: int,
    windows: int,
    seed: int = 0,
    key_scan: tuple[int, int] | None = None,
) -> tuple[F32, npt.NDArray[np.bool_]]:
    """The searches of `count` checks: [count, vectors, dim], and which are derived.

    Half are made of corpus queries (edits of catalogue recordings), half of negatives; a
    check is `windows` consecutive check-side windows of one file, or of two or more played
    one after the other where one is too short (most corpus files are 10-30 s), each window
    at every transposition (windows * 12 vectors). With `key_scan` (stride, keys), as a check
    searches by default (`AttributionParams.key_scan_stride`, `scan_keys`): every stride-th
    window at every transposition, the others at `keys` of them (transposition 0 and others
    drawn at random: what the scan picks changes which vectors, not how many).
    """
    embedder = SpectralEmbedder()
    rng = np.random.default_rng(seed)
    # The scan's keys come from a stream of their own, so both modes draw the same files.
    key_rng = np.random.default_rng([seed, 1])
    need = embedder.config.window_frames + math.ceil(
        (windows - 1) * QUERY_HOP_S / embedder.config.frame_s
    )
    kinds = rng.permutation(np.arange(count) < count - count // 2)
    pools = {
        True: [q.file for q in manifest.queries],
        False: [n.file for n in manifest.negatives],
    }
    if key_scan is None:
        per_check = windows * len(KEYS)
    else:
        scanned = len(range(0, windows, key_scan[0]))
        per_check = scanned * len(KEYS) + (windows - scanned) * key_scan[1]
    out = np.empty((count, per_check, embedder.dim), dtype=np.float32)
    for row, kind in enumerate(kinds):
        parts: list[FrameFeatures] = []
        while sum(f.chroma.shape[0] for f in parts) < need:
            pool = pools[bool(kind)]
            parts.append(_load(embedder, manifest.path(pool[int(rng.integers(len(pool)))])))
        frames = FrameFeatures(
            chroma=np.concatenate([f.chroma for f in parts]),
            level=np.concatenate([f.level for f in parts]),
            bands=np.concatenate([f.bands for f in parts]),
        )
        base = embedder.embed_frames(frames, hop_s=QUERY_HOP_S).vectors[:windows]
        if key_scan is None:
            out[row] = np.concatenate([embedder.transpose(base, s) for s in KEYS])
            continue
        stride, keys = key_scan
        scan, rest = base[::stride], np.delete(base, np.s_[::stride], axis=0)
        others = key_rng.choice([s for s in KEYS if s != 0], keys - 1, replace=False)
        chosen = [0, *others.tolist()]
        out[row] = np.concatenate(
            [embedder.transpose(scan, s) for s in KEYS]
            + [embedder.transpose(rest, s) for s in chosen]
        )
    return out, kinds


def describe(vectors: F32, rng: np.random.Generator, sample: int = 2000) -> dict[str, float]:
    """Neighbourhood statistics: how clustered the vectors are (within the first 200,000, so
    that every sampled row meets itself: the largest similarity of a row is its own)."""
    pool = vectors[: min(vectors.shape[0], 200_000)]
    rows = pool[rng.choice(pool.shape[0], min(sample, pool.shape[0]), replace=False)]
    sims = rows @ pool.T
    sims.sort(axis=1)
    adjacent = np.einsum("ij,ij->i", vectors[1:sample], vectors[: sample - 1])
    return {
        "cos_adjacent_windows": float(np.median(adjacent)),
        "top2_sim_median": float(np.median(sims[:, -2])),  # the nearest other vector
        "top11_sim_median": float(np.median(sims[:, -11])),
        "median_pair_sim": float(np.median(sims[:, sims.shape[1] // 2])),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, required=True, help="a built bench.corpus directory")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    manifest = load_manifest(args.corpus)
    t0 = time.perf_counter()
    vectors = music_vectors(manifest, args.n, seed=args.seed)
    took = time.perf_counter() - t0
    print(f"{args.n:,} vectors in {took:.1f} s ({args.n / took:,.0f}/s)")
    for key, value in describe(vectors, np.random.default_rng(args.seed)).items():
        print(f"  {key:<22} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
