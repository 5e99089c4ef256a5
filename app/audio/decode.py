"""Decoding and validating audio files: pure functions, numpy arrays out.

`probe` reads only the header (cheap, used on upload); `load` decodes everything, mixes to mono,
resamples and checks the content (used by the worker and by checks).
"""

from __future__ import annotations

import math
import struct
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
# Accepted native sample rates. 8 kHz is the lowest rate recordings are made at (telephony,
# early samplers); 192 kHz is the highest that releases are distributed at (high-resolution
# downloads, Blu-ray audio). Above it are mastering intermediates (352.8 kHz DXD) and rates no
# recording uses (FLAC allows up to 655,350 Hz), which cost decoding time in proportion and
# hold nothing the embedders use: they listen at 11,025 Hz and 48 kHz.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8  # 7.1 surround
# Decoding costs frames x channels samples; a file may hold as many as the longest accepted
# duration of stereo at the highest accepted rate (so 5.1 at 96 kHz and 7.1 at 48 kHz pass
# for the full duration, 7.1 at 192 kHz for a quarter of it).
SAMPLE_BUDGET_CHANNELS = 2
# Below this RMS (about -70 dBFS) a file is treated as silence.
SILENCE_RMS = 10 ** (-70 / 20)
# A decoded stream shorter than this fraction of what its header promises is truncated.
TRUNCATION_TOLERANCE = 0.9
_BLOCK_SECONDS = 10
# WAV data sizes that mean "length unknown": writers that cannot seek back to fill in the size
# (output to a pipe) leave 0xFFFFFFFF, or SoX's 0x7FFFF000; decoders read to the end of the file.
_WAV_UNKNOWN_SIZES = frozenset({0xFFFF_FFFF, 0x7FFF_F000})
# Real WAV files have a handful of chunks (fmt, fact, LIST, bext, ...) before their data.
_WAV_MAX_CHUNKS = 1000


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
    check_layout(info.sample_rate, info.channels)
    if SUPPORTED_FORMATS[info.format] == "wav":
        check_wav_length(path)
    check_duration(info.duration_s, min_seconds=min_seconds, max_seconds=max_seconds)
    check_sample_budget(info, max_seconds=max_seconds)
    return info


def check_layout(sample_rate: int, channels: int) -> None:
    """Refuse native rates and channel counts outside what recordings use."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            "sample_rate",
            f"the sample rate {sample_rate} Hz is not accepted; "
            f"it must be {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
        )
    if channels > MAX_CHANNELS:
        raise AudioError(
            "channels", f"the file has {channels} channels; at most {MAX_CHANNELS} are accepted"
        )


def check_duration(duration_s: float, *, min_seconds: float, max_seconds: float) -> None:
    if duration_s < min_seconds:
        raise AudioError(
            "too_short", f"audio is {duration_s:.2f} s long; at least {min_seconds:g} s is needed"
        )
    if duration_s > max_seconds:
        raise AudioError(
            "too_long", f"audio is {duration_s:.1f} s long; at most {max_seconds:g} s is accepted"
        )


def check_sample_budget(info: AudioInfo, *, max_seconds: float) -> None:
    """Refuse a file whose frames x channels exceed what decoding is allowed to cost."""
    budget = math.floor(max_seconds * MAX_SAMPLE_RATE) * SAMPLE_BUDGET_CHANNELS
    samples = info.frames * info.channels
    if samples > budget:
        raise AudioError(
            "decoded_size",
            f"the file decodes to {samples} samples ({info.frames} frames x {info.channels} "
            f"channels); at most {budget} are accepted ({max_seconds:g} s of stereo at "
            f"{MAX_SAMPLE_RATE} Hz)",
        )


@dataclass(frozen=True, slots=True)
class WavData:
    """Where a WAV file's sample data is, by its chunk headers."""

    declared: int  # bytes the data chunk's header declares
    present: int  # bytes the file holds after the data chunk's header
    byte_rate: int  # the fmt chunk's average bytes per second (0 if absent)
    block_align: int  # the fmt chunk's bytes per frame (or per compressed block)


def check_wav_length(path: Path) -> None:
    """Refuse a WAV whose data chunk declares more bytes than the file holds.

    libsndfile quietly decodes what is there, so a WAV cut short would pass every later check.
    """
    data = wav_data_chunk(path)
    if data is None or data.declared - data.present < max(data.block_align, 1):
        return
    declared, present = f"{data.declared} bytes", f"{data.present}"
    if data.byte_rate > 0:
        declared += f" ({data.declared / data.byte_rate:.1f} s)"
        present += f" ({data.present / data.byte_rate:.1f} s)"
    raise AudioError(
        "truncated",
        f"the file is truncated: its header declares {declared} of audio, the file holds {present}",
    )


def wav_data_chunk(path: Path) -> WavData | None:
    """Read the RIFF (or RF64) chunk headers up to the data chunk.

    None when the size is a placeholder for "unknown" or the layout is not the usual one
    (libsndfile has already read the file; there is then no declared length to compare).
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:] != b"WAVE":
            return None
        rf64_data: int | None = None
        byte_rate = block_align = 0
        offset = 12
        for _ in range(_WAV_MAX_CHUNKS):
            f.seek(offset)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, chunk_size = struct.unpack("<4sI", chunk)
            body = f.read(min(chunk_size, 24))
            if chunk_id == b"ds64" and len(body) >= 16:
                (rf64_data,) = struct.unpack_from("<Q", body, 8)
            elif chunk_id == b"fmt " and len(body) >= 16:
                _, _, _, byte_rate, block_align, _ = struct.unpack_from("<HHIIHH", body)
            elif chunk_id == b"data":
                if head[:4] == b"RF64" and chunk_size == 0xFFFF_FFFF:
                    if rf64_data is None:
                        return None
                    chunk_size = rf64_data
                elif chunk_size in _WAV_UNKNOWN_SIZES:
                    return None
                return WavData(chunk_size, size - offset - 8, byte_rate, block_align)
            offset += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even sizes
    raise AudioError(
        "not_audio", f"the WAV file has more than {_WAV_MAX_CHUNKS} chunks before its audio data"
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
