"""OpenL3 backend: real model construction, weight loading, framing and pooling.

The real weights cannot be fetched in tests, so a seeded random state dict for the same
architecture is written where torchopenl3's own loader (torch.hub's cache under TORCH_HOME)
looks for it. The tests that need torch/torchopenl3 skip when the `openl3` extra is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from app.embedding.base import Embedder, Embedding, EmbeddingError
from app.embedding.openl3 import (
    FETCH_COMMAND,
    OpenL3Embedder,
    OpenL3NotInstalledError,
    OpenL3WeightsError,
    default_weights_path,
    main,
)

SR = 48_000
REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_NAME = "torchopenl3_mel256_music_512.pth.tar"
SKIP_REASON = "the openl3 extra (torch, torchopenl3) is not installed"
# librosa warns that 2 of the 256 mel bands are empty whenever torchopenl3 builds the network.
EMPTY_MEL_BANDS = "Empty filters detected"


def synth_music(seconds: float, seed: int = 0) -> np.ndarray:
    """A few seconds of changing harmonic tones, a noisy percussive pulse and a tiny hiss."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    pitch = 110.0 * 2 ** (np.floor(t * 2) % 12 / 12)  # a new semitone every 0.5 s
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    tone: np.ndarray = np.sum([np.sin(k * phase) / k for k in range(1, 6)], axis=0)
    pulse = rng.standard_normal(t.size) * np.exp(-((t * 4) % 1.0) * 30)
    audio: np.ndarray = 0.3 * tone + 0.2 * pulse + 0.01 * rng.standard_normal(t.size)
    peak = float(np.abs(audio).max())
    return (audio / peak * 0.8).astype(np.float32)


def _fail_download(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"a download was attempted: {args!r}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def openl3_engine() -> tuple[ModuleType, ModuleType]:
    torch = pytest.importorskip("torch", reason=SKIP_REASON)
    torchopenl3 = pytest.importorskip("torchopenl3", reason=SKIP_REASON)
    return torch, torchopenl3


@pytest.fixture(scope="module")
def random_state(openl3_engine: tuple[ModuleType, ModuleType]) -> dict[str, Any]:
    """Seeded random weights for torchopenl3's music/mel256/512 network."""
    torch, torchopenl3 = openl3_engine
    torch.manual_seed(1234)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=EMPTY_MEL_BANDS)
        model = torchopenl3.models.PytorchOpenl3(
            content_type="music", input_repr="mel256", embedding_size=512
        )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    state: dict[str, Any] = model.state_dict()
    return state


@pytest.fixture(scope="module")
def torch_home(
    openl3_engine: tuple[ModuleType, ModuleType],
    random_state: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """A TORCH_HOME whose hub cache holds the weights file torchopenl3's loader expects."""
    torch, torchopenl3 = openl3_engine
    home = tmp_path_factory.mktemp("torch_home")
    url = torchopenl3.core.get_model_path("mel256", "music", 512)
    assert url.rsplit("/", 1)[-1] == WEIGHTS_NAME
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(random_state, checkpoints / WEIGHTS_NAME)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        mp.setattr(torch.hub, "download_url_to_file", _fail_download)
        mp.setattr(urllib.request, "urlopen", _fail_download)
        yield home


@pytest.fixture(scope="module")
def embedder(torch_home: Path) -> OpenL3Embedder:
    return OpenL3Embedder(window_s=4.0, hop_s=1.0, frame_hop_s=0.5, batch_size=8)


@pytest.fixture(scope="module")
def reference_model(openl3_engine: tuple[ModuleType, ModuleType], torch_home: Path) -> Any:
    """The network as torchopenl3 itself loads it (from torch.hub's cache: no download)."""
    _, torchopenl3 = openl3_engine
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=EMPTY_MEL_BANDS)
        return torchopenl3.core.load_audio_embedding_model("mel256", "music", 512)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return synth_music(6.25)


@pytest.fixture(scope="module")
def result(embedder: OpenL3Embedder, audio: np.ndarray) -> Embedding:
    return embedder.embed(audio, SR)


