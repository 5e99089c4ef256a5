"""SpectralEmbedder: its contract, and robustness measured through embed -> search -> attribute."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.audio.decode import load
from app.checks.attribution import (
    AttributionParams,
    SearchResult,
    TrackMatch,
    TrackWindows,
    attribute_vectors,
)
from app.embedding.base import Embedder, EmbeddingError
from app.embedding.spectral import SpectralConfig, SpectralEmbedder
from app.index import factory
from tests.audio_synth import melody_track, white_noise, write_audio

EMBEDDER = SpectralEmbedder()  # chroma of estimated notes and of the spectrum
SPECTRUM = SpectralEmbedder(SpectralConfig(pitch_notes=0))  # version 3: the spectrum's chroma
SR = EMBEDDER.sample_rate
PARAMS = replace(AttributionParams.load(), abstain_threshold=0.0)

# The synthetic catalogue: (seed, lead timbre, accompaniment timbre).
CATALOGUE = [
    (11, "piano", "piano"),
    (12, "organ", "organ"),
    (13, "strings", "piano"),
    (14, "flute", "strings"),
    (15, "brass", "organ"),
    (16, "pluck", "pluck"),
    (17, "clarinet", "strings"),
    (18, "piano", "strings"),
]
TRACK_S = 24.0
EXCERPT = (4.0, 18.0)  # seconds of the (untransformed) track used as the query
# A timbre far from each track's own, for re-instrumentation.
OTHER_TIMBRE = {"piano": "organ", "organ": "pluck", "strings": "clarinet", "flute": "brass",
                "brass": "flute", "pluck": "strings", "clarinet": "piano"}  # fmt: skip


@cache
def render(
    i: int,
    *,
    tempo: float = 1.0,
    transpose: int = 0,
    reinstrument: bool = False,
    sr: int = SR,
    seconds: float | None = None,
) -> np.ndarray:
    """Track `i` as the catalogue holds it, or re-synthesised with a change."""
    seed, lead, backing = CATALOGUE[i]
    if reinstrument:
        lead, backing = OTHER_TIMBRE[lead], OTHER_TIMBRE[backing]
    # Queries only need the audio up to the end of the excerpt.
    length = seconds if seconds is not None else EXCERPT[1] / tempo + 0.1
    audio = melody_track(seed, seconds=length, sr=sr, tempo=tempo, transpose=transpose,
                         timbre=lead, accompaniment=backing)  # fmt: skip
    audio.setflags(write=False)
    return audio


def excerpt(audio: np.ndarray, *, tempo: float = 1.0, sr: int = SR) -> np.ndarray:
    """The query excerpt; at another tempo, the same notes sit at other times."""
    a, b = (round(t / tempo * sr) for t in EXCERPT)
    return np.ascontiguousarray(audio[a:b])


@dataclass
class Catalogue:
    index: Any
    vectors: np.ndarray
    track_of: np.ndarray
    start_of: np.ndarray

    def search(self, vectors: np.ndarray) -> SearchResult:
        sims, ids = factory.search(self.index, vectors, k=PARAMS.k)
        safe = np.maximum(ids, 0)
        return SearchResult(
            similarities=sims,
            tracks=np.where(ids >= 0, self.track_of[safe], -1),
            reference_starts=self.start_of[safe],
            segments=ids,
        )

    def windows(self, tracks: Sequence[int]) -> dict[int, TrackWindows]:
        rows = {t: np.flatnonzero(self.track_of == t) for t in tracks}
        return {t: TrackWindows(self.start_of[r], self.vectors[r]) for t, r in rows.items()}

    def match(self, query: np.ndarray) -> list[TrackMatch]:
        """What a check does: embed at the query hop, then search, align and score."""
        emb = EMBEDDER.embed(query, SR, hop_s=PARAMS.query_hop_s)
        return attribute_vectors(
            vectors=emb.vectors,
            query_starts=emb.starts,
            window_s=emb.window_s,
            query_duration_s=query.size / SR,
            search=self.search,
            params=PARAMS,
            transpose=EMBEDDER.transpose,
            windows=self.windows,
        )


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    index = factory.create_index("Flat", EMBEDDER.dim)
    vectors, tracks, starts = [], [], []
    for i in range(len(CATALOGUE)):
        emb = EMBEDDER.embed(render(i, seconds=TRACK_S), SR)
        vectors.append(emb.vectors)
        tracks.append(np.full(emb.vectors.shape[0], i))
        starts.append(emb.starts)
    all_vectors = np.concatenate(vectors)
    factory.add(index, all_vectors, np.arange(all_vectors.shape[0], dtype=np.int64))
    return Catalogue(index, all_vectors, np.concatenate(tracks), np.concatenate(starts))


# ----------------------------------------------------------------------------- contract


def test_satisfies_the_embedder_protocol() -> None:
    assert isinstance(EMBEDDER, Embedder)
    assert EMBEDDER.name == "spectral"
    assert EMBEDDER.version
    assert EMBEDDER.dim <= 256
    assert EMBEDDER.hop_s < EMBEDDER.window_s


def test_shapes_starts_and_unit_rows() -> None:
    audio = melody_track(1, seconds=20.0, sr=SR)
    emb = EMBEDDER.embed(audio, SR)

    n = emb.vectors.shape[0]
    assert emb.vectors.shape == (n, EMBEDDER.dim)
    assert emb.vectors.dtype == np.float32
    assert emb.starts.dtype == np.float32
    assert emb.window_s == pytest.approx(EMBEDDER.window_s)
    assert emb.starts[0] == 0.0
    assert np.diff(emb.starts) == pytest.approx(EMBEDDER.hop_s, abs=0.02)
    assert emb.starts[-1] + emb.window_s <= 20.0 + 1e-3
    assert emb.starts[-1] + emb.window_s + EMBEDDER.hop_s > 20.0
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)


def test_query_hop_gives_more_windows() -> None:
    audio = melody_track(1, seconds=20.0, sr=SR)
    coarse = EMBEDDER.embed(audio, SR)
    fine = EMBEDDER.embed(audio, SR, hop_s=EMBEDDER.hop_s / 2)
    assert fine.vectors.shape[0] >= 2 * coarse.vectors.shape[0] - 1
    n = coarse.vectors.shape[0]
    np.testing.assert_allclose(fine.vectors[::2][:n], coarse.vectors, atol=1e-5)


def test_one_window_of_audio_gives_one_vector() -> None:
    audio = melody_track(2, seconds=EMBEDDER.window_s + 0.01, sr=SR)
    assert EMBEDDER.embed(audio, SR).vectors.shape == (1, EMBEDDER.dim)


def test_embedding_is_deterministic() -> None:
    audio = melody_track(3, seconds=12.0, sr=SR)
    a = EMBEDDER.embed(audio, SR)
    b = SpectralEmbedder().embed(audio.copy(), SR)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.starts, b.starts)


def test_frame_features_pool_into_the_same_vectors() -> None:
    audio = melody_track(5, seconds=14.0, sr=SR)
    frames = EMBEDDER.frames(audio)
    assert frames.chroma.shape == (frames.level.shape[0], 12)
    direct = EMBEDDER.embed(audio, SR, hop_s=0.5)
    pooled = EMBEDDER.embed_frames(frames, hop_s=0.5)
    np.testing.assert_array_equal(pooled.vectors, direct.vectors)
    np.testing.assert_array_equal(pooled.starts, direct.starts)
    short = type(frames)(frames.chroma[:10], frames.level[:10], frames.bands[:10])
    with pytest.raises(EmbeddingError, match="at least"):
        EMBEDDER.embed_frames(short)


def test_gain_does_not_change_the_vectors() -> None:
    audio = melody_track(4, seconds=12.0, sr=SR)
    loud = EMBEDDER.embed(audio, SR).vectors
    quiet = EMBEDDER.embed((audio * 0.05).astype(np.float32), SR).vectors
    assert np.min(np.sum(loud * quiet, axis=1)) > 0.99


def test_silence_gives_zero_rows_not_noise() -> None:
    audio = np.zeros(round(8 * SR), dtype=np.float32)
    emb = EMBEDDER.embed(audio, SR)
    assert np.all(np.isfinite(emb.vectors))
    assert np.all(emb.vectors == 0.0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: np.zeros((SR * 10, 2), np.float32), r"shape=\(110250, 2\)"),
        (lambda: np.zeros(SR * 10, np.float64), "dtype=float64"),
        (lambda: np.zeros(SR, np.float32), r"1\.000 s"),
        (lambda: np.full(SR * 10, np.nan, np.float32), "non-finite"),
        (lambda: [0.0] * SR * 10, "list"),
    ],
)
def test_bad_audio_is_rejected_with_the_bad_value(
    make: Callable[[], np.ndarray], message: str
) -> None:
    with pytest.raises(EmbeddingError, match=message):
        EMBEDDER.embed(make(), SR)


def test_wrong_sample_rate_is_rejected() -> None:
    with pytest.raises(EmbeddingError, match="sr=22050"):
        EMBEDDER.embed(np.zeros(22050 * 10, np.float32), 22050)


def test_transpose_is_a_rotation_of_the_pitch_axis() -> None:
    audio = melody_track(5, seconds=12.0, sr=SR)
    vectors = EMBEDDER.embed(audio, SR).vectors
    np.testing.assert_allclose(EMBEDDER.transpose(EMBEDDER.transpose(vectors, 3), -3), vectors)
    np.testing.assert_allclose(EMBEDDER.transpose(vectors, 12), vectors)
    np.testing.assert_allclose(np.linalg.norm(EMBEDDER.transpose(vectors, 5), axis=1), 1.0,
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("chroma", ["notes", "spectrum"])
def test_transposed_vectors_stand_for_the_transposed_audio(chroma: str) -> None:
    embedder = EMBEDDER if chroma == "notes" else SPECTRUM
    original = embedder.embed(melody_track(6, seconds=14.0, sr=SR), SR).vectors
    up_two = embedder.embed(melody_track(6, seconds=14.0, sr=SR, transpose=2), SR).vectors
    as_is = np.sum(original * up_two, axis=1)
    undone = np.sum(original * embedder.transpose(up_two, -2), axis=1)
    assert np.median(undone) > 0.9
    assert np.all(undone > as_is)


def test_octave_views_read_the_pitch_range_an_octave_away() -> None:
    original = EMBEDDER.embed(melody_track(8, seconds=20.0, sr=SR), SR).vectors
    views = EMBEDDER.embed_octaves(melody_track(8, seconds=20.0, sr=SR), SR, octaves=(-1, 0, 1))
    np.testing.assert_allclose(views[0].vectors, original, atol=1e-5)

    for octave in (1, -1):
        moved = melody_track(8, seconds=20.0, sr=SR, transpose=12 * octave)
        seen = EMBEDDER.embed_octaves(moved, SR, octaves=(0, octave))
        as_is = np.sum(original * seen[0].vectors, axis=1)
        through_view = np.sum(original * seen[octave].vectors, axis=1)
        # Played an octave away, some notes leave the range `embed` reads; the view that
        # reads an octave away finds them again (measured: +0.015 up, +0.006 down; the
        # spectrum's chroma alone +0.011, +0.029: notes whose fundamental left the range are
        # still picked, in their pitch class, from their second partial).
        assert np.mean(through_view) > np.mean(as_is) + 0.003, octave
        assert np.median(through_view) > 0.85

    with pytest.raises(EmbeddingError, match="octave"):
        EMBEDDER.embed_octaves(melody_track(8, seconds=20.0, sr=SR), SR, octaves=(2,))


@pytest.mark.parametrize("seed", [5, 8])
@pytest.mark.parametrize("shift", [-12, 0, 12, 5, -5, 17])
def test_the_band_levels_tell_the_octave_the_chroma_fold(seed: int, shift: int) -> None:
    # The chroma of a piece an octave away are nearly the same; its band levels are not.
    recording = EMBEDDER.embed(melody_track(seed, seconds=20.0, sr=SR, transpose=-12), SR).vectors
    query = EMBEDDER.embed(melody_track(seed, seconds=20.0, sr=SR, transpose=shift - 12), SR)
    semitones = (shift + 5) % 12 - 5  # what the rotation of the chroma finds
    assert EMBEDDER.octave_apart(query.vectors, recording, semitones) == (shift - semitones) // 12
    with pytest.raises(ValueError, match="aligned rows"):
        EMBEDDER.octave_apart(query.vectors[:3], recording[:4])


def _tone(midi: int, partials: Sequence[float], seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    return sum(a * np.sin(2 * np.pi * f0 * h * t) for h, a in enumerate(partials, start=1))


@pytest.mark.parametrize("midi", [55, 62, 69])
def test_the_note_estimator_names_a_tone_by_its_pitch_not_its_loudest_partial(midi: int) -> None:
    # The third partial loudest (a fifth above, folded): the spectrum's own chroma peaks on it.
    audio = _tone(midi, (0.2, 0.3, 1.0, 0.4, 0.3)).astype(np.float32)
    spectrum = SPECTRUM.frames(audio).chroma[10:-10].mean(axis=0)
    notes = EMBEDDER.frames(audio).chroma[10:-10].mean(axis=0)
    assert int(np.argmax(spectrum)) == (midi + 7) % 12
    assert int(np.argmax(notes)) == midi % 12


def test_the_default_embedder_estimates_notes_and_the_spectrum_alone_is_another_version() -> None:
    assert SpectralConfig().pitch_notes == 8
    assert EMBEDDER.version == "4"
    assert SPECTRUM.version != EMBEDDER.version  # another config is another version
    with pytest.raises(ValueError, match="note_decay"):
        SpectralConfig(pitch_notes=8, note_decay=0.0)


@pytest.mark.parametrize("hop", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_hop_is_rejected(hop: float) -> None:
    with pytest.raises(EmbeddingError, match="hop_s"):
        EMBEDDER.embed(np.zeros(SR * 10, np.float32), SR, hop_s=hop)


# ----------------------------------------------------------------------------- robustness


def assert_found(catalogue: Catalogue, queries: dict[int, np.ndarray]) -> None:
    """Every query's best match is its own track, ahead of every other track."""
    wrong = {}
    for track, query in queries.items():
        matches = catalogue.match(query)
        if not matches or matches[0].track != track:
            wrong[track] = [(m.track, round(m.resemblance, 2)) for m in matches[:3]]
    assert not wrong, f"best matches were not the source track: {wrong}"


