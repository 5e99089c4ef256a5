"""Synthetic music for tests: seeded scores rendered by additive synthesis.

A seed fixes a score (key, mode, tempo, chord progression, melody, bass line); rendering takes
the score at any tempo factor, transposition and timbre, so the "same music, transformed"
cases are re-synthesised the way a generator would produce them, not time-stretched.

    audio = melody_track(3, seconds=20.0, sr=11025, tempo=1.05, transpose=-2, timbre="organ")
    write_audio(tmp_path / "q.ogg", audio, 11025, "OGG")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soundfile as sf

FloatArray = npt.NDArray[np.float32]
AudioFormat = Literal["WAV", "FLAC", "OGG", "MP3"]


@dataclass(frozen=True, slots=True)
class Timbre:
    """Harmonic amplitudes and an envelope (attack, decay to sustain level, release), in s."""

    harmonics: tuple[float, ...]
    attack: float
    decay: float
    sustain: float
    release: float
    vibrato: float = 0.0  # depth in semitones, at 5.5 Hz


TIMBRES: dict[str, Timbre] = {
    "piano": Timbre((1.0, 0.5, 0.3, 0.2, 0.12, 0.08, 0.05), 0.005, 0.6, 0.15, 0.2),
    "organ": Timbre((1.0, 0.8, 0.0, 0.6, 0.0, 0.4, 0.0, 0.3), 0.02, 0.05, 0.9, 0.05),
    "strings": Timbre(
        (1.0, 0.7, 0.55, 0.45, 0.35, 0.3, 0.25, 0.2, 0.15), 0.12, 0.2, 0.8, 0.25, vibrato=0.12
    ),
    "flute": Timbre((1.0, 0.25, 0.08, 0.03), 0.06, 0.1, 0.85, 0.12, vibrato=0.08),
    "brass": Timbre((0.6, 1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.12), 0.04, 0.15, 0.75, 0.1),
    "pluck": Timbre((1.0, 0.6, 0.4, 0.25, 0.15, 0.1), 0.002, 0.35, 0.0, 0.1),
    "clarinet": Timbre((1.0, 0.0, 0.6, 0.0, 0.35, 0.0, 0.2, 0.0, 0.1), 0.03, 0.1, 0.85, 0.1),
}

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
# Chord roots as scale degrees; progressions loop.
_PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 0, 4), (1, 4, 0, 0))


@dataclass(frozen=True, slots=True)
class Note:
    """A note in score time: onset and length in beats, MIDI pitch, velocity 0..1, voice."""

    onset: float
    length: float
    pitch: int
    velocity: float
    voice: str  # "melody", "chord" or "bass"


@dataclass(frozen=True, slots=True)
class Score:
    bpm: float
    notes: tuple[Note, ...]

    @property
    def beats(self) -> float:
        return max(n.onset + n.length for n in self.notes)


def make_score(seed: int, *, beats: float) -> Score:
    """A seeded score of at least `beats` beats; a longer request extends the same music."""
    rng = np.random.default_rng(seed)
    tonic = 48 + int(rng.integers(0, 12))
    scale = _MAJOR if rng.random() < 0.6 else _MINOR
    bpm = float(rng.uniform(84, 132))
    progression = _PROGRESSIONS[int(rng.integers(0, len(_PROGRESSIONS)))]
    rhythm_bank = [
        (1.0, 1.0, 1.0, 1.0),
        (0.5, 0.5, 1.0, 2.0),
        (1.5, 0.5, 1.0, 1.0),
        (0.5, 0.5, 0.5, 0.5, 1.0, 1.0),
        (2.0, 1.0, 1.0),
        (1.0, 0.5, 0.5, 2.0),
    ]
    notes: list[Note] = []
    degree = int(rng.integers(0, 7))
    bar = 0
    # Each bar draws a fixed number of random values, so bars do not depend on `beats`.
    while bar * 4.0 < beats:
        root = progression[bar % len(progression)]
        onset = bar * 4.0
        # Chord: root position triad an octave above the tonic, sustained for the bar.
        for d in (root, root + 2, root + 4):
            notes.append(Note(onset, 4.0, _pitch(tonic + 12, scale, d), 0.35, "chord"))
        # Bass: root on beats 1 and 3.
        for b in (0.0, 2.0):
            notes.append(Note(onset + b, 2.0, _pitch(tonic - 12, scale, root), 0.6, "bass"))
        rhythm = rhythm_bank[int(rng.integers(0, len(rhythm_bank)))]
        steps = rng.integers(-2, 3, size=len(rhythm))
        pos = onset
        for length, step in zip(rhythm, steps, strict=True):
            degree = int(np.clip(degree + step, -3, 10))
            notes.append(Note(pos, length, _pitch(tonic + 12, scale, degree), 0.8, "melody"))
            pos += length
        bar += 1
    return Score(bpm=bpm, notes=tuple(notes))


def _pitch(base: int, scale: tuple[int, ...], degree: int) -> int:
    octave, step = divmod(degree, 7)
    return base + 12 * octave + scale[step]


def render(
    score: Score,
    *,
    seconds: float,
    sr: int,
    tempo: float = 1.0,
    transpose: int = 0,
    timbre: str = "piano",
    accompaniment: str | None = None,
) -> FloatArray:
    """Render `seconds` of the score at `tempo` x its bpm, peak-normalised to -3 dBFS."""
    if timbre not in TIMBRES:
        raise ValueError(f"unknown timbre {timbre!r}; known: {', '.join(TIMBRES)}")
    lead = TIMBRES[timbre]
    backing = TIMBRES[accompaniment] if accompaniment else lead
    n = round(seconds * sr)
    out = np.zeros(n + sr, dtype=np.float64)
    beat_s = 60.0 / (score.bpm * tempo)
    for note in score.notes:
        start = note.onset * beat_s
        if start >= seconds:
            continue
        voice_timbre = lead if note.voice == "melody" else backing
        _add_note(out, note, start, note.length * beat_s, transpose, voice_timbre, sr)
    out = out[:n]
    top = float(np.max(np.abs(out))) or 1.0
    return (out * (10 ** (-3 / 20) / top)).astype(np.float32)


def _add_note(
    out: npt.NDArray[np.float64],
    note: Note,
    start: float,
    length: float,
    transpose: int,
    timbre: Timbre,
    sr: int,
) -> None:
    dur = length + timbre.release
    i0 = round(start * sr)
    count = min(round(dur * sr), out.size - i0)
    if count <= 0:
        return
    t = np.arange(count) / sr
    f0 = 440.0 * 2 ** ((note.pitch + transpose - 69) / 12)
    # Phase in periods; vibrato bends every harmonic alike, so one wavetable serves them all.
    phase = f0 * t
    if timbre.vibrato:
        depth = 2 ** (timbre.vibrato / 12) - 1
        phase += depth * f0 / (2 * np.pi * 5.5) * np.sin(2 * np.pi * 5.5 * t)
    table = _wavetable(timbre, f0, sr)
    wave = table[(phase * _TABLE_SIZE).astype(np.int64) % _TABLE_SIZE]
    out[i0 : i0 + count] += note.velocity * _envelope(t, length, timbre) * wave


_TABLE_SIZE = 4096


def _wavetable(timbre: Timbre, f0: float, sr: int) -> npt.NDArray[np.float64]:
    """One period of the note's waveform, from the harmonics below Nyquist."""
    x = np.arange(_TABLE_SIZE) / _TABLE_SIZE
    table = np.zeros(_TABLE_SIZE)
    for h, amp in enumerate(timbre.harmonics, start=1):
        if amp and f0 * h < sr / 2:
            # Fixed phases per harmonic, so a timbre's waveform is not a pure sine sum at 0.
            table += amp * np.sin(2 * np.pi * h * x + 0.7 * h)
    return table


