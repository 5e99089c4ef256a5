"""Where a request's time went, phase by phase, for the `Server-Timing` header and the logs.

A check's latency is decoding, embedding, index searches, reading candidates' windows,
verification and the ledger write; a p95 that misses its bar says little until it is split
that way. `Stopwatch` adds up the wall time of named phases (a phase entered twice, like the
two index searches of a check, accumulates), and `server_timing` renders them as the W3C
`Server-Timing` header (``name;dur=milliseconds``) that browsers' developer tools read, and
`parse_server_timing` (used by `bench/checks.py`) reads back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Accumulated wall time per phase name, in insertion order; one request's, not shared
    between threads."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block and add it to `name` (also when the block raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + max(seconds, 0.0)

    def seconds(self, *names: str) -> float:
        """The summed time of `names` (0 for phases never entered)."""
        return sum(self._seconds.get(n, 0.0) for n in names)

    def milliseconds(self) -> dict[str, float]:
        return {name: round(s * 1000, 1) for name, s in self._seconds.items()}


def server_timing(milliseconds: dict[str, float]) -> str:
    """The `Server-Timing` header value for phase durations in milliseconds."""
    return ", ".join(f"{name};dur={ms:.1f}" for name, ms in milliseconds.items())


def parse_server_timing(header: str) -> dict[str, float]:
    """Milliseconds per metric from a `Server-Timing` header value (``name;dur=ms, ...``);
    metrics without a duration, and other parameters (``desc``), are left out."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in header.split(","))):
        name, _, rest = item.partition(";")
        for param in rest.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                out[name.strip()] = float(value)
    return out