def test_clean_excerpts_find_their_track_with_correct_evidence(catalogue: Catalogue) -> None:
    for i in range(len(CATALOGUE)):
        matches = catalogue.match(excerpt(render(i)))
        assert matches[0].track == i
        assert matches[0].resemblance > 0.5
        best = max(matches[0].evidence, key=lambda e: e.query_end - e.query_start)
        # Query time 0 is reference time EXCERPT[0].
        assert best.reference_start - best.query_start == pytest.approx(EXCERPT[0], abs=0.6)


def test_gain_change(catalogue: Catalogue) -> None:
    assert_found(catalogue, {i: excerpt(render(i)) * 0.1 for i in range(len(CATALOGUE))})


def test_white_noise_at_20_db_snr(catalogue: Catalogue) -> None:
    assert_found(
        catalogue,
        {i: white_noise(excerpt(render(i)), snr_db=20.0, seed=i) for i in range(len(CATALOGUE))},
    )


@pytest.fixture(scope="module")
def at_22050() -> dict[int, np.ndarray]:
    """Query excerpts rendered at a file's usual rate, to go through encode/decode/resample."""
    return {i: excerpt(render(i, sr=22050), sr=22050) for i in range(len(CATALOGUE))}


@pytest.mark.parametrize("fmt", ["OGG", "MP3", "FLAC"])
def test_lossy_reencode_and_resampling(
    catalogue: Catalogue, at_22050: dict[int, np.ndarray], tmp_path: Path, fmt: str
) -> None:
    queries = {}
    for i, audio in at_22050.items():
        path = tmp_path / f"q{i}.{fmt.lower()}"
        write_audio(path, audio, 22050, fmt)  # type: ignore[arg-type]
        queries[i] = load(path, sample_rate=SR, min_seconds=1.0, max_seconds=60.0)
    assert_found(catalogue, queries)


