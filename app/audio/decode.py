"""Decoding and validating audio files: pure functions, numpy arrays out.

`probe` reads only the header (cheap, used on upload) and refuses what it already shows to be
unusable or too costly to decode; `load` decodes block by block, mixing to mono and resampling
as it goes, and checks the content (used by the worker and by checks).

Memory during `load` is the output at the target rate plus one block: a file's native rate and
channel count only set how much work decoding is, and `probe` bounds that before the first
sample is decoded (a small FLAC can hold minutes of a constant at 655,350 Hz; decoded whole
it took gigabytes).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
# Frames decoded at a time: 1.4 s at 192 kHz, 8 MB for 8 channels of float32. Large enough
# that per-block costs (a read call, the resampler's filter set-up) vanish next to the work.
BLOCK_FRAMES = 1 << 18
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

    Decodes in blocks of `BLOCK_FRAMES`, mixing and resampling each as it comes, so memory is
    the output plus a block whatever the file's native rate and channel count.

    Returns
    -------
    audio : np.ndarray [shape=(n_samples,), dtype=float32]
    """
    info = probe(path, min_seconds=min_seconds, max_seconds=max_seconds)
    resampler = StreamResampler(info.sample_rate, sample_rate)
    output = _Output(resampler.output_length(info.frames))
    level = _Level()
    max_frames = math.floor(max_seconds * info.sample_rate)
    try:
        with sf.SoundFile(str(path)) as f:
            for block in _mono_blocks(f, info.channels):
                level.add(block)
                if level.frames > max_frames:  # the header said less: stop decoding now
                    raise AudioError(
                        "too_long",
                        f"audio decodes to more than {max_seconds:g} s (its header says "
                        f"{info.duration_s:.1f} s); at most {max_seconds:g} s is accepted",
                    )
                output.append(resampler.process(block))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError("corrupt", f"the audio stream is corrupt: {_why(exc)}") from None
    output.append(resampler.flush())
    if level.frames < TRUNCATION_TOLERANCE * info.frames:
        raise AudioError(
            "truncated",
            f"the file is truncated: its header promises {info.duration_s:.1f} s, "
            f"only {level.frames / info.sample_rate:.1f} s decode",
        )
    check_duration(
        level.frames / info.sample_rate, min_seconds=min_seconds, max_seconds=max_seconds
    )
    check_level(level.rms)
    return output.audio()


def _mono_blocks(f: sf.SoundFile, channels: int) -> Iterator[FloatArray]:
    """Successive blocks of the file mixed to mono; each is valid until the next is taken.

    Yields
    ------
    block : np.ndarray [shape=(<= BLOCK_FRAMES,), dtype=float32]
    """
    buffer = np.empty((BLOCK_FRAMES, channels), dtype=np.float32)
    mono = np.empty(BLOCK_FRAMES, dtype=np.float32)
    while True:
        data = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True, out=buffer)
        if len(data) == 0:
            return
        if channels == 1:
            yield data[:, 0]
            continue
        # The channels' mean, as `data.mean(axis=1)` rounds it, at a third of its cost.
        out = mono[: len(data)]
        np.add(data[:, 0], data[:, 1], out=out)
        for c in range(2, channels):
            np.add(out, data[:, c], out=out)
        np.divide(out, channels, out=out)
        yield out


@dataclass(slots=True)
class _Level:
    """Length and energy of a stream seen block by block, at its native rate."""

    frames: int = 0
    energy: float = 0.0

    def add(self, block: FloatArray) -> None:
        if not np.isfinite(block).all():
            raise AudioError("corrupt", "the audio stream holds non-finite samples")
        self.frames += len(block)
        # Not np.dot: BLAS would start its threads, which spin on the cores checks share.
        self.energy += float(np.square(block, dtype=np.float64).sum())

    @property
    def rms(self) -> float:
        return math.sqrt(self.energy / self.frames) if self.frames else 0.0