@pytest.fixture(scope="module")
def reference_frames(
    openl3_engine: tuple[ModuleType, ModuleType], reference_model: Any, audio: np.ndarray
) -> np.ndarray:
    """torchopenl3's own framing (uncentred, 0.5 s hop): frame i starts at 0.5 * i seconds."""
    _, torchopenl3 = openl3_engine
    emb, _ = torchopenl3.get_audio_embedding(
        audio,
        SR,
        model=reference_model,
        center=False,
        hop_size=0.5,
        embedding_size=512,
        batch_size=16,
        verbose=False,
    )
    frames: np.ndarray = emb[0].numpy()
    return frames


def _normalise(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = v / np.linalg.norm(v)
    return out


# --------------------------------------------------------------------------- loading


def test_weights_are_read_from_torch_hub_cache_under_torch_home(
    torch_home: Path, embedder: OpenL3Embedder
) -> None:
    expected = torch_home / "hub" / "checkpoints" / WEIGHTS_NAME
    assert default_weights_path() == expected
    assert embedder.weights_path == expected


def test_protocol_attributes_and_version(embedder: OpenL3Embedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.name == "openl3"
    assert embedder.dim == 512
    assert embedder.sample_rate == SR
    assert embedder.window_s == 4.0
    assert embedder.hop_s == 1.0
    assert embedder.frames_per_window == 7  # starts 0, 0.5, ..., 3.0 s; each ends by 4.0 s
    assert embedder.version == "torchopenl3-music-mel256-512-mean-fhop0.5s"


def test_version_is_stable_and_tracks_frame_hop(torch_home: Path) -> None:
    a = OpenL3Embedder(window_s=4.0, hop_s=1.0, frame_hop_s=0.5)
    b = OpenL3Embedder(window_s=4.0, hop_s=2.0, frame_hop_s=0.5)
    c = OpenL3Embedder(window_s=4.0, hop_s=1.0, frame_hop_s=0.25)
    assert a.version == b.version
    assert c.version == "torchopenl3-music-mel256-512-mean-fhop0.25s"
    assert c.frames_per_window == 13


def test_explicit_weights_path(torch_home: Path, tmp_path: Path) -> None:
    copy = tmp_path / "weights.pth"
    shutil.copyfile(torch_home / "hub" / "checkpoints" / WEIGHTS_NAME, copy)
    assert OpenL3Embedder(weights_path=copy).weights_path == copy


def test_missing_weights_raise_without_downloading(
    openl3_engine: tuple[ModuleType, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch, _ = openl3_engine
    home = tmp_path / "empty_torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fail_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _fail_download)
    monkeypatch.setattr(urllib.request, "urlopen", _fail_download)
    with pytest.raises(OpenL3WeightsError) as info:
        OpenL3Embedder()
    message = str(info.value)
    assert str(home / "hub" / "checkpoints" / WEIGHTS_NAME) in message
    assert FETCH_COMMAND in message
    assert not home.exists()  # nothing created, nothing fetched


def test_missing_explicit_weights_path(torch_home: Path, tmp_path: Path) -> None:
    with pytest.raises(OpenL3WeightsError, match=r"nope\.pth"):
        OpenL3Embedder(weights_path=tmp_path / "nope.pth")


def test_unreadable_weights_file(torch_home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(OpenL3WeightsError, match=r"cannot read OpenL3 weights file .*bad\.pth"):
        OpenL3Embedder(weights_path=bad)


def test_weights_for_another_network(
    openl3_engine: tuple[ModuleType, ModuleType], random_state: dict[str, Any], tmp_path: Path
) -> None:
    torch, _ = openl3_engine
    other = tmp_path / "other.pth"
    state = dict(random_state)
    del state["audio_embedding_layer.weight"]
    torch.save(state, other)
    with pytest.raises(OpenL3WeightsError, match="does not fit torchopenl3 music/mel256/512"):
        OpenL3Embedder(weights_path=other)


def test_engine_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs with or without the extra: hide the openl3_engine from the import system.
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torchopenl3", None)
    with pytest.raises(OpenL3NotInstalledError, match=r"'openl3' extra"):
        OpenL3Embedder()


def test_module_imports_without_the_engine() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['torchopenl3'] = None\n"
        "import app.embedding.openl3 as m\n"
        "assert m.OpenL3Embedder.name == 'openl3'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_s": 0.5}, "at least one OpenL3 frame.*0.5"),
        ({"hop_s": 0.0}, "hop_s must be a positive number of seconds, got 0.0"),
        ({"frame_hop_s": -1.0}, "frame_hop_s must be a positive.*-1.0"),
        ({"frame_hop_s": float("nan")}, "frame_hop_s"),
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"num_threads": 0}, "num_threads must be a positive int, got 0"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OpenL3Embedder(**kwargs)


# --------------------------------------------------------------------------- framing, pooling


def test_shapes_starts_and_norms(result: Embedding) -> None:
    # 6.25 s, 4 s windows every 1 s: windows at 0, 1, 2 s (the one at 3 s would end at 7 s).
    assert result.vectors.shape == (3, 512)
    assert result.vectors.dtype == np.float32
    assert result.starts.dtype == np.float32
    np.testing.assert_array_equal(result.starts, np.arange(3, dtype=np.float32))
    assert result.window_s == 4.0
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(result.vectors).all()


def test_windows_pool_the_frames_torchopenl3_computes(
    result: Embedding, reference_frames: np.ndarray
) -> None:
    # Window w starts at w s and pools the 1 s frames starting at w, w + 0.5, ..., w + 3 s,
    # i.e. torchopenl3's uncentred frames 2w .. 2w + 6 at a 0.5 s hop.
    assert reference_frames.shape[1] == 512
    for w in range(result.vectors.shape[0]):
        expected = _normalise(reference_frames[2 * w : 2 * w + 7].mean(axis=0))
        np.testing.assert_allclose(result.vectors[w], expected, rtol=1e-4, atol=1e-5)
    # The test network is not degenerate: different windows give different vectors.
    assert float(result.vectors[0] @ result.vectors[-1]) < 0.9999


def test_frame_embeddings_match_torchopenl3(
    embedder: OpenL3Embedder,
    audio: np.ndarray,
    reference_frames: np.ndarray,
    reference_model: Any,
    openl3_engine: tuple[ModuleType, ModuleType],
) -> None:
    torch, _ = openl3_engine
    frames = embedder.embed_frames(audio, SR, [0.0, 0.5, 3.0, 3.25])
    assert frames.shape == (4, 512)
    assert frames.dtype == np.float32
    np.testing.assert_allclose(frames[:3], reference_frames[[0, 1, 6]], rtol=1e-4, atol=1e-5)
    offset = round(3.25 * SR)
    with torch.no_grad():
        direct = reference_model(torch.from_numpy(audio[None, None, offset : offset + SR].copy()))
    np.testing.assert_allclose(frames[3], direct[0].numpy(), rtol=1e-4, atol=1e-5)


def test_deterministic(embedder: OpenL3Embedder, audio: np.ndarray) -> None:
    first = embedder.embed_frames(audio, SR, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(embedder.embed_frames(audio, SR, [0.0, 0.5, 1.0]), first)


def test_exactly_one_window_and_batch_size_independent(
    torch_home: Path, audio: np.ndarray, result: Embedding
) -> None:
    small_batches = OpenL3Embedder(window_s=4.0, hop_s=1.0, frame_hop_s=0.5, batch_size=3)
    out = small_batches.embed(audio[: 4 * SR], SR)
    assert out.vectors.shape == (1, 512)
    np.testing.assert_array_equal(out.starts, np.zeros(1, dtype=np.float32))
    np.testing.assert_allclose(out.vectors[0], result.vectors[0], atol=1e-5)


def test_hop_override(embedder: OpenL3Embedder, audio: np.ndarray, result: Embedding) -> None:
    out = embedder.embed(audio, SR, hop_s=2.0)
    np.testing.assert_array_equal(out.starts, np.array([0.0, 2.0], dtype=np.float32))
    assert out.vectors.shape == (2, 512)
    # Same windows as the 1 s hop at 0 and 2 s.
    np.testing.assert_allclose(out.vectors, result.vectors[[0, 2]], atol=1e-5)


def test_window_and_frame_hop_are_parameters(
    torch_home: Path, audio: np.ndarray, reference_frames: np.ndarray
) -> None:
    # A 3 s window every 1.5 s pooling frames every 1 s: frames at +0, +1, +2 s.
    emb = OpenL3Embedder(window_s=3.0, hop_s=1.5, frame_hop_s=1.0)
    assert emb.frames_per_window == 3
    out = emb.embed(audio[: 6 * SR], SR)
    np.testing.assert_array_equal(out.starts, np.array([0.0, 1.5, 3.0], dtype=np.float32))
    assert out.window_s == 3.0
    # The window at 1.5 s pools the frames at 1.5, 2.5 and 3.5 s (reference rows 3, 5, 7).
    expected = _normalise(reference_frames[[3, 5, 7]].mean(axis=0))
    np.testing.assert_allclose(out.vectors[1], expected, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "sr", "match"),
    [
        (lambda a: a, 44_100, "must be 48000 Hz.*sr=44100"),
        (lambda a: np.stack([a, a]), SR, r"mono.*shape=\(2, 300000\)"),
        (lambda a: np.stack([a, a], axis=1), SR, r"mono.*shape=\(300000, 2\)"),
        (lambda a: a.astype(np.float64), SR, "float32, got dtype=float64"),
        (lambda a: a.astype(np.int16), SR, "float32, got dtype=int16"),
        (lambda a: a[: int(3.5 * SR)], SR, r"3\.500 s \(168000 samples\), shorter than one 4 s"),
        (lambda a: a[: 4 * SR - 1], SR, r"191999 samples\), shorter than one 4 s window"),
        (lambda a: a[:0], SR, r"0\.000 s \(0 samples\)"),
        (lambda a: np.where(np.arange(a.size) == 7, np.nan, a).astype(np.float32), SR, "NaN"),
        (lambda a: list(a[:10]), SR, "numpy array, got list"),
    ],
)
def test_bad_audio(
    embedder: OpenL3Embedder, audio: np.ndarray, make: Any, sr: int, match: str
) -> None:
    with pytest.raises(EmbeddingError, match=match):
        embedder.embed(make(audio), sr)


@pytest.mark.parametrize("hop_s", [0.0, -1.0, float("inf")])
def test_bad_hop(embedder: OpenL3Embedder, audio: np.ndarray, hop_s: float) -> None:
    with pytest.raises(EmbeddingError, match="hop_s must be a positive number of seconds"):
        embedder.embed(audio, SR, hop_s=hop_s)


def test_frame_outside_audio(embedder: OpenL3Embedder, audio: np.ndarray) -> None:
    with pytest.raises(EmbeddingError, match=r"frame start 5\.5 s is outside"):
        embedder.embed_frames(audio, SR, [0.0, 5.5])


# --------------------------------------------------------------------------- fetching


def test_fetch_fails_clearly_without_network(
    openl3_engine: tuple[ModuleType, ModuleType],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    torch, _ = openl3_engine
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["--fetch-weights"]) == 1
    err = capsys.readouterr().err
    assert "could not download the OpenL3 weights from https://" in err
    assert str(tmp_path / "hub" / "checkpoints" / WEIGHTS_NAME) in err
    assert "image build time" in err
    assert not (tmp_path / "hub" / "checkpoints" / WEIGHTS_NAME).exists()


def test_fetch_with_weights_present_checks_them(
    openl3_engine: tuple[ModuleType, ModuleType],
    torch_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "hub" / "checkpoints" / WEIGHTS_NAME
    target.parent.mkdir(parents=True)
    shutil.copyfile(torch_home / "hub" / "checkpoints" / WEIGHTS_NAME, target)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert main(["--fetch-weights"]) == 0
    assert f"OpenL3 weights ready at {target}" in capsys.readouterr().out
    assert main(["--fetch-weights", "--sha256", "0" * 64]) == 1
    assert "expected 0000" in capsys.readouterr().err
    assert not target.exists()


def test_where_prints_the_cache_path(torch_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--where"]) == 0
    assert capsys.readouterr().out.strip() == str(torch_home / "hub" / "checkpoints" / WEIGHTS_NAME)
