"""Decoding and validating audio files: pure functions, numpy arrays out.

`probe` reads only the header (cheap, used on upload); `load` decodes everything, mixes to mono,
resamples and checks the content (used by the worker and by checks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from app.errors import Unprocessable

FloatArray = npt.NDArray[np.float32]

# Container formats we accept, as libsndfile names them.
SUPPORTED_FORMATS = {
    "WAV": "wav",
    "WAVEX": "wav",
    "RF64": "wav",
    "FLAC": "flac",
    "OGG": "ogg",
    "MP3": "mp3",
}
# Below this RMS (about -70 dBFS) a file is treated as silence.
SILENCE_RMS = 10 ** (-70 / 20)
# A decoded stream shorter than this fraction of what its header promises is truncated.
TRUNCATION_TOLERANCE = 0.9
_BLOCK_SECONDS = 10


class AudioError(Unprocessable, ValueError):
    """The file cannot be used as audio; `reason` is a short machine-readable code.

    Raised from a request, it is the 422 the client sees, naming the file field and the reason.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, details={"field": "file", "reason": reason})
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What the file's header says."""

    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: Path, *, min_seconds: float, max_seconds: float) -> AudioInfo:
    """Read the header and reject what it already shows to be unusable."""
    if path.stat().st_size == 0:
        raise AudioError("empty", "the file is empty")
    try:
        raw = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(
            "not_audio", f"not a readable audio file (WAV, FLAC, OGG/Vorbis or MP3): {_why(exc)}"
        ) from None
    info = AudioInfo(
        format=raw.format,
        subtype=raw.subtype,
        sample_rate=int(raw.samplerate),
        channels=int(raw.channels),
        frames=int(raw.frames),
    )
    if info.format not in SUPPORTED_FORMATS:
        raise AudioError(
            "unsupported_format",
            f"unsupported audio format {info.format}; use WAV, FLAC, OGG/Vorbis or MP3",
        )
    if info.frames <= 0 or info.sample_rate <= 0:
        raise AudioError("truncated", "the file holds no audio frames (empty or truncated)")
    check_duration(info.duration_s, min_seconds=min_seconds, max_seconds=max_seconds)
    return info


def check_duration(duration_s: float, *, min_seconds: float, max_seconds: float) -> None:
    if duration_s < min_seconds:
        raise AudioError(
            "too_short", f"audio is {duration_s:.2f} s long; at least {min_seconds:g} s is needed"
        )
    if duration_s > max_seconds:
        raise AudioError(
            "too_long", f"audio is {duration_s:.1f} s long; at most {max_seconds:g} s is accepted"
        )


def load(path: Path, *, sample_rate: int, min_seconds: float, max_seconds: float) -> FloatArray:
    """Decode a whole file to mono float32 at `sample_rate`, rejecting unusable content.

    Returns
    -------
    audio : np.ndarray [shape=(n_samples,), dtype=float32]
    """
    info = probe(path, min_seconds=min_seconds, max_seconds=max_seconds)
    blocks: list[FloatArray] = []
    try:
        with sf.SoundFile(str(path)) as f:
            block = int(info.sample_rate * _BLOCK_SECONDS)
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                blocks.append(data.mean(axis=1, dtype=np.float32))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError("corrupt", f"the audio stream is corrupt: {_why(exc)}") from None
    audio = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if len(audio) < TRUNCATION_TOLERANCE * info.frames:
        raise AudioError(
            "truncated",
            f"the file is truncated: its header promises {info.duration_s:.1f} s, "
            f"only {len(audio) / info.sample_rate:.1f} s decode",
        )
    if not np.all(np.isfinite(audio)):
        raise AudioError("corrupt", "the audio stream holds non-finite samples")
    check_duration(len(audio) / info.sample_rate, min_seconds=min_seconds, max_seconds=max_seconds)
    check_not_silent(audio)
    return resample(audio, info.sample_rate, sample_rate)


def check_not_silent(audio: FloatArray) -> None:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < SILENCE_RMS:
        level = 20 * math.log10(rms) if rms > 0 else -math.inf
        raise AudioError("silent", f"the audio is silent (RMS {level:.0f} dBFS)")


def resample(audio: FloatArray, sr_from: int, sr_to: int) -> FloatArray:
    """Polyphase resampling of mono audio.

    audio : np.ndarray [shape=(n,), dtype=float32]
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio, got shape={audio.shape}")
    if sr_from <= 0 or sr_to <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_from} -> {sr_to}")
    if sr_from == sr_to:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # scipy.signal takes ~2 s to import; pay on use

    g = math.gcd(sr_from, sr_to)
    out = resample_poly(audio, sr_to // g, sr_from // g)
    return np.asarray(out, dtype=np.float32)


def _why(exc: Exception) -> str:
    text = str(exc)
    # libsndfile prefixes messages with "Error opening '<path>': "; the path means nothing to
    # the caller (it is a temporary file), so keep only the reason.
    return text.split("': ", 1)[-1].strip() or type(exc).__name__