class _Output:
    """Output blocks gathered in one array sized from the header's length (no final copy);
    it grows if the stream turns out longer than its header said."""

    def __init__(self, expected: int) -> None:
        # np.empty reserves address space only; pages a short stream never fills cost nothing.
        self._data: FloatArray = np.empty(max(expected, 0), dtype=np.float32)
        self._size = 0

    def append(self, block: FloatArray) -> None:
        end = self._size + len(block)
        if end > len(self._data):
            grown = np.empty(max(end, len(self._data) * 5 // 4), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : end] = block
        self._size = end

    def audio(self) -> FloatArray:
        return self._data[: self._size]


def check_level(rms: float) -> None:
    if rms < SILENCE_RMS:
        level = 20 * math.log10(rms) if rms > 0 else -math.inf
        raise AudioError("silent", f"the audio is silent (RMS {level:.0f} dBFS)")


class StreamResampler:
    """Polyphase resampling of a mono stream by a rational factor, fed block by block.

    The outputs of `process` and `flush`, concatenated, are `scipy.signal.resample_poly` of the
    whole stream (the same Kaiser-windowed FIR, zeros assumed before the start and after the
    end) up to float32 rounding. Between blocks it keeps only the input the next outputs still
    need: about one filter length at the input rate, plus less than `down` samples so each
    filtered stretch starts on the output grid.
    """

    def __init__(self, sr_from: int, sr_to: int) -> None:
        if sr_from <= 0 or sr_to <= 0:
            raise ValueError(f"sample rates must be positive, got {sr_from} -> {sr_to}")
        g = math.gcd(sr_from, sr_to)
        self.up, self.down = sr_to // g, sr_from // g
        self._consumed = 0  # input samples received
        self._emitted = 0  # output samples returned
        self._start = 0  # stream index of `_pending[0]`, a multiple of `down`
        self._pending: FloatArray = np.zeros(0, dtype=np.float32)
        if self.up == self.down == 1:
            return
        from scipy.signal import firwin, upfirdn  # scipy.signal takes ~2 s to import

        self._upfirdn: Any = upfirdn
        # The filter resample_poly designs: cutoff at the lower Nyquist, 10 zero crossings each
        # side, cast to float32 before the gain `up` as it does for float32 input.
        max_rate = max(self.up, self.down)
        self._half = 10 * max_rate
        taps = np.asarray(firwin(2 * self._half + 1, 1.0 / max_rate, window=("kaiser", 5.0)))
        h = taps.astype(np.float32)
        h *= self.up
        # Leading zeros put filtered output n at input position (n * down - pre) / up, so the
        # filter centre of output i lands on input i * down / up, `lead` outputs in.
        pre = -self._half % self.down
        self._h = np.concatenate([np.zeros(pre, dtype=np.float32), h])
        self._lead = (self._half + pre) // self.down

    def output_length(self, n_in: int) -> int:
        """Samples the whole output has for `n_in` input samples (as resample_poly)."""
        return -(-n_in * self.up // self.down)

    def process(self, block: FloatArray) -> FloatArray:
        """Take the next input samples; return the outputs they complete.

        block : np.ndarray [shape=(n,), dtype=float32]; not kept (copied where needed)

        Returns
        -------
        out : np.ndarray [shape=(m,), dtype=float32]
        """
        if block.ndim != 1:
            raise ValueError(f"expected mono audio, got shape={block.shape}")
        self._consumed += len(block)
        if self.up == self.down == 1:
            self._emitted += len(block)
            return np.array(block, dtype=np.float32)
        self._pending = np.concatenate([self._pending, block.astype(np.float32, copy=False)])
        # Output i needs input up to (i * down + half) / up: emit those whose input is all here.
        ready = (self._consumed * self.up - self._half - 1) // self.down + 1
        return self._emit(ready)

    def flush(self) -> FloatArray:
        """The outputs left once the stream has ended (zeros assumed after its end)."""
        total = self.output_length(self._consumed)
        if self.up == self.down == 1:
            return np.zeros(0, dtype=np.float32)
        tail = np.zeros(self._half // self.up + 1, dtype=np.float32)
        self._pending = np.concatenate([self._pending, tail])
        return self._emit(total)

    def _emit(self, stop: int) -> FloatArray:
        """Outputs `_emitted` up to `stop` (exclusive) from the pending input."""
        if stop <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        filtered = self._upfirdn(self._h, self._pending, self.up, self.down)
        first = self._emitted + self._lead - self._start * self.up // self.down
        out = np.asarray(filtered[first : first + stop - self._emitted], dtype=np.float32)
        self._emitted = stop
        # Keep from the first input a later output needs, rounded down to a multiple of `down`.
        needed = -((self._half - stop * self.down) // self.up)
        keep = max(self._start, needed // self.down * self.down)
        self._pending = self._pending[keep - self._start :].copy()
        self._start = keep
        return out


def resample(audio: FloatArray, sr_from: int, sr_to: int) -> FloatArray:
    """Polyphase resampling of mono audio (`resample_poly`'s filter, through `StreamResampler`).

    audio : np.ndarray [shape=(n,), dtype=float32]
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio, got shape={audio.shape}")
    if sr_from <= 0 or sr_to <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_from} -> {sr_to}")
    if sr_from == sr_to:
        return audio.astype(np.float32, copy=False)
    resampler = StreamResampler(sr_from, sr_to)
    return np.concatenate([resampler.process(audio.astype(np.float32)), resampler.flush()])


def _why(exc: Exception) -> str:
    text = str(exc)
    # libsndfile prefixes messages with "Error opening '<path>': "; the path means nothing to
    # the caller (it is a temporary file), so keep only the reason.
    return text.split("': ", 1)[-1].strip() or type(exc).__name__
