"""Signal helpers for the evaluation corpus: levels, noise, codecs, fades and simple features."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from scipy import signal
from scipy.fft import next_fast_len

NoiseColor = Literal["white", "pink"]
Codec = Literal["mp3", "ogg"]

PEAK_LIMIT = 0.99
TARGET_RMS_DB = -20.0
TARGET_PEAK_DB = -1.0

# libsndfile compression levels giving low bitrates at 22.05 kHz mono (about 40 and 33 kbit/s).
_CODECS: dict[str, tuple[str, str, float]] = {
    "mp3": ("MP3", "MPEG_LAYER_III", 0.8),
    "ogg": ("OGG", "VORBIS", 0.9),
}


def db_to_amp(db: float) -> float:
    """Convert decibels to a linear amplitude factor."""
    return float(10.0 ** (db / 20.0))


def amp_to_db(amp: float) -> float:
    """Convert a linear amplitude factor to decibels (-inf for zero)."""
    return float(20.0 * np.log10(amp)) if amp > 0 else float("-inf")


def rms(x: np.ndarray) -> float:
    """Root-mean-square level of a signal."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def peak(x: np.ndarray) -> float:
    """Absolute peak of a signal."""
    return float(np.max(np.abs(x))) if x.size else 0.0


def normalize(
    x: np.ndarray, rms_db: float = TARGET_RMS_DB, peak_db: float = TARGET_PEAK_DB
) -> np.ndarray:
    """Scale to a target RMS level, lowered if needed so the peak stays under `peak_db`."""
    level = rms(x)
    if level <= 0:
        return x.astype(np.float32)
    scale = db_to_amp(rms_db) / level
    top = peak(x) * scale
    if top > db_to_amp(peak_db):
        scale *= db_to_amp(peak_db) / top
    return (x * scale).astype(np.float32)


def limit_peak(x: np.ndarray, limit: float = PEAK_LIMIT) -> np.ndarray:
    """Scale the whole signal down if its peak exceeds `limit`."""
    top = peak(x)
    if top <= limit:
        return x.astype(np.float32)
    return (x * (limit / top)).astype(np.float32)


def apply_gain(
    x: np.ndarray, gain_db: float, limit: float = PEAK_LIMIT
) -> tuple[np.ndarray, float]:
    """Apply a gain, reduced so the result does not clip; returns (signal, applied gain in dB)."""
    top = peak(x)
    if top > 0 and top * db_to_amp(gain_db) > limit:
        gain_db = amp_to_db(limit / top)
    return (x * db_to_amp(gain_db)).astype(np.float32), float(gain_db)


