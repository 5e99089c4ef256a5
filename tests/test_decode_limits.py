"""Decoding within bounds: hostile headers refused before decoding, streaming in bounded
memory, the streaming resampler equal to resample_poly, WAV headers that overstate their data."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from scipy.signal import resample_poly
from sqlalchemy.engine import Engine

from app.audio.decode import (
    BLOCK_FRAMES,
    MAX_SAMPLE_RATE,
    AudioError,
    StreamResampler,
    load,
    probe,
)
from app.config import Settings
from tests.audio_synth import melody_track, write_audio
from tests.factories import Tenants, audio_file, run_jobs, scalar, submit_check, upload

SR = 11025
HOSTILE_RATE = 655_350  # the highest rate FLAC can declare


def _constant_flac(path: Path, *, sr: int, channels: int, seconds: float, value: float) -> Path:
    """A constant written block by block: a few hundred kB of FLAC, whatever its length."""
    block = np.full((10 * sr, channels), value, dtype=np.float32)
    with sf.SoundFile(
        str(path), "w", samplerate=sr, channels=channels, format="FLAC", subtype="PCM_16"
    ) as f:
        for start in range(0, round(seconds * sr), len(block)):
            f.write(block[: round(seconds * sr) - start])
    return path


@pytest.fixture(scope="module")
def hostile_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe's file: 180 s of a constant at 655,350 Hz mono, about 430 kB."""
    path = tmp_path_factory.mktemp("hostile") / "hostile.flac"
    return _constant_flac(path, sr=HOSTILE_RATE, channels=1, seconds=180.0, value=0.5)


def _load(path: Path, **limits: float) -> np.ndarray:
    bounds = {"min_seconds": 2.0, "max_seconds": 1200.0} | limits
    return load(path, sample_rate=SR, **bounds)


