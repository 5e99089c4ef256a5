"""Exact money: largest-remainder splits and pricing, property-tested."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.checks.pricing import UseCandidate, price
from app.ledger.money import round_half_up, split

amounts = st.integers(min_value=0, max_value=10**12)
weight_lists = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=500).filter(
    lambda ws: sum(ws) > 0
)


@given(total=amounts, weights=weight_lists)
def test_split_parts_sum_exactly_and_each_is_within_one_unit(
    total: int, weights: list[int]
) -> None:
    parts = split(total, weights)
    assert sum(parts) == total
    assert len(parts) == len(weights)
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, weight_sum)
        assert abs(part - exact) < 1
        assert part >= 0


def test_split_breaks_ties_towards_earlier_weights() -> None:
    assert split(1, [1, 1, 1]) == [1, 0, 0]
    assert split(2, [1, 1, 1]) == [1, 1, 0]
    assert split(5, [1, 3]) == [1, 4]  # 1.25 / 3.75: the larger remainder wins


@pytest.mark.parametrize(
    ("total", "weights", "message"),
    [
        (-1, [1], "negative"),
        (1, [], "no weights"),
        (1, [0, 0], "all zero"),
        (1, [1, -1], "negative"),
    ],
)
def test_split_refuses_nonsense(total: int, weights: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split(total, weights)


def test_round_half_up() -> None:
    assert [round_half_up(Fraction(n, 2)) for n in range(0, 6)] == [0, 1, 1, 2, 2, 3]
    assert round_half_up(Fraction(-3, 2)) == -2


uses = st.lists(
    st.builds(
        UseCandidate,
        resemblance_ppm=st.integers(min_value=1, max_value=1_000_000),
        rate_per_use_micros=st.integers(min_value=0, max_value=10**9),
    ),
    min_size=1,
    max_size=50,
)


@given(uses=uses, fee_bps=st.integers(min_value=0, max_value=10_000))
def test_price_is_exact(uses: list[UseCandidate], fee_bps: int) -> None:
    pricing = price(uses, fee_bps=fee_bps)
    assert sum(pricing.shares) == 1
    exact = sum(u.rate_per_use_micros * s for u, s in zip(uses, pricing.shares, strict=True))
    assert abs(pricing.charge_micros - exact) <= Fraction(1, 2)
    assert sum(pricing.amounts) + pricing.fee_micros == pricing.charge_micros
    assert all(a >= 0 for a in pricing.amounts)
    assert 0 <= pricing.fee_micros <= pricing.charge_micros


def test_price_follows_the_streaming_model() -> None:
    # Shares 3/4 and 1/4 of rates 1000 and 2000: 750 + 500 = 1250, 10 % fee = 125.
    pricing = price([UseCandidate(600_000, 1000), UseCandidate(200_000, 2000)], fee_bps=1000)
    assert pricing.shares == (Fraction(3, 4), Fraction(1, 4))
    assert (pricing.charge_micros, pricing.fee_micros) == (1250, 125)
    assert pricing.amounts == (675, 450)  # 1125 split 600:400
    assert price([], fee_bps=0).charge_micros == 0
