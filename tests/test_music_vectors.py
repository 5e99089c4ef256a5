"""The scale benchmarks' recombined music (bench/music_vectors.py) is made of real windows."""

from __future__ import annotations

import numpy as np

from app.embedding.spectral import FrameFeatures, SpectralEmbedder
from bench.music_vectors import Recombiner
from tests.audio_synth import melody_track

EMBEDDER = SpectralEmbedder()
SR = EMBEDDER.sample_rate


def _library() -> list[FrameFeatures]:
    return [EMBEDDER.frames(melody_track(seed, seconds=70.0, sr=SR)) for seed in (11, 12, 13)]


def test_tracks_give_the_requested_unit_vectors_reproducibly() -> None:
    library = _library()
    a = np.concatenate(
        [e.vectors for e in Recombiner(library, np.random.default_rng(3)).tracks(900)]
    )
    b = np.concatenate(
        [e.vectors for e in Recombiner(library, np.random.default_rng(3)).tracks(900)]
    )
    assert a.shape == (900, EMBEDDER.dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)
    c = np.concatenate(
        [e.vectors for e in Recombiner(library, np.random.default_rng(4)).tracks(900)]
    )
    assert not np.array_equal(a, c)


def test_recombined_windows_resemble_the_recordings_in_some_key() -> None:
    """Most windows are a library passage, transposed and re-timed: close to a library window
    at one of the twelve transpositions, while unrelated music (another seed) is not."""
    library = _library()
    made = np.concatenate(
        [e.vectors for e in Recombiner(library, np.random.default_rng(5)).tracks(600)]
    )
    stored = np.concatenate([EMBEDDER.embed_frames(f, hop_s=0.5).vectors for f in library])
    rotations = np.concatenate([EMBEDDER.transpose(stored, s) for s in range(12)])
    best = (made @ rotations.T).max(axis=1)
    other = EMBEDDER.embed(melody_track(99, seconds=60.0, sr=SR), SR).vectors
    best_other = (other @ rotations.T).max(axis=1)
    assert np.median(best) > 0.75
    assert np.median(best) > np.median(best_other) + 0.1
