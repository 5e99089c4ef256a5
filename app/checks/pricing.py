"""Pricing a check's uses the streaming way: exact fractions, one rounding, exact splits.

Each use earns its catalogue's rate weighted by its share of the piece:

    share_i  = r_i / sum(r)                       (r: resemblance, in millionths)
    charge   = round(sum(rate_i * share_i))       (the only rounding)
    fee      = round(charge * fee_bps / 10_000)   (the platform's posting, if any)
    parts    = split(charge - fee, rate_i * r_i)  (largest remainder; sums exactly)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from app.ledger.money import round_half_up, split

RESEMBLANCE_SCALE = 1_000_000


def quantise(resemblance: float) -> int:
    """Resemblance in millionths: the exact value pricing and the ledger use."""
    return round(min(1.0, max(0.0, resemblance)) * RESEMBLANCE_SCALE)


@dataclass(frozen=True, slots=True)
class UseCandidate:
    resemblance_ppm: int
    rate_per_use_micros: int


@dataclass(frozen=True, slots=True)
class Pricing:
    charge_micros: int
    fee_micros: int
    shares: tuple[Fraction, ...]  # one per use, in the order given; sums to 1
    amounts: tuple[int, ...]  # label credits per use; sums to charge - fee


def price(uses: Sequence[UseCandidate], *, fee_bps: int) -> Pricing:
    """Price uses given in a deterministic order (ties in the split go to earlier uses)."""
    if not uses:
        return Pricing(0, 0, (), ())
    if not 0 <= fee_bps <= 10_000:
        raise ValueError(f"fee_bps must be within 0..10000, got {fee_bps}")
    weights = [u.resemblance_ppm for u in uses]
    total = sum(weights)
    if total <= 0:
        raise ValueError("uses must have a positive resemblance")
    shares = tuple(Fraction(w, total) for w in weights)
    exact = sum((u.rate_per_use_micros * s for u, s in zip(uses, shares, strict=True)), Fraction())
    charge = round_half_up(exact)
    fee = round_half_up(Fraction(charge * fee_bps, 10_000))
    contributions = [u.rate_per_use_micros * u.resemblance_ppm for u in uses]
    to_labels = charge - fee
    amounts = split(to_labels, contributions) if to_labels > 0 else [0] * len(uses)
    return Pricing(charge, fee, shares, tuple(amounts))
