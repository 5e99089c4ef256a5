"""Exact money arithmetic: integer micro-units, one rounding, largest-remainder splits."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction


def round_half_up(value: Fraction) -> int:
    """The nearest integer, halves away from zero (amounts here are never negative)."""
    if value < 0:
        return -round_half_up(-value)
    return int(value + Fraction(1, 2))  # int() floors positive fractions


def split(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` micro-units in proportion to `weights` so that the parts sum to it.

    Largest remainder (Hamilton): each part is first floored, then the units left over go one
    each to the parts with the largest fractional remainders; equal remainders go to the
    earlier weight, so the result depends only on the inputs' order. Every part is within one
    micro-unit of its exact share.
    """
    if total < 0:
        raise ValueError(f"total must not be negative, got {total}")
    if not weights:
        raise ValueError("cannot split over no weights")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must not be negative, got {list(weights)}")
    weight_sum = sum(weights)
    if weight_sum == 0:
        raise ValueError("cannot split over weights that are all zero")
    parts = [total * w // weight_sum for w in weights]
    remainders = [total * w % weight_sum for w in weights]
    left = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        parts[i] += 1
    return parts
