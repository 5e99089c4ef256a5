"""Tests for app.index.sorted_ids: positions of ids found from their values."""

from __future__ import annotations

import numpy as np
import pytest

from app.index import sorted_ids


def _layout(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    dense = np.arange(n, dtype=np.int64) + 1_000
    if name == "dense":
        return dense
    if name == "one gap":
        return np.where(dense < dense[n // 3], dense, dense + 37)
    if name == "gaps per track":  # tracks of 50-400 segments, a few ids lost between them
        return dense + np.cumsum(rng.integers(0, 2, n) * (rng.random(n) < 0.01) * 5)
    steps = rng.integers(1, 1_000, n)  # "sparse": a gap before every id
    return np.cumsum(steps).astype(np.int64)


@pytest.mark.parametrize("layout", ["dense", "one gap", "gaps per track", "sparse"])
@pytest.mark.parametrize("n", [1, 127, 128, 129, 5_000])
def test_every_id_is_found_at_its_position_and_no_other_is(layout: str, n: int) -> None:
    rng = np.random.default_rng(n)
    stored = _layout(layout, n, rng)
    assert np.all(np.diff(stored) > 0)
    absent = np.setdiff1d(np.arange(stored[0] - 5, stored[-1] + 6), stored)
    absent = absent[rng.permutation(absent.size)[:2_000]]
    wanted = rng.permutation(np.concatenate([stored, absent, [-1, -1]]))
    where, found = sorted_ids.locate(stored, wanted, sorted_ids.anchors(stored))
    np.testing.assert_array_equal(found, np.isin(wanted, stored))
    np.testing.assert_array_equal(stored[where[found]], wanted[found])
    assert where.min() >= 0
    assert where.max() < n


def test_shape_is_kept_and_empty_inputs_find_nothing() -> None:
    stored = np.arange(10, 500, 3, dtype=np.int64)
    wanted = np.array([[10, 11, 13], [500, 496, -1]], dtype=np.int64)
    where, found = sorted_ids.locate(stored, wanted, sorted_ids.anchors(stored))
    assert where.shape == found.shape == (2, 3)
    np.testing.assert_array_equal(found, [[True, False, True], [False, True, False]])
    np.testing.assert_array_equal(where[found], [0, 1, 162])
    empty = np.zeros(0, dtype=np.int64)
    _, none = sorted_ids.locate(empty, wanted, sorted_ids.anchors(empty))
    assert none.shape == (2, 3)
    assert not none.any()
