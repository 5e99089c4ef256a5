"""Ingestion speed of the embedders, decoding included.

    python -m bench.ingest                 # 10 minutes of 44.1 kHz stereo music per format
    python -m bench.ingest --minutes 60 --openl3-seconds 0   # the bar: an hour, sustained
    python -m bench.ingest --openl3-seconds 0   # skip OpenL3

Synthesised music is written as WAV, FLAC, OGG Vorbis and MP3, then each file goes through
what an ingestion job does: `app.audio.decode.load` (decode, mix to mono, resample to the
embedder's rate, validate) and `SpectralEmbedder.embed` at the catalogue hop. Speeds are
audio seconds per CPU second on one core ("x real time"); the bar is 300x (the landmark
fingerprinter audfprint indexes at 180-260x on the same machine). BLAS/OpenMP pools
are pinned to one thread before numpy loads, so the numbers are per core.

When the `openl3` extra is installed, OpenL3 (torchopenl3, 0.5 s frame hop, the service's
defaults) then embeds a shorter piece with 1 and 2 torch threads, reported as wall-clock
x real time next to the spectral numbers (it has no bar: it belongs in workers). Without the
real weights in torch.hub's cache it uses seeded random weights for the same network: the
speed depends on the architecture only, and the output says which weights ran.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from app.audio.decode import load  # noqa: E402
from app.embedding.spectral import SpectralEmbedder  # noqa: E402
from tests.audio_synth import AudioFormat, melody_track, write_audio  # noqa: E402

BAR = 300.0
# File extension -> format name for write_audio.
FORMATS: dict[str, AudioFormat] = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}


def make_music(seconds: float, sr: int) -> np.ndarray:
    """Stereo music: a minute of synthesised score, repeated, with slightly different channels."""
    unit = melody_track(7, seconds=min(seconds, 60.0), sr=sr, timbre="piano",
                        accompaniment="strings")  # fmt: skip
    reps = int(np.ceil(seconds / (unit.size / sr)))
    mono = np.tile(unit, reps)[: round(seconds * sr)]
    right = np.roll(mono, 37) * 0.9
    return np.stack([mono, right], axis=1).astype(np.float32)


def measure(
    path: Path, embedder: SpectralEmbedder, seconds: float, repeats: int
) -> dict[str, float]:
    """Best-of-`repeats` CPU and wall-clock timings of decode+resample and of embedding.

    The process runs one thread, so its CPU time is the cost on one core; it is the number
    judged against the bar because wall-clock time also counts whatever else the machine runs.
    """
    cpu = {"decode": float("inf"), "embed": float("inf")}
    wall = {"decode": float("inf"), "embed": float("inf")}
    windows = 0
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        audio = load(path, sample_rate=embedder.sample_rate, min_seconds=0.0,
                     max_seconds=seconds + 60)  # fmt: skip
        c1, w1 = time.process_time(), time.perf_counter()
        emb = embedder.embed(audio, embedder.sample_rate)
        c2, w2 = time.process_time(), time.perf_counter()
        cpu["decode"] = min(cpu["decode"], c1 - c0)
        cpu["embed"] = min(cpu["embed"], c2 - c1)
        wall["decode"] = min(wall["decode"], w1 - w0)
        wall["embed"] = min(wall["embed"], w2 - w1)
        windows = emb.vectors.shape[0]
    out: dict[str, float] = {"audio_s": seconds, "windows": windows, "bytes": path.stat().st_size}
    for clock, t in (("cpu", cpu), ("wall", wall)):
        total = t["decode"] + t["embed"]
        out[f"{clock}_decode_s"] = round(t["decode"], 4)
        out[f"{clock}_embed_s"] = round(t["embed"], 4)
        out[f"{clock}_decode_x"] = round(seconds / t["decode"], 1)
        out[f"{clock}_embed_x"] = round(seconds / t["embed"], 1)
        out[f"{clock}_total_x"] = round(seconds / total, 1)
    out["total_x"] = out["cpu_total_x"]
    return out


def measure_openl3(seconds: float, threads: Sequence[int]) -> dict[str, Any] | None:
    """Wall-clock x real time of OpenL3 on `seconds` of music per torch thread count."""
    try:
        import torch
        import torchopenl3  # type: ignore[import-untyped]
    except ImportError:
        return None
    from app.embedding.openl3 import SAMPLE_RATE, OpenL3Embedder, default_weights_path

    music = make_music(seconds, SAMPLE_RATE).mean(axis=1).astype(np.float32)
    out: dict[str, Any] = {"audio_s": seconds, "weights": "released"}
    with tempfile.TemporaryDirectory(prefix="echoledger-openl3-") as tmp:
        weights = default_weights_path()
        if not weights.exists():
            out["weights"] = "random"  # same architecture: the speed does not depend on values
            torch.manual_seed(0)
            model = torchopenl3.models.PytorchOpenl3(
                content_type="music", input_repr="mel256", embedding_size=512
            )
            weights = Path(tmp) / "weights.pth.tar"
            torch.save(model.state_dict(), weights)
        for n in threads:
            embedder = OpenL3Embedder(num_threads=n, weights_path=weights)
            embedder.embed(music[: SAMPLE_RATE * 5], SAMPLE_RATE)  # warm up
            c0, w0 = time.process_time(), time.perf_counter()
            emb = embedder.embed(music, SAMPLE_RATE)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            out[f"threads_{n}"] = {
                "wall_x": round(seconds / wall, 2),
                "cpu_s_per_audio_s": round(cpu / seconds, 3),
                "windows": int(emb.vectors.shape[0]),
                "frame_hop_s": embedder.frame_hop_s,
            }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--openl3-seconds", type=float, default=60.0,
                        help="audio for the OpenL3 measurement; 0 skips it")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    embedder = SpectralEmbedder()
    seconds = args.minutes * 60.0
    music = make_music(seconds, args.sample_rate)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="echoledger-ingest-") as tmp:
        for fmt in args.formats.split(","):
            path = Path(tmp) / f"music.{fmt}"
            write_audio(path, music, args.sample_rate, FORMATS[fmt])
            results[fmt] = measure(path, embedder, seconds, args.repeats)

    print(
        f"spectral embedder v{embedder.version} (dim {embedder.dim}, "
        f"window {embedder.window_s:g} s, hop {embedder.hop_s:g} s, {embedder.sample_rate} Hz); "
        f"input {args.minutes:g} min of "
        f"{args.sample_rate} Hz stereo; one thread; best of {args.repeats}"
    )
    print(f"{'format':<8}{'decode x':>10}{'embed x':>10}{'total x':>10}{'wall x':>10}"
          f"   (CPU-time speeds; bar {BAR:g}x)")  # fmt: skip
    ok = True
    for fmt, r in results.items():
        passed = r["total_x"] >= BAR
        ok &= passed
        verdict = "ok" if passed else "BELOW BAR"
        print(f"{fmt:<8}{r['cpu_decode_x']:>10.1f}{r['cpu_embed_x']:>10.1f}"
              f"{r['cpu_total_x']:>10.1f}{r['wall_total_x']:>10.1f}"
              f"   {r['total_x'] / BAR:.2f} of the bar: {verdict}")  # fmt: skip
    openl3 = measure_openl3(args.openl3_seconds, (1, 2)) if args.openl3_seconds > 0 else None
    if openl3 is None:
        print("openl3: not measured (the openl3 extra is not installed, or --openl3-seconds 0)")
    else:
        print(f"openl3 (torchopenl3, {openl3['weights']} weights), {args.openl3_seconds:g} s "
              "at a 0.5 s frame hop:")  # fmt: skip
        for n in (1, 2):
            r = openl3[f"threads_{n}"]
            print(f"  {n} thread(s): {r['wall_x']:.2f}x real time (wall), "
                  f"{r['cpu_s_per_audio_s']:.2f} CPU-s per audio second")  # fmt: skip
    if args.json:
        body = {
            "embedder": {"name": embedder.name, "version": embedder.version},
            "minutes": args.minutes,
            "sample_rate": args.sample_rate,
            "threads": 1,
            "bar_x": BAR,
            "results": results,
            "openl3": openl3,
        }
        args.json.write_text(json.dumps(body, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
