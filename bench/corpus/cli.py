"""Command line of the corpus builder (``python -m bench.corpus``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.corpus.build import build_corpus, summarize
from bench.corpus.check import check_corpus, format_check
from bench.corpus.spec import SIZES


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.corpus",
        description=sys.modules["bench.corpus"].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=Path(".echoledger/corpus"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="render cache (default OUT/cache)")
    parser.add_argument("--soundfont", type=Path, default=None)
    parser.add_argument("--second-soundfont", type=Path, default=None,
                        help="soundfont of the soundfont2 set (default TimGM6mb)")  # fmt: skip
    parser.add_argument("--check", action="store_true", help="verify the transformations after")
    parser.add_argument("--check-only", action="store_true", help="verify an existing corpus")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(relativeCreated)8.0fms %(levelname)s %(name)s: %(message)s",
    )
    if not args.check_only:
        started = time.monotonic()
        manifest = build_corpus(
            args.out,
            size=args.size,
            seed=args.seed,
            sample_rate=args.sample_rate,
            workers=args.workers,
            cache_dir=args.cache,
            soundfont=args.soundfont,
            second_soundfont=args.second_soundfont,
            progress=sys.stderr.isatty(),
        )
        report = summarize(manifest)
        report["build_seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(report, indent=1))
    if args.check or args.check_only:
        summary = check_corpus(args.out)
        print(format_check(summary))
        if any(v["pass_rate"] < 1.0 for v in summary.values()):
            return 1
    return 0