def _envelope(t: npt.NDArray[np.float64], length: float, tb: Timbre) -> npt.NDArray[np.float64]:
    attack = np.clip(t / tb.attack, 0.0, 1.0)
    decay = tb.sustain + (1 - tb.sustain) * np.exp(-np.maximum(t - tb.attack, 0.0) / tb.decay)
    release = np.clip(1.0 - (t - length) / tb.release, 0.0, 1.0)
    return attack * decay * release


def melody_track(
    seed: int,
    *,
    seconds: float,
    sr: int,
    tempo: float = 1.0,
    transpose: int = 0,
    timbre: str = "piano",
    accompaniment: str | None = None,
) -> FloatArray:
    """`seconds` of seeded music: melody, chords and bass, mono float32 at `sr`.

    tempo : speed factor (1.05 plays the same notes 5 % faster)
    transpose : semitones added to every note
    timbre : lead timbre (a key of TIMBRES); accompaniment defaults to the same timbre
    """
    beats_needed = seconds * tempo * 132 / 60 + 8
    score = make_score(seed, beats=beats_needed)
    return render(
        score,
        seconds=seconds,
        sr=sr,
        tempo=tempo,
        transpose=transpose,
        timbre=timbre,
        accompaniment=accompaniment,
    )


def white_noise(audio: FloatArray, *, snr_db: float, seed: int = 0) -> FloatArray:
    """`audio` plus white Gaussian noise at `snr_db` below its power."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    noise = rng.standard_normal(audio.size) * np.sqrt(power / 10 ** (snr_db / 10))
    out: FloatArray = (audio + noise).astype(np.float32)
    return out


_FORMATS: dict[str, tuple[str, str]] = {
    "WAV": ("WAV", "PCM_16"),
    "FLAC": ("FLAC", "PCM_16"),
    "OGG": ("OGG", "VORBIS"),
    "MP3": ("MP3", "MPEG_LAYER_III"),
}
# libsndfile's Vorbis encoder crashes on very large single writes; stream in blocks.
_WRITE_BLOCK_S = 10


def write_audio(path: Path, audio: FloatArray, sr: int, format: AudioFormat) -> None:
    """Write mono or (n, channels) audio as WAV/FLAC (16-bit), OGG Vorbis or MP3, atomically."""
    if format not in _FORMATS:
        raise ValueError(f"unknown format {format!r}; use one of {', '.join(_FORMATS)}")
    fmt, subtype = _FORMATS[format]
    data = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    channels = 1 if data.ndim == 1 else data.shape[1]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    block = _WRITE_BLOCK_S * sr
    with sf.SoundFile(
        str(tmp), "w", samplerate=sr, channels=channels, format=fmt, subtype=subtype
    ) as f:
        for i in range(0, data.shape[0], block):
            f.write(data[i : i + block])
    os.replace(tmp, path)
