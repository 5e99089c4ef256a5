"""Decoding speed and peak memory: the streaming `load` against decoding the whole file first.

    python -m bench.decode                   # 10 minutes per file, best of 2
    python -m bench.decode --minutes 20 --json bench-decode.json
    python -m bench.decode --no-hostile      # skip the 655,350 Hz FLAC (the baseline takes ~2 GB)

Each file is decoded to 11,025 Hz mono (the spectral embedder's input) by
`app.audio.decode.load`, which decodes block by block and resamples as it goes, and by
`whole_file_load`, the decoder it replaced: every block at the native rate kept, concatenated,
then `scipy.signal.resample_poly` over the whole array. Each measurement runs in a fresh
process; "peak MB" is its peak resident memory while decoding (VmHWM, restarted just
before) minus its size at that moment. Speeds are audio seconds per CPU second on one core
("x real time"); BLAS/OpenMP pools are pinned to one thread, as in `bench/ingest.py`.

The files: the music `bench/ingest.py` uses (44.1 kHz stereo) as WAV and FLAC; a constant at
192 kHz stereo, the highest rate `probe` accepts; and a constant at 655,350 Hz mono for
three minutes, a 430 kB FLAC that `load` refuses from its header and the old decoder expanded
to gigabytes.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from app.audio.decode import AudioError, FloatArray, load  # noqa: E402

TARGET_RATE = 11_025
WRITE_BLOCK_S = 10
METHODS = ("whole-file", "streaming")


@dataclass(frozen=True)
class Case:
    name: str
    sample_rate: int
    channels: int
    seconds: float
    format: str  # libsndfile format name
    constant: float | None  # None: the music of bench/ingest.py


def cases(minutes: float, *, hostile: bool) -> list[Case]:
    seconds = minutes * 60.0
    out = [
        Case("wav 44.1k stereo", 44_100, 2, seconds, "WAV", None),
        Case("flac 44.1k stereo", 44_100, 2, seconds, "FLAC", None),
        Case("flac 192k stereo", 192_000, 2, seconds, "FLAC", 0.25),
    ]
    if hostile:
        out.append(Case("flac 655k mono (hostile)", 655_350, 1, 180.0, "FLAC", 0.5))
    return out


def write_case(case: Case, path: Path) -> None:
    """Write the case's file block by block (a 192 kHz file does not fit in memory whole)."""
    block = WRITE_BLOCK_S * case.sample_rate
    if case.constant is None:
        from bench.ingest import make_music

        unit = make_music(60.0, case.sample_rate)
    else:
        unit = np.full((block, case.channels), case.constant, dtype=np.float32)
    total = round(case.seconds * case.sample_rate)
    with sf.SoundFile(
        str(path), "w", samplerate=case.sample_rate, channels=case.channels,
        format=case.format, subtype="PCM_16",
    ) as f:  # fmt: skip
        written = 0
        while written < total:
            start = written % len(unit)
            n = min(block, total - written, len(unit) - start)
            f.write(unit[start : start + n])
            written += n


def whole_file_load(path: Path, *, sample_rate: int) -> FloatArray:
    """The decoder before streaming: the whole file at its native rate, then one resampling."""
    from scipy.signal import resample_poly

    info = sf.info(str(path))
    blocks: list[FloatArray] = []
    with sf.SoundFile(str(path)) as f:
        while True:
            data = f.read(int(info.samplerate * 10), dtype="float32", always_2d=True)
            if len(data) == 0:
                break
            blocks.append(data.mean(axis=1, dtype=np.float32))
    audio = np.concatenate(blocks)
    if not np.all(np.isfinite(audio)):
        raise ValueError("non-finite samples")
    float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))  # the silence check
    g = math.gcd(int(info.samplerate), sample_rate)
    out = resample_poly(audio, sample_rate // g, int(info.samplerate) // g)
    return np.asarray(out, dtype=np.float32)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> int:
    """Start a new peak-memory measurement (Linux: VmHWM restarts at the current size)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def measure_here(method: str, path: Path, seconds: float, repeats: int) -> dict[str, Any]:
    """Time and peak memory of one decoder in this process (run it in a fresh one)."""
    import scipy.signal  # noqa: F401  (imported before measuring: ~2 s, paid once per process)

    decode: Callable[[Path], FloatArray] = (
        (lambda p: load(p, sample_rate=TARGET_RATE, min_seconds=0.0, max_seconds=seconds + 60))
        if method == "streaming"
        else (lambda p: whole_file_load(p, sample_rate=TARGET_RATE))
    )
    before = _reset_peak()
    best = math.inf
    for _ in range(repeats):
        c0 = time.process_time()
        try:
            audio = decode(path)
        except AudioError as exc:
            return {"refused": exc.reason, "cpu_s": round(time.process_time() - c0, 4),
                    "peak_mb": _peak_mb(before)}  # fmt: skip
        best = min(best, time.process_time() - c0)
        del audio
    return {"cpu_s": round(best, 3), "x": round(seconds / best, 1), "peak_mb": _peak_mb(before)}


def _peak_mb(before: int) -> float:
    return round((_status_bytes("VmHWM") - before) / 1e6, 1)


def measure(method: str, path: Path, seconds: float, repeats: int) -> dict[str, Any]:
    """`measure_here` in a fresh process, so the peak memory is this decoder's alone."""
    child = ["--child", method, str(path), "--seconds", str(seconds), "--repeats", str(repeats)]
    out = subprocess.run(
        [sys.executable, "-m", "bench.decode", *child], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-hostile", dest="hostile", action="store_false")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        method, path = args.child
        print(json.dumps(measure_here(method, Path(path), args.seconds, args.repeats)))
        return 0

    results: dict[str, dict[str, Any]] = {}
    print(f"decode to {TARGET_RATE} Hz mono; one thread; best of {args.repeats}; "
          "peak MB = peak RSS growth while decoding")  # fmt: skip
    print(
        f"{'file':<26}{'size MB':>9}  " + "".join(f"{m + ' x':>22}{'peak MB':>9}" for m in METHODS)
    )
    with tempfile.TemporaryDirectory(prefix="echoledger-decode-") as tmp:
        for case in cases(args.minutes, hostile=args.hostile):
            path = Path(tmp) / f"{case.name.split()[0]}-{case.sample_rate}.{case.format.lower()}"
            write_case(case, path)
            row = {m: measure(m, path, case.seconds, args.repeats) for m in METHODS}
            results[case.name] = {"bytes": path.stat().st_size, "seconds": case.seconds, **row}
            cells = "".join(
                f"{'refused: ' + r['refused'] if 'refused' in r else r['x']:>22}{r['peak_mb']:>9}"
                for r in row.values()
            )
            print(f"{case.name:<26}{path.stat().st_size / 1e6:>9.1f}  {cells}")
            path.unlink()
    if args.json:
        args.json.write_text(
            json.dumps({"target_rate": TARGET_RATE, "results": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
