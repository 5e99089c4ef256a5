"""In-process request limits: per-key token buckets, requests in flight per key, and a lockout
for client addresses that keep presenting bad API keys.

All three are per process (each API replica counts on its own), thread-safe, and bounded in
memory: idle entries are dropped once a table grows past `MAX_ENTRIES`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_ENTRIES = 10_000

Clock = Callable[[], float]


class TokenBuckets:
    """One bucket per key: `per_minute` tokens a minute, holding at most `burst`."""

    def __init__(self, *, per_minute: float, burst: int, clock: Clock = time.monotonic) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError(f"need per_minute > 0 and burst >= 1, got {per_minute}, {burst}")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float | None:
        """Spend a token for `key`: None when allowed, else the seconds until one is free."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_ENTRIES:
                self._prune(now)
            return None

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


class InFlight:
    """At most `limit` requests at once per key."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def enter(self, key: str) -> bool:
        with self._lock:
            held = self._counts.get(key, 0)
            if held >= self.limit:
                return False
            self._counts[key] = held + 1
            return True

    def leave(self, key: str) -> None:
        with self._lock:
            held = self._counts.get(key, 0) - 1
            if held > 0:
                self._counts[key] = held
            else:
                self._counts.pop(key, None)


@dataclass(slots=True)
class _Failures:
    count: int
    first_at: float
    locked_until: float = 0.0


class FailedAuth:
    """Counts failed authentications per client address; `max_failures` within `window`
    seconds lock the address out for `lockout` seconds (a key cannot be guessed quickly).

    Success does not clear the count: one valid key must not buy an attacker more guesses.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        lockout: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, _Failures] = {}

    def locked_for(self, client: str) -> float | None:
        """Seconds `client` must still wait, or None."""
        now = self._clock()
        with self._lock:
            entry = self._clients.get(client)
            if entry is None or entry.locked_until <= now:
                return None
            return entry.locked_until - now

    def failed(self, client: str) -> tuple[int, bool]:
        """Record a failure; returns the failures in the window and whether that locked the
        client out."""
        now = self._clock()
        with self._lock:
            entry = self._clients.get(client)
            if entry is None or now - entry.first_at > self.window:
                entry = self._clients[client] = _Failures(0, now)
            entry.count += 1
            locked = entry.count >= self.max_failures
            if locked:
                entry.locked_until = now + self.lockout
                entry.count, entry.first_at = 0, now
            if len(self._clients) > MAX_ENTRIES:
                self._clients = {
                    k: v
                    for k, v in self._clients.items()
                    if v.locked_until > now or now - v.first_at <= self.window
                }
            return entry.count, locked


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
