"""The evaluation corpus's melody tools and signal edits (bench/corpus/melody.py, transforms).

They decide which negatives are really uses of a catalogue tune, where evidence may point (a
repeat), and what the phone and reverb query sets sound like.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import _audio_transforms as au
from bench.corpus.melody import (
    SharedMelodyIndex,
    accompany,
    estimate_key,
    implied_chords,
    repeat_offsets,
    top_voice,
)

# "Ode to Joy", two phrases (MIDI pitches, in quarter notes).
ODE = [64, 64, 65, 67, 67, 65, 64, 62, 60, 60, 62, 64, 64, 62, 62,
       64, 64, 65, 67, 67, 65, 64, 62, 60, 60, 62, 64, 62, 60, 60]  # fmt: skip
ODE_BEATS = [1.0] * 12 + [1.5, 0.5, 2.0] + [1.0] * 12 + [1.5, 0.5, 2.0]


def _line(pitches: list[int], beats: list[float], *, beat_s: float, part: int) -> np.ndarray:
    """Rows (onset, offset, pitch, velocity, part) of a monophonic line."""
    onsets = np.concatenate([[0.0], np.cumsum(beats)[:-1]]) * beat_s
    offsets = onsets + np.asarray(beats) * beat_s
    return np.stack(
        [onsets, offsets, pitches, np.full(len(pitches), 80.0), np.full(len(pitches), part)],
        axis=1,
    )


def _harmonised(pitches: list[int], beats: list[float], *, beat_s: float, bass: int) -> np.ndarray:
    """The tune on top of a lower part moving on its own."""
    melody = _line(pitches, beats, beat_s=beat_s, part=0)
    lower = melody.copy()
    lower[:, 2] = bass + (np.arange(len(pitches)) * 5) % 7
    lower[:, 4] = 1
    return np.concatenate([lower, melody])


def _random_tune(rng: np.random.Generator, n: int) -> list[int]:
    return list(60 + np.cumsum(rng.choice([-4, -2, -1, 1, 2, 3, 5], size=n)) % 24)


def test_top_voice_keeps_the_highest_part_one_note_at_a_time() -> None:
    tune = _harmonised(ODE, ODE_BEATS, beat_s=0.5, bass=40)
    melody = top_voice(tune)
    assert list(melody[:, 2]) == ODE
    assert np.all(melody[:-1, 1] <= melody[1:, 0] + 1e-9)
    chord = np.array([[0.0, 1.0, 60, 80, 0], [0.0, 1.0, 67, 80, 0], [1.0, 2.0, 62, 80, 0]])
    assert list(top_voice(chord)[:, 2]) == [67, 62]


def test_the_same_tune_in_another_key_tempo_and_harmony_is_found() -> None:
    rng = np.random.default_rng(1)
    catalogue = [
        top_voice(_harmonised(_random_tune(rng, 40), [1.0] * 40, beat_s=0.5, bass=40)),
        top_voice(_harmonised(ODE, ODE_BEATS, beat_s=0.5, bass=40)),
    ]
    index = SharedMelodyIndex(catalogue)
    # Transposed up a fourth, 20 % slower, other lower part, an ornament (a repeated note).
    pitches = [p + 5 for p in ODE]
    pitches.insert(9, pitches[8])
    beats = [*ODE_BEATS[:8], 0.5, 0.5, *ODE_BEATS[9:]]
    query = top_voice(_harmonised(pitches, beats, beat_s=0.6, bass=45))
    shared = index.find(query)
    assert shared is not None
    assert shared.piece == 1
    assert shared.transpose == 5
    assert shared.tempo_factor == pytest.approx(0.5 / 0.6, rel=0.02)
    assert shared.share > 0.8

    other = top_voice(_harmonised(_random_tune(rng, 40), [1.0] * 40, beat_s=0.5, bass=40))
    assert index.find(other) is None


def test_a_repeated_passage_is_found_at_its_repeat() -> None:
    rng = np.random.default_rng(2)
    a, b = _random_tune(rng, 16), _random_tune(rng, 16)
    piece = _line(a + a + b + b, [1.0] * 64, beat_s=0.5, part=0)  # AABB, 8 s per part
    assert repeat_offsets(piece, 1.0, 6.0) == [8.0]
    assert repeat_offsets(piece, 17.0, 23.0) == [8.0]
    assert repeat_offsets(piece, 25.0, 31.0) == [-8.0]
    assert repeat_offsets(piece, 6.0, 12.0) == []  # straddles A and B


def test_an_accompaniment_follows_the_melodys_harmony() -> None:
    melody = _line(ODE, ODE_BEATS, beat_s=0.5, part=0)
    tonic, mode = estimate_key(melody)
    assert (tonic, mode) == (0, "major")
    chords = implied_chords(melody, tonic, mode, 1.0, 8.0)
    assert chords[0][1:] == (0, "maj")  # E E F G over C major
    backing = accompany(chords, 1.0, 8.0, "arpeggio")
    assert backing[:, 1].max() <= 8.0
    assert set(backing[:, 4]) == {1.0, 2.0}
    with pytest.raises(ValueError, match="style"):
        accompany(chords, 1.0, 8.0, "waltz")


def test_phone_band_removes_lows_and_highs_without_delay() -> None:
    sr = 22050
    t = np.arange(sr) / sr
    low, mid, high = (np.sin(2 * np.pi * f * t) for f in (100.0, 1000.0, 6000.0))
    out = au.band_pass(low + mid + high, sr, 300.0, 3400.0)
    fit, coef = au.fit_snr_db(out, [low, mid, high])
    assert fit > 20
    assert abs(coef[1]) > 0.95
    assert abs(coef[0]) < 0.1
    assert abs(coef[2]) < 0.1
    with pytest.raises(ValueError, match="mono"):
        au.band_pass(np.zeros((2, 10)), sr, 300.0, 3400.0)


def test_reverb_keeps_length_timing_and_level() -> None:
    sr = 22050
    rng = np.random.default_rng(3)
    dry = np.zeros(2 * sr)
    dry[::4410] = 0.5  # clicks every 0.2 s
    ir = au.room_impulse_response(sr, 1.2, rng)
    energy = np.cumsum(ir[::-1] ** 2)[::-1]
    decay_db = 10 * np.log10(energy[round(0.61 * sr)] / energy[0])
    assert -40 < decay_db < -20  # about -30 dB after half the RT60
    wet = au.reverberate(dry, ir, 0.5)
    assert wet.shape == dry.shape
    assert au.estimate_lag(dry, wet, 2000) == 0
    assert au.rms(wet) == pytest.approx(au.rms(dry), rel=0.05)