def _traced_peak(fn: Any) -> int:
    """Peak bytes allocated through Python and numpy while `fn` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- bounds checked from the header --------------------------------------------------------


def test_hostile_flac_is_refused_from_its_header_before_decoding(hostile_flac: Path) -> None:
    assert hostile_flac.stat().st_size < 1_000_000
    assert sf.info(str(hostile_flac)).samplerate == HOSTILE_RATE
    with pytest.raises(AudioError) as probed:
        probe(hostile_flac, min_seconds=2.0, max_seconds=1200.0)
    assert probed.value.reason == "sample_rate"
    assert "655350 Hz" in probed.value.message
    assert str(MAX_SAMPLE_RATE) in probed.value.message

    def refused() -> None:
        with pytest.raises(AudioError, match="sample rate") as loaded:
            _load(hostile_flac)
        assert loaded.value.reason == "sample_rate"

    # Decoded, its 118 M samples would take 470 MB as float32; refused, nothing is allocated.
    assert _traced_peak(refused) < 5_000_000


@pytest.mark.parametrize(
    ("rate", "accepted"),
    [(7_999, False), (8_000, True), (44_100, True), (192_000, True), (192_001, False)],
)
def test_native_rates_from_8_to_192_khz_are_accepted(
    tmp_path: Path, rate: int, accepted: bool
) -> None:
    path = tmp_path / f"tone-{rate}.wav"
    sf.write(str(path), np.full(3 * rate, 0.1, dtype=np.float32), rate, subtype="PCM_16")
    if accepted:
        assert probe(path, min_seconds=2.0, max_seconds=60.0).sample_rate == rate
    else:
        with pytest.raises(AudioError) as refused:
            probe(path, min_seconds=2.0, max_seconds=60.0)
        assert refused.value.reason == "sample_rate"
        assert f"{rate} Hz" in refused.value.message


def test_more_than_eight_channels_are_refused(tmp_path: Path) -> None:
    for channels in (8, 9):
        sf.write(
            str(tmp_path / f"{channels}.wav"),
            np.full((3 * 8000, channels), 0.1, dtype=np.float32),
            8000,
            subtype="PCM_16",
        )
    assert probe(tmp_path / "8.wav", min_seconds=2.0, max_seconds=60.0).channels == 8
    with pytest.raises(AudioError) as refused:
        probe(tmp_path / "9.wav", min_seconds=2.0, max_seconds=60.0)
    assert refused.value.reason == "channels"
    assert "9 channels" in refused.value.message


def test_frames_times_channels_are_bounded_by_the_longest_stereo_at_the_highest_rate(
    tmp_path: Path,
) -> None:
    # 3 s of 8 channels at 192 kHz decode to as many samples as 12 s of stereo.
    path = _constant_flac(
        tmp_path / "surround.flac", sr=MAX_SAMPLE_RATE, channels=8, seconds=3.0, value=0.1
    )
    assert probe(path, min_seconds=2.0, max_seconds=12.0).frames == 3 * MAX_SAMPLE_RATE
    with pytest.raises(AudioError) as refused:
        probe(path, min_seconds=2.0, max_seconds=11.9)
    assert refused.value.reason == "decoded_size"
    assert "8 channels" in refused.value.message
    assert "11.9 s of stereo" in refused.value.message


# --- streaming decode -----------------------------------------------------------------------


@pytest.mark.slow
def test_ten_minutes_of_192_khz_stereo_decode_in_bounded_memory(tmp_path: Path) -> None:
    path = _constant_flac(
        tmp_path / "long.flac", sr=MAX_SAMPLE_RATE, channels=2, seconds=600.0, value=0.25
    )
    result: list[np.ndarray] = []
    peak = _traced_peak(lambda: result.append(_load(path)))
    audio = result[0]
    assert audio.shape == (600 * SR,)
    assert np.allclose(audio[SR:-SR], 0.25, atol=1e-3)
    # Decoded whole it is 230 M frames (920 MB as mono float32); streamed, the output (26 MB)
    # and a block. Growth at least the output shows that numpy's allocations were traced.
    assert audio.nbytes <= peak < 150_000_000


@pytest.mark.parametrize(
    ("sr_from", "sr_to"),
    [(44_100, 11_025), (48_000, 11_025), (22_050, 11_025), (8_000, 11_025), (96_000, 22_050)],
)
def test_streaming_resampler_matches_resample_poly_on_the_whole_signal(
    sr_from: int, sr_to: int
) -> None:
    rng = np.random.default_rng(sr_from)
    signal = (rng.standard_normal(sr_from * 3 + 17) * 0.3).astype(np.float32)
    g = np.gcd(sr_from, sr_to)
    expected = resample_poly(signal, sr_to // g, sr_from // g)

    # Blocks of every size: single samples, shorter than the filter, and large ones.
    sizes = [1, 1, 2, 7, 100, 1000, 4096, 65_536, 1, 33_333]
    resampler = StreamResampler(sr_from, sr_to)
    parts, start, i = [], 0, 0
    while start < len(signal):
        size = sizes[i % len(sizes)] if i < 40 else int(rng.integers(1, 50_000))
        parts.append(resampler.process(signal[start : start + size]))
        start, i = start + size, i + 1
    parts.append(resampler.flush())
    streamed = np.concatenate(parts)

    assert streamed.dtype == np.float32
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-6)


def test_load_of_a_multi_block_stereo_file_equals_mixing_and_resampling_it_whole(
    tmp_path: Path,
) -> None:
    sr = 44_100
    left = melody_track(3, seconds=15.0, sr=sr)
    stereo = np.stack([left, np.roll(left, 37) * 0.8], axis=1)
    path = tmp_path / "stereo.wav"
    write_audio(path, stereo, sr, "WAV")
    assert sf.info(str(path)).frames > 2 * BLOCK_FRAMES

    decoded = sf.read(str(path), dtype="float32")[0].mean(axis=1, dtype=np.float32)
    expected = resample_poly(decoded, 1, 4)
    np.testing.assert_allclose(_load(path), expected, rtol=0, atol=1e-6)


def test_silence_is_judged_over_the_whole_stream_not_per_block(tmp_path: Path) -> None:
    sr = 22_050
    silent = np.zeros(sr * 20, dtype=np.float32)
    write_audio(tmp_path / "silent.flac", silent, sr, "FLAC")
    with pytest.raises(AudioError) as refused:
        _load(tmp_path / "silent.flac")
    assert refused.value.reason == "silent"

    # Sound only in the last of several blocks: the file is not silent.
    late = silent.copy()
    late[-sr:] = melody_track(1, seconds=1.0, sr=sr)
    write_audio(tmp_path / "late.flac", late, sr, "FLAC")
    assert sf.info(str(tmp_path / "late.flac")).frames > 1.5 * BLOCK_FRAMES
    assert len(_load(tmp_path / "late.flac")) == 20 * SR


def test_a_non_finite_sample_in_a_later_block_is_corrupt(tmp_path: Path) -> None:
    sr = 22_050
    audio = melody_track(2, seconds=20.0, sr=sr)
    audio[BLOCK_FRAMES + 10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), audio, sr, subtype="FLOAT")
    with pytest.raises(AudioError) as refused:
        _load(path)
    assert refused.value.reason == "corrupt"
    assert "non-finite" in refused.value.message


# --- WAV headers that overstate their data --------------------------------------------------


def _wav(tmp_path: Path, *, format: str = "WAV", subtype: str = "PCM_16") -> Path:
    path = tmp_path / f"music-{format}-{subtype}.wav"
    audio = melody_track(5, seconds=6.0, sr=22_050)
    sf.write(str(path), np.stack([audio, audio], axis=1), 22_050, format=format, subtype=subtype)
    return path


def _data_size_offset(data: bytes | bytearray) -> int:
    return data.index(b"data") + 4


def _cut(path: Path, n_bytes: int) -> Path:
    path.write_bytes(path.read_bytes()[:-n_bytes])
    return path


def test_a_wav_cut_short_is_truncated_from_its_header(tmp_path: Path) -> None:
    path = _wav(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioError) as refused:
        probe(path, min_seconds=2.0, max_seconds=60.0)
    assert refused.value.reason == "truncated"
    assert "declares 529200 bytes (6.0 s)" in refused.value.message
    assert "(3.0 s)" in refused.value.message
    with pytest.raises(AudioError, match="truncated"):
        _load(path)


def test_a_wav_declaring_more_data_than_it_holds_is_truncated(tmp_path: Path) -> None:
    path = _wav(tmp_path)
    data = bytearray(path.read_bytes())
    at = _data_size_offset(data)
    (size,) = struct.unpack_from("<I", data, at)
    struct.pack_into("<I", data, at, size * 10)
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError) as refused:
        probe(path, min_seconds=2.0, max_seconds=60.0)
    assert refused.value.reason == "truncated"


@pytest.mark.parametrize(("format", "subtype"), [("WAVEX", "FLOAT"), ("RF64", "PCM_24")])
def test_other_wav_layouts_are_checked_too(tmp_path: Path, format: str, subtype: str) -> None:
    path = _wav(tmp_path, format=format, subtype=subtype)
    assert probe(path, min_seconds=2.0, max_seconds=60.0).format == format
    with pytest.raises(AudioError) as refused:
        probe(_cut(path, path.stat().st_size // 3), min_seconds=2.0, max_seconds=60.0)
    assert refused.value.reason == "truncated"


def test_a_missing_partial_frame_is_not_truncation_but_a_missing_frame_is(tmp_path: Path) -> None:
    path = _wav(tmp_path)  # 16-bit stereo: 4 bytes a frame
    assert probe(_cut(path, 1), min_seconds=2.0, max_seconds=60.0).frames == 6 * 22_050 - 1
    with pytest.raises(AudioError, match="truncated"):
        probe(_cut(path, 3), min_seconds=2.0, max_seconds=60.0)


@pytest.mark.parametrize("placeholder", [0xFFFF_FFFF, 0x7FFF_F000])
def test_a_wav_of_unknown_length_is_read_to_its_end(tmp_path: Path, placeholder: int) -> None:
    """Writers that cannot seek back (output to a pipe) leave a placeholder for the size."""
    path = _wav(tmp_path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, _data_size_offset(data), placeholder)
    path.write_bytes(bytes(data))
    assert len(_load(path)) == 6 * SR


def test_chunks_after_the_data_are_not_mistaken_for_audio(tmp_path: Path) -> None:
    path = _wav(tmp_path)
    info = b"INFOISFT" + struct.pack("<I", 8) + b"encoder\0"
    path.write_bytes(path.read_bytes() + b"LIST" + struct.pack("<I", len(info)) + info)
    assert probe(path, min_seconds=2.0, max_seconds=60.0).frames == 6 * 22_050


# --- through the API --------------------------------------------------------------------------


def test_hostile_flac_upload_and_check_are_422_sample_rate(
    client: TestClient, tenants: Tenants, engine: Engine, hostile_flac: Path
) -> None:
    label = tenants.label()
    catalogue = tenants.catalogue(label)
    uploaded = upload(client, label, catalogue["id"], hostile_flac)
    assert uploaded.status_code == 422, uploaded.text
    error = uploaded.json()["error"]
    assert error["details"] == {"field": "file", "reason": "sample_rate"}
    assert "655350 Hz" in error["message"]
    assert scalar(engine, "SELECT count(*) FROM tracks") == 0

    company = tenants.ai_company()
    checked = submit_check(client, company, hostile_flac, key="hostile")
    assert checked.status_code == 422, checked.text
    assert checked.json()["error"]["details"]["reason"] == "sample_rate"
    assert scalar(engine, "SELECT count(*) FROM checks") == 0
    assert scalar(engine, "SELECT count(*) FROM idempotency_keys") == 0


def test_truncated_wav_upload_and_check_are_422_truncated(
    client: TestClient, tenants: Tenants, engine: Engine, tmp_path: Path
) -> None:
    path = _cut(audio_file(tmp_path, seconds=12.0, fmt="WAV"), 200_000)
    label = tenants.label()
    uploaded = upload(client, label, tenants.catalogue(label)["id"], path)
    assert uploaded.status_code == 422, uploaded.text
    assert uploaded.json()["error"]["details"]["reason"] == "truncated"
    assert "declares" in uploaded.json()["error"]["message"]

    checked = submit_check(client, tenants.ai_company(), path)
    assert checked.status_code == 422, checked.text
    assert checked.json()["error"]["details"]["reason"] == "truncated"
    assert scalar(engine, "SELECT count(*) FROM checks") == 0


def test_a_stored_file_outside_the_bounds_fails_its_track_in_the_worker(
    client: TestClient,
    tenants: Tenants,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    hostile_flac: Path,
) -> None:
    """A file stored before the bounds existed is refused by ingestion with the same words."""
    label = tenants.label()
    track = upload(client, label, tenants.catalogue(label)["id"], audio_file(tmp_path)).json()
    sha = track["audio_sha256"]
    blob = settings.blob_dir / sha[:2] / sha[2:4] / sha
    blob.write_bytes(hostile_flac.read_bytes())

    run_jobs(settings, engine)

    failed = client.get(f"/v1/tracks/{track['id']}", headers=label.headers).json()
    assert failed["status"] == "failed"
    assert "sample rate 655350 Hz" in failed["error"]
    assert scalar(engine, "SELECT count(*) FROM segments") == 0
