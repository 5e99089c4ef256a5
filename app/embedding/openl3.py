"""OpenL3 music embeddings (through the torchopenl3 port), pooled into the service's windows.

The network is OpenL3 with content_type="music", input_repr="mel256" and embedding_size=512.
It maps one second of 48 kHz mono audio (a "frame") to a 512-d vector; the mel spectrogram is
computed inside the network (torch conv1d DFT kernels and a mel matrix stored with the weights,
as kapre did for the original Keras model). Frames are taken every `frame_hop_s` seconds, and
each window of `window_s` seconds gets the mean of the frames lying wholly inside it,
L2-normalised.

torch and torchopenl3 come with the `openl3` extra and are imported only when an embedder is
built, so this module imports without them. The weights are read from torch.hub's cache
(``$TORCH_HOME/hub/checkpoints``, the file torchopenl3 itself would use) and are never
downloaded at run time: fetch them when building the image with

    python -m app.embedding.openl3 --fetch-weights
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

from app.embedding.base import Embedding, EmbeddingError, FloatArray, check_audio, l2_normalise

if TYPE_CHECKING:
    import torch  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "CONTENT_TYPE",
    "EMBEDDING_SIZE",
    "EXTRA",
    "FETCH_COMMAND",
    "FRAME_S",
    "INPUT_REPR",
    "SAMPLE_RATE",
    "OpenL3Embedder",
    "OpenL3NotInstalledError",
    "OpenL3UnavailableError",
    "OpenL3WeightsError",
    "default_weights_path",
    "fetch_weights",
    "main",
    "weights_url",
]

CONTENT_TYPE: Final = "music"
INPUT_REPR: Final = "mel256"
EMBEDDING_SIZE: Final = 512
SAMPLE_RATE: Final = 48_000
FRAME_S: Final = 1.0
FRAME_SAMPLES: Final = 48_000

EXTRA: Final = "openl3"
FETCH_COMMAND: Final = "python -m app.embedding.openl3 --fetch-weights"
_INSTALL_HINT: Final = (
    f"install the '{EXTRA}' extra (pip install 'echoledger[{EXTRA}]'; on a CPU-only host add "
    "--extra-index-url https://download.pytorch.org/whl/cpu so pip does not pull a CUDA torch)"
)


class OpenL3UnavailableError(RuntimeError):
    """The OpenL3 backend cannot run here (engine not installed or weights missing)."""


class OpenL3NotInstalledError(OpenL3UnavailableError, ImportError):
    """torch / torchopenl3 are not importable."""


class OpenL3WeightsError(OpenL3UnavailableError):
    """The weights file is missing, unreadable, or not for this model."""


def _import_engine() -> None:
    """Import torch and torchopenl3, turning a failure into an error naming the extra."""
    try:
        with warnings.catch_warnings():
            # resampy 0.2 (imported by torchopenl3) still uses pkg_resources.
            for category in (UserWarning, DeprecationWarning):
                warnings.filterwarnings("ignore", message=".*pkg_resources", category=category)
            import torch  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
            import torchopenl3.models  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: F401
    except ImportError as exc:
        hint = ""
        if getattr(exc, "name", None) == "pkg_resources":
            hint = " (resampy 0.2 needs pkg_resources: pin setuptools<81)"
        raise OpenL3NotInstalledError(
            "the openl3 embedder needs torch and torchopenl3, which failed to import: "
            f"{exc}{hint}; {_INSTALL_HINT}"
        ) from exc


def weights_url() -> str:
    """The URL torchopenl3 downloads the music/mel256/512 weights from."""
    _import_engine()
    import torchopenl3.core  # type: ignore[import-untyped, import-not-found, unused-ignore]

    url: str = torchopenl3.core.get_model_path(INPUT_REPR, CONTENT_TYPE, EMBEDDING_SIZE)
    return url


def default_weights_path() -> Path:
    """Where torch.hub (and so torchopenl3) caches the weights.

    ``<torch.hub.get_dir()>/checkpoints/<file name of the URL>``; torch.hub.get_dir() is
    ``$TORCH_HOME/hub`` (TORCH_HOME defaults to ``$XDG_CACHE_HOME/torch``, i.e.
    ``~/.cache/torch``) unless torch.hub.set_dir() was called.
    """
    url = weights_url()
    import torch  # type: ignore[import-not-found, unused-ignore]

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _missing_weights_message(path: Path) -> str:
    return (
        f"OpenL3 weights not found at {path} (torch.hub cache: $TORCH_HOME/hub/checkpoints, "
        f"TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')}); they are never downloaded at "
        f"run time. Fetch them at image build time with `{FETCH_COMMAND}` (needs network), "
        "or pass weights_path=..."
    )


def _load_model(path: Path) -> torch.nn.Module:
    """Build torchopenl3's network and load the state dict in `path` (no network access)."""
    import torch  # type: ignore[import-not-found, unused-ignore]
    import torchopenl3.models  # type: ignore[import-untyped, import-not-found, unused-ignore]

    if not path.is_file():
        raise OpenL3WeightsError(_missing_weights_message(path))
    with warnings.catch_warnings():
        # librosa warns that two of the 256 mel bands are empty at n_fft=2048; the mel matrix
        # is overwritten by the one stored with the weights anyway.
        warnings.filterwarnings("ignore", message="Empty filters detected", category=UserWarning)
        model: torch.nn.Module = torchopenl3.models.PytorchOpenl3(
            content_type=CONTENT_TYPE, input_repr=INPUT_REPR, embedding_size=EMBEDDING_SIZE
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise OpenL3WeightsError(
            f"cannot read OpenL3 weights file {path}: {exc}; re-fetch it with `{FETCH_COMMAND}`"
        ) from exc
    if not isinstance(state, dict):
        raise OpenL3WeightsError(
            f"OpenL3 weights file {path} holds a {type(state).__name__}, not a state dict"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise OpenL3WeightsError(
            f"OpenL3 weights file {path} does not fit torchopenl3 "
            f"{CONTENT_TYPE}/{INPUT_REPR}/{EMBEDDING_SIZE}: {exc}"
        ) from exc
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _default_threads() -> int:
    """Threads for torch: OMP_NUM_THREADS if set, else the CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _positive_seconds(name: str, value: float) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class OpenL3Embedder:
    """OpenL3 (music, mel256, 512-d) frame embeddings mean-pooled over each window.

    window_s : window length in seconds (at least one 1 s frame)
    hop_s : default hop between window starts, seconds
    frame_hop_s : hop between the 1 s OpenL3 frames; a window pools the frames that start at
        its start, then every frame_hop_s, while they end inside it
    batch_size : frames per forward pass; peak memory grows ~175 MB per frame in a batch on
        top of ~0.5 GB for torch and the model, and batches above 4 are no faster on CPU
    num_threads : torch intra-op threads (process-wide setting); None means OMP_NUM_THREADS
        if set, else the number of CPUs this process may use
    weights_path : the state dict file; None means torch.hub's cache (see default_weights_path)
    """

    name: str = "openl3"
    can_transpose: bool = False
    dim: int = EMBEDDING_SIZE
    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        *,
        window_s: float = 4.0,
        hop_s: float = 1.0,
        frame_hop_s: float = 0.5,
        batch_size: int = 4,
        num_threads: int | None = None,
        weights_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.window_s = _positive_seconds("window_s", window_s)
        self.hop_s = _positive_seconds("hop_s", hop_s)
        self.frame_hop_s = _positive_seconds("frame_hop_s", frame_hop_s)
        self._window_n = round(self.window_s * SAMPLE_RATE)
        if self._window_n < FRAME_SAMPLES:
            raise ValueError(
                f"window_s must be at least one OpenL3 frame ({FRAME_S} s), got {window_s!r}"
            )
        self._frame_hop_n = round(self.frame_hop_s * SAMPLE_RATE)
        if self._frame_hop_n < 1:
            raise ValueError(
                f"frame_hop_s is below one sample at {SAMPLE_RATE} Hz: {frame_hop_s!r}"
            )
        self._hop_n = self._hop_samples(self.hop_s)
        self.batch_size = _positive_int("batch_size", batch_size)
        if num_threads is not None:
            _positive_int("num_threads", num_threads)
        # Frame offsets (in samples) from a window's start: frames that end inside the window.
        frames_per_window = (self._window_n - FRAME_SAMPLES) // self._frame_hop_n + 1
        self._frame_offsets = np.arange(frames_per_window, dtype=np.int64) * self._frame_hop_n
        self.version = (
            f"torchopenl3-{CONTENT_TYPE}-{INPUT_REPR}-{EMBEDDING_SIZE}"
            f"-mean-fhop{self._frame_hop_n / SAMPLE_RATE:g}s"
        )

        _import_engine()
        import torch  # type: ignore[import-not-found, unused-ignore]

        threads = _default_threads() if num_threads is None else num_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.num_threads = threads
        self.weights_path = (
            Path(weights_path) if weights_path is not None else default_weights_path()
        )
        self._model = _load_model(self.weights_path)

    def transpose(self, vectors: FloatArray, semitones: int) -> FloatArray:
        """Not possible: a learned embedding of transposed audio cannot be derived from the
        vectors (the query's audio would have to be pitch-shifted and embedded again)."""
        raise EmbeddingError("OpenL3 vectors cannot be transposed; search them as they are")

    @property
    def frames_per_window(self) -> int:
        """Number of 1 s frames pooled into each window."""
        return int(self._frame_offsets.shape[0])

    def __repr__(self) -> str:
        return (
            f"OpenL3Embedder(window_s={self.window_s}, hop_s={self.hop_s}, "
            f"frame_hop_s={self.frame_hop_s}, weights_path={str(self.weights_path)!r})"
        )

    @staticmethod
    def _hop_samples(hop_s: float) -> int:
        hop = _positive_seconds("hop_s", hop_s)
        hop_n = round(hop * SAMPLE_RATE)
        if hop_n < 1:
            raise ValueError(f"hop_s is below one sample at {SAMPLE_RATE} Hz: {hop_s!r}")
        return hop_n

    def embed(self, audio: FloatArray, sr: int, *, hop_s: float | None = None) -> Embedding:
        """Embed mono float32 audio at 48 kHz into one vector per full window.

        Windows start at 0, hop, 2*hop, ... and only windows that fit wholly in the audio are
        returned (a trailing partial window is dropped).
        """
        if hop_s is None:
            hop_n = self._hop_n
        else:
            try:
                hop_n = self._hop_samples(hop_s)
            except ValueError as exc:
                raise EmbeddingError(str(exc)) from None
        check_audio(audio, sr, sample_rate=SAMPLE_RATE, window_s=self.window_s)
        n_windows = (audio.shape[0] - self._window_n) // hop_n + 1
        window_starts = np.arange(n_windows, dtype=np.int64) * hop_n
        frame_starts = (window_starts[:, None] + self._frame_offsets[None, :]).reshape(-1)
        # Overlapping windows share frames: embed each distinct frame once.
        unique_starts, inverse = np.unique(frame_starts, return_inverse=True)
        frames = self._embed_frames(audio, unique_starts)
        members = inverse.reshape(n_windows, self.frames_per_window)
        total = np.zeros((n_windows, EMBEDDING_SIZE), dtype=np.float64)
        for k in range(self.frames_per_window):
            total += frames[members[:, k]]
        pooled = (total / self.frames_per_window).astype(np.float32)
        return Embedding(
            vectors=l2_normalise(pooled),
            starts=(window_starts / SAMPLE_RATE).astype(np.float32),
            window_s=self.window_s,
        )

    def embed_frames(self, audio: FloatArray, sr: int, starts_s: Sequence[float]) -> FloatArray:
        """Raw (not normalised) OpenL3 embeddings of the 1 s frames starting at `starts_s`."""
        check_audio(audio, sr, sample_rate=SAMPLE_RATE)
        offsets = np.round(np.asarray(starts_s, dtype=np.float64) * SAMPLE_RATE).astype(np.int64)
        if offsets.ndim != 1:
            raise EmbeddingError(f"starts_s must be a flat sequence, got shape {offsets.shape}")
        bad = (offsets < 0) | (offsets + FRAME_SAMPLES > audio.shape[0])
        if bad.any():
            raise EmbeddingError(
                f"frame start {float(np.asarray(starts_s)[bad][0])!r} s is outside the "
                f"{audio.shape[0] / SAMPLE_RATE:.3f} s of audio"
            )
        return self._embed_frames(audio, offsets)

    def _embed_frames(self, audio: FloatArray, offsets: npt.NDArray[np.int64]) -> FloatArray:
        import torch  # type: ignore[import-not-found, unused-ignore]

        windows = np.lib.stride_tricks.sliding_window_view(audio, FRAME_SAMPLES)
        out = np.empty((offsets.shape[0], EMBEDDING_SIZE), dtype=np.float32)
        with torch.inference_mode():
            for begin in range(0, offsets.shape[0], self.batch_size):
                batch_offsets = offsets[begin : begin + self.batch_size]
                # Fancy indexing copies the frames into a fresh (writable, contiguous) array.
                batch = np.ascontiguousarray(windows[batch_offsets])[:, None, :]
                result = self._model(torch.from_numpy(batch))
                out[begin : begin + batch_offsets.shape[0]] = result.numpy()
        return out


def fetch_weights(*, expected_sha256: str | None = None, timeout_s: float = 120.0) -> Path:
    """Download the weights into torch.hub's cache (for image builds) and check they load.

    Does nothing but the check when the file is already there. Raises OpenL3WeightsError with
    the URL and destination when the download fails.
    """
    url = weights_url()
    path = default_weights_path()
    import torch  # type: ignore[import-not-found, unused-ignore]

    if path.is_file():
        try:
            _load_model(path)
        except OpenL3WeightsError:
            path.unlink()  # unreadable or truncated: fetch it again
    downloaded = not path.is_file()
    if downloaded:
        path.parent.mkdir(parents=True, exist_ok=True)
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout_s)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=None, progress=False)
        except Exception as exc:
            raise OpenL3WeightsError(
                f"could not download the OpenL3 weights from {url} to {path}: {exc}. "
                "This step needs network access to github.com; run it at image build time, "
                "or copy the file to that path (TORCH_HOME decides the directory)"
            ) from exc
        finally:
            socket.setdefaulttimeout(previous_timeout)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        path.unlink()
        raise OpenL3WeightsError(
            f"OpenL3 weights from {url} have sha256 {digest}, expected {expected_sha256}; "
            f"removed {path}"
        )
    if downloaded:
        _load_model(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.embedding.openl3",
        description="Manage the OpenL3 (torchopenl3 music/mel256/512) weights.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--fetch-weights",
        action="store_true",
        help="download the weights into torch.hub's cache ($TORCH_HOME/hub/checkpoints)",
    )
    action.add_argument(
        "--where", action="store_true", help="print where the weights are looked for"
    )
    parser.add_argument("--sha256", help="with --fetch-weights: expected sha256 of the file")
    args = parser.parse_args(argv)
    try:
        if args.where:
            print(default_weights_path())
            return 0
        path = fetch_weights(expected_sha256=args.sha256)
    except OpenL3UnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"OpenL3 weights ready at {path} ({path.stat().st_size} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