def colored_noise(n: int, color: NoiseColor, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) Gaussian noise."""
    if color == "white":
        white = rng.standard_normal(n)
    else:
        size = next_fast_len(n)
        spec = np.fft.rfft(rng.standard_normal(size))
        freqs = np.arange(spec.size, dtype=np.float64)
        freqs[0] = 1.0
        spec /= np.sqrt(freqs)
        spec[0] = 0.0
        white = np.fft.irfft(spec, size)[:n]
    level = rms(white)
    return (white / level if level > 0 else white).astype(np.float64)


def add_noise(
    x: np.ndarray, snr_db: float, color: NoiseColor, rng: np.random.Generator
) -> np.ndarray:
    """Add noise at `snr_db` relative to the signal power; rescaled as a whole if it would clip."""
    noise = colored_noise(x.size, color, rng) * rms(x) / db_to_amp(snr_db)
    return limit_peak(x + noise)


def band_pass(x: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Zero-phase 4th-order Butterworth band-pass (a telephone band is 300-3400 Hz).

    x : np.ndarray [shape=(n,)]
    Filtered forwards and backwards, so the result is not delayed against the input.
    """
    if x.ndim != 1:
        raise ValueError(f"expected mono, got shape={x.shape}")
    if not 0 < low_hz < high_hz < sample_rate / 2:
        raise ValueError(f"need 0 < {low_hz} < {high_hz} < {sample_rate / 2} Hz")
    sos = signal.butter(4, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")
    return np.asarray(signal.sosfiltfilt(sos, x.astype(np.float64)), dtype=np.float32)


def room_impulse_response(
    sample_rate: int, rt60_s: float, rng: np.random.Generator, *, predelay_s: float = 0.01
) -> np.ndarray:
    """Synthetic diffuse room: Gaussian noise decaying by 60 dB in `rt60_s`, after a pre-delay.

    Returns the reverberant part only (no direct sound), unit energy, shape (n,): about
    1.5 * rt60_s long. Low-passed a little, as walls absorb high frequencies first.
    """
    if not rt60_s > 0:
        raise ValueError(f"rt60_s={rt60_s} must be positive")
    n = round(1.5 * rt60_s * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * 10.0 ** (-3.0 * t / rt60_s)  # -60 dB at t = rt60
    sos = signal.butter(2, min(6000.0, 0.45 * sample_rate), fs=sample_rate, output="sos")
    tail = signal.sosfilt(sos, tail)
    ir = np.concatenate([np.zeros(round(predelay_s * sample_rate)), tail])
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float64)


def reverberate(x: np.ndarray, ir: np.ndarray, wet: float) -> np.ndarray:
    """Dry signal plus its convolution with `ir`, mixed to `wet` share of the energy.

    x : np.ndarray [shape=(n,)]; ir : np.ndarray [shape=(m,)], no direct sound
    The output keeps x's length and timing (the dry path is not delayed); its RMS matches x's.
    """
    if not 0.0 <= wet < 1.0:
        raise ValueError(f"wet={wet} must be in [0, 1)")
    dry = x.astype(np.float64)
    tail = signal.fftconvolve(dry, ir)[: dry.size]
    tail *= rms(dry) / max(rms(tail), 1e-12)
    mixed = np.sqrt(1.0 - wet) * dry + np.sqrt(wet) * tail
    mixed *= rms(dry) / max(rms(mixed), 1e-12)
    return limit_peak(mixed)


def crossfade_concat(segments: list[np.ndarray], overlap: int) -> np.ndarray:
    """Concatenate segments with linear crossfades of `overlap` samples."""
    out = segments[0].astype(np.float32, copy=True)
    ramp = np.linspace(0.0, 1.0, overlap, dtype=np.float32)
    for seg in segments[1:]:
        seg = seg.astype(np.float32)
        head = out[-overlap:] * (1.0 - ramp) + seg[:overlap] * ramp
        out = np.concatenate([out[:-overlap], head, seg[overlap:]])
    return out


def write_audio(path: Path, x: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit FLAC or WAV (by suffix) atomically."""
    fmt = {".flac": "FLAC", ".wav": "WAV"}[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(tmp, np.clip(x, -1.0, 1.0), sample_rate, format=fmt, subtype="PCM_16")
    os.replace(tmp, path)


def write_lossy(path: Path, x: np.ndarray, sample_rate: int, codec: Codec) -> None:
    """Encode mono audio to low-bitrate MP3 or Ogg Vorbis atomically."""
    fmt, subtype, level = _CODECS[codec]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    extra = {"bitrate_mode": "CONSTANT"} if codec == "mp3" else {}
    sf.write(
        tmp,
        np.clip(x, -1.0, 1.0),
        sample_rate,
        format=fmt,
        subtype=subtype,
        compression_level=level,
        **extra,
    )
    os.replace(tmp, path)


def read_mono(path: Path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Read a file (any libsndfile format) as float32 mono; returns (signal, sample rate)."""
    data, sr = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    return data.mean(axis=1), int(sr)


def estimate_lag(reference: np.ndarray, y: np.ndarray, max_lag: int) -> int:
    """Delay (samples) of `y` relative to `reference` maximising their cross-correlation."""
    n = min(reference.size, y.size)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    corr = np.fft.irfft(np.fft.rfft(y[:n], size) * np.conj(np.fft.rfft(reference[:n], size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    return int(lags[np.argmax(corr[lags])])


def fit_snr_db(target: np.ndarray, refs: list[np.ndarray]) -> tuple[float, list[float]]:
    """Least-squares fit of `target` by scaled `refs`; returns (fit SNR in dB, scales)."""
    n = min([target.size, *(r.size for r in refs)])
    basis = np.stack([r[:n].astype(np.float64) for r in refs], axis=1)
    coef, *_ = np.linalg.lstsq(basis, target[:n].astype(np.float64), rcond=None)
    fitted = basis @ coef
    resid = target[:n] - fitted
    snr = 10.0 * np.log10(np.sum(fitted**2) / max(float(np.sum(resid**2)), 1e-20))
    return float(snr), [float(c) for c in coef]


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Hann-windowed magnitude spectrogram, shape (frames, bins)."""
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    count = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    return np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=1))


def chroma(x: np.ndarray, sample_rate: int, hop: int = 1024, n_fft: int = 4096) -> np.ndarray:
    """Frame-wise 12-bin chroma (C=0), L2-normalised per frame; shape (frames, 12)."""
    mag = _frames(x, n_fft, hop)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = (freqs >= 60.0) & (freqs <= 2100.0)
    pitch_class = (np.round(12.0 * np.log2(freqs[band] / 440.0)).astype(int) + 9) % 12
    out = np.zeros((mag.shape[0], 12))
    for pc in range(12):
        out[:, pc] = np.sum(mag[:, band][:, pitch_class == pc] ** 2, axis=1)
    out = np.log1p(out / (np.max(out) + 1e-12) * 1000.0)
    return np.asarray(out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-9))


def band_profile_db(x: np.ndarray, sample_rate: int, bands: int = 32) -> np.ndarray:
    """Long-term spectral envelope: mean dB level in log-spaced bands, zero-mean."""
    mag = _frames(x, 2048, 1024)
    freqs = np.fft.rfftfreq(2048, 1.0 / sample_rate)
    edges = np.geomspace(80.0, min(8000.0, sample_rate / 2.0), bands + 1)
    power = np.mean(mag**2, axis=0)
    levels = np.array(
        [
            10.0 * np.log10(np.sum(power[(freqs >= lo) & (freqs < hi)]) + 1e-12)
            for lo, hi in itertools.pairwise(edges)
        ]
    )
    return np.asarray(levels - levels.mean())