@pytest.mark.parametrize("tempo", [0.95, 1.05])
def test_tempo_change(catalogue: Catalogue, tempo: float) -> None:
    assert_found(
        catalogue, {i: excerpt(render(i, tempo=tempo), tempo=tempo) for i in range(len(CATALOGUE))}
    )


@pytest.mark.parametrize("semitones", [-2, -1, 1, 2])
def test_transposition(catalogue: Catalogue, semitones: int) -> None:
    assert_found(
        catalogue, {i: excerpt(render(i, transpose=semitones)) for i in range(len(CATALOGUE))}
    )


def test_reinstrumentation(catalogue: Catalogue) -> None:
    assert_found(
        catalogue, {i: excerpt(render(i, reinstrument=True)) for i in range(len(CATALOGUE))}
    )


def test_both_sources_of_a_mix_are_found(catalogue: Catalogue) -> None:
    wrong = {}
    for a, b in [(0, 3), (1, 6), (2, 5), (4, 7)]:
        query = 0.5 * excerpt(render(a)) + 0.5 * excerpt(render(b))
        top = [m.track for m in catalogue.match(query)[:3]]
        if not {a, b} <= set(top):
            wrong[(a, b)] = top
    assert not wrong, f"mixes whose sources were not both in the top 3: {wrong}"


def test_music_not_in_the_catalogue_scores_below_real_uses(catalogue: Catalogue) -> None:
    real = [catalogue.match(excerpt(render(i)))[0].resemblance for i in range(len(CATALOGUE))]
    unrelated = []
    for seed in range(100, 106):
        matches = catalogue.match(melody_track(seed, seconds=12.0, sr=SR, timbre="piano"))
        unrelated.append(matches[0].resemblance if matches else 0.0)
    assert max(unrelated) < min(real)
